"""Extreme eigenpairs of a symmetric operator: Lanczos on the operator's device or ARPACK.

Estimators here and in ``spectrum`` take anything with ``@`` and ``.shape`` (a
``HessianOperator`` or a dense symmetric tensor).

- ``extreme_eigenpairs``: Lanczos with full reorthogonalisation on the operator's device, a
  stopping rule on each Ritz value's own residual, optional deflation (``Deflated``) and warm
  start, and residuals measured with the full operator (``verify``): an ``Eigen``.
- ``top_eigenpairs``: ``(values, vectors)`` from the same Lanczos (``engine="lanczos"``, the
  default: in ``bench/bench_hessian.py`` it needs fewer products than ARPACK and never copies
  vectors to the host) or from SciPy's ARPACK ``eigsh`` (``engine="eigsh"``).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

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
    (m x steps x P: each column's basis one contiguous matrix, so the projections are batched
    matrix products without copies) and reorthogonalised twice (CGS2), so no ghost eigenvalues
    appear. When a column's Krylov space is exhausted (beta ~ 0) it goes on from a fresh random
    vector orthogonal to its basis with beta = 0: T decouples, the new block adds eigenvalues
    (copies of repeated ones included) but no quadrature weight.
    """

    def __init__(self, op, start: Tensor, generator: torch.Generator, capacity: int = 32):
        self.op, self.generator = op, generator
        q = (start / start.norm(dim=0, keepdim=True)).T            # (m, P)
        self.basis = torch.empty((q.shape[0], max(2, capacity), q.shape[1]), device=q.device,
                                 dtype=q.dtype)
        self.basis[:, 0] = q
        self.steps = 0
        self.alphas: list[Tensor] = []
        self.betas: list[Tensor] = []
        self.scale = torch.zeros((), device=q.device, dtype=q.dtype)

    @staticmethod
    def _orthogonalise(Q: Tensor, w: Tensor) -> Tensor:
        """w (m, P) <- (I - Q Q^T) w per column, twice for numerical orthogonality.

        The projections Q_c w_c are one matrix-vector product per column: a batched matrix
        product of these shapes (a few rows, P long) runs on a few thread blocks (H200, P =
        11.2M, 3 x 31 rows: 6.8 ms at 0.6 TB/s with 10x the rounding, against 1.1 ms at
        3.8 TB/s; ``bench/bench_lanczos.py``)."""
        for _ in range(2):
            c = torch.stack([torch.mv(Q[i], w[i]) for i in range(Q.shape[0])])  # (m, j+1)
            w = w - torch.bmm(c[:, None, :], Q)[:, 0]
        return w

    def step(self) -> None:
        j = self.steps
        q = self.basis[:, j]                                       # (m, P)
        w = (self.op @ q.T).T                                      # (m, P)
        self.alphas.append((w * q).sum(1))
        Q = self.basis[:, : j + 1]                                 # (m, j+1, P)
        w = self._orthogonalise(Q, w)
        beta = w.norm(dim=1)
        self.scale = torch.maximum(self.scale, self.alphas[-1].abs().max())
        alive = beta > 100 * torch.finfo(w.dtype).eps * torch.clamp(self.scale, min=1e-30)
        beta = torch.where(alive, beta, torch.zeros_like(beta))
        self.betas.append(beta)
        if j + 1 >= self.basis.shape[1]:
            self.basis = torch.cat([self.basis, torch.empty_like(self.basis)], 1)
        nxt = w / torch.where(alive, beta, 1)[:, None]
        if not bool(alive.all()):  # one sync per step; a restart is rare
            nxt = torch.where(alive[:, None], nxt, self._fresh_directions(Q))
        self.basis[:, j + 1] = nxt
        self.steps += 1

    def _fresh_directions(self, Q: Tensor) -> Tensor:
        """Unit random rows orthogonal to each column's basis (used only after breakdown)."""
        r = torch.randn((Q.shape[2], Q.shape[0]), generator=self.generator, device=Q.device,
                        dtype=Q.dtype).T  # drawn (P, m) as before
        r = self._orthogonalise(Q, r)
        return r / r.norm(dim=1, keepdim=True).clamp(min=torch.finfo(r.dtype).tiny)

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
        Q = self.basis[column, : self.steps]                       # (steps, P)
        Y = Q.T @ torch.as_tensor(S, device=Q.device, dtype=Q.dtype)
        return Y / Y.norm(dim=0, keepdim=True)


@dataclass
class Eigen:
    """Extreme eigenpairs with their residual bounds, most extreme first."""
    values: np.ndarray       # (k,) float64; with check: Rayleigh quotients of the full operator
    vectors: Tensor          # (P, k) unit vectors on the operator's device
    residuals: np.ndarray    # (k,) ||A y - theta y|| (measured with the full operator on check)
    converged: np.ndarray    # (k,) bool: residual <= tol * max(|theta|, floor)
    n_products: int          # Lanczos steps + check products
    steps: int               # Lanczos steps


class Deflated:
    """The compression ``(I - U U^T) op (I - U U^T)`` of ``op`` to span(U)'s complement.

    Its eigenvalues on the complement interlace those of ``op`` (Cauchy), so a Ritz value of it
    is still >= lambda_min(op); a Lanczos started in the complement never leaves it (every
    product is projected twice).
    """

    def __init__(self, op, U: Tensor):
        self.op = op
        self.shape = tuple(op.shape)
        self.device, self.dtype = device_dtype(op)
        self.U = torch.linalg.qr(U.to(self.device, self.dtype))[0]

    def project(self, V: Tensor) -> Tensor:
        for _ in range(2):
            V = V - self.U @ (self.U.T @ V)
        return V

    def __matmul__(self, V: Tensor) -> Tensor:
        return self.project(self.op @ self.project(V))


