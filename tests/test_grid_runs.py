"""Grids: parallel workers with a concurrent reader, kill-and-resume, divergence, no-op re-runs."""
import signal
import subprocess
import sys
import time

import pandas as pd

from conftest import REPO, cli, tiny_config
from gridtext import grid_text, tiny_mlp
from landscape_lib.store import Store
from landscape_lib.grid import load_grid

GRID = grid_text(
    tiny_mlp(dataset_options={"n_train": 128, "n_test": 64}, epochs=3, batch_size=32,
             optimizer="sgd", lr=0.1),
    {"name": "inits", "init": ["lecun", "xavier", "kaiming", "orthogonal"]},
    {"name": "blowup", "variants": [{"lr": 1e6, "init": "kaiming", "optimizer": "sgd"}]})


def _reader(store_root, stop_after, errors, counts):
    """Query the store every 0.2 s like the dashboard does; record any error."""
    store = Store(store_root)
    deadline = time.time() + stop_after
    while time.time() < deadline:
        try:
            counts.append(int(store.query("SELECT count(*) AS n FROM epochs")["n"].iloc[0]))
            store.query("SELECT * FROM runs")
        except Exception as exc:  # noqa: BLE001 - any error is a failure of the design
            errors.append(repr(exc))
        time.sleep(0.2)


