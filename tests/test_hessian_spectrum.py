"""Curvature estimators (eigenpairs, trace, density, per layer, PyHessian, the whole analysis)
checked against dense Hessians computed independently (see ``hessian_problems``)."""
import numpy as np
import pytest
import torch
from torch import nn

from hessian_problems import CE, mlp_problem, rel_err, spd_with_spectrum  # noqa: F401
from landscape_lib.analyses.hessian.analysis import hessian_analysis
from landscape_lib.analyses.hessian.lanczos import Lanczos, seeded_generator, top_eigenpairs
from landscape_lib.analyses.hessian.layers import Blocks, per_layer_spectrum
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.analyses.hessian.pyhessian_adapter import pyhessian_engine
from landscape_lib.analyses.hessian.shares import spectral_shares
from landscape_lib.analyses.hessian.spectrum import (
    _rademacher, broadened_density, deflated_trace, hutchinson_trace, slq, slq_density,
    slq_nodes)
from landscape_lib.errors import ConfigError


@pytest.mark.parametrize("engine", ["lanczos", "eigsh"])
def test_extreme_eigenvalues_match_dense(mlp_problem, engine):
    model, batches, H, evals = mlp_problem
    op = HessianOperator(model, CE, batches)
    top, vecs = top_eigenpairs(op, 5, tol=1e-8, engine=engine)
    assert rel_err(top.numpy(), evals.flip(0)[:5].numpy()) < 1e-4
    torch.testing.assert_close(H @ vecs, vecs * top, atol=1e-6, rtol=1e-5)
    bottom, _ = top_eigenpairs(op, 2, tol=1e-8, which="SA", engine=engine)
    assert evals[0] < 0  # the test needs an indefinite Hessian
    assert rel_err(bottom.numpy(), evals[:2].numpy()) < 1e-4


@pytest.mark.parametrize("engine", ["lanczos", "eigsh"])
def test_scale_stops_small_end_early_but_accurately(engine):
    """With scale = |lambda_max| the smallest eigenvalue is accurate to tol * scale."""
    spectrum = np.r_[100.0, np.linspace(-0.02, 0.05, 79)]
    A = spd_with_spectrum(spectrum, seed=3)
    vals, _ = top_eigenpairs(A, 1, tol=1e-4, which="SA", engine=engine, scale=100.0)
    assert abs(vals[0].item() - spectrum.min()) < 1e-2


def test_exact_and_hutchinson_trace(mlp_problem):
    model, batches, H, _ = mlp_problem
    op = HessianOperator(model, CE, batches)
    exact, se = hutchinson_trace(op, n_samples=H.shape[0])
    assert rel_err(exact, torch.trace(H).item()) < 1e-4 and se == 0.0
    n = 60  # fewer than the 83 parameters: a stochastic estimate
    est, se = hutchinson_trace(op, n_samples=n, seed=1)
    # Rademacher: Var(z^T H z) = 2 * sum_{i != j} H_ij^2.
    off = H - torch.diag(torch.diag(H))
    expected_se = float(torch.sqrt(2 * (off ** 2).sum()) / np.sqrt(n))
    assert 0.7 < se / expected_se < 1.3
    assert abs(est - torch.trace(H).item()) < 4 * expected_se


def test_slq_density_integrates_to_one_where_the_eigenvalues_are(mlp_problem):
    model, batches, H, evals = mlp_problem
    op = HessianOperator(model, CE, batches)
    P = H.shape[0]
    n_vectors = 8
    grid, density = slq_density(op, n_vectors=n_vectors, n_steps=30, seed=0)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-9)
    # The quadrature's first moment is q^T H q exactly, so the mean is a Hutchinson estimate
    # of trace / P with standard error sqrt(2 sum_{i!=j} H_ij^2) / (P sqrt(n)).
    mean = np.trapezoid(grid * density, grid)
    off = H - torch.diag(torch.diag(H))
    se = float(torch.sqrt(2 * (off ** 2).sum())) / (P * np.sqrt(n_vectors))
    assert abs(mean - torch.trace(H).item() / P) < 4 * se + 1e-9
    nodes, weights = slq_nodes(op, n_vectors=n_vectors, n_steps=30, seed=0)
    sigma = (nodes.max() - nodes.min()) / 400  # the documented default
    lo, hi = evals[0].item() - 3 * sigma, evals[-1].item() + 3 * sigma
    outside = (grid < lo) | (grid > hi)
    assert np.trapezoid(np.where(outside, density, 0), grid) < 1e-2
    np.testing.assert_allclose(weights.sum(1), 1.0, rtol=1e-10)


