"""Analyses through the store: provenance, values against independent computations, cached
re-runs, resumed surfaces, and bad input that writes nothing."""
import json

import numpy as np
import pytest
import torch
from torch import nn

from conftest import cli, tiny_config, trained_store
from landscape_lib.analyses import provenance
from landscape_lib.analyses.provenance import run_analysis
from landscape_lib.data import DeviceData, load_dataset
from landscape_lib.errors import ConfigError, StoreError
from landscape_lib.models import create_model
from landscape_lib.store import Store
from landscape_lib.train.engine import train_run

CFG = dict(arch_options={"hidden": [8]}, epochs=3, trajectory="full", optimizer="adam",
           lr=0.05, checkpoint_epochs=[0, 1, 2, 3])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return trained_store(tmp_path_factory, **CFG)


def _files(store):
    """Every data file and its mtime (lock files, which hold no data, left out)."""
    return {p: p.stat().st_mtime_ns for p in store.root.rglob("*")
            if p.is_file() and p.parent.name != "locks"}


def _model_and_sample(store, rid, epoch, split, n):
    model = create_model("mlp", in_channels=1, image_size=8, num_classes=4, hidden=[8])
    model.load_state_dict(torch.load(store.artifacts_dir / rid / "checkpoints"
                                     / f"epoch_{epoch:04d}.pt"))
    data = DeviceData(load_dataset("synthetic", n_train=128, n_test=64), "cpu")
    return model.double(), *data.subset(split, n, 0)


def test_hessian_matches_dense_and_has_provenance(trained):
    store, rid = trained
    aid = run_analysis(store, rid, "hessian", "last",
                       {"samples": 64, "top_k": 2, "tol": 1e-6, "trace_samples": 2000,
                        "per_layer": False, "density_vectors": 2})
    row = store.query("SELECT * FROM analyses WHERE analysis_id = ?", [aid]).iloc[0]
    assert (row["status"], row["run_id"], row["epoch"], row["n_samples"], row["device"]) == \
        ("done", rid, 3, 64, "cpu")
    assert row["engine"] == "default (hvp cached)"  # Lanczos on the CPU's cheapest HVP mode
    assert row["seconds"] > 0 and "torch=" in row["lib_version"]
    assert json.loads(row["params_json"])["top_k"] == 2
    # Independent dense Hessian of the same loss, in float64.
    model, x, y = _model_and_sample(store, rid, 3, "train", 64)
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            parts[n] = flat[i:i + s.numel()].reshape(s)
            i += s.numel()
        out = torch.func.functional_call(model, parts, (x.double(),))
        return nn.functional.cross_entropy(out, y)

    H = torch.autograd.functional.hessian(loss, flat0)
    evals = torch.linalg.eigvalsh(H)
    eigs = store.query("SELECT k, eigenvalue FROM hessian_eigs WHERE analysis_id = ? AND "
                       "which = 'top' ORDER BY k", [aid])["eigenvalue"].to_numpy()
    np.testing.assert_allclose(eigs, evals.flip(0)[:2].numpy(), rtol=1e-3)
    summary = store.query("SELECT * FROM hessian_summary WHERE analysis_id = ?", [aid]).iloc[0]
    assert summary["trace"] == pytest.approx(H.trace().item(), rel=1e-3)
    assert summary["lam_min"] == pytest.approx(evals[0].item(), rel=1e-2, abs=1e-4)
    dens = store.query("SELECT x, density FROM hessian_density WHERE analysis_id = ? ORDER BY x",
                       [aid])
    assert np.trapezoid(dens["density"], dens["x"]) == pytest.approx(1.0, abs=1e-3)


