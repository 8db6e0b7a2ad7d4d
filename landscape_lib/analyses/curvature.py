"""Hessian spectra: extreme eigenpairs, trace, eigenvalue density, per-layer curvature.

Estimators take anything with ``@`` and ``.shape`` (a ``HessianOperator`` or a dense symmetric
tensor); ``hessian_analysis`` runs them all on a model and returns a ``HessianResult``.

- ``top_eigenpairs``: Lanczos with full reorthogonalisation on the operator's device
  (``engine="lanczos"``, the default: in ``bench/bench_hessian.py`` it needs fewer products than
  ARPACK and never copies vectors to the host) or SciPy's ARPACK ``eigsh``
  (``engine="eigsh"``).
- ``hutchinson_trace``: Rademacher probes, E[z^T H z] = tr H (Hutchinson 1989).
- ``slq_nodes`` / ``slq_density``: stochastic Lanczos quadrature (Ghorbani et al. 2019, the
  density of PyHessian, Yao et al. 2020) with Gaussian broadening.
- ``pyhessian_engine``: PyHessian's power iteration, kept as an independent cross-check.
"""
from __future__ import annotations

import contextlib
import importlib
import time
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence
from unittest import mock

import numpy as np
import pandas as pd
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from .hessian_ops import HessianOperator, eval_mode, flatten, scipy_operator, vector_to_params

EIGEN_ENGINES = ("lanczos", "eigsh")
ANALYSIS_ENGINES = ("default", "pyhessian")
WHICH = ("LA", "SA")

__all__ = ["HessianOperator", "vector_to_params", "top_eigenpairs", "hutchinson_trace",
           "slq_nodes", "slq_density", "broadened_density", "negative_share",
           "per_layer_spectrum", "pyhessian_engine", "hessian_analysis", "HessianResult"]


