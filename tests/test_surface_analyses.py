"""Analyses of surface grids: wavelets, sublevel persistence, Gaussian fit, optimizer paths."""
from __future__ import annotations

import heapq

import numpy as np
import pytest
import pywt
import torch

from landscape_lib.analyses.grid_stats.gaussfit import fit_gaussian, gaussian
from landscape_lib.analyses.grid_stats.topology import bottleneck_distance, sublevel_persistence
from landscape_lib.analyses.grid_stats.wavelets import (coefficients_to_pywt,
                                                        inverse_unbalanced_haar2,
                                                        wavelet_decomposition, wavelet_energy)
from landscape_lib.analyses.paths import (SURFACES, compare_optimizers, gaussian_surface,
                                          optimizer_path, surface_grid)
from landscape_lib.errors import ConfigError, UnknownNameError


def grid(lo=-4.0, hi=4.0, n=81):
    xs = np.linspace(lo, hi, n)
    return xs, np.meshgrid(xs, xs)  # Z[j, i] at (xs[i], ys[j])


def well(X, Y, x0, y0, depth, s=0.5):
    return -depth * np.exp(-((X - x0) ** 2 + (Y - y0) ** 2) / (2 * s ** 2))


# --- wavelets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("wavelet, shape, mode", [("haar", (32, 32), "unbalanced-haar"),
                                                   ("haar", (21, 19), "unbalanced-haar"),
                                                   ("db2", (41, 37), "zero"),
                                                   ("db2", (32, 24), "periodization")])
def test_wavelet_decomposition_reconstructs_the_grid(wavelet, shape, mode):
    """The stored coefficients rebuild the grid exactly with the mode they report."""
    Z = np.random.default_rng(0).normal(size=shape)
    dec = wavelet_decomposition(Z, wavelet, levels=2)
    assert set(dec["mode"]) == {mode}
    coeffs = coefficients_to_pywt(dec)
    back = inverse_unbalanced_haar2(coeffs, shape) if mode == "unbalanced-haar" \
        else pywt.waverec2(coeffs, wavelet, mode=mode)[:shape[0], :shape[1]]
    np.testing.assert_allclose(back, Z, atol=1e-10)
    if shape == (32, 32):  # sides divisible by 2**levels: pywt's own Haar inverse agrees
        np.testing.assert_allclose(pywt.waverec2(coeffs, "haar"), Z, atol=1e-10)


@pytest.mark.parametrize("shape, levels", [((64, 64), None), ((48, 40), 3)])
def test_haar_energies_add_up_to_the_grid_energy(shape, levels):
    Z = np.random.default_rng(1).normal(size=shape)
    energy = wavelet_energy(Z, "haar", levels)
    assert energy.energy.sum() == pytest.approx(np.sum(Z ** 2), rel=1e-12)
    top = levels or int(np.log2(shape[0]))
    assert set(energy.level) == set(range(1, top + 1))
    assert energy.loc[energy.kind == "approx", "level"].tolist() == [top]


def test_wavelet_levels_and_kinds_are_labelled():
    # Horizontal stripes of period 2 are pure finest-level horizontal detail for haar:
    # each pair of rows (1, 0) has detail (1 - 0)/sqrt(2) per column pair -> 1 per coefficient.
    Z = np.zeros((16, 16))
    Z[::2] = 1.0
    dec = wavelet_decomposition(Z, "haar", levels=1)
    finest = dec[dec.kind == "horizontal"]
    assert len(finest) == 64 and np.allclose(finest.coefficient, 1.0)
    assert np.allclose(dec[dec.kind.isin(["vertical", "diagonal"])].coefficient, 0.0)
    with pytest.raises(ConfigError):
        wavelet_decomposition(Z, "nope")
    with pytest.raises(ConfigError):
        wavelet_energy(Z, levels=9)


# --- topology ---------------------------------------------------------------------------------

def merge_height(Z, a, b):
    """Lowest possible maximum along an 8-connected pixel path from a to b (minimax Dijkstra)."""
    best = np.full(Z.shape, np.inf)
    best[a] = Z[a]
    heap = [(Z[a], a)]
    while heap:
        h, (i, j) = heapq.heappop(heap)
        if (i, j) == b:
            return h
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                u, v = i + di, j + dj
                if 0 <= u < Z.shape[0] and 0 <= v < Z.shape[1]:
                    new = max(h, Z[u, v])
                    if new < best[u, v]:
                        best[u, v] = new
                        heapq.heappush(heap, (new, (u, v)))