def test_surface_centre_is_the_checkpoint_loss_and_reruns_are_stored(trained):
    store, rid = trained
    params = {"grid": 5, "span": 0.5, "samples": 128, "split": "train"}
    aid = run_analysis(store, rid, "surface", "last", params)
    pts = store.query("SELECT * FROM surface_points WHERE analysis_id = ?", [aid])
    assert len(pts) == 25
    centre = pts[(pts.i == 2) & (pts.j == 2)].iloc[0]
    model, x, y = _model_and_sample(store, rid, 3, "train", 128)
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x.double()), y).item()
    assert centre["loss"] == pytest.approx(expected, rel=1e-5)
    summary = store.query("SELECT * FROM surface_summary WHERE analysis_id = ?", [aid]).iloc[0]
    assert summary["center_loss"] == pytest.approx(expected, rel=1e-5)
    for table in ("wavelets", "persistence", "gauss_fit"):
        assert len(store.query(f"SELECT * FROM {table} WHERE source_id = ?", [aid])) > 0
    before = _files(store)
    assert run_analysis(store, rid, "surface", "last", params) == aid  # stored: nothing re-run
    assert _files(store) == before


def test_gauss_fit_is_inside_the_grid_or_failed_and_paths_start_inside(trained):
    """Acceptance 3 through the store: the surface analysis writes one gauss_fit row, centred
    inside the grid or failed with a reason; paths start inside the fitted grid, a start off
    it (or a failed fit) is refused before anything is written."""
    store, rid = trained
    aid = run_analysis(store, rid, "surface", "last", {"grid": 7, "span": 1.0, "samples": 128})
    fit = store.query("SELECT * FROM gauss_fit WHERE source_id = ?", [aid])
    assert len(fit) == 1
    fit = fit.iloc[0]
    assert (fit.x_min, fit.x_max, fit.y_min, fit.y_max) == (-1.0, 1.0, -1.0, 1.0)
    if fit.status == "failed":
        assert fit.reason and np.isnan(fit.x0)
        with pytest.raises(ConfigError, match="failed"):
            run_analysis(store, rid, "paths", "last", {"optimizers": ["sgd"], "steps": 5})
        return
    assert fit.status == "ok" and -1 < fit.x0 < 1 and -1 < fit.y0 < 1 and fit.A < 0
    pid = run_analysis(store, rid, "paths", "last", {"optimizers": ["sgd", "adam"], "steps": 5})
    starts = store.query("SELECT * FROM optimizer_paths WHERE analysis_id = ? AND step = 0",
                         [pid])
    assert len(starts) == 2 and starts.x.between(-1, 1).all() and starts.y.between(-1, 1).all()
    before = _files(store)
    with pytest.raises(ConfigError, match="outside"):
        run_analysis(store, rid, "paths", "last", {"start": [3.0, 0.0]})
    assert _files(store) == before


def test_interpolation_endpoints_are_checkpoint_losses(trained):
    store, rid = trained
    aid = run_analysis(store, rid, "interpolation", "last",
                       {"from_epoch": 1, "alpha_min": 0.0, "alpha_max": 1.0, "points": 3,
                        "samples": 128})
    df = store.query("SELECT alpha, loss FROM interpolation WHERE analysis_id = ? ORDER BY alpha",
                     [aid])
    for epoch, alpha in ((1, 0.0), (3, 1.0)):
        model, x, y = _model_and_sample(store, rid, epoch, "train", 128)
        with torch.no_grad():
            loss = nn.functional.cross_entropy(model(x.double()), y).item()
        assert df[df.alpha == alpha]["loss"].iloc[0] == pytest.approx(loss, rel=1e-5)


def test_pca_surface_projects_the_trajectory(trained):
    store, rid = trained
    aid = run_analysis(store, rid, "surface", "last",
                       {"directions": "pca", "grid": 3, "samples": 64})
    traj = store.query("SELECT * FROM trajectory WHERE analysis_id = ? ORDER BY point_epoch", [aid])
    assert traj["point_epoch"].tolist() == [0, 1, 2, 3]
    assert traj.iloc[-1][["x", "y"]].abs().max() < 1e-5  # the centre is the last epoch
    assert 0 < traj["explained_variance"].iloc[0] <= 1 + 1e-9


