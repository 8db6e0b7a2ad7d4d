"""The Ray backend's pieces that need no cluster: the CLI options (checked before anything is
written or Ray imported; the local backend never imports Ray), the GPU share of each run, and a
task waiting out a run lock left behind by a dead attempt."""
import fcntl
import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import REPO, tiny_config
from landscape_lib.data import load_dataset
from landscape_lib.errors import ConfigError
from landscape_lib.grid import load_grid
from landscape_lib.models import create_model
from landscape_lib.scale.resources import GPU_SHARE, ParamCounter, gpu_share, plan_resources
from landscape_lib.scale.tasks import RunBusy, train_task
from landscape_lib.store import Store

SIZES = """
[defaults]
dataset = "synthetic"
dataset_options = { n_train = 64, n_test = 32 }
epochs = 1
batch_size = 32

[[study]]
name = "sizes"
variants = [
  { arch = "mlp", arch_options = { hidden = [16] } },
  { arch = "resnet18" },
  { arch = "resnet18", arch_options = { width = 128 } },
]
"""


BAD = [
    (["--address", "auto"], "--address needs --backend ray"),
    (["--gpus-per-run", "0.5", "--max-retries", "1"], "--gpus-per-run, --max-retries needs"),
    (["--backend", "ray", "--device", "cuda:1"], "cannot be used with the Ray backend"),
    (["--backend", "ray", "--gpus-per-run", "1.5"], "only whole numbers"),
    (["--backend", "ray", "--cpus-per-run", "0"], "must be a positive number"),
    (["--backend", "ray", "--max-retries", "-1"], "must be 0 or more"),
    (["--backend", "ray", "-j", "2"], "-j is the local backend's"),
]

# One interpreter runs every command below in turn, then says whether Ray was ever imported.
CLI = """
import contextlib, io, json, sys
from landscape_lib.cli import main
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        results.append([main(args), err.getvalue()])
print(json.dumps({"results": results, "ray_imported": "ray" in sys.modules}))
"""


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    """Each bad option set on its own store, then a local train-all of a one-run grid."""
    tmp = tmp_path_factory.mktemp("cli")
    grid, one = tmp / "grid.toml", tmp / "one.toml"
    grid.write_text(SIZES)
    one.write_text(SIZES.split("[[study]]")[0] + '[[study]]\nname = "one"\narch = "mlp"\n')
    argv = [["train-all", str(grid), "--store", str(tmp / f"bad{i}"), "--no-progress", *args]
            for i, (args, _) in enumerate(BAD)]
    argv.append(["train-all", str(one), "--store", str(tmp / "local"), "--no-progress"])
    out = subprocess.run([sys.executable, "-c", CLI, json.dumps(argv)], capture_output=True,
                         text=True, cwd=REPO, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr
    return tmp, json.loads(out.stdout.strip().splitlines()[-1])


def test_local_backend_is_the_default_and_imports_no_ray(commands):
    tmp, report = commands
    rc, err = report["results"][-1]
    assert rc == 0 and "1 finished" in err, err
    assert not report["ray_imported"]  # nor did any of the refused commands


@pytest.mark.parametrize("case", range(len(BAD)), ids=[m for _, m in BAD])
def test_bad_backend_options_fail_before_writing(commands, case):
    tmp, report = commands
    rc, err = report["results"][case]
    assert rc == 2 and err.startswith("error: ") and BAD[case][1] in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp / f"bad{case}").exists()  # refused before the store was created


def test_gpu_share_table_is_ordered_and_ends_with_a_whole_gpu():
    limits = [limit for limit, _ in GPU_SHARE]
    assert limits == sorted(limits) and GPU_SHARE[-1][1] == 1.0
    assert gpu_share(10) == GPU_SHARE[0][1] and gpu_share(10**12) == 1.0


