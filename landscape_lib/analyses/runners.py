"""The registered analyses: each turns (context, parameters) into rows of the store's tables.

The numerical work lives in the modules named after it (curvature, surface, directions,
trajectory, wavelets, topology, gaussfit, paths, attention); this file only wires inputs from
the store to those functions and their outputs back to tables.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..errors import ConfigError
from ..optim import OPTIMIZERS
from .context import AnalysisContext
from .registry import Analysis, register

LOSS = nn.CrossEntropyLoss()


# ---------------------------------------------------------------------- Hessian spectra
def run_hessian(ctx: AnalysisContext, p: dict) -> None:
    from .curvature import hessian_analysis
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"])
    ctx.report(0.05, "Hessian-vector products")
    res = hessian_analysis(ctx.model, LOSS, batches, top_k=p["top_k"], bottom_k=p["bottom_k"],
                           tol=p["tol"], trace_samples=p["trace_samples"],
                           density_vectors=p["density_vectors"], density_steps=p["density_steps"],
                           per_layer=p["per_layer"], layer_trace_samples=p["layer_trace_samples"],
                           engine=p["engine"], seed=p["seed"])
    ctx.engine = f"{res.engine} (hvp {res.hvp_mode})"
    eigs = [{"which": "top", "k": i + 1, "eigenvalue": float(v)}
            for i, v in enumerate(res.top_eigenvalues)]
    eigs += [{"which": "bottom", "k": i + 1, "eigenvalue": float(v)}
             for i, v in enumerate(res.bottom_eigenvalues)]
    ctx.write("hessian_eigs", eigs)
    lam_min = float(res.bottom_eigenvalues[0]) if len(res.bottom_eigenvalues) else None
    summary = [{"layer": "<all>", "n_params": res.n_params,
                "top_eig": float(res.top_eigenvalues[0]), "lam_min": lam_min,
                "convexity_ratio": res.eig_ratio, "trace": res.trace,
                "trace_se": res.trace_std_err, "neg_share": res.negative_share,
                "n_products": res.n_products}]
    if res.per_layer is not None:
        for row in res.per_layer.to_dict("records"):
            summary.append({"layer": row["layer"], "n_params": row["n_params"],
                            "top_eig": row["top_eig"], "trace": row["trace"]})
    ctx.write("hessian_summary", summary)
    ctx.write("hessian_density", pd.DataFrame({"x": np.asarray(res.density_grid, float),
                                               "density": np.asarray(res.density, float)}))
    torch.save(res.top_eigenvectors, ctx.artifact("eigenvectors.pt"))


register(Analysis(
    "hessian", run_hessian, description="Hessian spectrum: top/bottom eigenvalues, trace, "
    "density (SLQ), negative share, per-layer top eigenvalue and trace",
    defaults={"samples": 512, "split": "train", "data_seed": 0, "top_k": 5, "bottom_k": 1,
              "tol": 1e-3, "trace_samples": 50, "density_vectors": 3, "density_steps": 60,
              "per_layer": True, "layer_trace_samples": 20, "engine": "default", "seed": 0},
    tables=("hessian_eigs", "hessian_summary", "hessian_density")))


# ---------------------------------------------------------------------- surfaces
def _latest_eigenvectors(ctx: AnalysisContext) -> torch.Tensor:
    df = ctx.store.query("SELECT analysis_id FROM analyses WHERE run_id = ? AND epoch = ? AND "
                         "kind = 'hessian' AND status = 'done' ORDER BY started_at DESC",
                         [ctx.run_id, ctx.epoch])
    for aid in df["analysis_id"]:
        path = ctx.store.artifacts_dir / ctx.run_id / "analyses" / f"{aid}-eigenvectors.pt"
        if path.exists():
            return torch.load(path, weights_only=True)
    raise ConfigError(f"eigenvector directions need a Hessian analysis of run {ctx.run_id} at "
                      f"epoch {ctx.epoch} first (analyze --what hessian)")


def _directions(ctx: AnalysisContext, p: dict):
    """(d1, d2, explained variance, trajectory rows) for the chosen kind of directions."""
    from .directions import eigenvector_directions, pca_directions, random_directions
    model, kind = ctx.model, p["directions"]
    if kind == "random":
        d1, d2 = random_directions(model, p["seed"], 2, normalization=p["normalization"],
                                   ignore_1d=not p["include_1d"])
        return d1, d2, None, []
    if kind == "eigen":
        pair = tuple(int(i) for i in p["pair"])
        d1, d2 = eigenvector_directions(_latest_eigenvectors(ctx), model, pair)
        return d1, d2, None, []
    if kind == "pca":
        epochs, W, how = ctx.trajectory()
        if how != "full":
            raise ConfigError(f"PCA directions need full per-epoch weights; run {ctx.run_id} "
                              "kept a sketch (set trajectory = 'full' in its config)")
        keep = [i for i, e in enumerate(epochs) if e <= ctx.epoch]
        W = W[keep].to(ctx.device)
        center = W[-1]
        d1, d2, ratio, coords = pca_directions(W, center)
        rows = [{"method": "pca-plane", "point_epoch": epochs[i], "x": float(c[0]),
                 "y": float(c[1]), "explained_variance": float(np.sum(ratio))}
                for i, c in zip(keep, np.asarray(coords))]
        return d1, d2, float(np.sum(ratio)), rows
    raise ConfigError(f"directions must be random, eigen or pca, not '{kind}'")


def check_surface(ctx: AnalysisContext, p: dict) -> None:
    if p["grid"] < 3 or p["grid"] > 401:
        raise ConfigError(f"grid must be between 3 and 401 points per side, not {p['grid']}")
    if p["span"] <= 0:
        raise ConfigError("span must be > 0")


def run_surface(ctx: AnalysisContext, p: dict) -> None:
    from .surface import surface_2d, surface_summary
    from .directions import get_weights
    model = ctx.model
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"])
    d1, d2, explained, traj_rows = _directions(ctx, p)
    xs = np.linspace(-p["span"], p["span"], p["grid"])
    ys = xs.copy()
    rows = _stored_rows(ctx, len(xs))

    def on_row(j, loss_row, acc_row):  # written as it fills: an interruption keeps rows done
        rows.extend({"i": i, "j": j, "x": float(xs[i]), "y": float(ys[j]),
                     "loss": float(loss_row[i]), "acc": float(acc_row[i])}
                    for i in range(len(xs)))
        ctx.write("surface_points", rows)
        ctx.report((j + 1) / len(ys), f"row {j + 1}/{len(ys)}")

    start_row = len(rows) // len(xs)
    surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, bn=p["bn"],
               bn_batches=ctx.batches("train", p["bn_samples"], seed=1) if p["bn"] == "recompute"
               else None, precision=p["precision"], on_row=on_row, start_row=start_row,
               channels_last=ctx.device.type == "cuda" and _has_conv(model))
    loss = _grid(rows, "loss", len(xs), len(ys))
    summary = surface_summary(xs, ys, loss)
    ctx.write("surface_summary", [{
        "directions": p["directions"], "dir_seed": p["seed"], "explained_variance": explained,
        **{k: summary.get(k) for k in ("center_loss", "curvature_x", "curvature_y",
                                       "basin_width")}}])
    if traj_rows:
        ctx.write("trajectory", traj_rows)
    _surface_analyses(ctx, xs, ys, loss)


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def _stored_rows(ctx: AnalysisContext, nx: int) -> list[dict]:
    df = ctx.read("surface_points")
    if df is None:
        return []
    done = df.groupby("j").size()
    complete = sorted(j for j, n in done.items() if n == nx)
    df = df[df["j"].isin(complete)]
    return df[["i", "j", "x", "y", "loss", "acc"]].to_dict("records")


def _grid(rows: list[dict], key: str, nx: int, ny: int) -> np.ndarray:
    Z = np.full((ny, nx), np.nan)
    for r in rows:
        Z[r["j"], r["i"]] = r[key]
    return Z


def _surface_analyses(ctx: AnalysisContext, xs, ys, loss: np.ndarray) -> None:
    """Wavelets, persistent homology and the Gaussian fit of a finished loss grid."""
    from .gaussfit import fit_gaussian
    from .topology import sublevel_persistence
    from .wavelets import wavelet_energy
    finite = np.isfinite(loss)
    if not finite.all():  # a diverged region: cap it so the analyses still see the basin
        loss = np.where(finite, loss, np.nanmax(np.where(finite, loss, np.nan)))
    source = {"source_id": ctx.analysis_id}
    ctx.write("wavelets", wavelet_energy(loss).assign(**source))
    ctx.write("persistence", sublevel_persistence(loss).assign(**source))
    try:
        fit = fit_gaussian(xs, ys, loss)
        ctx.write("gauss_fit", [{**source, **{k: fit[k] for k in
                                              ("A", "x0", "y0", "s1", "s2", "offset", "r2")}}])
    except (RuntimeError, ValueError) as exc:  # no Gaussian-like basin: say so, keep the rest
        ctx.report(0.99, f"no Gaussian fit: {exc}")


register(Analysis(
    "surface", run_surface, description="2-D loss/accuracy grid around a checkpoint along random "
    "filter-normalised, top-Hessian-eigenvector or trajectory-PCA directions, with wavelets, "
    "persistence and a Gaussian fit of the grid",
    defaults={"directions": "random", "seed": 0, "grid": 21, "span": 1.0, "samples": 1024,
              "split": "train", "data_seed": 0, "bn": "fixed", "bn_samples": 512,
              "precision": "fp32", "normalization": "filter", "include_1d": False,
              "pair": [0, 1]},
    tables=("surface_points", "surface_summary", "wavelets", "persistence", "gauss_fit"),
    check=check_surface))


# ---------------------------------------------------------------------- interpolation
def run_interpolation(ctx: AnalysisContext, p: dict) -> None:
    from .schedule import resolve_epoch
    from .surface import interpolate_1d
    from .directions import get_weights
    other = ctx
    if p["other_run"]:
        from .context import find_run
        other_id = find_run(ctx.store, p["other_run"])["run_id"]
        other = AnalysisContext(ctx.store, other_id, ctx.cfg, None, ctx.device)
    from_epoch = resolve_epoch(ctx.store, other.run_id, p["from_epoch"])
    w1 = get_weights(other.model_at(from_epoch))
    w2 = get_weights(ctx.model)
    alphas = np.linspace(p["alpha_min"], p["alpha_max"], p["points"])
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"])
    df = interpolate_1d(ctx.model, w1, w2, alphas, batches)
    ctx.write("interpolation", df[["alpha", "loss", "acc"]].assign(epoch_b=from_epoch))


register(Analysis(
    "interpolation", run_interpolation, description="1-D linear interpolation "
    "(1-a) w_from + a w_epoch between two checkpoints (of this run or another)",
    defaults={"from_epoch": "first", "other_run": "", "alpha_min": -0.25, "alpha_max": 1.25,
              "points": 31, "samples": 1024, "split": "train", "data_seed": 0},
    tables=("interpolation",)))


# ---------------------------------------------------------------------- trajectory
def run_trajectory(ctx: AnalysisContext, p: dict) -> None:
    from .trajectory import pca_embedding, tsne_embedding
    epochs, W, _ = ctx.trajectory()
    coords, ratio = pca_embedding(W)
    rows = [{"method": "pca", "point_epoch": e, "x": float(c[0]), "y": float(c[1]),
             "explained_variance": float(np.sum(ratio))} for e, c in zip(epochs, coords)]
    if len(epochs) >= 3:
        tsne = tsne_embedding(W, seed=p["seed"])
        rows += [{"method": "tsne", "point_epoch": e, "x": float(c[0]), "y": float(c[1])}
                 for e, c in zip(epochs, tsne)]
    ctx.write("trajectory", rows)


register(Analysis(
    "trajectory", run_trajectory, description="PCA and t-SNE embeddings of the per-epoch "
    "weights (coloured by epoch)", defaults={"seed": 0}, tables=("trajectory",)))


# ---------------------------------------------------------------------- attention
def check_attention(ctx: AnalysisContext, p: dict) -> None:
    if not hasattr(ctx.new_model(), "attention_maps"):
        raise ConfigError(f"run {ctx.run_id} is a {ctx.cfg.arch}: attention analyses need a ViT")


def run_attention(ctx: AnalysisContext, p: dict) -> None:
    from .attention import model_attention_jsd
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"], batch_size=128)
    df = model_attention_jsd(ctx.model, [x for x, _ in batches])
    ctx.write("attention_jsd", df[["layer", "head", "jsd"]])


register(Analysis(
    "attention", run_attention, description="Jensen-Shannon divergence between the attention "
    "maps of adjacent layers, per head, on held-out inputs (RealFormer's heat map)",
    defaults={"samples": 256, "split": "test", "data_seed": 0},
    tables=("attention_jsd",), check=check_attention,
    applies=lambda cfg: cfg.arch == "vit"))


def run_attention_hessian(ctx: AnalysisContext, p: dict) -> None:
    from .attention import attention_hessian_sweep, block_histograms
    size = {"d": p["d"], "T": p["T"], "n": p["n"], "seed": p["seed"]}
    sweep = attention_hessian_sweep(p["scales"], **size)
    ctx.write("attention_hessian", sweep)
    hist = pd.concat([block_histograms(scale=1.0, pre_ln=pre_ln, bins=p["bins"], **size)
                      .assign(part=lambda d, pl=pre_ln: d["part"] + (" pre-LN" if pl else ""))
                      for pre_ln in (False, True)])
    ctx.write("attention_hessian_hist", hist)


register(Analysis(
    "attention-hessian", run_attention_hessian, description="Hessian of one self-attention "
    "layer split into query/key/value blocks and Gauss-Newton/functional parts, Frobenius norms "
    "across input scales (softmax vs linear, with/without Pre-LN)",
    defaults={"scales": [0.1, 0.3, 1.0, 3.0, 10.0], "d": 4, "T": 5, "n": 8, "seed": 0,
              "bins": 40},
    tables=("attention_hessian", "attention_hessian_hist"), needs_run=False))


# ---------------------------------------------------------------------- optimizer paths
def _default_optimizers() -> list[str]:
    return [e.name for e in OPTIMIZERS if e.name != "sophia"] + ["sam-sgd-momentum"]


def run_paths(ctx: AnalysisContext, p: dict) -> None:
    """Optimizer paths on a run's fitted surface (Gaussian fit of its latest surface)."""
    from .gaussfit import gaussian_surface
    from .paths import compare_optimizers
    df = ctx.store.query(
        "SELECT g.* FROM gauss_fit g JOIN analyses a USING (analysis_id) WHERE g.run_id = ? "
        "AND g.epoch = ? AND a.status = 'done' ORDER BY a.started_at DESC LIMIT 1",
        [ctx.run_id, ctx.epoch])
    if df.empty:
        raise ConfigError(f"paths need a surface (with its Gaussian fit) of run {ctx.run_id} at "
                          f"epoch {ctx.epoch} first")
    fit = df.iloc[0].to_dict()
    surface = gaussian_surface(fit)
    names = p["optimizers"] or _default_optimizers()
    start = p["start"] or [fit["x0"] + fit["s1"], fit["y0"] + fit["s2"]]
    paths = compare_optimizers(surface, names, start=start, steps=p["steps"], lr=p["lr"])
    ctx.write("optimizer_paths", paths.assign(surface="gaussian-fit"))


def run_paths_analytic(ctx: AnalysisContext, p: dict) -> None:
    from .paths import compare_optimizers
    names = p["optimizers"] or _default_optimizers()
    frames = [compare_optimizers(s, names, steps=p["steps"], lr=p["lr"])
              for s in p["surfaces"]]
    ctx.write("optimizer_paths", pd.concat(frames))


_PATH_DEFAULTS = {"optimizers": [], "steps": 200, "lr": 0.01}
register(Analysis(
    "paths", run_paths, description="optimizer paths (every registry optimizer) on the Gaussian "
    "fit of the run's surface", defaults={**_PATH_DEFAULTS, "start": []},
    tables=("optimizer_paths",)))
register(Analysis(
    "paths-analytic", run_paths_analytic, description="optimizer paths on analytic test "
    "surfaces (Himmelblau, saddle, Rosenbrock)",
    defaults={**_PATH_DEFAULTS, "surfaces": ["himmelblau", "saddle", "rosenbrock"]},
    tables=("optimizer_paths",), needs_run=False))
