"""Fit an axis-aligned 2-D Gaussian to a loss-surface grid.

    z = A exp(-((x - x0)^2 / (2 s1^2) + (y - y0)^2 / (2 s2^2))) + offset

A loss basin has A < 0 (a well below the offset), a bump A > 0; the initial guess reads the sign
from the grid, so both fit. Grids follow the surface convention of `surface.grids.surface_2d`:
Z has shape (len(ys), len(xs)) and Z[j, i] = z(xs[i], ys[j]) (row = y, column = x).

`gaussian` is the one place this formula is written: the fit, the optimizer paths on a fitted
surface (torch tensors) and the dashboard's drawing all evaluate it. NumPy only: no torch here.
"""
from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from ...errors import ConfigError

PARAMS = ("A", "x0", "y0", "s1", "s2", "offset")


def gaussian(x, y, A, x0, y0, s1, s2, offset):
    """z at (x, y): NumPy arrays or scalars, or any array type with an ``.exp()`` method
    (torch tensors, so that gradients flow through it)."""
    exponent = -((x - x0) ** 2 / (2 * s1 ** 2) + (y - y0) ** 2 / (2 * s2 ** 2))
    return A * (exponent.exp() if hasattr(exponent, "exp") else np.exp(exponent)) + offset


def _gaussian_xy(xy, *params):
    """`gaussian` in SciPy's curve_fit form: xy = (x, y)."""
    return gaussian(xy[0], xy[1], *params)


def _grid(xs, ys, Z):
    xs, ys, Z = (np.asarray(a, dtype=float) for a in (xs, ys, Z))
    if xs.ndim != 1 or ys.ndim != 1 or Z.shape != (ys.size, xs.size):
        raise ConfigError(f"Z must have shape (len(ys), len(xs)) = ({ys.size}, {xs.size}) with "
                          f"Z[j, i] at (xs[i], ys[j]); got {Z.shape}")
    X, Y = np.meshgrid(xs, ys)  # (ny, nx), like Z
    keep = np.isfinite(Z)  # diverged grid points carry no shape information
    if keep.sum() < len(PARAMS) + 1:
        raise ConfigError(f"only {keep.sum()} finite grid values; a Gaussian fit needs at least "
                          f"{len(PARAMS) + 1}")
    return X[keep], Y[keep], Z[keep], Z


def _initial_guess(x, y, z, Z):
    """Offset from the grid's border, amplitude and centre from its most extreme point."""
    border = np.concatenate([Z[0], Z[-1], Z[:, 0], Z[:, -1]])
    border = border[np.isfinite(border)]
    offset = float(np.median(border if border.size else z))
    deviation = z - offset
    k = int(np.argmax(np.abs(deviation)))
    A, x0, y0 = float(deviation[k]), float(x[k]), float(y[k])
    # Widths from second moments of the part of the surface that deviates the same way as A.
    weight = np.clip(deviation * np.sign(A or 1.0), 0.0, None)
    span_x, span_y = np.ptp(x) or 1.0, np.ptp(y) or 1.0
    if weight.sum() > 0:
        s1 = np.sqrt(np.sum(weight * (x - x0) ** 2) / weight.sum())
        s2 = np.sqrt(np.sum(weight * (y - y0) ** 2) / weight.sum())
    else:
        s1, s2 = span_x / 4, span_y / 4
    s1 = float(np.clip(s1, span_x / 100, span_x))
    s2 = float(np.clip(s2, span_y / 100, span_y))
    return [A, x0, y0, s1, s2, offset]


def fit_gaussian(xs, ys, Z, maxfev: int = 20000) -> dict:
    """Least-squares Gaussian fit of grid Z; returns A, x0, y0, s1, s2, offset and r2.

    r2 = 1 - SS_res / SS_tot over the finite grid values. When the fit fails to converge every
    value is NaN (a result to show, not an error).
    """
    x, y, z, Z = _grid(xs, ys, Z)
    p0 = _initial_guess(x, y, z, Z)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", OptimizeWarning)
            params, _ = curve_fit(_gaussian_xy, (x, y), z, p0=p0, maxfev=maxfev)
    except (RuntimeError, ValueError):
        return {name: float("nan") for name in (*PARAMS, "r2")}
    params[3:5] = np.abs(params[3:5])  # the widths enter squared; report them positive
    residual = z - gaussian(x, y, *params)
    total = np.sum((z - z.mean()) ** 2)
    r2 = 1.0 - np.sum(residual ** 2) / total if total > 0 else float("nan")
    return {**dict(zip(PARAMS, map(float, params))), "r2": float(r2)}
