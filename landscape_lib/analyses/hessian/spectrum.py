"""Trace and eigenvalue density of a symmetric operator (anything with ``@`` and ``.shape``).

- ``hutchinson_trace``: Rademacher probes, E[z^T H z] = tr H (Hutchinson 1989).
- ``slq_nodes`` / ``slq_density``: stochastic Lanczos quadrature (Ghorbani et al. 2019, the
  density of PyHessian, Yao et al. 2020) with Gaussian broadening.
- ``negative_share``: the SLQ weight on negative Ritz nodes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ...errors import ConfigError
from .lanczos import Lanczos, device_dtype, dimension, seeded_generator


def _rademacher(n: int, m: int, gen: torch.Generator, device, dtype) -> Tensor:
    return torch.randint(0, 2, (n, m), generator=gen, device=device).to(dtype) * 2 - 1


def hutchinson_trace(op, n_samples: int = 50, seed: int = 0, *, block: int = 8,
                     progress: bool = False) -> tuple[float, float]:
    """Trace estimate with Rademacher probes: mean of z^T A z and its standard error.

    When ``n_samples >= P`` the trace is computed exactly as the sum of e_i^T A e_i over the
    basis vectors (standard error 0). Probes go through the operator ``block`` at a time.
    """
    n = dimension(op)
    if n_samples < 1:
        raise ConfigError(f"n_samples={n_samples} must be at least 1")
    device, dtype = device_dtype(op)
    exact = n_samples >= n
    total = n if exact else n_samples
    gen = seeded_generator(device, seed)
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


def slq_nodes(op, n_vectors: int = 3, n_steps: int = 60, seed: int = 0, *,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Stochastic Lanczos quadrature nodes and weights, shape (n_vectors, steps) each.

    For each normalised Rademacher start vector q, ``n_steps`` Lanczos steps give a tridiagonal
    T; its eigenvalues are the nodes and the squared first components of its eigenvectors the
    weights (each row sums to 1), so sum_i w_i f(theta_i) ~ q^T f(A) q. All start vectors run
    in lockstep (one ``op @ Q`` with ``n_vectors`` columns per step).
    """
    n = dimension(op)
    if n_vectors < 1 or n_steps < 1:
        raise ConfigError(f"n_vectors={n_vectors} and n_steps={n_steps} must be at least 1")
    device, dtype = device_dtype(op)
    gen = seeded_generator(device, seed)
    start = _rademacher(n, n_vectors, gen, device, dtype)
    steps = min(n_steps, n)
    lz = Lanczos(op, start, gen, capacity=steps + 1)
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
