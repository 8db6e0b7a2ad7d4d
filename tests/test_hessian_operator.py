"""The Hessian operator (every HVP mode) checked against dense Hessians computed independently
(see ``hessian_problems``)."""
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

from hessian_problems import (CE, Quadratic, identity_loss, mlp_problem,  # noqa: F401
                              spd_with_spectrum)
from landscape_lib.analyses.hessian import auto as hessian_auto
from landscape_lib.analyses.hessian import operator as hessian_ops
from landscape_lib.analyses.hessian.lanczos import top_eigenpairs
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.analyses.hessian.products import WARMUPS, split_pieces
from landscape_lib.errors import ConfigError
from landscape_lib.params import vector_to_params


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



def test_micro_batches_give_the_same_hessian(mlp_problem):
    """Each batch in ``split`` parts weighted by their sizes (7 and 5 samples in 3 parts, in 9:
    more parts than samples) is the same operator; with several columns per vmap too."""
    model, batches, H, _ = mlp_problem
    pieces = split_pieces(batches, [7 / 12, 5 / 12], 3)
    assert [len(x) for x, _, _ in pieces] == [3, 2, 2, 2, 2, 1]
    assert sum(w for _, _, w in pieces) == pytest.approx(1.0, abs=1e-15)
    V = torch.randn(H.shape[0], 5, generator=torch.Generator().manual_seed(5),
                    dtype=torch.float64)
    for chunk, split in ((1, 3), (2, 3), (4, 9)):
        op = HessianOperator(model, CE, batches, mode="forward", chunk_size=chunk, split=split)
        torch.testing.assert_close(op @ V, H @ V, rtol=1e-9, atol=1e-12)
        # fewer columns, fewer parts: ceil(split * width / chunk) (one column: 3, 2 and 3)
        for width in (1, 3):
            parts = -(-split * width // chunk)
            assert len(op._forward.pieces(width)) == min(parts, 7) + min(parts, 5)
        torch.testing.assert_close(op @ V[:, 1], H @ V[:, 1], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(op @ V[:, :3], H @ V[:, :3], rtol=1e-9, atol=1e-12)
        assert op.label == f"forward{f' x{chunk}' if chunk > 1 else ''} /{split}"
    with pytest.raises(ConfigError, match="forward mode"):
        HessianOperator(model, CE, batches, mode="cached", split=2)
    with pytest.raises(ConfigError, match="split"):
        HessianOperator(model, CE, batches, mode="forward", split=0)


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


@pytest.mark.parametrize("mode, fallback, products", [
    ("forward", "reverse", 3),
    ("auto", "cached", 3 + WARMUPS + hessian_auto.TIMED)])  # the cached one's trial, 1 column
def test_forward_mode_falls_back_to_double_backward(monkeypatch, mode, fallback, products):
    monkeypatch.setattr(hessian_ops, "_resolve_mode", lambda m, d: m)  # "auto" as on CUDA
    hessian_auto.forget(saved=True)
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
