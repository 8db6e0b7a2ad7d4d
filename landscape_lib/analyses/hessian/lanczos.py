"""Extreme eigenpairs of a symmetric operator: Lanczos on the operator's device or ARPACK.

Estimators here and in ``spectrum`` take anything with ``@`` and ``.shape`` (a
``HessianOperator`` or a dense symmetric tensor).

- ``top_eigenpairs``: Lanczos with full reorthogonalisation on the operator's device
  (``engine="lanczos"``, the default: in ``bench/bench_hessian.py`` it needs fewer products than
  ARPACK and never copies vectors to the host) or SciPy's ARPACK ``eigsh``
  (``engine="eigsh"``).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, eigsh
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError, check_choice
from .operator import scipy_operator

EIGEN_ENGINES = ("lanczos", "eigsh")
WHICH = ("LA", "SA")


def dimension(op) -> int:
    shape = tuple(op.shape)
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ConfigError(f"operator must be square, got shape {shape}")
    return int(shape[0])


def device_dtype(op) -> tuple[torch.device, torch.dtype]:
    return (torch.device(getattr(op, "device", "cpu")), getattr(op, "dtype", torch.float64))


def seeded_generator(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(int(seed))


class Lanczos:
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
    n = dimension(op)
    device, dtype = device_dtype(op)
    gen = seeded_generator(device, seed)
    start = torch.randn(n, 1, generator=gen, device=device, dtype=dtype)
    lz = Lanczos(op, start, gen)
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
    n = dimension(op)
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
    device, dtype = device_dtype(op)
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
    check_choice("which", which, WHICH)
    check_choice("engine", engine, EIGEN_ENGINES)
    n = dimension(op)
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} must be between 1 and the dimension {n}")
    if engine == "eigsh":
        return _eigsh_eigenpairs(op, k, tol, which, max_steps, scale, seed)
    return _lanczos_eigenpairs(op, k, tol, which, max_steps, scale, seed, progress)
