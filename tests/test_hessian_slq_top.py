"""The analysis' top eigenpairs from the SLQ probes' Krylov spaces, the trace probes riding
along in the SLQ's products, and the warnings of unconverged estimates, against dense float64
references: settled pairs kept (k products), a probe blind to the top eigenvector caught,
products with rounding (TF32-like) kept and flagged, riding probes equal to the same probes
multiplied by hand."""
import numpy as np
import pytest
import torch

from hessian_problems import spd_with_spectrum
from landscape_lib.analyses.hessian.analysis import analyse, settings
from landscape_lib.analyses.hessian.lanczos import extreme_eigenpairs, seeded_generator
from landscape_lib.analyses.hessian.layers import Blocks
from landscape_lib.analyses.hessian.spectrum import (TraceProbes, _rademacher,
                                                     deflated_trace, slq)


def _hidden_top(n: int, seed: int, probes: int, hide_from: int) -> tuple[torch.Tensor, np.ndarray]:
    """A dense float64 A whose top eigenvector (41, next to 40) is orthogonal to the first
    ``hide_from`` of the SLQ's Rademacher probes (drawn as ``slq`` draws them), so their Krylov
    spaces lack it; the rest: 30, 20, 10, 5 and a bulk in [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    Z = _rademacher(n, probes, seeded_generator(torch.device("cpu"), seed), "cpu", torch.float64)
    M = torch.randn(n, n, generator=gen, dtype=torch.float64)
    hide = Z[:, :hide_from]
    M[:, 0] -= hide @ torch.linalg.solve(hide.T @ hide, hide.T @ M[:, 0])
    Q = torch.linalg.qr(M)[0]
    evals = np.r_[np.linspace(-1, 1, n - 6), [5, 10, 20, 30, 40]]
    evals = np.r_[[41.0], evals[::-1]]                       # Q[:, 0] is the 41's eigenvector
    A = Q @ torch.diag(torch.as_tensor(evals)) @ Q.T
    return (A + A.T) / 2, np.sort(evals)


def test_slq_top_pairs_are_the_top_eigenpairs_when_settled():
    """On a hard spectrum (1e3 over a cluster at 0 and tiny negatives) the best probe's top
    Ritz pairs are the dense top eigenpairs, and the analysis keeps them: only k products."""
    spectrum = np.concatenate([[-2e-3, -1e-3], np.zeros(20), np.linspace(1e-2, 1, 30),
                               [10, 30, 1e3]])
    A = spd_with_spectrum(spectrum, seed=3)
    res = slq(A, n_vectors=3, n_steps=40, seed=4, top_k=3, tol=1e-6)
    np.testing.assert_allclose(res.top_values, [1e3, 30, 10], rtol=1e-10)
    AY = A @ res.top
    np.testing.assert_allclose((AY - res.top * torch.as_tensor(res.top_values)).norm(dim=0),
                               0, atol=1e-8)
    assert not res.misses(res.top_values, np.zeros(3), 1e-6)
    an = analyse(A, s=settings(per_layer=False, top_k=3, density_steps=40, seed=4))
    np.testing.assert_allclose(an.top.values, [1e3, 30, 10], rtol=1e-10)
    assert an.top.n_products == 3 and an.top.steps == 0  # the 3 measured residuals alone


def test_slq_top_that_misses_an_eigenvalue_is_caught_and_replaced():
    """Two of three probes are orthogonal to the top eigenvector (41, next to 40): in 10 steps
    (before rounding lets the 41 into their Krylov spaces) their top-5 Ritz values, 40 .. 5,
    settle and one looks best; the third probe's settled 41 shows the miss, and the analysis
    runs its own Lanczos instead: the dense top-5 within the measured residuals."""
    A, evals = _hidden_top(200, seed=6, probes=3, hide_from=2)
    res = slq(A, n_vectors=3, n_steps=10, seed=6, top_k=5)
    assert res.top_values[0] == pytest.approx(40, rel=1e-6)  # the hidden 41 is not there
    assert res.misses(res.top_values, res.top_settled, 1e-3)
    an = analyse(A, s=settings(per_layer=False, density_steps=10, seed=6))
    true = evals[::-1][:5]
    assert np.all(np.abs(an.top.values - true) <= an.top.residuals + 1e-9)
    assert an.top.values[0] == pytest.approx(41, rel=1e-6) and an.top.converged.all()
    assert an.top.steps > 0
    # the SLQ pairs' 5 measured residuals, the Lanczos steps and its own 5 check products
    assert an.top.n_products == 5 + an.top.steps + 5


def test_trace_probes_riding_in_the_slq_equal_their_own_products():
    """Probes carried along in the SLQ's 3-column calls (up to 4 columns) give the deflated
    trace and the per-block traces of the same probes multiplied on their own, and the SLQ
    its own nodes; the probes left over after the SLQ's 12 calls are multiplied by finish."""
    spectrum = np.concatenate([[-0.5, -0.1], np.linspace(0, 1, 40), [5, 20, 300]])
    A = spd_with_spectrum(spectrum, seed=2)
    blocks = Blocks(["a", "b", "c"], ["L"] * 3, [10, 15, 20],
                    torch.repeat_interleave(torch.arange(3), torch.tensor([10, 15, 20])))
    evals, vecs = torch.linalg.eigh(A)
    U, theta = vecs[:, -3:], evals[-3:].numpy()
    gen = seeded_generator(torch.device("cpu"), 5)  # the probes, drawn 8 at a time
    Z = torch.cat([_rademacher(45, m, gen, "cpu", A.dtype) for m in (8, 8, 4)], 1)
    DZ = (A - U @ torch.diag(torch.as_tensor(theta)) @ U.T) @ Z
    whole = (Z * DZ).sum(0).numpy()
    parts = np.stack([(Z * DZ)[blocks.seg == b].sum(0).numpy() for b in range(3)])
    lowrank = np.array([((U[blocks.seg == b] ** 2) * torch.as_tensor(theta)).sum().item()
                        for b in range(3)])
    ref = (theta.sum() + whole.mean(), whole.std(ddof=1) / np.sqrt(20),
           (lowrank + parts.mean(1), parts.std(1, ddof=1) / np.sqrt(20)))
    np.testing.assert_allclose(deflated_trace(A, U, theta, 20, seed=5, blocks=blocks)[2][0],
                               ref[2][0], rtol=1e-10)
    probes = TraceProbes(A, 20, seed=5, blocks=blocks)
    riding = slq(probes.riding(4), n_vectors=3, n_steps=12, seed=1)
    assert probes.riders == 12
    np.testing.assert_allclose(riding.nodes, slq(A, n_vectors=3, n_steps=12, seed=1).nodes,
                               rtol=1e-12, atol=1e-12)
    got = probes.finish(U, theta)
    assert got[0] == pytest.approx(ref[0], rel=1e-12) and got[1] == pytest.approx(ref[1],
                                                                                  rel=1e-10)
    np.testing.assert_allclose(got[2][0], ref[2][0], rtol=1e-10)
    np.testing.assert_allclose(got[2][1], ref[2][1], rtol=1e-10)
    assert ref[0] == pytest.approx(spectrum.sum(), abs=5 * ref[1])  # and near the truth


