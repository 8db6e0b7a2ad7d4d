"""Problems with known Hessians, shared by the Hessian tests.

References: a quadratic with a chosen Hessian, ``torch.autograd.functional.hessian`` of a tiny
float64 model (through ``functional_call`` on the flat parameters) and its ``eigvalsh``.
"""
import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call

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