def test_full_lanczos_nodes_are_the_eigenvalues():
    spectrum = np.linspace(-2, 7, 30)
    A = spd_with_spectrum(spectrum, seed=1)
    nodes, weights = slq_nodes(A, n_vectors=2, n_steps=30)
    np.testing.assert_allclose(np.sort(nodes[0]), spectrum, atol=1e-8)
    grid, density = broadened_density(nodes, weights, sigma=0.05)
    assert grid.min() < -2 and grid.max() > 7
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-9)


def test_slq_probes_in_lockstep_equal_one_after_another():
    """The density's probes go through the operator as the columns of one product per step;
    each column's tridiagonal (and so its nodes and weights, and the lowest Ritz pair) is the
    one of its own Lanczos run, to float64 precision, on a hard spectrum: a top eigenvalue
    1e6 times the tiny negative ones, a cluster at 0."""
    spectrum = np.concatenate([[-2e-3, -1e-3], np.zeros(20), np.linspace(1e-2, 1, 30), [1e3]])
    A = spd_with_spectrum(spectrum, seed=3)
    res = slq(A, n_vectors=3, n_steps=25, seed=4)
    Z = _rademacher(A.shape[0], 3, seeded_generator(torch.device("cpu"), 4), "cpu", A.dtype)
    lows = []
    for c in range(3):
        lz = Lanczos(A, Z[:, c:c + 1], seeded_generator(torch.device("cpu"), 9))
        for _ in range(25):
            lz.step()
        theta, S, _ = lz.ritz()
        np.testing.assert_allclose(res.nodes[c], theta, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(res.weights[c], S[0] ** 2, rtol=1e-8, atol=1e-12)
        lows.append((theta[0], lz.ritz_vectors(S[:, :1])[:, 0]))
    low, vec = min(lows, key=lambda t: t[0])
    assert res.lowest_node == pytest.approx(low, rel=1e-10)
    assert abs(float(res.lowest @ vec)) == pytest.approx(1.0, abs=1e-8)
    assert res.n_products == 75


def test_block_sums_of_row_ranges_and_of_interleaved_rows():
    """Per-block column sums: one reduction per block for consecutive row ranges (a module's
    parameters), an index_add otherwise; both equal the sums of the rows each block owns."""
    gen = torch.Generator().manual_seed(6)
    X = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    for seg in ([0, 0, 0, 1, 2, 2, 2, 2, 3, 3], [0, 1, 0, 1, 2, 2, 3, 2, 3, 0]):
        seg = torch.tensor(seg)
        sizes = torch.bincount(seg).tolist()
        blocks = Blocks(["a", "b", "c", "d"], ["M"] * 4, sizes, seg)
        expected = torch.stack([X[seg == b].sum(0) for b in range(4)])
        torch.testing.assert_close(blocks.sums(X), expected, rtol=1e-14, atol=1e-14)
        torch.testing.assert_close(blocks.sums(X[:, 0]), expected[:, :1], rtol=1e-14, atol=0.0)
        assert blocks.contiguous == bool((seg[1:] >= seg[:-1]).all())


def test_spectral_shares_estimate_the_fractions_below_and_near_the_threshold():
    spectrum = np.r_[np.linspace(-3, -0.1, 20), np.linspace(-0.04, 0.04, 10),
                     np.linspace(0.1, 5, 30)]
    A = spd_with_spectrum(spectrum, seed=2)
    nodes, weights = slq_nodes(A, n_vectors=100, n_steps=60, seed=0)
    sh = spectral_shares(nodes, weights, lam_max=5.0, eps=0.01)  # threshold 0.05
    # each probe's share is ~Beta(10, 20): sd 0.085; the mean of 100 has sd 0.0085
    assert sh.neg_share == pytest.approx(1 / 3, abs=0.035)
    assert sh.near_zero_share == pytest.approx(1 / 6, abs=0.035)
    assert 0.004 < sh.neg_share_se < 0.015 and sh.threshold == 0.05 and sh.n_probes == 100
    assert sh.neg_bracket[0] <= sh.neg_share <= sh.neg_bracket[1]
    assert spectral_shares(nodes, weights, lam_max=5.0, eps=2.0).neg_share == 0.0
    with pytest.raises(ConfigError, match="neg_eps"):
        spectral_shares(nodes, weights, 5.0, eps=-1)


def test_deflated_trace_is_exact_with_unit_probes_and_unbiased_with_random_ones(mlp_problem):
    model, batches, H, evals = mlp_problem
    op = HessianOperator(model, CE, batches)
    top, vecs = top_eigenpairs(op, 3, tol=1e-10)
    exact, se, _ = deflated_trace(op, vecs, top.numpy(), n_samples=H.shape[0])
    assert exact == pytest.approx(torch.trace(H).item(), rel=1e-10) and se == 0
    # Deflated: the variance is that of H - U Theta U^T, far below plain Hutchinson's.
    est, se, _ = deflated_trace(op, vecs, top.numpy(), n_samples=40, seed=1)
    R = H - vecs @ torch.diag(top) @ vecs.T
    off = R - torch.diag(torch.diag(R))
    expected_se = float(torch.sqrt(2 * (off ** 2).sum()) / np.sqrt(40))
    assert 0.6 < se / expected_se < 1.4
    assert abs(est - torch.trace(H).item()) < 4 * expected_se


def test_per_layer_separate_way_is_the_diagonal_blocks(mlp_problem):
    """Each layer's own Lanczos (tight tol) and unit probes: the dense blocks' top eigenvalues
    and traces."""
    model, batches, H, _ = mlp_problem
    table = per_layer_spectrum(model, CE, batches, k=2, trace_samples=1000, tol=1e-9)
    assert list(table["layer"]) == ["0", "2"]
    start = 0
    for row in table.itertuples():
        n = row.n_params
        block = H[start:start + n, start:start + n]
        start += n
        block_evals = torch.linalg.eigvalsh(block).flip(0)
        assert rel_err(row.top_eig, block_evals[0].item()) < 1e-8
        assert rel_err(row.eig_2, block_evals[1].item()) < 1e-8
        assert row.top_eig_converged and row.top_eig_residual < 1e-8 * row.top_eig
        assert rel_err(row.trace, torch.trace(block).item()) < 1e-10 and row.trace_se == 0
    assert start == H.shape[0]


@pytest.mark.parametrize("method", ["shared", "separate"])
@pytest.mark.parametrize("problem", ["mlp", "bn-cnn"])
def test_per_layer_table_is_exact_on_dense_blocks(mlp_problem, method, problem):
    """Unit probes (trace_samples >= P) and Krylov spaces as large as the blocks: both ways
    give every dense block's trace and top eigenvalue (an MLP, and a conv net with BN)."""
    if problem == "mlp":
        model, batches, H, _ = mlp_problem
    else:  # 81 parameters: conv 20, BN 4, linear 57
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                              nn.Linear(2 * 3 * 3, 3)).double()
        model[1].running_mean.uniform_(-0.5, 0.5)
        model[1].running_var.uniform_(0.5, 2)
        x, y = torch.randn(16, 1, 5, 5, dtype=torch.float64), torch.randint(0, 3, (16,))
        batches = [(x[:10], y[:10]), (x[10:], y[10:])]
        H = dense_block_reference(model, x, y)
    res = hessian_analysis(model, CE, batches, trace_samples=H.shape[0], layer_method=method,
                           layer_steps=H.shape[0], layer_tol=1e-10, top_k=2, tol=1e-10,
                           density_vectors=1, density_steps=8, bottom_k=0)
    start = 0
    for row in res.per_layer.itertuples():
        block = H[start:start + row.n_params, start:start + row.n_params]
        start += row.n_params
        assert row.trace == pytest.approx(torch.trace(block).item(), rel=1e-9, abs=1e-12)
        top = torch.linalg.eigvalsh(block)[-1].item()
        assert row.top_eig == pytest.approx(top, rel=1e-7, abs=1e-12)
        assert row.trace_se == 0 and row.top_eig_converged
    assert start == H.shape[0]
    assert res.costs["part"].tolist() == ["density", "top", "trace", "per-layer"]


