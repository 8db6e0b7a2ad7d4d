"""Curvature analysis checked against dense Hessians computed independently.

References: a quadratic with a chosen Hessian, ``torch.autograd.functional.hessian`` of a tiny
float64 model (through ``functional_call`` on the flat parameters) and its ``eigvalsh``.
"""
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from landscape_lib.analyses.curvature import (
    HessianOperator, broadened_density, hessian_analysis, hutchinson_trace, negative_share,
    per_layer_spectrum, pyhessian_engine, slq_density, slq_nodes, top_eigenpairs,
    vector_to_params)
from landscape_lib.analyses import hessian_ops
from landscape_lib.errors import ConfigError

CE = nn.CrossEntropyLoss()


def spd_with_spectrum(eigvals, seed=0):
    """Symmetric matrix Q diag(eigvals) Q^T with a random orthogonal Q."""
    gen = torch.Generator().manual_seed(seed)
    n = len(eigvals)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return Q @ torch.diag(torch.as_tensor(eigvals, dtype=torch.float64)) @ Q.T


class Quadratic(nn.Module):
    """f(w) = 1/2 w^T A w + mean(x) . w, whose Hessian is A whatever the data."""

    def __init__(self, A):
        super().__init__()
        self.register_buffer("A", A)
        self.w = nn.Parameter(torch.randn(len(A), dtype=A.dtype))

    def forward(self, x):
        return 0.5 * self.w @ self.A @ self.w + x.mean(0) @ self.w


def identity_loss(out, _y):
    return out


@pytest.fixture(scope="module")
def mlp_problem():
    """2-layer tanh MLP (83 params, float64), two unequal batches, and its dense Hessian."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 10), nn.Tanh(), nn.Linear(10, 3)).double()
    x = torch.randn(12, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (12,))
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(theta):  # mean over all 12 samples in one call: the reference definition
        pieces = torch.split(theta, [s.numel() for s in shapes])
        params = {n: t.view(s) for n, t, s in zip(names, pieces, shapes)}
        return CE(functional_call(model, params, (x,)), y)

    H = torch.autograd.functional.hessian(loss_of, flat)
    H = 0.5 * (H + H.T)
    return model, batches, H, torch.linalg.eigvalsh(H)


def rel_err(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return np.max(np.abs(a - b) / np.abs(b))


# --------------------------------------------------------------------------- the operator
@pytest.mark.parametrize("mode", ["forward", "reverse", "cached"])
def test_quadratic_operator_is_its_matrix(mode):
    A = spd_with_spectrum([5.0, 3.0, 2.0, 1.0, 0.5, -0.25, -1.5])
    model = Quadratic(A)
    op = HessianOperator(model, identity_loss, [(torch.randn(3, 7, dtype=torch.float64), None)],
                         mode=mode)
    V = torch.randn(7, 3, dtype=torch.float64)
    torch.testing.assert_close(op @ V, A @ V)
    torch.testing.assert_close(op @ V[:, 0], A @ V[:, 0])
    assert op.n_products == 4 and op.shape == (7, 7) and op.dtype == torch.float64
    vals, vecs = top_eigenpairs(op, 3, tol=1e-10)
    np.testing.assert_allclose(vals.numpy(), [5.0, 3.0, 2.0], rtol=1e-8)
    torch.testing.assert_close(A @ vecs, vecs * vals)


@pytest.mark.parametrize("mode", ["forward", "reverse", "cached"])
def test_operator_matches_dense_hessian(mlp_problem, mode):
    model, batches, H, _ = mlp_problem
    op = HessianOperator(model, CE, batches, mode=mode)
    gen = torch.Generator().manual_seed(1)
    v = torch.randn(H.shape[0], generator=gen, dtype=torch.float64)
    V = torch.randn(H.shape[0], 4, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(op @ v, H @ v, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    assert op.n_products == 5


def test_forward_mode_vmapped_chunks_equal_the_column_loop(mlp_problem):
    model, batches, H, _ = mlp_problem
    V = torch.randn(H.shape[0], 5, generator=torch.Generator().manual_seed(2),
                    dtype=torch.float64)
    for chunk in (1, 2, 5):
        op = HessianOperator(model, CE, batches, mode="forward", chunk_size=chunk)
        torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    with pytest.raises(ConfigError):
        HessianOperator(model, CE, batches, chunk_size=0)


def test_auto_mode_is_chosen_by_device():
    assert hessian_ops._resolve_mode("auto", torch.device("cpu")) == "cached"
    assert hessian_ops._resolve_mode("auto", torch.device("cuda")) == "auto"  # measured later
    assert hessian_ops._resolve_mode("reverse", torch.device("cuda")) == "reverse"


@pytest.mark.parametrize("faster", ["forward", "cached"])
def test_auto_mode_keeps_the_faster_measured_mode(monkeypatch, mlp_problem, faster):
    """On CUDA, "auto" times both modes on the first product; here the clock is rigged."""
    model, batches, H, _ = mlp_problem
    monkeypatch.setattr(hessian_ops, "_resolve_mode", lambda m, d: m)  # CPU acts like CUDA
    timed = hessian_ops.HessianOperator._timed

    def rigged(self, mode, V):
        out, _ = timed(self, mode, V)
        return out, 1.0 if mode == faster else 2.0

    monkeypatch.setattr(hessian_ops.HessianOperator, "_timed", rigged)
    op = HessianOperator(model, CE, batches)
    assert op.mode == "auto"
    V = torch.randn(H.shape[0], 3, generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    assert op.mode == faster and set(op.mode_seconds) == {"forward", "cached"}
    assert (op._graphs is not None) == (faster == "cached")  # the loser's memory is freed
    assert op.n_products == 3 + 3  # three columns answered, three trial products
    torch.testing.assert_close(op @ V[:, 0], H @ V[:, 0], rtol=1e-9, atol=1e-12)
    assert op.n_products == 7


class _Cube(torch.autograd.Function):
    """x**3 as an old-style autograd.Function: no forward-mode rule, so torch.func refuses it."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x ** 3

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 3 * x ** 2 * g  # differentiable: double backward works