def test_interrupted_surface_resumes_where_it_stopped(trained, monkeypatch):
    store, rid = trained
    params = {"grid": 5, "span": 0.3, "samples": 64, "seed": 7}
    calls = []

    def stop_after_two_rows(fraction, message):
        if message.startswith("row 2/"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_analysis(store, rid, "surface", "last", params, report=stop_after_two_rows)
    ctx, _ = provenance.prepare(store, rid, "surface", "last", params)
    assert provenance.stored_status(ctx) == "failed"
    assert len(store.read("surface_points", rid, part=ctx.analysis_id)) == 10

    import landscape_lib.analyses.runners.surfaces as surface
    original = surface.surface_2d_multi

    def spy(*args, start_row=0, **kw):
        calls.append(start_row)
        return original(*args, start_row=start_row, **kw)
    monkeypatch.setattr(surface, "surface_2d_multi", spy)
    run_analysis(store, rid, "surface", "last", params)
    assert calls == [2]
    pts = store.read("surface_points", rid, part=ctx.analysis_id)
    assert len(pts) == 25 and not pts.duplicated(["i", "j"]).any()


def test_bad_input_writes_nothing(trained, monkeypatch):
    store, rid = trained
    before = _files(store)
    with pytest.raises(StoreError, match="no run 'nope'"):
        run_analysis(store, "nope", "hessian")
    with pytest.raises(ConfigError, match="no checkpoint at epoch 7; checkpoints: 0, 1, 2, 3"):
        run_analysis(store, rid, "hessian", 7)
    with pytest.raises(ConfigError, match="need a Hessian analysis"):
        run_analysis(store, rid, "surface", 2, {"directions": "eigen", "grid": 3})
    with pytest.raises(ConfigError, match="attention analyses need a ViT"):
        run_analysis(store, rid, "attention")
    with pytest.raises(ConfigError, match="no parameter"):
        run_analysis(store, rid, "surface", "last", {"gird": 5})
    import landscape_lib.analyses.surface.memory as memory
    monkeypatch.setattr(memory, "available_memory", lambda device: 1024)
    with pytest.raises(ConfigError, match="grid too large for memory"):
        run_analysis(store, rid, "surface", "last", {"grid": 9, "samples": 128})
    assert _files(store) == before


def test_run_without_checkpoints(tmp_path):
    store = Store(tmp_path / "s").ensure()
    cfg = tiny_config(epochs=1)
    train_run(cfg, store, progress=False)
    store.delete("checkpoints", cfg.run_id())
    before = _files(store)
    with pytest.raises(ConfigError, match="has no checkpoint"):
        run_analysis(store, cfg.run_id(), "surface")
    assert _files(store) == before


def test_cli_analyze_errors(trained):
    store, rid = trained
    res = cli("analyze", rid, "--epoch", "9", "--what", "hessian", "--store", store.root)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0
    assert "no checkpoint at epoch 9" in res.stderr
    res = cli("analyze", rid, "--what", "hessain", "--store", store.root)
    assert res.returncode == 2 and "unknown analysis 'hessain'" in res.stderr


def test_surface_summaries_spread_over_seeds(tmp_path):
    from landscape_lib.store.queries import surface_seed_spread
    store = Store(tmp_path / "s").ensure()
    rows = [dict(center_loss=1.0, curvature_x=2.0), dict(center_loss=2.0, curvature_x=float("nan")),
            dict(center_loss=4.0, curvature_x=6.0)]
    for seed, row in enumerate(rows):
        store.write("surface_summary", "r1", [{**row, "run_id": "r1", "epoch": 5, "dir_seed": seed,
                                               "directions": "random",
                                               "analysis_id": f"surface-{seed:012x}"}],
                    part=f"surface-{seed:012x}")  # the shape of provenance.analysis_id
    df = surface_seed_spread(store, ["r1"]).iloc[0]
    assert df["n_seeds"] == 3
    assert df["center_loss_mean"] == pytest.approx(np.mean([1, 2, 4]))
    assert df["center_loss_std"] == pytest.approx(np.std([1, 2, 4], ddof=1))
    assert df["curvature_x_mean"] == pytest.approx(4.0)
    assert df["curvature_x_n"] == 2



def _diverged(tmp_path, lr):
    """A run that blew up: its store, id and last checkpoint epoch (the diverged one). 1,100
    examples: 3 steps of 512 per epoch, and 3 batches of the analysis' 512 (2 ranks' share)."""
    store = Store(tmp_path / f"s{lr:g}").ensure()
    cfg = tiny_config(epochs=3, lr=lr, batch_size=512, checkpoint_epochs=[0, 1, 2, 3],
                      trajectory="full", dataset_options={"n_train": 1100, "n_test": 64})
    train_run(cfg, store, progress=False)
    run = store.query("SELECT status, diverged_epoch FROM runs").iloc[0]
    assert run["status"] == "diverged"
    return store, cfg.run_id(), int(run["diverged_epoch"])


def _finite(store, rid, epoch) -> bool:
    state = torch.load(store.checkpoint_path(rid, epoch))
    return all(bool(torch.isfinite(t).all()) for t in state.values())


HESSIAN = {"samples": 0, "top_k": 1, "per_layer": False, "density_vectors": 1}
NAN_WEIGHTS = r"checkpoint at epoch 2 has non-finite weights \(1.weight.*earlier checkpoints: 0, 1$"
NAN_LOSS = r"the loss is NaN or infinite on 3 of 3 batch\(es\) of the analysed sample"


def test_diverged_checkpoints_are_refused_and_earlier_ones_analysed(tmp_path):
    """Runs that blew up left NaN weights (lr 1e8), or finite weights whose loss is NaN (lr
    1e6), in their last checkpoint: analysing it says so and writes nothing, in one process
    or two, instead of storing a NaN spectrum as done after all its products; earlier
    checkpoints are analysed as usual, and the trajectory stops at the last finite weights."""
    store, rid, last = _diverged(tmp_path, 1e8)
    assert last == 2 and not _finite(store, rid, 2) and _finite(store, rid, 1)
    before = _files(store)
    for kind, p, gpus in (("hessian", HESSIAN, 1), ("hessian", HESSIAN, 2),
                          ("surface", {"grid": 3, "samples": 32}, 1)):
        with pytest.raises(ConfigError, match=NAN_WEIGHTS):
            run_analysis(store, rid, kind, "last", p, gpus=gpus)
    assert _files(store) == before
    # Of 2 points, PCA puts them at +-|w1 - w0| / 2 on its first axis.
    aid = run_analysis(store, rid, "trajectory")
    got = store.query("SELECT point_epoch, x FROM trajectory WHERE analysis_id = ? "
                      "AND method = 'pca' ORDER BY point_epoch", [aid])
    assert got.point_epoch.tolist() == [0, 1]
    w0, w1 = (torch.cat([t.reshape(-1).double() for t in torch.load(
        store.checkpoint_path(rid, e)).values()]) for e in (0, 1))
    half = float((w1 - w0).norm()) / 2
    np.testing.assert_allclose(np.abs(got.x), [half, half], rtol=1e-4)

    store, rid, last = _diverged(tmp_path, 1e6)
    assert last == 2 and _finite(store, rid, 2)
    before = _files(store)
    for gpus in (1, 2):  # with 2, every rank returns when one shard's loss is not finite
        with pytest.raises(ConfigError, match=NAN_LOSS):
            run_analysis(store, rid, "hessian", "last", HESSIAN, gpus=gpus)
    assert _files(store) == before
    aid = run_analysis(store, rid, "hessian", "first", HESSIAN)
    top = store.query("SELECT top_eig FROM hessian_summary WHERE analysis_id = ?", [aid])
    assert len(top) == 1 and np.isfinite(top.top_eig).all()
