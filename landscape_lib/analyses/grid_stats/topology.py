"""Persistent homology of a loss surface's sublevel sets (gudhi cubical complexes).

The grid values are the filtration values of the top-dimensional cells (pixels) of a cubical
complex, so the sublevel set {z <= t} grows pixel by pixel as t rises; pixels touching at an edge
or a corner are connected (8-connectivity). Dimension 0 features are basins: each is born at a
local minimum and dies when it merges with a deeper basin at a saddle, so its lifetime is the
basin's depth below the lowest pass to a deeper one. Dimension 1 features are loops (rings of
low loss around a bump).

Essential classes. A grid's sublevel filtration has exactly one class that never dies: the
deepest basin (dimension 0, born at min(Z)); the grid is contractible, so dimension 1 has none.
Rows keep a finite ``death = max(Z)`` for it (plots and the lifetime column stay finite) and
``essential = True``; `diagram_points` turns such a row back into (birth, +inf) before any
distance is computed.

Bottleneck distance, the standard one (Cohen-Steiner, Edelsbrunner and Harer 2007;
Edelsbrunner and Harer, "Computational Topology", VIII.2): essential points are matched only
with essential points of the same dimension, at cost |birth - birth'|; finite points with
finite points or with the diagonal; +inf when the numbers of essential points differ. Computed
by ``gudhi.hera.bottleneck_distance`` (Hera, Kerber, Morozov and Nigmetov 2017; exact with
``delta = 0``), not ``gudhi.bottleneck_distance``: in gudhi 3.13 the latter is wrong on some
diagrams and not symmetric (fixed upstream by GUDHI/gudhi-devel PR #1367, after 3.13; the
counterexample is in tests/test_topology.py). Hera refuses points on the diagonal
(birth == death); they never change the distance and are dropped first.
"""
from __future__ import annotations

import gudhi
import gudhi.hera
import numpy as np
import pandas as pd

from ...errors import ConfigError

COLUMNS = ["dim", "birth", "death", "lifetime", "essential"]


def sublevel_persistence(Z, min_persistence: float = 0.0) -> pd.DataFrame:
    """Pairs (dim, birth, death, lifetime, essential) of dims 0 and 1, longest-lived first.

    Pairs with lifetime <= min_persistence are left out (0 drops only zero-length pairs from
    ties). Essential classes never die: their stored death is max(Z), ``essential`` True.
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
        pairs = np.asarray(complex_.persistence_intervals_in_dimension(dim), float).reshape(-1, 2)
        essential = np.isinf(pairs[:, 1])
        death = np.where(essential, Z.max(), pairs[:, 1])
        frames.append(pd.DataFrame({"dim": dim, "birth": pairs[:, 0], "death": death,
                                    "lifetime": death - pairs[:, 0], "essential": essential}))
    out = pd.concat(frames, ignore_index=True)
    out["dim"] = out["dim"].astype(int)
    return out.sort_values(["dim", "lifetime"], ascending=[True, False], ignore_index=True)


def diagram_points(diagram, dim: int) -> np.ndarray:
    """(m, 2) birth/death array of one dimension; essential classes get death +inf.

    ``diagram``: a `sublevel_persistence` frame (its ``essential`` column is honoured; a frame
    without it is refused: its essential class cannot be told from a finite one) or an (m, 2)
    array, where +inf deaths already mark essential classes.
    """
    if isinstance(diagram, pd.DataFrame):
        if "essential" not in diagram:
            raise ConfigError("persistence rows without an 'essential' column: essential "
                              "classes cannot be told from finite ones (recompute them)")
        part = diagram.loc[diagram["dim"] == dim]
        points = part[["birth", "death"]].to_numpy(float, copy=True)
        points[part["essential"].to_numpy(bool), 1] = np.inf
    else:
        points = np.asarray(diagram, dtype=float)
    if points.size == 0:
        return np.empty((0, 2))
    if points.ndim != 2 or points.shape[1] != 2:
        raise ConfigError(f"a persistence diagram must be (m, 2) birth/death pairs, "
                          f"got shape {points.shape}")
    return points


def bottleneck_distance(diag_a, diag_b, dim: int = 0, delta: float = 0.0) -> float:
    """Standard bottleneck distance between the dimension-``dim`` parts of two diagrams
    (`sublevel_persistence` frames or (m, 2) arrays): essential classes are matched only with
    each other, by birth (+inf if their numbers differ). ``delta``: Hera's relative error
    (0: exact)."""
    a, b = (p[p[:, 1] != p[:, 0]] for p in (diagram_points(diag_a, dim),
                                           diagram_points(diag_b, dim)))
    return float(gudhi.hera.bottleneck_distance(a, b, delta))