@pytest.mark.parametrize("mode, fallback, products", [("forward", "reverse", 3),
                                                     ("auto", "cached", 3 + 1)])
def test_forward_mode_falls_back_to_double_backward(monkeypatch, mode, fallback, products):
    monkeypatch.setattr(hessian_ops, "_resolve_mode", lambda m, d: m)  # "auto" as on CUDA
    w0 = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    model = nn.Module()
    model.w = nn.Parameter(w0.clone())
    model.forward = lambda x: (_Cube.apply(model.w) * x).sum()
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    op = HessianOperator(model, identity_loss, [(x, None)], mode=mode)
    H = torch.diag(6 * w0 * x)  # d2/dw2 sum(x w^3) = diag(6 x w)
    torch.testing.assert_close(op @ torch.eye(3, dtype=torch.float64), H)
    assert op.mode == fallback and op.n_products == products


def test_scipy_operator_roundtrip(mlp_problem):
    model, batches, H, _ = mlp_problem
    A = HessianOperator(model, CE, batches).to_scipy()
    x = np.random.default_rng(0).standard_normal((H.shape[0], 2))
    assert A.dtype == np.float64
    np.testing.assert_allclose(A @ x, H.numpy() @ x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(A.matvec(x[:, 0]), H.numpy() @ x[:, 0], rtol=1e-9, atol=1e-12)


def test_param_subset_gives_diagonal_block(mlp_problem):
    model, batches, H, _ = mlp_problem
    last = list(model[2].parameters())
    op = HessianOperator(model, CE, batches, params=last)
    start = sum(p.numel() for p in model[0].parameters())
    block = H[start:, start:]
    V = torch.randn(block.shape[0], 3, dtype=torch.float64)
    torch.testing.assert_close(op @ V, block @ V, rtol=1e-9, atol=1e-12)


def test_vector_to_params_unflattens_in_parameter_order(mlp_problem):
    model = mlp_problem[0]
    params = list(model.parameters())
    vec = torch.cat([p.detach().reshape(-1) for p in params])
    for piece, p in zip(vector_to_params(vec, params), params):
        torch.testing.assert_close(piece, p.detach())
    with pytest.raises(ConfigError):
        vector_to_params(vec[:-1], params)


def test_model_is_evaluated_in_eval_mode_and_mode_restored():
    """BN uses running stats: the operator equals the dense Hessian of the eval-mode model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2)).double()
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randint(0, 2, (6,))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    model.eval()

    def loss_of(theta):
        pieces = torch.split(theta, [s.numel() for s in shapes])
        return CE(functional_call(model, {n: t.view(s) for n, t, s in
                                          zip(names, pieces, shapes)}, (x,)), y)

    H = torch.autograd.functional.hessian(loss_of, flat)
    model.train()
    running = model[1].running_mean.clone()
    op = HessianOperator(model, CE, [(x, y)], mode="forward")
    V = torch.randn(len(flat), 2, dtype=torch.float64)
    torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
    assert model.training and model[1].training
    torch.testing.assert_close(model[1].running_mean, running)  # stats not updated


# ---------------------------------------------------------------------------- estimators
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


def test_negative_share_estimates_fraction_of_negative_eigenvalues():
    spectrum = np.r_[np.linspace(-3, -0.1, 20), np.linspace(0.1, 5, 40)]
    A = spd_with_spectrum(spectrum, seed=2)
    nodes, weights = slq_nodes(A, n_vectors=100, n_steps=60, seed=0)
    # each vector's share is ~Beta(10, 20): sd 0.085; the mean of 100 has sd 0.0085
    assert negative_share(nodes, weights) == pytest.approx(1 / 3, abs=0.035)
    assert negative_share(nodes, weights, threshold=10.0) == 0.0


def test_per_layer_top_eigenvalue_is_that_of_the_diagonal_block(mlp_problem):
    model, batches, H, _ = mlp_problem
    table = per_layer_spectrum(model, CE, batches, k=2, trace_samples=1000, tol=1e-9)
    assert list(table["layer"]) == ["0", "2"]
    start = 0
    for row in table.itertuples():
        n = row.n_params
        block = H[start:start + n, start:start + n]
        start += n
        block_evals = torch.linalg.eigvalsh(block).flip(0)
        assert rel_err(row.top_eig, block_evals[0].item()) < 1e-4
        assert rel_err(row.eig_2, block_evals[1].item()) < 1e-4
        assert rel_err(row.trace, torch.trace(block).item()) < 1e-4  # exact: samples >= n
    assert start == H.shape[0]


def test_hessian_analysis_on_tiny_model(mlp_problem):
    model, batches, H, evals = mlp_problem
    res = hessian_analysis(model, CE, batches, top_k=3, bottom_k=1, tol=1e-8,
                           trace_samples=1000, layer_trace_samples=5, density_vectors=2,
                           density_steps=20)
    assert rel_err(res.top_eigenvalues, evals.flip(0)[:3].numpy()) < 1e-4
    assert rel_err(res.bottom_eigenvalues, evals[:1].numpy()) < 1e-4
    assert res.eig_ratio == pytest.approx(abs(evals[0] / evals[-1]).item(), rel=1e-4)
    assert res.trace == pytest.approx(torch.trace(H).item(), rel=1e-4)
    assert res.top_eigenvectors.shape == (3, H.shape[0])
    y = res.top_eigenvectors.T
    torch.testing.assert_close(H @ y, y * torch.as_tensor(res.top_eigenvalues),
                               atol=1e-6, rtol=1e-5)
    assert len(res.per_layer) == 2 and res.n_params == H.shape[0] and res.n_samples == 12
    assert res.n_products > 0 and res.engine == "default"
    assert 0 <= res.negative_share <= 1
    assert set(res.scalars()) >= {"eig_top_1", "eig_bottom_1", "eig_ratio", "trace"}


# ------------------------------------------------------------------------------- PyHessian
def small_cnn():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 4))
    model[1].running_mean.uniform_(-0.5, 0.5)
    model[1].running_var.uniform_(0.5, 2)
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 4, (16,))
    return model, x, y


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