def test_hessian_analysis_on_tiny_model(mlp_problem):
    model, batches, H, evals = mlp_problem
    res = hessian_analysis(model, CE, batches, top_k=3, bottom_k=1, tol=1e-8, bottom_tol=1e-8,
                           trace_samples=1000, density_vectors=2, density_steps=20)
    assert rel_err(res.top_eigenvalues, evals.flip(0)[:3].numpy()) < 1e-4
    assert rel_err(res.bottom_eigenvalues, evals[:1].numpy()) < 1e-4
    assert res.eig_ratio == pytest.approx(abs(evals[0] / evals[-1]).item(), rel=1e-4)
    assert res.trace == pytest.approx(torch.trace(H).item(), rel=1e-8)
    assert res.top_eigenvectors.shape == (3, H.shape[0])
    y = res.top_eigenvectors.T
    torch.testing.assert_close(H @ y, y * torch.as_tensor(res.top_eigenvalues),
                               atol=1e-6, rtol=1e-5)
    assert len(res.per_layer) == 2 and res.n_params == H.shape[0] and res.n_samples == 12
    assert res.n_products == res.costs["n_products"].sum() > 0 and res.engine == "default"
    assert 0 <= res.shares.neg_share <= 1
    assert set(res.summary()) >= {"top_eig", "lam_min", "lam_min_residual", "neg_eps"}