def verify(op, Y: Tensor, tol: float, floor: float = 0.0
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rayleigh quotients, residual norms ``||A y - theta y||`` and converged flags
    (``residual <= tol * max(|theta|, floor)``) of the unit columns of ``Y`` under ``op``:
    ``Y.shape[1]`` products."""
    AY = op @ Y
    theta = (Y * AY).sum(0)
    res = (AY - Y * theta).norm(dim=0)
    theta = theta.to("cpu", torch.float64).numpy()
    res = res.to("cpu", torch.float64).numpy()
    return theta, res, res <= tol * np.maximum(np.abs(theta), floor)


def scientific(x) -> str:
    """Numbers in scientific notation (NumPy's default prints 8.8e-4 as "0." at precision 2)."""
    return np.array2string(np.asarray(x), formatter={"float_kind": lambda v: f"{v:.2e}"})


def _wanted(theta: np.ndarray, k: int, which: str) -> np.ndarray:
    return np.arange(len(theta) - k, len(theta))[::-1] if which == "LA" else np.arange(k)


def extreme_eigenpairs(op, k: int = 1, which: str = "LA", tol: float = 1e-3, *,
                       floor: float = 0.0, deflate: Tensor | None = None,
                       start: Tensor | None = None, max_steps: int | None = None,
                       seed: int = 0, check: bool = True, progress: bool = False) -> Eigen:
    """The k extreme eigenpairs of a symmetric operator, each with its own residual bound.

    Lanczos (full reorthogonalisation) stops when **every wanted Ritz value's residual is small
    relative to that value**: ``||A y_i - theta_i y_i|| <= tol * max(|theta_i|, floor)``.
    (A rule relative to |lambda_max| accepts a smallest Ritz value long before it has moved
    from the bulk to lambda_min; ``floor`` only keeps the rule finite for a value near 0.)

    Args:
        op: anything with ``@`` and ``.shape`` (HessianOperator, dense tensor, sharded operator).
        k: number of eigenpairs; ``which``: ``"LA"`` (descending) or ``"SA"`` (ascending).
        tol, floor: the stopping rule above.
        deflate: (P, j) vectors whose span is projected out (``Deflated``), e.g. the top
            eigenvectors when the bottom is wanted: the span shrinks to [lambda_min, ~lambda_j+1].
        start: start vector (P,) (a warm start), default a seeded Gaussian.
        max_steps: cap on Lanczos steps; default ``min(P, max(150, 30 k))``.
        check: multiply the Ritz vectors by the full ``op`` once more (k products): the values
            become its Rayleigh quotients and the residuals are measured, not inferred from the
            recurrence. Some eigenvalue lies within the residual of each value
            (Krylov-Bogoliubov), so the residual bounds the error unless Lanczos missed an
            eigenvalue beyond it altogether.
    """
    check_choice("which", which, WHICH)
    n = dimension(op)
    if not 1 <= k <= n:
        raise ConfigError(f"k={k} must be between 1 and the dimension {n}")
    device, dtype = device_dtype(op)
    gen = seeded_generator(device, seed)
    inner = Deflated(op, deflate) if deflate is not None and deflate.shape[1] else op
    q = (torch.randn(n, generator=gen, device=device, dtype=dtype) if start is None
         else start.reshape(-1).to(device, dtype).clone())
    free = n
    if isinstance(inner, Deflated):
        q, free = inner.project(q[:, None])[:, 0], n - inner.U.shape[1]
    lz = Lanczos(inner, q[:, None], gen)
    max_steps = min(free, max(k, max_steps or max(150, 30 * k)))
    bar = tqdm(total=max_steps, desc=f"Lanczos {which}", disable=not progress, leave=False)
    done = False
    while lz.steps < max_steps and not done:
        lz.step()
        bar.update()
        if lz.steps < k:
            continue
        theta, S, beta = lz.ritz()
        idx = _wanted(theta, k, which)
        res = beta * np.abs(S[-1, idx])
        done = lz.steps == free or bool(np.all(
            res <= tol * np.maximum(np.abs(theta[idx]), floor)))
    bar.close()
    Y = lz.ritz_vectors(S[:, idx])
    products = lz.steps
    if check:
        values, res, conv = verify(op, Y, tol, floor)
        products += k
    else:
        values = theta[idx].copy()
        conv = res <= tol * np.maximum(np.abs(values), floor)
    order = np.argsort(values)[::-1] if which == "LA" else np.argsort(values)
    if not conv.all():
        bound = np.maximum(np.maximum(np.abs(values), floor), np.finfo(float).tiny)[order]
        warnings.warn(f"Lanczos ({which}) stopped after {lz.steps} steps with residuals "
                      f"{scientific(res[order])}, relative to the Ritz values"
                      f"{' (or floor)' if floor else ''} {scientific(res[order] / bound)}: not all "
                      f"within tol={tol}", RuntimeWarning, stacklevel=2)
    return Eigen(values=values[order], vectors=Y[:, torch.as_tensor(order.copy())],
                 residuals=res[order], converged=conv[order], n_products=products,
                 steps=lz.steps)


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
    res = extreme_eigenpairs(op, k, which, tol, floor=scale or 0.0, max_steps=max_steps,
                             seed=seed, check=False, progress=progress)
    return torch.as_tensor(res.values), res.vectors
