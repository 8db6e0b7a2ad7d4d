"""The `surface` and `interpolation` analyses: loss over a plane or a line of weights around a
checkpoint -> surface_* (with the grid's wavelets, persistence and Gaussian fit) and
interpolation tables."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...errors import ConfigError, check_choice
from ...store import queries
from ..context import AnalysisContext, find_run, resolve_epoch
from ..grid_stats.gaussfit import FIT_OK, fit_gaussian
from ..grid_stats.summary import surface_summary
from ..grid_stats.topology import sublevel_persistence
from ..grid_stats.wavelets import wavelet_energy
from ..surface.directions import (eigenvector_directions, get_weights, pca_directions,
                                  random_directions)
from ..surface.batchnorm import BN_MODES, bn_statistics, resolve_bn
from ..surface.devices import surface_2d_multi
from ..surface.grids import SURFACE_BN_MODES, interpolate_1d
from .curvature import EIGENVECTORS

DIRECTIONS = ("random", "eigen", "pca")


def _latest_eigenvectors(ctx: AnalysisContext) -> torch.Tensor:
    for aid in queries.done_analyses(ctx.store, ctx.run_id, ctx.epoch, "hessian"):
        path = ctx.store.analysis_artifact(ctx.run_id, aid, EIGENVECTORS)
        if path.exists():
            return torch.load(path, weights_only=True)
    raise ConfigError(f"eigenvector directions need a Hessian analysis of run {ctx.run_id} at "
                      f"epoch {ctx.epoch} first (analyze --what hessian)")


def _directions(ctx: AnalysisContext, p: dict):
    """(d1, d2, explained variance, trajectory rows) for the chosen kind of directions."""
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
    raise AssertionError(kind)  # check_surface refused it


def check_surface(ctx: AnalysisContext, p: dict) -> None:
    check_choice("directions", p["directions"], DIRECTIONS)
    check_choice("bn", p["bn"], SURFACE_BN_MODES)
    if p["grid"] < 3 or p["grid"] > 401:
        raise ConfigError(f"grid must be between 3 and 401 points per side, not {p['grid']}")
    if p["span"] <= 0:
        raise ConfigError("span must be > 0")


def run_surface(ctx: AnalysisContext, p: dict) -> None:
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
    surface_2d_multi(model, get_weights(model), d1, d2, xs, ys, batches, bn=p["bn"],
                     bn_batches=ctx.batches("train", p["bn_samples"], seed=1)
                     if p["bn"] == "recompute" else None, precision=p["precision"],
                     on_row=on_row, start_row=start_row, devices=ctx.devices,
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
    """Wavelets, persistent homology and the Gaussian fit of a finished loss grid.

    The fit sees the raw grid (it leaves non-finite points out) and always writes one row: a
    fit that fails is stored with status 'failed' and its reason, not as NaN parameters."""
    source = {"source_id": ctx.analysis_id}
    fit = fit_gaussian(xs, ys, loss)
    ctx.write("gauss_fit", [{**source, **fit}])
    if fit["status"] != FIT_OK:
        ctx.report(0.99, f"no Gaussian fit: {fit['reason']}")
    finite = np.isfinite(loss)
    if not finite.all():  # a diverged region: cap it so the analyses still see the basin
        loss = np.where(finite, loss, np.nanmax(np.where(finite, loss, np.nan)))
    ctx.write("wavelets", wavelet_energy(loss).assign(**source))
    ctx.write("persistence", sublevel_persistence(loss).assign(**source))


def check_interpolation(ctx: AnalysisContext, p: dict) -> None:
    check_choice("bn", p["bn"], ("auto", *BN_MODES))


def run_interpolation(ctx: AnalysisContext, p: dict) -> None:
    """Loss along (1 - a) w_from + a w_epoch; BN statistics as `p["bn"]` says (the rows store
    the mode used: "auto" is "interpolate" for nets with BN, "fixed" otherwise)."""
    other_id = find_run(ctx.store, p["other_run"])["run_id"] if p["other_run"] else ctx.run_id
    from_epoch = resolve_epoch(ctx.store, other_id, p["from_epoch"])
    start = ctx.model_at(from_epoch, other_id)
    model = ctx.model
    bn = resolve_bn(model, p["bn"])
    alphas = np.linspace(p["alpha_min"], p["alpha_max"], p["points"])
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"])
    df = interpolate_1d(model, get_weights(start), get_weights(model), alphas, batches, bn=bn,
                        stats1=bn_statistics(start), stats2=bn_statistics(model),
                        bn_batches=ctx.batches("train", p["bn_samples"], seed=1)
                        if bn == "recompute" else None)
    ctx.write("interpolation", df[["alpha", "loss", "acc", "bn", "bn_var_clamped"]]
              .assign(epoch_b=from_epoch))