def test_two_basins_give_two_components_with_their_depths():
    xs, (X, Y) = grid()
    Z = well(X, Y, -2, 0, 1.0) + well(X, Y, 2, 0, 0.6)
    diagram = sublevel_persistence(Z)
    basins = diagram[(diagram.dim == 0) & (diagram.lifetime > 1e-9)]
    assert len(basins) == 2
    deep, shallow = np.unravel_index(np.argmin(Z), Z.shape), (40, 60)  # centres at x=-2, x=2
    assert np.isclose(Z[deep], Z.min()) and Z[shallow] == Z[35:46, 55:66].min()
    expected = sorted([Z.max() - Z.min(), merge_height(Z, shallow, deep) - Z[shallow]])
    np.testing.assert_allclose(sorted(basins.lifetime), expected, atol=1e-12)
    assert basins.lifetime.max() == pytest.approx(1.0, abs=1e-6)
    assert sorted(basins.lifetime)[0] == pytest.approx(0.6, abs=1e-3)
    assert np.isfinite(diagram[["birth", "death"]].to_numpy()).all()
    assert (diagram.dim == 1).sum() == 0


def test_a_ring_valley_gives_one_loop_that_dies_at_the_centre_height():
    xs, (X, Y) = grid()
    Z = -np.exp(-(np.hypot(X, Y) - 2) ** 2 / (2 * 0.3 ** 2))
    loops = sublevel_persistence(Z).query("dim == 1 and lifetime > 1e-6")
    assert len(loops) == 1
    assert loops.death.iloc[0] == pytest.approx(Z[40, 40], abs=1e-12)  # the hole fills last there
    assert loops.birth.iloc[0] < -0.9


def test_bottleneck_distance_of_known_diagrams():
    xs, (X, Y) = grid(n=41)
    Z = well(X, Y, 0.4, -0.4, 1.0)  # centred on a grid point, so min(Z) = -1 exactly
    d = sublevel_persistence(Z)
    assert bottleneck_distance(d, d) < 1e-12
    # Raising the surface by c moves every point by (c, c): distance c while c < lifetime / 2.
    assert bottleneck_distance(d, sublevel_persistence(Z + 0.05)) == pytest.approx(0.05, abs=1e-9)
    shallower = sublevel_persistence(well(X, Y, 0.4, -0.4, 0.8))
    assert bottleneck_distance(d, shallower) == pytest.approx(0.2, abs=1e-6)
    assert bottleneck_distance(np.array([[0.0, 1.0]]), np.array([[0.0, 1.5]])) \
        == pytest.approx(0.5)


# --- Gaussian fit -----------------------------------------------------------------------------

@pytest.mark.parametrize("truth", [dict(A=-1.3, x0=0.4, y0=1.1, s1=0.8, s2=1.5, offset=2.0),
                                   dict(A=0.7, x0=-1.0, y0=0.2, s1=0.5, s2=0.9, offset=-0.3)])
def test_gaussian_fit_recovers_known_parameters(truth):
    xs, ys = np.linspace(-3, 3, 41), np.linspace(-2, 4, 35)
    X, Y = np.meshgrid(xs, ys)  # Z[j, i] at (xs[i], ys[j]), as surface_2d writes it
    Z = gaussian(X, Y, **truth)
    Z[3, 4] = np.nan  # a diverged grid point is ignored
    fit = fit_gaussian(xs, ys, Z)
    for name, value in truth.items():
        assert fit[name] == pytest.approx(value, abs=1e-3)
    assert fit["r2"] == pytest.approx(1.0, abs=1e-9)
    f = gaussian_surface(fit)
    xy = torch.tensor([[0.3, -0.7], [1.0, 2.0]], dtype=torch.float64)
    want = truth["A"] * np.exp(-((xy[:, 0].numpy() - truth["x0"]) ** 2 / (2 * truth["s1"] ** 2)
                                 + (xy[:, 1].numpy() - truth["y0"]) ** 2 / (2 * truth["s2"] ** 2)))
    np.testing.assert_allclose(f(xy).numpy(), want + truth["offset"], atol=1e-6)


def test_gaussian_fit_refuses_a_non_gaussian_surface_and_shapes_are_checked():
    """A saddle is no Gaussian: its centre sits at the border's median height, so the fit is
    stored as failed with that reason instead of a poor fit passed off as one."""
    xs = np.linspace(-2, 2, 21)
    X, Y = np.meshgrid(xs, xs)
    fit = fit_gaussian(xs, xs, X ** 2 - Y ** 2)
    assert fit["status"] == "failed" and fit["reason"].startswith("flat")
    assert fit["r2"] is None and all(fit[k] is None for k in ("A", "x0", "s1"))
    with pytest.raises(ConfigError):
        fit_gaussian(xs[:-1], xs, X)


# --- optimizer paths --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def optim():
    import landscape_lib.optim
    return landscape_lib.optim


