"""The Ray backend on a local Ray cluster of 2 worker nodes (issue 13, acceptance 1).

One cluster for the module (Ray's `cluster_utils.Cluster`: a head without CPUs, where only the
driver lives, and 2 worker nodes of 1 CPU each, so every task runs on a worker node):
- a small grid on Ray gives the rows of the local backend (same run ids, losses to rtol 1e-6,
  the scheduled analyses included), and analyze-all on Ray matches analyze-all run locally;
- a second train-all skips every finished run and changes no file;
- a run whose lock stays held is reported `busy` and train-all exits 1;
- a worker node removed while its run trains: Ray retries the task on the other node, which
  resumes from the last saved epoch (epochs before the kill are kept, not re-trained) and
  leaves every epoch, layer and checkpoint row exactly once. The node is removed once epoch 2
  is stored: a kill right after epoch 0 hits the engine's epoch-0 duplicate (issue 12 item 1),
  which is the engine's to fix, not the backend's.
"""
import contextlib
import io
import json
import os
import secrets
import threading
import time

import numpy as np
import pandas as pd
import pytest

from conftest import REPO
from gridtext import grid_text
from landscape_lib.cli import main
from landscape_lib.errors import ConfigError
from landscape_lib.grid import load_grid
from landscape_lib.pipeline import run_grid, run_scheduled
from landscape_lib.scale.ray_backend import RayOptions, analyze_all_ray, run_grid_ray
from landscape_lib.store import Store

pytestmark = [pytest.mark.ray_cluster, pytest.mark.xdist_group("ray")]

NODE = dict(num_cpus=1, object_store_memory=100 * 2**20)  # Ray's minimum is 75 MiB
QUIET = RayOptions(progress=False)

# The grids, as the keys of a grid file (`_grid` writes the TOML the library reads).
DEFAULTS = dict(dataset="synthetic", dataset_options={"n_train": 256, "n_test": 64},
                arch="mlp", arch_options={"hidden": [32]}, epochs=2, batch_size=32,
                optimizer="sgd-momentum", lr=0.05)
INITS = {"name": "inits", "init": ["lecun", "kaiming", "orthogonal"]}
INTERPOLATION = {"interpolation": {"samples": 64, "points": 5}}
# Slow enough per epoch (small batches, ~0.5 s on a loaded 2-core machine) that its node is
# removed after epoch 2 is stored and long before the run could end (18 epochs to go).
KILL = dict(dataset="digits", arch="mlp", arch_options={"hidden": [128]}, epochs=20,
            batch_size=16, optimizer="sgd", lr=0.01)

EPOCH_COLUMNS = ["train_loss", "train_acc", "train_loss_running", "train_acc_running",
                 "val_loss", "val_acc", "grad_norm", "weight_norm"]


@pytest.fixture(scope="module")
def ray_cluster():
    """The cluster, its processes bound to the loopback address, with a per-session token
    (Ray >= 2.59 turns token authentication on for local clusters) and this checkout's code."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # read when ray is imported
        mp.setenv("RAY_AUTH_MODE", "token")
        mp.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
        mp.setenv("PYTHONPATH", os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
        ray = pytest.importorskip("ray")
        from ray.cluster_utils import Cluster
        cluster = Cluster(initialize_head=True, head_node_args=dict(
            num_cpus=0, include_dashboard=False,
            object_store_memory=NODE["object_store_memory"]))
        try:
            for _ in range(2):
                cluster.add_node(**NODE)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


def _grid(path, defaults: dict, study: dict, analyses: dict | None = None):
    """A grid file of one study, written and read back by the library's reader."""
    path.write_text(grid_text(defaults, study, analyses=analyses))
    return load_grid(path)


def _rows(store: Store, table: str, run_ids) -> pd.DataFrame:
    frames = [f for rid in run_ids if (f := store.read(table, rid)) is not None]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _analysis_rows(store: Store, table: str, run_ids, keys) -> pd.DataFrame:
    """Every part of `table` of these runs (one part per analysis id), in key order."""
    frames = []
    for rid in run_ids:
        folder = store.tables_dir / table / rid
        frames += [store.read(table, rid, part=p.stem) for p in sorted(folder.glob("*.parquet"))]
    df = pd.concat(frames, ignore_index=True)
    return df.sort_values(["run_id", "analysis_id", *keys]).reset_index(drop=True)