# ------------------------------------------------------------------------------- PyHessian
def small_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 4))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2)
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 4, (16,))
    return model, x, y


def dense_block_reference(model, x, y):
    """Dense Hessian of the eval-mode model's mean loss (autograd.functional, float64)."""
    from torch.func import functional_call
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta):
        pieces = torch.split(theta, [s.numel() for s in shapes])
        return CE(functional_call(model, {n: t.view(s) for n, t, s in zip(names, pieces,
                                                                            shapes)}, (x,)), y)
    model.eval()
    return torch.autograd.functional.hessian(loss_of, flat)


def test_pyhessian_agrees_with_default_engine_on_small_cnn():
    model, x, y = small_cnn()
    model.train()
    vals, vecs, n_products = pyhessian_engine(model, CE, [(x, y)], top_n=2, tol=1e-6,
                                              max_iter=1000)
    op = HessianOperator(model, CE, [(x, y)])
    ours, _ = top_eigenpairs(op, 2, tol=1e-6)
    assert rel_err(vals[0], ours[0].item()) < 1e-2
    assert n_products > 2 and vecs.shape == (op.shape[0], 2)
    assert model.training and all(p.grad is None for p in model.parameters())
    # PyHessian's own eigenvector is one of ours: H v = lambda v
    v = vecs[:, 0]
    torch.testing.assert_close(op @ v, vals[0] * v, atol=1e-3 * abs(vals[0]), rtol=0)


def test_pyhessian_engine_in_analysis_with_several_batches():
    model, x, y = small_cnn()
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    ref = hessian_analysis(model, CE, batches, top_k=1, tol=1e-6, trace_samples=5,
                           density_vectors=1, density_steps=5, per_layer=False)
    res = hessian_analysis(model, CE, batches, top_k=1, tol=1e-6, trace_samples=5,
                           density_vectors=1, density_steps=5, per_layer=False,
                           engine="pyhessian")
    assert res.engine == "pyhessian"
    assert rel_err(res.top_eigenvalues[0], ref.top_eigenvalues[0]) < 1e-2


# ---------------------------------------------------------------------------------- errors
def test_bad_options_raise_config_error(mlp_problem):
    model, batches, H, _ = mlp_problem
    with pytest.raises(ConfigError, match="which"):
        top_eigenpairs(H, 2, which="LM")
    with pytest.raises(ConfigError, match="engine"):
        top_eigenpairs(H, 2, engine="power")
    with pytest.raises(ConfigError, match="mode"):
        HessianOperator(model, CE, batches, mode="fast")
    with pytest.raises(ConfigError, match="batches"):
        HessianOperator(model, CE, [])
    with pytest.raises(ConfigError, match="engine"):
        hessian_analysis(model, CE, batches, engine="curvlinops")


def test_lanczos_continues_past_an_exhausted_krylov_space():
    """Three distinct eigenvalues exhaust the Krylov space after 3 steps; k=4 still works."""
    spectrum = [4.0, 4.0, 2.0, 2.0, 2.0, -1.0]
    A = spd_with_spectrum(spectrum, seed=4)
    vals, vecs = top_eigenpairs(A, 4, tol=1e-10)
    np.testing.assert_allclose(vals.numpy(), [4.0, 4.0, 2.0, 2.0], atol=1e-8)
    torch.testing.assert_close(vecs.T @ vecs, torch.eye(4, dtype=torch.float64))