def test_surfaces_have_their_known_minima_and_grid_convention():
    at = lambda name, x, y: float(SURFACES.get(name)(torch.tensor([x, y], dtype=torch.float64)))
    for x, y in [(3.0, 2.0), (-2.805118, 3.131312), (3.584428, -1.848126)]:
        assert at("himmelblau", x, y) == pytest.approx(0.0, abs=1e-8)
    assert at("rosenbrock", 1.0, 1.0) == 0.0 and at("rosenbrock", 0.0, 0.0) == 1.0
    assert at("saddle", 2.0, 3.0) == -5.0 and at("bowl", 1.0, 1.0) == 5.0
    assert at("gaussian_well", 0.0, 0.0) == -1.0
    xs, ys, Z = surface_grid("saddle", xlim=(-2, 2), ylim=(0, 1), n=5)
    np.testing.assert_allclose(Z, xs[None, :] ** 2 - ys[:, None] ** 2)  # Z[j, i] at (xs[i], ys[j])
    with pytest.raises(UnknownNameError):
        SURFACES.get("himmelblow")


def all_optimizers(optim):
    """Every registered name, plus SAM around two bases when the registry resolves them."""
    names = optim.OPTIMIZERS.names()
    return names + [n for n in ("sam-sgd", "sam-adam") if n in optim.OPTIMIZERS and n not in names]


def path_lr(name):
    # SophiaH clips each coordinate's step to lr * p (p = 0.01): it needs a much larger lr.
    return 2.0 if name == "sophia" else 0.05


def test_every_optimizer_descends_a_convex_bowl(optim):
    for name in all_optimizers(optim):
        path = optimizer_path("bowl", name, steps=200, lr=path_lr(name))
        assert len(path) == 201 and not path.diverged.any(), name
        assert path.z.iloc[-1] < 0.5 * path.z.iloc[0], name
        assert path[["step", "x", "y"]].iloc[0].tolist() == [0, 1.5, 1.0]


def test_every_optimizer_escapes_the_saddle_along_y(optim):
    for name in all_optimizers(optim):
        path = optimizer_path("saddle", name, start=(1.0, 0.01), steps=100, lr=path_lr(name))
        end = path.iloc[-1]
        assert abs(end.y) > 10 * 0.01 and end.z < 0 < path.z.iloc[0], name


def test_plain_gradient_descent_follows_its_closed_form(optim):
    # On x^2 + 4 y^2, SGD multiplies x by (1 - 2 lr) and y by (1 - 8 lr) each step.
    path = optimizer_path("bowl", "sgd", start=(1.5, 1.0), steps=30, lr=0.05)
    t = path.step.to_numpy()
    np.testing.assert_allclose(path.x, 1.5 * 0.9 ** t, rtol=1e-12)
    np.testing.assert_allclose(path.y, 1.0 * 0.6 ** t, rtol=1e-12)


def test_diverging_paths_stop_and_are_marked(optim):
    # lr = 1.5 on x^2: x <- -2 x, so |x| = 1.5 * 2^t passes the bound 1e6 at t = 20.
    path = optimizer_path("bowl", "sgd", start=(1.5, 0.0), steps=200, lr=1.5)
    assert path.diverged.all() and len(path) == 20
    assert np.isfinite(path[["x", "y", "z"]].to_numpy()).all()
    # Without a bound the loss x^2 overflows to inf once |x| > 1.3e154, i.e. at t = 512.
    path = optimizer_path("bowl", "sgd", start=(1.5, 0.0), steps=2000, lr=1.5, bound=None)
    assert path.diverged.all() and len(path) == 512
    assert np.isfinite(path.z).all()
    calm = optimizer_path("bowl", "sgd", steps=5, lr=0.01)
    assert not calm.diverged.any()


def test_compare_optimizers_and_fitted_surface_paths(optim):
    names = optim.OPTIMIZERS.names()[:3]
    fitted = gaussian_surface(dict(A=-2.0, x0=0.5, y0=-0.5, s1=1.0, s2=1.0, offset=1.0))
    df = compare_optimizers(fitted, names, start=(1.0, 0.0), steps=50,
                            lr={n: 0.05 for n in names})
    assert list(df.columns) == ["surface", "optimizer", "step", "x", "y", "z", "diverged"]
    assert df.groupby("optimizer").size().to_dict() == {n: 51 for n in names}
    assert (df.groupby("optimizer").z.last() < df.groupby("optimizer").z.first()).all()
    assert set(df.surface) == {"gaussian_fit"}
    with pytest.raises(ConfigError):
        optimizer_path("bowl", names[0], start=(1.0,), steps=3)
