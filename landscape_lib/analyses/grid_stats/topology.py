"""Persistent homology of a loss surface's sublevel sets (gudhi cubical complexes).

The grid values are the filtration values of the top-dimensional cells (pixels) of a cubical
complex, so the sublevel set {z <= t} grows pixel by pixel as t rises; pixels touching at an edge
or a corner are connected (8-connectivity). Dimension 0 features are basins: each is born at a
local minimum and dies when it merges with a deeper basin at a saddle, so its lifetime is the
basin's depth below the lowest pass to a deeper one. Dimension 1 features are loops (rings of
low loss around a bump).

The deepest basin never dies (its death is +inf in gudhi); we replace that infinite death by
max(Z), so its lifetime is the surface's full range max(Z) - min(Z) and every row is finite.
"""
from __future__ import annotations

import gudhi
import numpy as np
import pandas as pd

from ...errors import ConfigError


def sublevel_persistence(Z, min_persistence: float = 0.0) -> pd.DataFrame:
    """Persistence pairs (dim, birth, death, lifetime) of dims 0 and 1, longest-lived first.

    Pairs with lifetime <= min_persistence are left out (0 drops only zero-length pairs from ties).
    """
    Z = np.asarray(Z, dtype=float)
    if Z.ndim != 2 or min(Z.shape) < 1:
        raise ConfigError(f"a surface grid must be a non-empty 2-D array, got shape {Z.shape}")
    if not np.isfinite(Z).all():
        raise ConfigError("surface grid has non-finite values; persistence needs a finite grid")
    complex_ = gudhi.CubicalComplex(top_dimensional_cells=Z)
    complex_.compute_persistence(min_persistence=min_persistence)
    frames = []
    for dim in (0, 1):
        pairs = np.asarray(complex_.persistence_intervals_in_dimension(dim), dtype=float)
        pairs = pairs.reshape(-1, 2)
        death = np.where(np.isinf(pairs[:, 1]), Z.max(), pairs[:, 1])
        frames.append(pd.DataFrame({"dim": dim, "birth": pairs[:, 0], "death": death,
                                    "lifetime": death - pairs[:, 0]}))
    out = pd.concat(frames, ignore_index=True)
    out["dim"] = out["dim"].astype(int)
    return out.sort_values(["dim", "lifetime"], ascending=[True, False], ignore_index=True)


def _points(diagram, dim: int) -> np.ndarray:
    """(m, 2) birth/death array from a `sublevel_persistence` frame or an array."""
    if isinstance(diagram, pd.DataFrame):
        diagram = diagram.loc[diagram["dim"] == dim, ["birth", "death"]].to_numpy(float)
    points = np.asarray(diagram, dtype=float)
    if points.size == 0:
        return np.empty((0, 2))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ConfigError(f"a persistence diagram must be (m, 2) birth/death pairs, "
                          f"got shape {points.shape}")
    return points


def bottleneck_distance(diag_a, diag_b, dim: int = 0, e: float | None = None) -> float:
    """Bottleneck distance between the dimension-`dim` parts of two persistence diagrams.

    Diagrams are `sublevel_persistence` frames or (m, 2) birth/death arrays. `e` is gudhi's
    additive approximation (None: as exact as double precision allows).
    """
    return float(gudhi.bottleneck_distance(_points(diag_a, dim), _points(diag_b, dim), e))
