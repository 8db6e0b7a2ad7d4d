"""Bottleneck distances that treat essential classes the standard way (issue 10 item 7,
acceptance 5b), checked against a textbook matching independent of gudhi."""
import numpy as np
import pytest
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import maximum_bipartite_matching

from landscape_lib.analyses.grid_stats.topology import (bottleneck_distance, diagram_points,
                                                       sublevel_persistence)
from landscape_lib.errors import ConfigError


def reference_bottleneck(A, B) -> float:
    """Textbook bottleneck distance by thresholded perfect matchings (independent of gudhi):
    each diagram is completed with the diagonal projections of the other's points; essential
    points (death +inf) may only be matched with essential points, at cost |birth - birth'|."""
    A, B = np.asarray(A, float).reshape(-1, 2), np.asarray(B, float).reshape(-1, 2)
    m, n = len(A), len(B)
    size = m + n
    cost = np.full((size, size), np.inf)
    for i, a in enumerate(A):
        for j, b in enumerate(B):
            ea, eb = np.isinf(a[1]), np.isinf(b[1])
            if ea and eb:
                cost[i, j] = abs(a[0] - b[0])
            elif not ea and not eb:
                cost[i, j] = max(abs(a[0] - b[0]), abs(a[1] - b[1]))
        if not np.isinf(a[1]):
            cost[i, n + i] = (a[1] - a[0]) / 2          # a to the diagonal
    for j, b in enumerate(B):
        if not np.isinf(b[1]):
            cost[m + j, j] = (b[1] - b[0]) / 2          # diagonal to b
    cost[m:, n:] = 0.0                                  # diagonal to diagonal
    for t in np.unique(cost[np.isfinite(cost)]):
        graph = csr_matrix((cost <= t).astype(np.int8))
        if (maximum_bipartite_matching(graph, perm_type="column") >= 0).all():
            return float(t)
    return float("inf")


def bowl(n=21):
    xs = np.linspace(-1, 1, n)
    X, Y = np.meshgrid(xs, xs)
    return X ** 2 + 2 * Y ** 2


def test_a_raised_edge_moves_the_bowls_by_less_than_the_edge():
    a = bowl()
    b = a.copy()
    b[-1, :] += 5.0  # one grid edge raised by 5
    da, db = sublevel_persistence(a), sublevel_persistence(b)
    d = bottleneck_distance(da, db, dim=0)
    assert d < 5.0
    assert d == pytest.approx(reference_bottleneck(diagram_points(da, 0),
                                                   diagram_points(db, 0)), abs=1e-12)
    assert d == pytest.approx(0.0, abs=1e-12)  # same basins, same essential birth


def test_two_basins_against_one_and_a_lowered_minimum():
    xs = np.linspace(-2, 2, 41)
    X, Y = np.meshgrid(xs, xs)
    one = -np.exp(-(X ** 2 + Y ** 2) / 0.5)
    two = one - 0.3 * np.exp(-((X - 1.2) ** 2 + (Y - 1.2) ** 2) / 0.1)
    d = bottleneck_distance(sublevel_persistence(one), sublevel_persistence(two))
    ref = reference_bottleneck(diagram_points(sublevel_persistence(one), 0),
                               diagram_points(sublevel_persistence(two), 0))
    assert d == pytest.approx(ref, abs=1e-9)
    # the extra basin has depth ~0.3 and is matched to the diagonal: half its lifetime
    assert 0.1 < d < 0.2
    deeper = one - 1.0  # same shape shifted down: the essential births differ by 1
    assert bottleneck_distance(sublevel_persistence(one), sublevel_persistence(deeper)) \
        == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_the_textbook_matching_and_is_symmetric(seed):
    rng = np.random.default_rng(seed)

    def diagram(k_finite, k_ess):
        b = rng.uniform(0, 1, k_finite)
        finite = np.stack([b, b + rng.exponential(0.3, k_finite)], 1)
        ess = np.stack([rng.uniform(0, 1, k_ess), np.full(k_ess, np.inf)], 1)
        return np.concatenate([finite, ess])

    A, B = diagram(rng.integers(0, 6), 1), diagram(rng.integers(0, 6), 1)
    ref = reference_bottleneck(A, B)
    assert bottleneck_distance(A, B) == pytest.approx(ref, abs=1e-9)
    assert bottleneck_distance(B, A) == pytest.approx(ref, abs=1e-9)
    C = diagram(3, 2)
    assert bottleneck_distance(A, C) == np.inf == reference_bottleneck(A, C)


def test_rows_mark_the_essential_class_and_keep_a_finite_death_for_plots():
    Z = bowl()
    d = sublevel_persistence(Z)
    ess = d[d.essential]
    assert len(ess) == 1 and ess.dim.iloc[0] == 0
    assert ess.birth.iloc[0] == Z.min() and ess.death.iloc[0] == Z.max()
    assert np.isfinite(d[["birth", "death", "lifetime"]].to_numpy()).all()
    assert np.isinf(diagram_points(d, 0)[:, 1]).sum() == 1


# Two diagrams on which gudhi 3.13's gudhi.bottleneck_distance is wrong and asymmetric.
GUDHI_COUNTEREXAMPLE = (
    np.array([[0.80794079, 0.93811836], [0.51532556, 0.70797491], [0.28580138, 0.32036745],
              [0.0539307, 0.07127759]]),
    np.array([[0.65236911, 0.72068014], [0.2345102, 0.88915155], [0.43494755, 0.86453595],
              [0.97418619, 1.57824558]]))


def test_the_gudhi_counterexample_is_right_here():
    A, B = GUDHI_COUNTEREXAMPLE
    ref = reference_bottleneck(A, B)
    assert ref == pytest.approx(0.302029695, abs=1e-9)
    assert bottleneck_distance(A, B) == pytest.approx(ref, abs=1e-12)
    assert bottleneck_distance(B, A) == pytest.approx(ref, abs=1e-12)


def test_points_on_the_diagonal_are_ignored():
    A = np.array([[0.0, np.inf], [0.2, 0.2], [0.3, 0.5]])
    B = np.array([[0.0, np.inf], [0.3, 0.5]])
    assert bottleneck_distance(A, B) == 0.0


def test_frames_without_the_essential_column_are_refused():
    old = sublevel_persistence(bowl()).drop(columns="essential")
    with pytest.raises(ConfigError, match="essential"):
        bottleneck_distance(old, old)
