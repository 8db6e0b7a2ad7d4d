"""Wavelet energies partition the grid's energy for every grid size (issue 10 acceptance 4):
the unbalanced Haar transform by default, an exact pywt mode for other orthogonal wavelets."""
import numpy as np
import pytest
import pywt

from landscape_lib.errors import ConfigError
from landscape_lib.analyses.grid_stats.wavelets import (coefficients, inverse_unbalanced_haar2, unbalanced_haar2,
                            wavelet_decomposition, wavelet_energy)


def loss_like(shape, seed=0):
    """A bowl above an offset with noise: high border, like a real loss surface."""
    ny, nx = shape
    Y, X = np.meshgrid(np.linspace(-1, 1, ny), np.linspace(-1, 1, nx), indexing="ij")
    rng = np.random.default_rng(seed)
    return 2.0 + 3.0 * (X ** 2 + 0.5 * Y ** 2) + 0.05 * rng.normal(size=shape)


@pytest.mark.parametrize("n", [11, 21, 32, 41])
@pytest.mark.parametrize("levels", [None, 1, 2])
def test_energies_sum_to_the_grid_energy(n, levels):
    Z = loss_like((n, n))
    energy = wavelet_energy(Z, levels=levels)
    assert energy.energy.sum() == pytest.approx(np.sum(Z ** 2), rel=1e-6)
    assert energy.energy.sum() == pytest.approx(np.sum(Z ** 2), rel=1e-12)  # exact in fact
    assert energy.share.sum() == pytest.approx(1.0, rel=1e-12)
    assert (energy["mode"] == "unbalanced-haar").all()


@pytest.mark.parametrize("shape", [(21, 37), (40, 13), (2, 2), (3, 5)])
def test_non_square_and_tiny_grids_partition_too(shape):
    Z = np.random.default_rng(1).normal(size=shape)
    assert wavelet_energy(Z).energy.sum() == pytest.approx(np.sum(Z ** 2), rel=1e-12)


@pytest.mark.parametrize("n", [11, 21])
def test_the_transform_is_an_orthonormal_matrix(n):
    """Proof of the partition: the transform's matrix W (built column by column from unit
    grids) satisfies W^T W = I, so ||W z||^2 = ||z||^2 for every grid z."""
    def flat(Z):
        c = unbalanced_haar2(Z, 3)
        return np.concatenate([c[0].ravel()] + [a.ravel() for d in c[1:] for a in d])
    W = np.stack([flat(e.reshape(n, n)) for e in np.eye(n * n)], axis=1)
    assert W.shape == (n * n, n * n)  # non-expansive: as many coefficients as grid points
    np.testing.assert_allclose(W.T @ W, np.eye(n * n), atol=1e-12)


@pytest.mark.parametrize("shape, levels", [((32, 32), 5), ((48, 40), 3), ((16, 64), 4)])
def test_identical_to_pywt_haar_when_sides_are_divisible_by_2_to_the_levels(shape, levels):
    Z = np.random.default_rng(2).normal(size=shape)
    ours = unbalanced_haar2(Z, levels)
    ref = pywt.wavedec2(Z, "haar", mode="periodization", level=levels)
    np.testing.assert_allclose(ours[0], ref[0], atol=1e-12)
    for mine, theirs in zip(ours[1:], ref[1:]):
        for a, b in zip(mine, theirs):
            np.testing.assert_allclose(a, b, atol=1e-12)


@pytest.mark.parametrize("shape", [(21, 21), (11, 17), (41, 41)])
def test_perfect_reconstruction(shape):
    Z = loss_like(shape, seed=3)
    back = inverse_unbalanced_haar2(unbalanced_haar2(Z, 3), shape)
    np.testing.assert_allclose(back, Z, atol=1e-12)


@pytest.mark.parametrize("n", [11, 21, 41])
def test_a_flat_grid_has_no_detail_energy_and_a_ramp_no_diagonal(n):
    """No border artefact: odd sides add no spurious detail (zero padding would)."""
    e = wavelet_energy(np.full((n, n), 2.5))
    assert e.loc[e.kind != "approx", "energy"].max() < 1e-20
    ramp = np.tile(np.linspace(0, 1, n), (n, 1))  # varies along axis 1 only
    e = wavelet_energy(ramp)
    assert e.loc[e.kind.isin(["horizontal", "diagonal"]), "energy"].max() < 1e-20
    assert e.loc[e.kind == "vertical", "energy"].sum() > 0


def test_horizontal_stripes_are_horizontal_detail_as_in_pywt():
    Z = np.zeros((17, 17))
    Z[::2] = 1.0   # alternating rows: change along axis 0
    dec = wavelet_decomposition(Z, levels=1)
    assert dec.loc[dec.kind.isin(["vertical", "diagonal"]), "coefficient"].abs().max() < 1e-12
    assert dec.loc[dec.kind == "horizontal", "coefficient"].abs().max() > 0.5


@pytest.mark.parametrize("wavelet, n, mode", [("db2", 21, "zero"), ("sym4", 41, "zero"),
                                              ("db2", 32, "periodization"),
                                              ("coif1", 11, "zero")])
def test_other_orthogonal_wavelets_use_an_exact_pywt_mode(wavelet, n, mode):
    Z = loss_like((n, n))
    e = wavelet_energy(Z, wavelet)
    assert set(e["mode"]) == {mode}
    assert e.energy.sum() == pytest.approx(np.sum(Z ** 2), rel=1e-10)


def test_biorthogonal_wavelets_and_bad_levels_are_refused():
    with pytest.raises(ConfigError, match="not orthogonal"):
        wavelet_energy(np.ones((8, 8)), "bior2.2")
    with pytest.raises(ConfigError, match="levels"):
        coefficients(np.ones((21, 21)), levels=5)
