"""Problems with known Hessians, shared by the Hessian tests.

References: a quadratic with a chosen Hessian, ``torch.autograd.functional.hessian`` of a tiny
float64 model (through ``functional_call`` on the flat parameters) and its ``eigvalsh``; small
registry nets trained on digits with their dense float64 Hessians (``dense_problems``, built
once per session); synthetic operators with known spectra (``SpectrumOperator``).
"""
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from filelock import FileLock
from scipy.fft import dct, idct
from torch import nn
from torch.func import functional_call

from landscape_lib.analyses.hessian.operator import _math_attention
from landscape_lib.data import DeviceData, load_dataset
from landscape_lib.models import create_model

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


# ------------------------------------------------------------------- trained nets, dense H
# name -> (architecture, options): registry models of 1-2.5 thousand parameters, trained on
# the bundled digits in float64 (a real, trained Hessian: outliers, a near-zero cluster and a
# negative tail).
NETS = {
    "mlp": ("mlp", {"hidden": (32,)}),
    "cnn-bn": ("cnn", {"widths": (4, 8, 8), "batch_norm": True}),
    "vit": ("vit", {"patch_size": 4, "dim": 8, "depth": 2, "heads": 2, "mlp_ratio": 2.0}),
}
NET_EPOCHS = 30
NET_SAMPLES = 256


@dataclass
class DenseProblem:
    """A trained model (eval mode), its batches and its dense float64 Hessian (mean CE)."""
    name: str
    model: nn.Module
    batches: list
    H: torch.Tensor
    evals: np.ndarray          # ascending

    @property
    def lam_max(self) -> float:
        return float(self.evals[-1])

    @property
    def lam_min(self) -> float:
        return float(self.evals[0])

    def share_below(self, threshold: float) -> float:
        return float(np.mean(self.evals < threshold))

    def blocks(self, sizes):
        """Diagonal blocks of H of consecutive ``sizes`` (parameter order)."""
        edges = np.cumsum([0, *sizes])
        assert edges[-1] == len(self.H)
        return [self.H[a:b, a:b] for a, b in zip(edges[:-1], edges[1:])]


def _digits(samples: int):
    data = DeviceData(load_dataset("digits"), "cpu")
    x, y = data.subset("train", samples, seed=0)
    return data, [(x[i:i + 128].double(), y[i:i + 128]) for i in range(0, samples, 128)]


def _new_net(name: str) -> nn.Module:
    arch, options = NETS[name]
    torch.manual_seed(0)
    return create_model(arch, in_channels=1, image_size=8, num_classes=10, **options).double()


def _train(model: nn.Module, data: DeviceData) -> None:
    """Adam, batch 64, lr 3e-3, float64: a few seconds on the CPU."""
    gen = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(NET_EPOCHS):
        for x, y in data.train_batches(64, gen, augment=False):
            opt.zero_grad()
            CE(model(x.double()), y).backward()
            opt.step()
    model.eval()


def dense_hessian(model: nn.Module, batches, chunk: int = 128) -> torch.Tensor:
    """Dense Hessian of the mean loss over all batches in one call (the reference definition):
    rows of the double backward, ``chunk`` at a time (``is_grads_batched``), independent of
    the operator's code."""
    params = [p for p in model.parameters() if p.requires_grad]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.enable_grad(), _math_attention():
        g = torch.cat([t.reshape(-1) for t in torch.autograd.grad(CE(model(x), y), params,
                                                                   create_graph=True)])
        eye = torch.eye(len(g), dtype=g.dtype)
        rows = []
        for i in range(0, len(g), chunk):
            r = torch.autograd.grad(g, params, eye[i:i + chunk], retain_graph=True,
                                    allow_unused=True, is_grads_batched=True)
            rows.append(torch.cat([torch.zeros(len(eye[i:i + chunk]), p.numel(), dtype=g.dtype)
                                   if t is None else t.reshape(len(t), -1)
                                   for t, p in zip(r, params)], dim=1))
    H = torch.cat(rows).detach()
    return 0.5 * (H + H.T)


def build_dense_problem(name: str, cache: Path | None = None) -> DenseProblem:
    """Train the net and form its dense Hessian, or load both from ``cache`` (a file written
    once per test session under a lock, shared by the xdist workers)."""
    data, batches = _digits(NET_SAMPLES)
    model = _new_net(name)
    if cache is not None and cache.exists():
        saved = torch.load(cache, weights_only=True)
        model.load_state_dict(saved["state"])
        model.eval()
        return DenseProblem(name, model, batches, saved["H"], saved["evals"].numpy())
    _train(model, data)
    H = dense_hessian(model, batches)
    evals = np.linalg.eigvalsh(H.numpy())
    if cache is not None:
        torch.save({"state": model.state_dict(), "H": H, "evals": torch.from_numpy(evals)},
                   cache)
    return DenseProblem(name, model, batches, H, evals)


