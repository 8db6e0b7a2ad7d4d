"""Loss surfaces: along a line between two weight vectors (``interpolate_1d``) and over a plane
(``surface_2d``), both through ``evaluate.evaluate_points``; ``surface_2d_loop`` is the
straightforward reference (copy weights, evaluate batch by batch, next point).

Grids follow one convention: Z has shape (len(ys), len(xs)) and Z[j, i] is the value at
(xs[i], ys[j]) (row = y, column = x).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ...errors import ConfigError, check_choice
from .directions import to_flat, unflatten
from .batchnorm import bn_layers, flat_statistics, resolve_bn
from .evaluate import RowCallback, evaluate_points, preserved

SURFACE_BN_MODES = ("fixed", "recompute")  # "interpolate" needs two ends: interpolations only


def interpolate_1d(model: nn.Module, w1, w2, alphas, batches, *, bn: str = "auto",
                   stats1: dict | None = None, stats2: dict | None = None, bn_batches=None,
                   precision: str = "fp32", method: str = "auto",
                   points_per_chunk: int | None = None, channels_last: bool = False,
                   compile: bool = False, progress: bool = False) -> pd.DataFrame:
    """Loss and accuracy along ``w(a) = (1 - a) w1 + a w2`` (``a`` may leave [0, 1]).

    ``w1``, ``w2``: weight vectors (lists in ``model.parameters()`` order, or flat). ``bn``
    (see ``batchnorm``): "auto" = "interpolate" for nets with BN running statistics, else
    "fixed"; "interpolate" needs the two checkpoints' statistics ``stats1``, ``stats2``
    (`batchnorm.bn_statistics`); "recompute" re-estimates them on ``bn_batches`` at every
    point; "fixed" uses the model's own at every point. The model is left as it was found.
    Returns a DataFrame with columns alpha, loss, acc, bn (the mode used) and bn_var_clamped
    (variances clamped at 0 at that point; only extrapolation beyond [0, 1] can need it).
    """
    bn = resolve_bn(model, bn)
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    D = torch.stack([to_flat(w1, model), to_flat(w2, model)])
    coords = np.stack([1.0 - alphas, alphas], axis=1)
    bn_directions = None
    if bn == "interpolate" and bn_layers(model):
        if stats1 is None or stats2 is None:
            raise ConfigError("bn='interpolate' needs the BN statistics of both checkpoints "
                              "(stats1, stats2: batchnorm.bn_statistics of each)")
        bn_directions = torch.stack([flat_statistics(model, stats1),
                                     flat_statistics(model, stats2)])
    loss, acc = np.empty(len(alphas)), np.empty(len(alphas))
    clamped = np.zeros(len(alphas), dtype=np.int64)
    for start, l, a, info in evaluate_points(
            model, None, D, coords, batches, bn=bn, bn_batches=bn_batches,
            bn_directions=bn_directions, precision=precision, method=method,
            points_per_chunk=points_per_chunk, channels_last=channels_last, compile=compile,
            progress=progress, desc="interpolation"):
        loss[start:start + len(l)], acc[start:start + len(a)] = l, a
        clamped[start:start + len(l)] = info.get("bn_var_clamped", 0)
    return pd.DataFrame({"alpha": alphas, "loss": loss, "acc": acc, "bn": bn,
                         "bn_var_clamped": clamped})


def surface_2d(model: nn.Module, center, d1, d2, xs, ys, batches, *, bn: str = "fixed",
               bn_batches=None, precision: str = "fp32", method: str = "auto",
               points_per_chunk: int | None = None, channels_last: bool = False,
               compile: bool = False, on_row: RowCallback | None = None, start_row: int = 0,
               progress: bool = False) -> dict:
    """Mean cross-entropy and accuracy at ``center + x d1 + y d2`` for x in xs, y in ys.

    ``center``, ``d1``, ``d2``: weight vectors (lists or flat). Row ``j`` of the result is
    ``y = ys[j]``, column ``i`` is ``x = xs[i]``. ``on_row(j, loss_row, acc_row)`` is called as
    each row is finished (e.g. to append it to the store); ``start_row`` resumes an interrupted
    grid: rows before it are not evaluated and are NaN in the result. ``bn``: see the module
    docstring. ``points_per_chunk``: points per vmap call (default: the largest power of two
    whose estimated memory fits in half the free memory and in ``AUTO_CHUNK_BYTES``); one that
    does not fit in free memory -> ConfigError before anything is evaluated.

    Returns ``dict(loss (ny, nx), acc (ny, nx), xs, ys, bn, precision, method,
    points_per_chunk)``.
    """
    check_choice("bn", bn, SURFACE_BN_MODES)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    nx, ny = len(xs), len(ys)
    if not 0 <= int(start_row) <= ny:
        raise ConfigError(f"start_row={start_row!r} must lie in [0, {ny}] for {ny} rows")
    start_row = int(start_row)
    loss = np.full((ny, nx), np.nan)
    acc = np.full((ny, nx), np.nan)
    gx, gy = np.meshgrid(xs, ys[start_row:])
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    result = dict(xs=xs, ys=ys, bn=bn, precision=precision, method=None, points_per_chunk=None)
    if len(coords) == 0:
        return {**result, "loss": loss, "acc": acc}
    D = torch.stack([to_flat(d1, model), to_flat(d2, model)])
    base = to_flat(center, model)
    offset, done_rows = start_row * nx, start_row
    for start, l, a, info in evaluate_points(
            model, base, D, coords, batches, bn=bn, bn_batches=bn_batches, precision=precision,
            method=method, points_per_chunk=points_per_chunk, channels_last=channels_last,
            compile=compile, progress=progress, desc="surface"):
        idx = offset + start + np.arange(len(l))
        loss.flat[idx], acc.flat[idx] = l, a
        result.update(method=info["method"], points_per_chunk=info["points_per_chunk"])
        filled = idx[-1] + 1
        while done_rows < ny and filled >= (done_rows + 1) * nx:
            if on_row is not None:
                on_row(done_rows, loss[done_rows].copy(), acc[done_rows].copy())
            done_rows += 1
    return {**result, "loss": loss, "acc": acc}


def surface_2d_loop(model: nn.Module, center, d1, d2, xs, ys, batches, *, bn: str = "fixed",
                    bn_batches=None, progress: bool = False) -> dict:
    """Reference for ``surface_2d``: write each point's weights into the model, evaluate it
    batch by batch, go to the next point. fp32, no batching of points, no memory planning.

    Returns ``dict(loss (ny, nx), acc (ny, nx), xs, ys, bn)``.
    """
    check_choice("bn", bn, SURFACE_BN_MODES)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    device = next(model.parameters()).device
    c, a, b = (unflatten(to_flat(v, model), model) for v in (center, d1, d2))
    params = list(model.parameters())
    loss = np.empty((len(ys), len(xs)))
    acc = np.empty((len(ys), len(xs)))
    with preserved(model), torch.no_grad():
        model.eval()
        bar = tqdm(total=loss.size, desc="surface (loop)", disable=not progress)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                for p, pc, pa, pb in zip(params, c, a, b):
                    p.copy_(pc + float(x) * pa + float(y) * pb)
                if bn == "recompute":
                    for m in bn_layers(model):
                        m.reset_running_stats()
                        m.momentum = None
                        m.train()
                    for xb, _ in (bn_batches if bn_batches is not None else batches):
                        model(xb.to(device))
                    model.eval()
                total, hits, count = 0.0, 0, 0
                for xb, yb in batches:
                    xb, yb = xb.to(device), yb.to(device)
                    out = model(xb)
                    total += F.cross_entropy(out, yb, reduction="sum")
                    hits += (out.argmax(1) == yb).sum()
                    count += len(yb)
                loss[j, i] = float(total) / count
                acc[j, i] = float(hits) / count
                bar.update()
        bar.close()
    return dict(loss=loss, acc=acc, xs=xs, ys=ys, bn=bn)