def _files(store: Store) -> dict:
    return {p: p.stat().st_mtime_ns for p in store.root.rglob("*") if p.is_file()}


def _cli(*args) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main([*map(str, args), "--no-progress"])
    return rc, err.getvalue()


def _background(fn):
    """Start fn() in a thread (a Ray driver waiting on its tasks) and return a function that
    joins it and returns fn's result; an exception in fn fails the test there."""
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(value=fn()), daemon=True)
    thread.start()

    def join(timeout: float = 600):
        thread.join(timeout=timeout)
        assert not thread.is_alive(), f"the Ray driver still runs after {timeout} s"
        assert "value" in result, "the Ray driver raised (see the thread's traceback above)"
        return result["value"]
    return join


@pytest.fixture(scope="module")
def grids(tmp_path_factory, ray_cluster):
    """The same grid trained by the local backend and by the Ray backend, at the same time:
    the Ray grid's driver waits in a thread (its workers start and import torch meanwhile, in
    their own processes) while this process trains the local reference."""
    import torch
    tmp = tmp_path_factory.mktemp("grid")
    configs = _grid(tmp / "grid.toml", DEFAULTS, INITS, INTERPOLATION)
    local, remote = Store(tmp / "local").ensure(), Store(tmp / "ray").ensure()
    ray_counts = _background(lambda: run_grid_ray(configs, remote, QUIET))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the tasks (1 CPU each): the same reduction order
    try:
        assert run_grid(configs, local, jobs=1, progress=False) == {"skipped": 0, "finished": 3}
    finally:
        torch.set_num_threads(threads)
    return tmp, configs, local, remote, ray_counts()


def test_ray_grid_equals_local_grid(grids):
    _, configs, local, remote, counts = grids
    assert counts == {"skipped": 0, "finished": 3}
    ids = sorted(c.run_id() for c in configs)
    runs_r = _rows(remote, "runs", ids)
    assert sorted(runs_r["run_id"]) == ids and set(runs_r["status"]) == {"finished"}
    assert set(runs_r["pid"]).isdisjoint({os.getpid()})  # trained in Ray workers, not here
    assert {json.loads(e)["threads"] for e in runs_r["env_json"]} == {1}  # --cpus-per-run
    el = _rows(local, "epochs", ids).sort_values(["run_id", "epoch"]).reset_index(drop=True)
    er = _rows(remote, "epochs", ids).sort_values(["run_id", "epoch"]).reset_index(drop=True)
    assert list(er["run_id"]) == list(el["run_id"])
    assert list(er["epoch"]) == list(el["epoch"]) == [0, 1, 2] * 3
    np.testing.assert_allclose(er[EPOCH_COLUMNS].to_numpy(float),
                               el[EPOCH_COLUMNS].to_numpy(float), rtol=1e-6)
    # the scheduled analysis ran in the same task, with the same result
    il, ir = (_analysis_rows(s, "interpolation", ids, ["alpha"]) for s in (local, remote))
    assert len(ir) == 5 * 3 and list(ir["analysis_id"]) == list(il["analysis_id"])
    np.testing.assert_allclose(ir["loss"], il["loss"], rtol=1e-6)


def test_second_train_all_skips_finished_runs(grids, ray_cluster):
    tmp, configs, _, remote, _ = grids
    before = _files(remote)
    assert run_grid_ray(configs, remote, QUIET) == {"skipped": 3}
    rc, err = _cli("train-all", tmp / "grid.toml", "--backend", "ray", "--address",
                   ray_cluster.address, "--store", remote.root)
    assert rc == 0 and "3 runs in" in err and "0 to train on Ray" in err
    assert "done: 3 skipped" in err, err
    assert _files(remote) == before


def test_analyze_all_on_ray_equals_local(grids, ray_cluster):
    tmp, configs, local, remote, _ = grids
    more = _grid(tmp / "more.toml", DEFAULTS, INITS,
                 {**INTERPOLATION, "surface": {"grid": 5, "samples": 64}})
    on_ray = _background(lambda: analyze_all_ray(more, remote, QUIET))
    for cfg in more:  # the local reference meanwhile
        assert run_scheduled(cfg, local) == {"done": 2, "failed": 0}
    assert on_ray() == {"done": 6, "failed": 0, "not-trained": 0}
    rc, err = _cli("analyze-all", tmp / "more.toml", "--backend", "ray", "--address",
                   ray_cluster.address, "--store", remote.root)  # all stored: found again
    assert rc == 0 and "6 done or stored, 0 failed" in err, err
    ids = sorted(c.run_id() for c in configs)
    sl, sr = (_analysis_rows(s, "surface_points", ids, ["j", "i"]) for s in (local, remote))
    assert len(sr) == 25 * 3 and list(sr["analysis_id"]) == list(sl["analysis_id"])
    np.testing.assert_allclose(sr["loss"], sl["loss"], rtol=1e-6)