@pytest.fixture
def one_thread():
    """One torch thread for the test (the CPU is shared by the xdist workers)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def dense_problems(tmp_path_factory, request):
    """``get(name)`` -> DenseProblem, built once per session for all xdist workers (and once
    in a plain session, also without the xdist plugin)."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "master")
    shared = None if worker == "master" else tmp_path_factory.getbasetemp().parent
    built = {}

    def get(name: str) -> DenseProblem:
        if name not in built:
            if shared is None:
                built[name] = build_dense_problem(name)
            else:
                path = shared / f"dense-hessian-{name}.pt"
                with FileLock(str(path) + ".lock"):
                    built[name] = build_dense_problem(name, path)
        return built[name]
    return get


# --------------------------------------------------------------------- synthetic spectra
def issue_spectrum(n: int = 3000, seed: int = 0, kind: str = "issue") -> np.ndarray:
    """Spectra (ascending) with lambda_max = 1000 after issue 10 item 1: 30 outliers decaying
    from 1000 (power law), 20 negative eigenvalues and a bulk uniform in +-0.02.

    ``kind``: "issue" (negatives evenly from -0.80 to -0.04), "cluster" (packed in
    [-0.80, -0.78]), "tiny" (only down to -0.05: inside the near-zero band of eps = 1e-3) or
    "tail" (300 negatives uniform in [-5, -0.5], so the threshold -1 cuts a real tail).
    """
    rng = np.random.default_rng(seed)
    top = 1000.0 * np.arange(1, 31) ** -1.5
    neg = {"issue": -np.linspace(0.8, 0.04, 20), "cluster": -np.linspace(0.8, 0.78, 20),
           "tiny": -np.linspace(0.05, 0.021, 20),
           "tail": -rng.uniform(0.5, 5.0, 300)}[kind]
    bulk = rng.uniform(-0.02, 0.02, n - len(top) - len(neg))
    return np.sort(np.r_[top, neg, bulk])


class SpectrumOperator:
    """A = Q diag(evals) Q^T for a random orthogonal Q that is cheap to apply: Q^T v = C S1 P1
    C S2 P2 v (C the orthonormal DCT-II, S random signs, P random permutations), so a product
    costs O(n log n) and no n x n matrix is formed. Lanczos from a Gaussian start behaves as
    for a Haar-random Q (its convergence depends on the spectrum alone); counts its products
    like the library's operator."""

    def __init__(self, evals: np.ndarray, seed: int = 0):
        rng = np.random.default_rng(seed + 1000)
        n = len(evals)
        self.evals = np.asarray(evals, dtype=np.float64)
        self.perms = [rng.permutation(n) for _ in range(2)]
        self.signs = [rng.choice([-1.0, 1.0], n) for _ in range(2)]
        self.shape, self.dtype, self.device = (n, n), torch.float64, torch.device("cpu")
        self.n_products = 0

    def _qt(self, X):  # Q^T X
        for perm, sign in zip(self.perms[::-1], self.signs[::-1]):
            X = dct(X[perm] * sign[:, None], axis=0, norm="ortho")
        return X

    def _q(self, X):  # Q X
        for perm, sign in zip(self.perms, self.signs):
            Y = idct(X, axis=0, norm="ortho") * sign[:, None]
            X = np.empty_like(Y)
            X[perm] = Y
        return X

    def dense(self) -> torch.Tensor:
        return torch.from_numpy(self._q(self.evals[:, None] * self._qt(np.eye(self.shape[0]))))

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        V = v.reshape(self.shape[0], -1).numpy()
        self.n_products += V.shape[1]
        out = torch.from_numpy(self._q(self.evals[:, None] * self._qt(V)))
        return out[:, 0] if v.ndim == 1 else out


class CountedMatrix:
    """A dense symmetric tensor as an operator that counts its products."""

    def __init__(self, A: torch.Tensor, param_names=None):
        self.A, self.shape, self.dtype, self.device = A, tuple(A.shape), A.dtype, A.device
        self.param_names = param_names or []
        self.n_products = 0

    def __matmul__(self, v: torch.Tensor) -> torch.Tensor:
        self.n_products += v.shape[1] if v.ndim == 2 else 1
        return self.A @ v
