"""Trace and eigenvalue density of a symmetric operator (anything with ``@`` and ``.shape``).

- ``hutchinson_trace``: Rademacher probes, E[z^T H z] = tr H (Hutchinson 1989).
- ``deflated_trace``: the same with the top eigenpairs counted exactly, tr H = sum theta_i +
  E[z^T (H - U Theta U^T) z]; the same products give every block's (layer's) trace.
- ``slq`` / ``slq_nodes`` / ``slq_density``: stochastic Lanczos quadrature (Ghorbani et al.
  2019, the density of PyHessian, Yao et al. 2020) with Gaussian broadening; ``slq`` also keeps
  the lowest Ritz node and its Ritz vector (a bound on and a warm start for lambda_min).
The spectral shares (negative, near zero) of the SLQ nodes are in ``shares``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError
from .lanczos import Lanczos, device_dtype, dimension, seeded_generator


def _rademacher(n: int, m: int, gen: torch.Generator, device, dtype) -> Tensor:
    return torch.randint(0, 2, (n, m), generator=gen, device=device).to(dtype) * 2 - 1


def _probe_blocks(n: int, n_samples: int, block: int, gen: torch.Generator, device, dtype,
                  progress: bool = False, desc: str = "trace"):
    """Probe matrices (n, <= block): Rademacher, or the unit vectors e_1..e_n (``exact``) when
    ``n_samples >= n``. Yields ``(Z, exact)``."""
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples} must be at least 1")
    exact = n_samples >= n
    total = n if exact else n_samples
    for start in tqdm(range(0, total, block), desc=desc, disable=not progress, leave=False):
        m = min(block, total - start)
        if exact:
            Z = torch.zeros(n, m, device=device, dtype=dtype)
            Z[torch.arange(start, start + m, device=device), torch.arange(m, device=device)] = 1
        else:
            Z = _rademacher(n, m, gen, device, dtype)
        yield Z, exact


def _mean_and_se(values: np.ndarray, exact: bool) -> tuple[float, float]:
    """Trace from per-probe values (last axis): the sum for unit probes (SE 0), else the mean
    and its standard error."""
    if exact:
        return values.sum(-1), np.zeros(values.shape[:-1])
    m = values.shape[-1]
    se = values.std(-1, ddof=1) / np.sqrt(m) if m > 1 else np.full(values.shape[:-1], np.nan)
    return values.mean(-1), se


def hutchinson_trace(op, n_samples: int = 50, seed: int = 0, *, block: int = 8,
                     progress: bool = False) -> tuple[float, float]:
    """Trace estimate with Rademacher probes: mean of z^T A z and its standard error.

    When ``n_samples >= P`` the trace is computed exactly as the sum of e_i^T A e_i over the
    basis vectors (standard error 0). Probes go through the operator ``block`` at a time.
    """
    n = dimension(op)
    device, dtype = device_dtype(op)
    gen = seeded_generator(device, seed)
    values, exact = [], False
    for Z, exact in _probe_blocks(n, n_samples, block, gen, device, dtype, progress):
        values.append((Z * (op @ Z)).sum(0))
    trace, se = _mean_and_se(torch.cat(values).to("cpu", torch.float64).numpy(), exact)
    return float(trace), float(se)


def deflated_trace(op, U: Tensor, theta, n_samples: int = 32, seed: int = 0, *,
                   block: int = 8, blocks=None, progress: bool = False):
    """Trace with the top eigenpairs (unit columns ``U``, values ``theta``) counted exactly.

    tr H = sum_i theta_i + E[z^T (H - U Theta U^T) z]: an identity for orthonormal U (whatever
    their accuracy), so the estimate stays unbiased; the outliers, which dominate the variance
    of plain Hutchinson on a network Hessian, no longer enter it. With ``blocks`` (anything
    with ``.sums(X) -> (B, m)`` per-block column sums and ``.count``, e.g. the layers'
    ``Blocks``) the same products give every diagonal block's trace: z_b^T (D z)_b estimates
    tr(D_bb) (the off-block terms have mean zero), plus the exact block trace of the low-rank
    part. Unit probes (``n_samples >= P``) give exact traces (SE 0).

    Returns ``(trace, se, per_block)``; ``per_block`` is ``(traces, ses)`` arrays or None.
    """
    n = dimension(op)
    device, dtype = device_dtype(op)
    U = U.to(device, dtype)
    th = torch.as_tensor(np.asarray(theta, dtype=np.float64), device=device, dtype=dtype)
    gen = seeded_generator(device, seed)
    whole, per_block, exact = [], [], False
    for Z, exact in _probe_blocks(n, n_samples, block, gen, device, dtype, progress):
        DZ = op @ Z - U @ (th[:, None] * (U.T @ Z))
        whole.append((Z * DZ).sum(0))
        if blocks is not None:
            per_block.append(blocks.sums(Z * DZ))
    rest, se = _mean_and_se(torch.cat(whole).to("cpu", torch.float64).numpy(), exact)
    trace = float(th.sum()) + float(rest)
    if blocks is None:
        return trace, float(se), None
    lowrank = blocks.sums((U ** 2) * th[None]).sum(1).to("cpu", torch.float64).numpy()
    rest_b, se_b = _mean_and_se(torch.cat(per_block, 1).to("cpu", torch.float64).numpy(), exact)
    return trace, float(se), (lowrank + rest_b, se_b)


@dataclass
class SLQResult:
    """Stochastic Lanczos quadrature of ``n_vectors`` probes."""
    nodes: np.ndarray        # (n_vectors, steps) Ritz values per probe, ascending
    weights: np.ndarray      # (n_vectors, steps), each row sums to 1
    lowest: Tensor           # (P,) unit Ritz vector of the lowest node over all probes
    lowest_node: float       # Ritz values lie in [lambda_min, lambda_max]: lambda_min <= it
    n_products: int


def slq(op, n_vectors: int = 3, n_steps: int = 60, seed: int = 0, *,
        progress: bool = False) -> SLQResult:
    """SLQ nodes and weights (``n_vectors * min(n_steps, P)`` products), with the lowest node.

    For each normalised Rademacher start vector q, ``n_steps`` Lanczos steps give a tridiagonal
    T; its eigenvalues are the nodes and the squared first components of its eigenvectors the
    weights, so sum_i w_i f(theta_i) ~ q^T f(A) q. All start vectors run in lockstep (one
    ``op @ Q`` with ``n_vectors`` columns per step).
    """
    n = dimension(op)
    if n_vectors < 1 or n_steps < 1:
        raise ConfigError(f"n_vectors={n_vectors} and n_steps={n_steps} must be at least 1")
    device, dtype = device_dtype(op)
    gen = seeded_generator(device, seed)
    steps = min(n_steps, n)
    lz = Lanczos(op, _rademacher(n, n_vectors, gen, device, dtype), gen, capacity=steps + 1)
    for _ in tqdm(range(steps), desc="SLQ", disable=not progress, leave=False):
        lz.step()
    nodes, weights, lows = [], [], []
    for c in range(n_vectors):
        theta, S, _ = lz.ritz(c)
        nodes.append(theta)
        weights.append(S[0] ** 2)
        lows.append((theta[0], c, S[:, :1]))
    low, col, s = min(lows, key=lambda t: t[0])
    return SLQResult(np.array(nodes), np.array(weights), lz.ritz_vectors(s, col)[:, 0],
                     float(low), steps * n_vectors)


def slq_nodes(op, n_vectors: int = 3, n_steps: int = 60, seed: int = 0, *,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """SLQ nodes and weights (``slq``), shape (n_vectors, steps) each."""
    res = slq(op, n_vectors, n_steps, seed, progress=progress)
    return res.nodes, res.weights


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