def test_parallel_grid_with_reader_and_divergence(tmp_path):
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    store = Store(tmp_path / "store").ensure()
    proc = subprocess.Popen([sys.executable, "-m", "landscape_lib", "train-all", str(grid), "-j",
                             "2", "--store", str(store.root), "--no-progress"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    errors, counts = [], []
    while proc.poll() is None:
        _reader(store.root, 0.2, errors, counts)
    out, err = proc.communicate()
    assert not errors, errors[:3]
    assert len(counts) > 3 and counts == sorted(counts)  # rows only ever appear
    assert proc.returncode == 0, err
    runs = store.query("SELECT run_id, status, diverged_epoch, lr FROM runs")
    assert len(runs) == 5
    blown = runs[runs.lr > 1]
    assert blown["status"].tolist() == ["diverged"] and blown["diverged_epoch"].iloc[0] >= 1
    assert (runs[runs.lr < 1]["status"] == "finished").all()
    ep = store.query("SELECT run_id, epoch FROM epochs")
    for rid in runs[runs.lr < 1]["run_id"]:
        assert sorted(ep[ep.run_id == rid]["epoch"]) == [0, 1, 2, 3]
    diverged = store.query("SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch",
                           [blown["run_id"].iloc[0]])
    assert diverged["diverged"].iloc[-1] and diverged["epoch"].iloc[-1] == blown["diverged_epoch"].iloc[0]

    # A second train-all is a no-op: every run is skipped and no file changes.
    before = {p: p.stat().st_mtime_ns for p in store.tables_dir.rglob("*.parquet")}
    again = cli("train-all", grid, "-j", "2", "--store", store.root, "--no-progress")
    assert again.returncode == 0 and "5 skipped" in again.stderr
    assert before == {p: p.stat().st_mtime_ns for p in store.tables_dir.rglob("*.parquet")}


def test_killed_run_resumes_without_duplicates(tmp_path):
    args = ["dataset=synthetic", "dataset_options={n_train = 512, n_test = 64}", "arch=mlp",
            "arch_options={hidden = [64, 64]}", "epochs=25", "batch_size=16", "optimizer=adam",
            "--no-progress"]
    interrupted = Store(tmp_path / "a").ensure()
    proc = subprocess.Popen([sys.executable, "-m", "landscape_lib", "train", *args, "--store",
                             str(interrupted.root)], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it mid-way, at least 3 epochs in
        rows = interrupted.query("SELECT count(*) AS n FROM epochs")["n"].iloc[0]
        if rows >= 4:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    status = interrupted.query("SELECT status, epochs_done FROM runs").iloc[0]
    assert status["status"] == "running" and status["epochs_done"] < 25, "killed too late"
    assert cli("train", *args, "--store", interrupted.root).returncode == 0
    resumed = interrupted.query("SELECT * FROM epochs ORDER BY epoch")
    assert resumed["epoch"].tolist() == list(range(26))  # none missing, none twice
    assert interrupted.query("SELECT status FROM runs")["status"].tolist() == ["finished"]

    # The resumed run matches an uninterrupted one exactly (same seed, same RNG streams).
    fresh = Store(tmp_path / "b").ensure()
    assert cli("train", *args, "--store", fresh.root).returncode == 0
    straight = fresh.query("SELECT * FROM epochs ORDER BY epoch")
    pd.testing.assert_series_equal(resumed["val_loss"], straight["val_loss"], rtol=1e-6)
    pd.testing.assert_series_equal(resumed["train_loss"], straight["train_loss"], rtol=1e-6)


def test_grid_expansion(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text(GRID)
    configs = load_grid(grid)
    assert [c.init for c in configs[:4]] == ["lecun", "xavier", "kaiming", "orthogonal"]
    assert {c.study for c in configs} == {"inits", "blowup"}
    assert len({c.run_id() for c in configs}) == 5
    # the seed is part of the run id; tags and study are not
    a = tiny_config(seed=1)
    assert a.run_id() != tiny_config(seed=2).run_id()
    assert a.run_id() == tiny_config(seed=1, tags=["x"], study="other").run_id()
    overridden = load_grid(grid, overrides={"epochs": 7})
    assert {c.epochs for c in overridden} == {7}


def test_quick_grid_is_valid():
    configs = load_grid(REPO / "runs" / "quick.toml")
    assert len({c.arch for c in configs}) >= 4
    assert len({c.init for c in configs}) >= 6 and len({c.optimizer for c in configs}) >= 8
    assert all(c.analyses for c in configs)


def test_quick_grid_end_to_end(tmp_path):
    """The demo grid (one epoch each, its analyses on 64 samples instead of 256: the same
    code, a quarter of the products' cost): every run finishes with every metric, a Hessian
    spectrum and a surface at its last epoch."""
    text = (REPO / "runs" / "quick.toml").read_text()
    assert text.count("samples = 256") == 3  # hessian, surface, interpolation
    grid = tmp_path / "quick.toml"
    grid.write_text(text.replace("samples = 256", "samples = 64"))
    store = Store(tmp_path / "store")
    res = cli("train-all", grid, "--epochs", "1", "-j", "2", "--store", store.root,
              "--no-progress", timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    runs = store.query("SELECT run_id, status FROM runs")
    assert len(runs) == len(load_grid(REPO / "runs" / "quick.toml"))
    assert (runs["status"] == "finished").all()
    metrics = ["train_loss", "train_acc", "val_loss", "val_acc", "grad_norm", "weight_norm",
               "param_change", "loss_improvement", "lr", "epoch_time", "images_per_s",
               "peak_mem_mb", "avg_cond", "avg_spectral_norm", "avg_eff_rank_ratio"]
    ep = store.query("SELECT * FROM epochs WHERE epoch = 1")
    assert len(ep) == len(runs) and ep[metrics].notna().all().all()
    assert store.query("SELECT count(DISTINCT run_id) AS n FROM layers")["n"].iloc[0] == len(runs)
    for table in ("hessian_summary", "hessian_eigs", "hessian_density", "surface_points",
                  "surface_summary"):
        n = store.query(f"SELECT count(DISTINCT run_id) AS n FROM {table}")["n"].iloc[0]
        assert n == len(runs), table
    done = store.query("SELECT run_id, kind, status, epoch FROM analyses")
    assert (done["status"] == "done").all()
    assert (done[done.run_id != "study"]["epoch"] == 1).all()
    assert set(done["kind"]) >= {"hessian", "surface", "interpolation", "trajectory",
                                 "attention", "attention-hessian", "paths-analytic"}
    vits = store.query("SELECT count(*) AS n FROM runs WHERE arch = 'vit'")["n"].iloc[0]
    assert (done["kind"] == "attention").sum() == vits  # attention only where it applies
    # Acceptance 3 on every quick-grid surface: centred inside the grid or failed with a reason.
    fits = store.query("SELECT * FROM gauss_fit")
    assert len(fits) == len(runs)
    ok = fits[fits.status == "ok"]
    assert (ok.x0.between(ok.x_min, ok.x_max) & ok.y0.between(ok.y_min, ok.y_max)).all()
    failed = fits[fits.status != "ok"]
    assert (failed.status == "failed").all() and failed.reason.str.len().gt(0).all()
    assert failed[["A", "x0", "y0", "s1", "s2", "offset"]].isna().all().all()