def test_a_run_left_busy_makes_train_all_exit_1(tmp_path, ray_cluster):
    path = tmp_path / "grid.toml"
    (cfg,) = _grid(path, DEFAULTS, {**INITS, "init": ["lecun"]})
    store = Store(tmp_path / "store").ensure()
    lock = store.lock_run(cfg.run_id())  # another process trains it, as far as Ray can tell
    try:
        rc, err = _cli("train-all", path, "--backend", "ray", "--address", ray_cluster.address,
                       "--store", store.root, "--lock-wait", "1", "--max-retries", "0")
    finally:
        lock.close()
    assert rc == 1 and "done: 1 busy" in err and "1 run(s) left unfinished" in err, err
    assert store.read("runs", cfg.run_id()) is None


def test_the_probe_stops_a_grid_whose_data_a_node_cannot_see(tmp_path, ray_cluster):
    missing = tmp_path / "not-on-every-node"
    configs = _grid(tmp_path / "grid.toml", {**DEFAULTS, "dataset": "folder",
                                             "dataset_options": {"path": str(missing)}}, INITS)
    store = Store(tmp_path / "store").ensure()
    with pytest.raises(ConfigError, match=f"Ray node .* does not see {missing}"):
        run_grid_ray(configs, store, QUIET)
    assert all(store.read("runs", c.run_id()) is None for c in configs)  # no run started
    assert not list(store.root.glob(".probe-*"))  # the probe's token file is gone


def _node_of(cluster, pid: int):
    """The cluster node whose raylet started worker process `pid`."""
    with open(f"/proc/{pid}/stat") as fh:
        ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
    return next(n for n in cluster.list_all_nodes()
                if n.all_processes["raylet"][0].process.pid == ppid)


def test_node_killed_mid_run_resumes_without_duplicates(tmp_path, ray_cluster):
    configs = _grid(tmp_path / "grid.toml", KILL, {"name": "kill", "seed": [7]})
    rid = configs[0].run_id()
    store = Store(tmp_path / "store").ensure()
    driver = _background(lambda: run_grid_ray(configs, store,
                                              RayOptions(progress=False, lock_wait_s=60)))
    deadline = time.monotonic() + 300
    row = None
    while time.monotonic() < deadline:  # wait until epoch 2 is stored, then kill its node
        row = store.read("runs", rid)
        if row is not None and row["epochs_done"].iloc[0] >= 2:
            break
        time.sleep(0.05)
    killed_pid, seen = int(row["pid"].iloc[0]), int(row["epochs_done"].iloc[0])
    assert seen < KILL["epochs"], "the run finished before its node could be removed"
    kept = store.read("epochs", rid)
    kept = kept[kept["epoch"] < seen]  # rows at or below the last saved resume state
    ray_cluster.remove_node(_node_of(ray_cluster, killed_pid), allow_graceful=False)
    result = driver(timeout=300)
    ray_cluster.add_node(**NODE)  # back to 2 workers
    assert result == {"skipped": 0, "finished": 1}
    final = store.read("runs", rid)
    assert final["status"].iloc[0] == "finished" and int(final["pid"].iloc[0]) != killed_pid
    epochs = store.read("epochs", rid)
    # every epoch once: none lost, none twice
    assert sorted(epochs["epoch"]) == list(range(KILL["epochs"] + 1))
    layers = store.read("layers", rid)
    assert not layers.duplicated(["epoch", "layer"]).any()
    assert sorted(layers["epoch"].unique()) == list(range(KILL["epochs"] + 1))
    ckpts = store.read("checkpoints", rid)
    assert not ckpts.duplicated(["epoch", "kind"]).any()
    # resumed, not restarted: the epochs trained before the kill are the stored ones, untouched
    after = epochs.set_index("epoch").loc[kept["epoch"]]
    np.testing.assert_array_equal(after["epoch_time"].to_numpy(), kept["epoch_time"].to_numpy())