def test_unconverged_lanczos_warns_with_readable_relative_residuals():
    """A capped Lanczos warns with its residuals and their ratios to the values in scientific
    notation: a ratio of ~1e-3 (a TF32 network's) must not print as 0."""
    spectrum = np.concatenate([np.linspace(0, 1, 60), [100, 101, 102]])
    A = spd_with_spectrum(spectrum, seed=1)
    with pytest.warns(RuntimeWarning) as caught:
        res = extreme_eigenpairs(A, 3, "LA", 1e-12, max_steps=4, seed=0)
    ratio = res.residuals / np.abs(res.values)
    text = str(caught[0].message)
    assert f"{ratio[0]:.2e}" in text and f"{res.residuals[0]:.2e}" in text


class NoisyProducts:
    """A dense symmetric A whose products carry rounding of ``eps * ||A||`` (fresh each call),
    as TF32 products do: no Lanczos over them gets residuals below that floor."""

    def __init__(self, A: torch.Tensor, eps: float, seed: int = 0):
        self.A, self.scale = A, eps * float(torch.linalg.matrix_norm(A, 2))
        self.shape, self.dtype, self.device = tuple(A.shape), A.dtype, A.device
        self.gen, self.n_products = torch.Generator().manual_seed(seed), 0

    def __matmul__(self, V):
        self.n_products += V.shape[1] if V.ndim == 2 else 1
        noise = torch.randn(V.shape, generator=self.gen, dtype=V.dtype)
        return self.A @ V + self.scale * noise / max(1.0, V.shape[0] ** 0.5)


def test_slq_top_pairs_at_the_products_rounding_floor_are_kept_unconverged():
    """Products with rounding of 1e-3 of ||A|| and tol = 1e-4: the SLQ's top pairs settle in
    the recurrence but measure ~1e-3; a Lanczos over the same products could not do better,
    so they are kept (k products, flags False, a warning) and lie within their measured
    residuals (plus the rounding) of the dense top eigenvalues."""
    spectrum = np.concatenate([np.linspace(-1, 1, 295), [20, 40, 60, 80, 100]])
    op = NoisyProducts(spd_with_spectrum(spectrum, seed=5), eps=1e-3)
    with pytest.warns(RuntimeWarning, match="products' rounding"):
        an = analyse(op, s=settings(per_layer=False, tol=1e-4, bottom_k=0))
    assert an.costs.set_index("part").loc["top", "n_products"] == 5 and an.top.steps == 0
    assert not an.top.converged.any()
    assert np.all(an.top.residuals > 1e-4 * an.top.values)
    assert np.all(np.abs(an.top.values - [100, 80, 60, 40, 20]) <= an.top.residuals + 0.2)