def test_plan_resources_from_parameter_counts(tmp_path):
    (tmp_path / "grid.toml").write_text(SIZES)
    configs = load_grid(tmp_path / "grid.toml")
    counter = ParamCounter()
    data = load_dataset("synthetic", n_train=64, n_test=32)
    for cfg in configs:  # the meta-device count equals a real model's
        real = create_model(cfg.arch, in_channels=data.in_channels, image_size=data.image_size,
                            num_classes=data.num_classes, **cfg.arch_options)
        assert counter(cfg) == sum(p.numel() for p in real.parameters())
    sizes = [counter(c) for c in configs]
    assert sizes[0] < 2e6 < sizes[1] < 3e7 < sizes[2]  # MLP, ResNet-18, ResNet-18 width 128
    plan = plan_resources(configs, cluster_gpus=2, counter=counter)
    assert [plan[c.run_id()].num_gpus for c in configs] == [0.25, 0.5, 1.0]
    assert all(plan[c.run_id()].num_cpus == 1.0 for c in configs)
    override = plan_resources(configs, cluster_gpus=2, gpus_per_run=0.5, cpus_per_run=4)
    assert {(r.num_gpus, r.num_cpus, r.threads) for r in override.values()} == {(0.5, 4.0, 4)}
    for kwargs in (dict(cluster_gpus=0), dict(cluster_gpus=8, device="cpu")):
        assert {r.num_gpus for r in plan_resources(configs, **kwargs).values()} == {0.0}
    with pytest.raises(ConfigError):
        plan_resources(configs, cluster_gpus=2, gpus_per_run=1.5)


def _hold_lock(store: Store, run_id: str):
    """The run's lock held as another process holds it (flock: per open file)."""
    (store.root / "locks").mkdir(exist_ok=True)
    handle = open(store.root / "locks" / f"{run_id}.lock", "w")
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


def test_a_lock_held_too_long_raises_run_busy_and_writes_nothing(store):
    cfg = tiny_config(epochs=1)
    handle = _hold_lock(store, cfg.run_id())
    started = time.monotonic()
    with pytest.raises(RunBusy, match="lock stayed held"):
        train_task(cfg.to_dict(), str(store.root), None, "cpu", lock_wait_s=1.5)
    assert time.monotonic() - started >= 1.5
    assert store.read("runs", cfg.run_id()) is None
    handle.close()


def test_a_lock_released_while_waiting_lets_the_task_train(store):
    cfg = tiny_config(epochs=1, analyses={"interpolation": {"samples": 32, "points": 3}})
    handle = _hold_lock(store, cfg.run_id())
    threading.Timer(1.0, handle.close).start()  # the dead attempt's lock goes away
    result = train_task(cfg.to_dict(), str(store.root), None, "cpu", threads=1, lock_wait_s=60)
    assert result["status"] == "finished" and result["analyses"] == {"done": 1, "failed": 0}
    row = store.read("runs", cfg.run_id())
    assert row["status"].iloc[0] == "finished"
    assert json.loads(row["env_json"].iloc[0])["threads"] == 1  # the task's CPUs
    assert sorted(store.read("epochs", cfg.run_id())["epoch"]) == [0, 1]
    # a retried task finds the run finished and its analyses stored: nothing is redone
    again = train_task(cfg.to_dict(), str(store.root), None, "cpu", threads=1)
    assert again["status"] == "skipped" and again["analyses"] == {"done": 1, "failed": 0}


def test_progress_postfix_and_run_lines(store):
    from landscape_lib.scale.ray_backend import _line, _postfix
    from landscape_lib.scale.resources import RunResources
    done, waiting = tiny_config(epochs=2), tiny_config(epochs=3, seed=1)
    assert train_task(done.to_dict(), str(store.root), None, "cpu")["status"] == "finished"
    # `done` still counted as running by the driver (its task not collected yet): its stored
    # epochs count; `waiting` has no row yet; one run of 4 epochs ended before
    text = _postfix(store, [done, waiting], 4 + 2 + 3, {"finished": 1})
    assert text == "epochs 6/9 finished=1"
    line = _line({"run_id": "r1", "status": "failed", "host": "node7", "seconds": 12.3,
                  "analyses": {"done": 1, "failed": 1}, "error": "OOM"},
                 RunResources(num_cpus=1, num_gpus=0.25))
    assert line == "   failed  r1 on node7, 0.25 GPU, 12 s, analyses 1 done 1 failed: OOM"