def _check(option: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not allowed; choose from: {', '.join(allowed)}")


def _dim(op) -> int:
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ConfigError(f"operator must be square, got shape {shape}")
    return int(shape[0])


def _device_dtype(op) -> tuple[torch.device, torch.dtype]:
    return (torch.device(getattr(op, "device", "cpu")), getattr(op, "dtype", torch.float64))


def _generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


# ------------------------------------------------------------------------------------- Lanczos
class _Lanczos:
    """Lanczos on m independent start vectors at once (columns), full reorthogonalisation.

    Each step costs one ``op @ Q`` with m columns; the basis is kept on the operator's device
    (steps x P x m) and reorthogonalised twice (CGS2), so no ghost eigenvalues appear.
    When a column's Krylov space is exhausted (beta ~ 0) it goes on from a fresh random vector
    orthogonal to its basis with beta = 0: T decouples, the new block adds eigenvalues
    (copies of repeated ones included) but no quadrature weight.
    """

    def __init__(self, op, start: Tensor, generator: torch.Generator, capacity: int = 32):
        self.op, self.generator = op, generator
        q = start / start.norm(dim=0, keepdim=True)
        self.basis = torch.empty((max(2, capacity), *q.shape), device=q.device, dtype=q.dtype)
        self.basis[0] = q
        self.steps = 0
        self.alphas: list[Tensor] = []
        self.betas: list[Tensor] = []
        self.scale = torch.zeros((), device=q.device, dtype=q.dtype)

    def step(self) -> None:
        j = self.steps
        q = self.basis[j]
        w = self.op @ q
        self.alphas.append((w * q).sum(0))
        Q = self.basis[: j + 1]
        for _ in range(2):  # w <- (I - Q Q^T) w, twice for numerical orthogonality
            w = w - torch.einsum("jpm,jm->pm", Q, torch.einsum("jpm,pm->jm", Q, w))
        beta = w.norm(dim=0)
        self.scale = torch.maximum(self.scale, self.alphas[-1].abs().max())
        alive = beta > 100 * torch.finfo(w.dtype).eps * torch.clamp(self.scale, min=1e-30)
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        self.betas.append(beta)
        if j + 1 >= len(self.basis):
            self.basis = torch.cat([self.basis, torch.empty_like(self.basis)])
        nxt = w / torch.where(alive, beta, 1)
        if not bool(alive.all()):  # one sync per step; a restart is rare
            nxt = torch.where(alive, nxt, self._fresh_directions(Q))
        self.basis[j + 1] = nxt
        self.steps += 1

    def _fresh_directions(self, Q: Tensor) -> Tensor:
        """Unit random columns orthogonal to each column's basis (used only after breakdown)."""
        r = torch.randn(Q.shape[1:], generator=self.generator, device=Q.device, dtype=Q.dtype)
        for _ in range(2):
            r = r - torch.einsum("jpm,jm->pm", Q, torch.einsum("jpm,pm->jm", Q, r))
        return r / r.norm(dim=0, keepdim=True).clamp(min=torch.finfo(r.dtype).tiny)

    def tridiagonal(self) -> tuple[np.ndarray, np.ndarray]:
        """(steps, m) diagonals and (steps, m) off-diagonals (last = residual beta), float64."""
        alphas = torch.stack(self.alphas).to("cpu", torch.float64).numpy()
        betas = torch.stack(self.betas).to("cpu", torch.float64).numpy()
        return alphas, betas

    def ritz(self, column: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
        """Ritz values (ascending), eigenvectors of T and the residual beta of one column."""
        alphas, betas = self.tridiagonal()
        a, b = alphas[:, column], betas[:, column]
        T = np.diag(a) + np.diag(b[:-1], 1) + np.diag(b[:-1], -1)
        theta, S = np.linalg.eigh(T)
        return theta, S, float(b[-1])

    def ritz_vectors(self, S: np.ndarray, column: int = 0) -> Tensor:
        """Lift Ritz vectors S (steps x k) back to parameter space: (P, k)."""
        Q = self.basis[: self.steps, :, column]
        Y = torch.einsum("jp,jk->pk", Q, torch.as_tensor(S, device=Q.device, dtype=Q.dtype))
        return Y / Y.norm(dim=0, keepdim=True)


def _lanczos_eigenpairs(op, k, tol, which, max_steps, scale, seed, progress):
    n = _dim(op)
    device, dtype = _device_dtype(op)
    gen = _generator(device, seed)
    start = torch.randn(n, 1, generator=gen, device=device, dtype=dtype)
    lz = _Lanczos(op, start, gen)
    max_steps = min(n, max(k, max_steps or max(150, 30 * k)))
    converged = False
    for _ in tqdm(range(max_steps), desc=f"Lanczos {which}", disable=not progress, leave=False):
        lz.step()
        if lz.steps < k:
            continue
        theta, S, beta = lz.ritz()
        wanted = np.arange(len(theta) - k, len(theta))[::-1] if which == "LA" else np.arange(k)
        residual = beta * np.abs(S[-1, wanted])
        bound = tol * np.maximum(np.abs(theta[wanted]), scale or 0.0)
        if lz.steps == n or np.all(residual <= bound):
            converged = True
            break
    if not converged:
        warnings.warn(f"Lanczos ({which}) did not reach tol={tol} in {max_steps} steps; "
                      "returning the current Ritz values", RuntimeWarning, stacklevel=3)
    return torch.as_tensor(theta[wanted].copy()), lz.ritz_vectors(S[:, wanted])


def _eigsh_eigenpairs(op, k, tol, which, max_steps, scale, seed):
    n = _dim(op)
    if k >= n:
        raise ConfigError(f"eigsh needs k < dimension; got k={k}, dimension={n}")
    A = scipy_operator(op)
    # ARPACK's test is relative to |lambda|; a shift by `scale` makes it relative to
    # |lambda| + scale, so near-zero eigenvalues at the wanted end do not stall it.
    shift = 0.0 if not scale else (scale if which == "LA" else -scale)
    if shift:
        A = A + shift * _identity(n)
    v0 = np.random.default_rng(seed).standard_normal(n)
    ncv = min(n, max(2 * k + 1, 20))
    try:
        # ARPACK counts restarts, each about ncv - k products.
        maxiter = max(1, max_steps // max(1, ncv - k)) if max_steps else None
        vals, vecs = eigsh(A, k=k, which=which, tol=tol, v0=v0, ncv=ncv, maxiter=maxiter)
    except ArpackNoConvergence as err:
        warnings.warn(f"eigsh did not converge to tol={tol}; returning the converged "
                      f"{len(err.eigenvalues)} of {k}", RuntimeWarning, stacklevel=3)
        vals, vecs = err.eigenvalues, err.eigenvectors
    order = np.argsort(vals)[::-1] if which == "LA" else np.argsort(vals)
    device, dtype = _device_dtype(op)
    vecs = torch.as_tensor(vecs[:, order].copy(), device=device, dtype=dtype)
    return torch.as_tensor(vals[order] - shift), vecs


def _identity(n: int):
    from scipy.sparse.linalg import aslinearoperator
    from scipy.sparse import identity
    return aslinearoperator(identity(n, dtype=np.float64))


def top_eigenpairs(op, k: int = 5, tol: float = 1e-3, which: str = "LA", *,
                   engine: str = "lanczos", max_steps: int | None = None,
                   scale: float | None = None, seed: int = 0,
                   progress: bool = False) -> tuple[Tensor, Tensor]:
    """The k extreme eigenpairs of a symmetric operator.

    Args:
        op: anything with ``@`` and ``.shape`` (HessianOperator, dense symmetric tensor).
        k: number of eigenpairs.
        tol: relative residual tolerance, ||A y - theta y|| <= tol * max(|theta|, scale).
        which: ``"LA"`` largest algebraic (returned descending) or ``"SA"`` smallest algebraic
            (returned ascending, most negative first): the most extreme comes first either way.
        engine: ``"lanczos"`` (torch, on the operator's device) or ``"eigsh"`` (SciPy ARPACK).
        max_steps: cap on Lanczos steps (products); default ``min(P, max(150, 30 k))``.
        scale: optional absolute scale for the tolerance, e.g. |lambda_max| when asking for the
            smallest eigenvalues of a Hessian whose negative ones are tiny.
        seed: seed of the random start vector.

    Returns:
        ``(eigvals, eigvecs)``: float64 CPU tensor (k,) and unit eigenvectors (P, k) on the
        operator's device. Like any Krylov method, copies of a repeated eigenvalue may be missed.
    """
    _check("which", which, WHICH)
    _check("engine", engine, EIGEN_ENGINES)
    n = _dim(op)
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} must be between 1 and the dimension {n}")
    if engine == "eigsh":
        return _eigsh_eigenpairs(op, k, tol, which, max_steps, scale, seed)
    return _lanczos_eigenpairs(op, k, tol, which, max_steps, scale, seed, progress)


# ------------------------------------------------------------------------------------ trace
def _rademacher(n: int, m: int, gen: torch.Generator, device, dtype) -> Tensor:
    return torch.randint(0, 2, (n, m), generator=gen, device=device).to(dtype) * 2 - 1


def hutchinson_trace(op, n_samples: int = 50, seed: int = 0, *, block: int = 8,
                     progress: bool = False) -> tuple[float, float]:
    """Trace estimate with Rademacher probes: mean of z^T A z and its standard error.

    When ``n_samples >= P`` the trace is computed exactly as the sum of e_i^T A e_i over the
    basis vectors (standard error 0). Probes go through the operator ``block`` at a time.
    """
    n = _dim(op)
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples} must be at least 1")
    device, dtype = _device_dtype(op)
    exact = n_samples >= n
    total = n if exact else n_samples
    gen = _generator(device, seed)
    values = []
    for start in tqdm(range(0, total, block), desc="trace", disable=not progress, leave=False):
        m = min(block, total - start)
        if exact:
            idx = torch.arange(start, start + m, device=device)
            Z = torch.zeros(n, m, device=device, dtype=dtype)
            Z[idx, torch.arange(m, device=device)] = 1
        else:
            Z = _rademacher(n, m, gen, device, dtype)
        values.append((Z * (op @ Z)).sum(0))
    values = torch.cat(values).to("cpu", torch.float64)
    if exact:
        return float(values.sum()), 0.0
    std_err = float(values.std(unbiased=True) / np.sqrt(total)) if total > 1 else float("nan")
    return float(values.mean()), std_err


# -------------------------------------------------------------------------------------- SLQ
def slq_nodes(op, n_vectors: int = 3, n_steps: int = 60, seed: int = 0, *,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature nodes and weights, shape (n_vectors, steps) each.

    For each normalised Rademacher start vector q, ``n_steps`` Lanczos steps give a tridiagonal
    T; its eigenvalues are the nodes and the squared first components of its eigenvectors the
    weights (each row sums to 1), so sum_i w_i f(theta_i) ~ q^T f(A) q. All start vectors run
    in lockstep (one ``op @ Q`` with ``n_vectors`` columns per step).
    """
    n = _dim(op)
    if n_vectors < 1 or n_steps < 1:
        raise ConfigError(f"n_vectors={n_vectors} and n_steps={n_steps} must be at least 1")
    device, dtype = _device_dtype(op)
    gen = _generator(device, seed)
    start = _rademacher(n, n_vectors, gen, device, dtype)
    steps = min(n_steps, n)
    lz = _Lanczos(op, start, gen, capacity=steps + 1)
    for _ in tqdm(range(steps), desc="SLQ", disable=not progress, leave=False):
        lz.step()
    alphas, betas = lz.tridiagonal()
    nodes, weights = [], []
    for c in range(n_vectors):
        b = betas[:-1, c]
        T = np.diag(alphas[:, c]) + np.diag(b, 1) + np.diag(b, -1)
        theta, S = np.linalg.eigh(T)
        nodes.append(theta)
        weights.append(S[0] ** 2)
    return np.array(nodes), np.array(weights)


def broadened_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray | None = None,
                      sigma: float | None = None,
                      n_grid: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-broadened spectral density from SLQ nodes/weights, integrating to 1 on ``grid``.

    Default ``sigma`` is 1/400 of the node range; default grid spans the nodes +- 6 sigma.
    """
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    live = nodes[weights > 1e-12]
    lo, hi = float(live.min()), float(live.max())
    if sigma is None:
        sigma = max(hi - lo, 1e-3 * max(abs(lo), abs(hi), 1e-12)) / 400
    if sigma <= 0:
        raise ConfigError(f"sigma={sigma} must be positive")
    if grid is None:
        grid = np.linspace(lo - 6 * sigma, hi + 6 * sigma, n_grid)
    grid = np.asarray(grid, dtype=np.float64)
    gauss = np.exp(-0.5 * ((grid[:, None] - nodes.ravel()[None]) / sigma) ** 2)
    density = gauss @ weights.ravel() / (nodes.shape[0] * sigma * np.sqrt(2 * np.pi))
    mass = np.trapezoid(density, grid)
    return grid, density / mass if mass > 0 else density


def slq_density(op, n_vectors: int = 3, n_steps: int = 60, seed: int = 0,
                grid: np.ndarray | None = None, sigma: float | None = None, *,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalue density of ``op`` by SLQ with Gaussian broadening: ``(grid, density)``."""
    nodes, weights = slq_nodes(op, n_vectors, n_steps, seed, progress=progress)
    return broadened_density(nodes, weights, grid, sigma)


def negative_share(nodes: np.ndarray, weights: np.ndarray, threshold: float = 0.0) -> float:
    """Share of the spectrum below ``-threshold``: SLQ weight on negative Ritz nodes.

    Read from the nodes rather than the broadened density, whose Gaussians would spread the
    large mass of near-zero eigenvalues evenly to both sides of zero.
    """
    nodes, weights = np.atleast_2d(nodes), np.atleast_2d(weights)
    return float((weights * (nodes < -threshold)).sum() / weights.sum())


# ---------------------------------------------------------------------------- per layer
def parameterized_modules(model: nn.Module) -> list[tuple[str, nn.Module, list[nn.Parameter]]]:
    """(name, module, its own trainable parameters) for each module holding parameters."""
    rows = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            rows.append((name or "(root)", module, own))
    return rows


def per_layer_spectrum(model: nn.Module, loss_fn: Callable, batches: Sequence, k: int = 1,
                       trace_samples: int = 20, *, tol: float = 1e-3, seed: int = 0,
                       mode: str = "auto", progress: bool = False) -> pd.DataFrame:
    """Top eigenvalue(s) and trace of each layer's diagonal Hessian block.

    One row per parameterized module: ``layer``, ``module`` (class), ``n_params``, ``top_eig``
    (and ``eig_2`` ... ``eig_k`` when k > 1), ``trace``, ``trace_std_err``, ``n_products``.
    """
    rows = []
    layers = parameterized_modules(model)
    for name, module, own in tqdm(layers, desc="per-layer", disable=not progress, leave=False):
        op = HessianOperator(model, loss_fn, batches, params=own, mode=mode)
        kk = min(k, op.shape[0])
        vals, _ = top_eigenpairs(op, kk, tol, "LA", seed=seed)
        trace, std_err = hutchinson_trace(op, trace_samples, seed)
        row = {"layer": name, "module": type(module).__name__, "n_params": op.shape[0],
               "top_eig": float(vals[0])}
        row.update({f"eig_{i + 1}": float(vals[i]) if i < kk else float("nan")
                    for i in range(1, k)})
        row.update(trace=trace, trace_std_err=std_err, n_products=op.n_products)
        rows.append(row)
        del op  # drop a cached graph before building the next
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------- PyHessian
@contextlib.contextmanager
def _saved_grads(params: Sequence[Tensor]):
    """Clear .grad for the block (PyHessian accumulates into it) and restore it after."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype):
    """PyHessian draws vectors with the default dtype; match the model's."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


class _PyHessianRun:
    """A PyHessian ``hessian`` object on our batches, counting its Hessian-vector products."""

    def __init__(self, model: nn.Module, criterion: Callable, batches: Sequence):
        from pyhessian import hessian
        self.module = importlib.import_module("pyhessian.hessian")
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.device = self.params[0].device
        self.dtype = self.params[0].dtype
        self.n_products = 0
        batches = list(batches)
        with self._context():
            if len(batches) == 1:  # one batch: PyHessian keeps its gradient graph
                self.hess = hessian(model, criterion, data=batches[0],
                                    cuda=self.device.type == "cuda")
            else:
                self.hess = hessian(model, criterion, dataloader=batches,
                                    cuda=self.device.type == "cuda")

    @contextlib.contextmanager
    def _context(self):
        original = self.module.hessian_vector_product
        loader_hvp = self.module.hessian.dataloader_hv_product

        def counted(*args):
            self.n_products += 1
            return original(*args)

        def counted_loader(hess, v):
            self.n_products += 1
            return loader_hvp(hess, v)

        with eval_mode(self.model), _default_dtype(self.dtype), warnings.catch_warnings(), \
                mock.patch.object(self.module, "hessian_vector_product", counted), \
                mock.patch.object(self.module.hessian, "dataloader_hv_product", counted_loader):
            # PyHessian calls loss.backward(create_graph=True); _saved_grads breaks the cycle.
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
            yield

    def eigenvalues(self, top_n: int, tol: float, max_iter: int) -> tuple[np.ndarray, Tensor]:
        with self._context():
            vals, vecs = self.hess.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
        vecs = torch.stack([flatten(v) for v in vecs], dim=1).detach()
        order = np.argsort(vals)[::-1]
        return np.asarray(vals, dtype=np.float64)[order], vecs[:, order.copy()]

    def trace(self, n_samples: int) -> tuple[float, float]:
        with self._context():
            values = np.asarray(self.hess.trace(maxIter=n_samples, tol=0.0), dtype=np.float64)
        std_err = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else np.nan
        return float(values.mean()), float(std_err)

    def close(self) -> None:
        self.hess = None  # drop the retained graph


def pyhessian_engine(model: nn.Module, criterion: Callable, batches: Sequence, top_n: int = 5,
                     tol: float = 1e-3, *, max_iter: int = 100) -> tuple[np.ndarray, Tensor, int]:
    """Top eigenpairs by PyHessian (power iteration with deflation), as an independent check.

    Returns ``(eigvals descending, eigvecs (P, top_n) on the model's device, n_products)``.
    PyHessian's ``tol`` is the relative change of the eigenvalue between two power iterations
    (not a residual bound) and power iteration finds the largest-|lambda| eigenvalues, which are
    the top ones unless a negative eigenvalue is larger in magnitude. The model's .grad and
    train/eval mode are left as they were.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    with _saved_grads(params):
        run = _PyHessianRun(model, criterion, batches)
        vals, vecs = run.eigenvalues(top_n, tol, max_iter)
        run.close()
    return vals, vecs, run.n_products


# ---------------------------------------------------------------------------------- analysis
@dataclass
class HessianResult:
    """Everything ``hessian_analysis`` measured (eigenvalues as float64 NumPy arrays)."""
    top_eigenvalues: np.ndarray          # (top_k,) descending
    top_eigenvectors: Tensor             # (top_k, P) on CPU, unit norm, parameter order
    bottom_eigenvalues: np.ndarray       # (bottom_k,) ascending: most negative first
    eig_ratio: float                     # |lambda_min / lambda_max| (SEEDS.md A convexity)
    trace: float
    trace_std_err: float
    density_grid: np.ndarray
    density: np.ndarray                  # integrates to 1 on density_grid
    ritz_nodes: np.ndarray               # (density_vectors, steps)
    ritz_weights: np.ndarray
    negative_share: float                # SLQ weight on negative Ritz nodes
    per_layer: pd.DataFrame | None
    param_names: list[str]
    n_params: int
    n_samples: int
    n_products: int
    seconds: float
    engine: str
    hvp_mode: str
    device: str

    def scalars(self) -> dict[str, float]:
        """Flat scalar summary (for a metrics table)."""
        out = {f"eig_top_{i + 1}": float(v) for i, v in enumerate(self.top_eigenvalues)}
        out.update({f"eig_bottom_{i + 1}": float(v) for i, v in enumerate(self.bottom_eigenvalues)})
        out.update(eig_ratio=self.eig_ratio, trace=self.trace, trace_std_err=self.trace_std_err,
                   negative_share=self.negative_share, n_params=self.n_params,
                   n_products=self.n_products, seconds=self.seconds)
        return out


def hessian_analysis(model: nn.Module, loss_fn: Callable, batches: Sequence, *, top_k: int = 5,
                     bottom_k: int = 1, tol: float = 1e-3, trace_samples: int = 50,
                     density_vectors: int = 3, density_steps: int = 60, per_layer: bool = True,
                     layer_trace_samples: int = 20, engine: str = "default",
                     eigen_engine: str = "lanczos", mode: str = "auto", seed: int = 0,
                     progress: bool = False) -> HessianResult:
    """Curvature of the mean loss over ``batches`` at the model's current parameters.

    The model is evaluated in eval mode (BatchNorm running stats). With ``engine="pyhessian"``
    the top eigenpairs and the trace come from PyHessian; the bottom eigenvalues, the density
    (PyHessian's needs the removed ``torch.eig``) and the per-layer table always come from the
    operator here. Nothing is stored: the caller writes the result.

    Cost in Hessian-vector products (each about two backward passes over all batches): the top
    and bottom eigenpairs need tens each, the trace ``trace_samples``, the density
    ``density_vectors * density_steps``, and the per-layer table per parameterized module
    ~15-40 for its top eigenvalue plus ``layer_trace_samples`` (the bulk for deep networks:
    ResNet-18 has 41 such modules; pass ``per_layer=False`` to skip it).
    """
    _check("engine", engine, ANALYSIS_ENGINES)
    if top_k < 1 or bottom_k < 0:
        raise ConfigError(f"top_k={top_k} must be >= 1 and bottom_k={bottom_k} >= 0")
    t0 = time.perf_counter()
    n_products = 0
    if engine == "pyhessian":  # before the operator exists: one retained graph at a time
        params = [p for p in model.parameters() if p.requires_grad]
        with _saved_grads(params):
            run = _PyHessianRun(model, loss_fn, batches)
            top_vals, top_vecs = run.eigenvalues(top_k, tol, max_iter=100)
            trace, trace_se = run.trace(trace_samples)
            run.close()
        n_products += run.n_products
        top_vals = torch.as_tensor(top_vals.copy())
    op = HessianOperator(model, loss_fn, batches, mode=mode)
    if engine == "default":
        top_vals, top_vecs = top_eigenpairs(op, top_k, tol, "LA", engine=eigen_engine, seed=seed,
                                            progress=progress)
        trace, trace_se = hutchinson_trace(op, trace_samples, seed, progress=progress)
    lam_max = float(top_vals[0])
    bottom = np.array([])
    if bottom_k:
        bottom_vals, _ = top_eigenpairs(op, bottom_k, tol, "SA", engine=eigen_engine,
                                        scale=abs(lam_max), seed=seed + 1, progress=progress)
        bottom = bottom_vals.numpy()
    nodes, weights = slq_nodes(op, density_vectors, density_steps, seed, progress=progress)
    grid, density = broadened_density(nodes, weights)
    layers = None
    if per_layer:
        # The whole-network operator has settled "auto" by now: the layers reuse its choice.
        layers = per_layer_spectrum(model, loss_fn, batches, k=1,
                                    trace_samples=layer_trace_samples, tol=tol, seed=seed,
                                    mode=op.mode if mode == "auto" else mode, progress=progress)
        n_products += int(layers["n_products"].sum())
    lam_min = float(bottom[0]) if len(bottom) else float("nan")
    return HessianResult(
        top_eigenvalues=top_vals.numpy(), top_eigenvectors=top_vecs.T.detach().cpu(),
        bottom_eigenvalues=bottom, eig_ratio=abs(lam_min / lam_max) if lam_max else float("nan"),
        trace=trace, trace_std_err=trace_se, density_grid=grid, density=density,
        ritz_nodes=nodes, ritz_weights=weights, negative_share=negative_share(nodes, weights),
        per_layer=layers, param_names=op.param_names, n_params=op.shape[0],
        n_samples=op.n_samples, n_products=n_products + op.n_products,
        seconds=time.perf_counter() - t0, engine=engine, hvp_mode=op.mode,
        device=str(op.device))
