"""Scalar summaries of a loss-surface grid around its centre: centre loss, curvature along each
axis and basin width (NumPy only)."""
from __future__ import annotations

import numpy as np

from ...errors import ConfigError


def _second_derivative(coord: np.ndarray, values: np.ndarray, i: int) -> float:
    """Three-point second difference at ``i`` (exact for quadratics, any spacing)."""
    if i <= 0 or i >= len(coord) - 1:
        return float("nan")
    h1, h2 = coord[i] - coord[i - 1], coord[i + 1] - coord[i]
    return float(2 * (h2 * values[i - 1] - (h1 + h2) * values[i] + h1 * values[i + 1])
                 / (h1 * h2 * (h1 + h2)))


def _reach(coord: np.ndarray, values: np.ndarray, i0: int, step: int, level: float
           ) -> tuple[float, bool]:
    """Distance from ``coord[i0]`` walking by ``step`` until ``values`` exceed ``level``.

    The crossing is interpolated linearly between the last point inside and the first outside
    (a non-finite loss counts as outside, crossing at that point). Returns (distance, censored):
    censored when the loss never exceeds ``level`` before the grid's edge.
    """
    i = i0
    while 0 <= i + step < len(coord):
        nxt = i + step
        if not np.isfinite(values[nxt]) or values[nxt] > level:
            if not np.isfinite(values[nxt]):
                return abs(coord[nxt] - coord[i0]), False
            t = (level - values[i]) / (values[nxt] - values[i])
            cross = coord[i] + t * (coord[nxt] - coord[i])
            return abs(cross - coord[i0]), False
        i = nxt
    return abs(coord[i] - coord[i0]), True


def surface_summary(xs, ys, loss, *, threshold: float = 0.1) -> dict:
    """Scalar summaries of a surface ``loss`` (ny, nx) around its centre.

    The centre is the grid point nearest to (0, 0).
    - ``center_loss``: the loss there.
    - ``curvature_x``/``curvature_y``: three-point second differences at the centre along each
      axis (NaN if the centre is on the grid's edge).
    - ``basin_width``: mean over the four half-axes (+x, -x, +y, -y) of the distance from the
      centre at which the loss first exceeds ``center_loss + threshold`` (linear interpolation
      between grid points). ``basin_width_censored`` counts half-axes where it never does (the
      distance to the edge is used, so the width is a lower bound).

    ``threshold`` is an absolute rise of the loss (nats of cross-entropy; default 0.1). A rise
    relative to the surface's own range would cancel the curvature (for ``a x^2`` the width
    would be the same for every ``a``), and one relative to the centre loss would mix the loss
    level into the width, so an absolute rise keeps widths comparable between runs.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if loss.shape != (len(ys), len(xs)):
        raise ConfigError(f"loss must have shape (len(ys), len(xs)) = {(len(ys), len(xs))}, "
                          f"got {loss.shape}")
    i0, j0 = int(np.argmin(np.abs(xs))), int(np.argmin(np.abs(ys)))
    center = float(loss[j0, i0])
    level = center + threshold
    row, col = loss[j0, :], loss[:, i0]
    reaches = [_reach(xs, row, i0, +1, level), _reach(xs, row, i0, -1, level),
               _reach(ys, col, j0, +1, level), _reach(ys, col, j0, -1, level)]
    return dict(center_loss=center,
                curvature_x=_second_derivative(xs, row, i0),
                curvature_y=_second_derivative(ys, col, j0),
                basin_width=float(np.mean([d for d, _ in reaches])),
                basin_width_censored=int(sum(c for _, c in reaches)),
                threshold=float(threshold))
