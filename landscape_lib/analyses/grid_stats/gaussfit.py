"""Fit an axis-aligned 2-D Gaussian to a loss-surface grid, constrained to the grid.

    z = A exp(-((x - x0)^2 / (2 s1^2) + (y - y0)^2 / (2 s2^2))) + offset

A loss basin has A < 0 (a well below the offset), a bump A > 0. Grids follow the surface
convention of `surface.grids.surface_2d`: Z has shape (len(ys), len(xs)) and
Z[j, i] = z(xs[i], ys[j]) (row = y, column = x).

`gaussian` is the one place this formula is written: the fit, the optimizer paths on a fitted
surface (torch tensors) and the dashboard's drawing all evaluate it. NumPy/SciPy only: no torch.

Constraints (``scipy.optimize.least_squares``, trust-region reflective, analytic Jacobian):
- centre inside the grid: xs.min() <= x0 <= xs.max(), ys.min() <= y0 <= ys.max();
- widths between one grid step and twice the grid's extent (a narrower Gaussian falls between
  grid points; a wider one is a paraboloid on the grid and its amplitude is not identifiable);
- sign of A fixed before fitting from the centre versus the border: the median of the central
  3 x 3 block (the trained point of a loss surface sits at the grid's centre) below the border's
  median -> a basin, A <= 0; above -> a bump, A >= 0.
Two starts (the most extreme grid point of that sign, and the grid centre); the lower cost wins.
Non-finite grid points (a diverged region) are left out of the fit.

A fit fails -- ``status = "failed"`` with a ``reason`` and no parameters (None, stored as NULL),
never NaN -- when: fewer than 7 finite values; the centre and the border are at the same height
(no sign); the solver does not converge; the amplitude collapses to its bound 0 (nothing of the
expected sign to fit); or the centre ends on the grid's edge (the basin's centre lies outside
the grid: the Gaussian would only describe a slope). A successful fit whose width sits at its
upper bound is kept (``status = "ok"``) and says so in ``reason`` (a bowl wider than the grid:
the curvature is fitted, |A| is only a lower bound). Every result carries the box it was
constrained to (x_min, x_max, y_min, y_max): optimizer paths start inside it.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import least_squares

from ...errors import ConfigError

PARAMS = ("A", "x0", "y0", "s1", "s2", "offset")
FIT_STATUSES = ("ok", "failed")  # gauss_fit.status
FIT_OK, FIT_FAILED = FIT_STATUSES
MIN_POINTS = len(PARAMS) + 1
EDGE_TOL = 1e-6  # relative to the grid's extent: a centre this close to the edge is "on" it


def gaussian(x, y, A, x0, y0, s1, s2, offset):
    """z at (x, y): NumPy arrays or scalars, or any array type with an ``.exp()`` method
    (torch tensors, so that gradients flow through it)."""
    exponent = -((x - x0) ** 2 / (2 * s1 ** 2) + (y - y0) ** 2 / (2 * s2 ** 2))
    return A * (exponent.exp() if hasattr(exponent, "exp") else np.exp(exponent)) + offset


def _grid(xs, ys, Z):
    xs, ys, Z = (np.asarray(a, dtype=float) for a in (xs, ys, Z))
    if xs.ndim != 1 or ys.ndim != 1 or Z.shape != (ys.size, xs.size):
        raise ConfigError(f"Z must have shape (len(ys), len(xs)) = ({ys.size}, {xs.size}) with "
                          f"Z[j, i] at (xs[i], ys[j]); got {Z.shape}")
    if xs.size < 3 or ys.size < 3:
        raise ConfigError("a Gaussian fit needs at least 3 grid points per side")
    return xs, ys, Z


def _step(v: np.ndarray) -> float:
    d = np.diff(np.sort(v))
    return float(d[d > 0].min())


def _failed(reason: str, **extra) -> dict:
    return {**{k: None for k in PARAMS}, "r2": None, "status": FIT_FAILED, "reason": reason,
            **extra}


def _finite_median(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _sign(Z: np.ndarray) -> tuple[float, float, float]:
    """(sign of A, centre height, border height) from the central 3 x 3 block and the border."""
    ny, nx = Z.shape
    cj, ci = ny // 2, nx // 2
    centre = _finite_median(Z[max(cj - 1, 0):cj + 2, max(ci - 1, 0):ci + 2])
    border = _finite_median(np.concatenate([Z[0], Z[-1], Z[1:-1, 0], Z[1:-1, -1]]))
    return float(np.sign(centre - border)), float(centre), float(border)


def _widths(x, y, w, x0, y0, lo, hi):
    if w.sum() <= 0:
        return (lo[3] + hi[3]) / 4, (lo[4] + hi[4]) / 4
    s1 = np.sqrt(np.sum(w * (x - x0) ** 2) / w.sum())
    s2 = np.sqrt(np.sum(w * (y - y0) ** 2) / w.sum())
    return s1, s2


def fit_gaussian(xs, ys, Z, *, max_nfev: int = 2000) -> dict:
    """Constrained least-squares fit; returns the parameters, r2, status, reason and the box.

    r2 = 1 - SS_res / SS_tot over the finite grid values. See the module doc for the rules.
    """
    xs, ys, Z = _grid(xs, ys, Z)
    box = {"x_min": float(xs.min()), "x_max": float(xs.max()),
           "y_min": float(ys.min()), "y_max": float(ys.max())}
    X, Y = np.meshgrid(xs, ys)
    keep = np.isfinite(Z)
    if keep.sum() < MIN_POINTS:
        return _failed(f"only {int(keep.sum())} finite grid values; a fit needs {MIN_POINTS}",
                       **box)
    x, y, z = X[keep], Y[keep], Z[keep]
    sign, centre, border = _sign(Z)
    if not (np.isfinite(centre) and np.isfinite(border)):
        return _failed("no finite values at the grid's centre or border", **box)
    scale = float(np.ptp(z))
    if sign == 0 or abs(centre - border) <= 1e-12 * max(scale, 1e-300):
        return _failed("flat: the grid's centre and border are at the same height", **box)

    span_x, span_y = box["x_max"] - box["x_min"], box["y_max"] - box["y_min"]
    lo = np.array([-np.inf if sign < 0 else 0.0, box["x_min"], box["y_min"],
                   _step(xs), _step(ys), -np.inf])
    hi = np.array([0.0 if sign < 0 else np.inf, box["x_max"], box["y_max"],
                   2 * span_x, 2 * span_y, np.inf])

    def residual(p):
        return gaussian(x, y, *p) - z

    def jacobian(p):
        A, x0, y0, s1, s2, _ = p
        u, v = (x - x0) / s1, (y - y0) / s2
        e = np.exp(-(u ** 2 + v ** 2) / 2)
        return np.stack([e, A * e * u / s1, A * e * v / s2, A * e * u ** 2 / s1,
                         A * e * v ** 2 / s2, np.ones_like(e)], axis=1)

    k = int(np.argmax(sign * z))
    weight = np.clip(sign * (z - border), 0.0, None)
    best = None
    for cx, cy in ((x[k], y[k]), ((box["x_min"] + box["x_max"]) / 2,
                                  (box["y_min"] + box["y_max"]) / 2)):
        s1, s2 = _widths(x, y, weight, cx, cy, lo, hi)
        p0 = np.array([z[k] - border, cx, cy, s1, s2, border])
        # strictly inside the box (trf needs a feasible start)
        margin = 1e-3 * np.where(np.isfinite(hi - lo), hi - lo, 1.0)
        p0 = np.clip(p0, lo + margin, hi - margin)
        res = least_squares(residual, p0, jac=jacobian, bounds=(lo, hi), method="trf",
                            x_scale="jac", max_nfev=max_nfev)
        if res.status > 0 and np.all(np.isfinite(res.x)) and (best is None
                                                              or res.cost < best.cost):
            best = res
    if best is None:
        return _failed(f"the least-squares solver did not converge ({res.message})", **box)

    p = dict(zip(PARAMS, map(float, best.x)))
    if abs(p["A"]) <= 1e-9 * max(scale, 1e-300):
        kind = "basin" if sign < 0 else "bump"
        return _failed(f"the amplitude went to 0: no {kind} to fit (centre "
                       f"{centre:.4g} vs border {border:.4g})", **box)
    for name, lo_, hi_ in (("x0", box["x_min"], box["x_max"]),
                           ("y0", box["y_min"], box["y_max"])):
        tol = EDGE_TOL * (hi_ - lo_)
        if p[name] <= lo_ + tol or p[name] >= hi_ - tol:
            return _failed(f"the centre is on the grid's edge ({name} = {p[name]:.4g}, grid "
                           f"[{lo_:.4g}, {hi_:.4g}]): the {'basin' if sign < 0 else 'bump'}'s "
                           "centre lies outside the grid", **box)
    notes = [f"{s} at its upper bound {hi[i]:.4g} (wider than the grid: amplitude not "
             "identifiable)" for i, s in ((3, "s1"), (4, "s2")) if p[s] >= hi[i] * (1 - 1e-6)]
    total = float(np.sum((z - z.mean()) ** 2))
    r2 = float(1.0 - 2 * best.cost / total) if total > 0 else None
    return {**p, "r2": r2, "status": FIT_OK, "reason": "; ".join(notes) or None, **box}
