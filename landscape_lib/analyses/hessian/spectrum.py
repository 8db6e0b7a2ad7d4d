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

import dataclasses
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
    ``TraceProbes`` is the same estimate with products that may ride along in other calls.
    """
    return TraceProbes(op, n_samples, seed, block=block, blocks=blocks,
                       progress=progress).finish(U, theta)


class TraceProbes:
    """The probes of ``deflated_trace``, multiplied before the eigenpairs that deflate them are
    known: z^T D z = z^T H z - sum_i theta_i (u_i^T z)^2, so a probe's product only has to
    leave z^T H z (and its per-block parts); the probes are drawn again from the seed for the
    correction (``finish``).

    ``riding(width)`` is an operator for another estimator (the SLQ) whose calls of fewer than
    ``width`` columns carry probes along up to that width: a call's primal pass is shared by
    its columns, so a probe riding in the SLQ's 3-column calls costs less than one in a call of
    its own (ResNet-18, 512 images, H200: 3 columns 156 ms, 4 columns 194 ms, so 38 ms a
    probe, against 46 ms in 8-column calls; ``bench/bench_hvp_shapes.py``). ``finish``
    multiplies the probes left over in blocks of ``block``. ``riders`` counts the probes that
    rode along.
    """

    def __init__(self, op, n_samples: int = 32, seed: int = 0, *, block: int = 8,
                 blocks=None, progress: bool = False):
        self.op, self.n = op, dimension(op)
        self.device, self.dtype = device_dtype(op)
        self.n_samples, self.seed, self.block, self.blocks = n_samples, seed, block, blocks
        self._draws = self._probes(progress)
        self._Z, self._used = None, 0           # the block being served, columns served of it
        self.whole, self.per_block, self.exact, self.riders = [], [], False, 0

    def _probes(self, progress: bool = False):
        gen = seeded_generator(self.device, self.seed)
        return _probe_blocks(self.n, self.n_samples, self.block, gen, self.device,
                             self.dtype, progress)

    def _take(self, k: int) -> Tensor | None:
        """Up to k unmultiplied probes (columns), or None when all are taken."""
        if self._Z is None or self._used == self._Z.shape[1]:
            nxt = next(self._draws, None)
            if nxt is None:
                return None
            (self._Z, self.exact), self._used = nxt, 0
        Z = self._Z[:, self._used:self._used + k]
        self._used += Z.shape[1]
        return Z

    def _keep(self, Z: Tensor, HZ: Tensor) -> None:
        self.whole.append((Z * HZ).sum(0))
        if self.blocks is not None:
            self.per_block.append(self.blocks.sums(Z * HZ))

    def riding(self, width: int = 4) -> "_Riding":
        return _Riding(self, width)

    def finish(self, U: Tensor, theta):
        """Multiply the probes left, deflate every probe by (U, theta): ``deflated_trace``."""
        while (Z := self._take(self.block)) is not None:
            self._keep(Z, self.op @ Z)
        device, dtype = self.device, self.dtype
        U = U.to(device, dtype)
        th = torch.as_tensor(np.asarray(theta, dtype=np.float64), device=device, dtype=dtype)
        whole, per_block = torch.cat(self.whole), (torch.cat(self.per_block, 1)
                                                   if self.blocks is not None else None)
        lowered, lowered_b = [], []             # sum_i theta_i (u_i^T z)^2 and its blocks
        for Z, _ in self._probes():             # the same probes again, from the seed
            UZ = U.T @ Z
            lowered.append((th[:, None] * UZ ** 2).sum(0))
            if self.blocks is not None:
                lowered_b.append(self.blocks.sums(Z * (U @ (th[:, None] * UZ))))

        def host(t: Tensor) -> np.ndarray:
            return t.to("cpu", torch.float64).numpy()

        rest, se = _mean_and_se(host(whole - torch.cat(lowered)), self.exact)
        trace = float(th.sum()) + float(rest)
        if self.blocks is None:
            return trace, float(se), None
        lowrank = host(self.blocks.sums((U ** 2) * th[None]).sum(1))
        rest_b, se_b = _mean_and_se(host(per_block - torch.cat(lowered_b, 1)), self.exact)
        return trace, float(se), (lowrank + rest_b, se_b)


class _Riding:
    """``TraceProbes.riding``: the operator with probes riding along (see there)."""

    def __init__(self, probes: TraceProbes, width: int):
        self.probes, self.width, self.op = probes, width, probes.op
        self.shape, self.device, self.dtype = tuple(self.op.shape), probes.device, probes.dtype

    def __matmul__(self, V: Tensor) -> Tensor:
        m = V.shape[1] if V.ndim == 2 else 1
        Z = self.probes._take(self.width - m) if m < self.width else None
        if Z is None or not Z.shape[1]:
            return self.op @ V
        out = self.op @ torch.cat([V.reshape(V.shape[0], -1), Z], 1)
        self.probes._keep(Z, out[:, m:])
        self.probes.riders += Z.shape[1]
        return out[:, :m] if V.ndim == 2 else out[:, 0]


@dataclass
class SLQResult:
    """Stochastic Lanczos quadrature of ``n_vectors`` probes."""
    nodes: np.ndarray        # (n_vectors, steps) Ritz values per probe, ascending
    weights: np.ndarray      # (n_vectors, steps), each row sums to 1
    lowest: Tensor           # (P,) unit Ritz vector of the lowest node over all probes
    lowest_node: float       # Ritz values lie in [lambda_min, lambda_max]: lambda_min <= it
    n_products: int
    top: Tensor | None = None            # (P, top_k) unit top Ritz vectors of one probe
    top_values: np.ndarray | None = None  # (top_k,) their Ritz values, descending
    top_settled: np.ndarray | None = None  # (top_k,) their recurrence residual beta |s_last|
    # the other probes' Ritz values settled within tol, with their recurrence residuals
    others: list[tuple[float, float]] = dataclasses.field(default_factory=list)
    def misses(self, values: np.ndarray, bounds: np.ndarray, tol: float) -> bool:
        """Whether another probe's settled Ritz value lies above the lowest of ``values`` (with
        error ``bounds``, e.g. the measured residuals of ``top``) and matches none of them
        within their bounds plus its own plus ``tol`` times it: an eigenvalue that ``top``'s
        Krylov space missed."""
        lowest = int(np.argmin(values))
        for t, e in self.others:
            if t > values[lowest] + bounds[lowest] and not np.any(
                    np.abs(values - t) <= bounds + e + tol * abs(t)):
                return True
        return False

    # every Ritz pair of that probe (values ascending, unit vectors (P, steps)): the Rayleigh-
    # Ritz approximation of the operator on its Krylov space (``keep_ritz``; e.g. the start of
    # the per-layer Lanczos, ``layers.lowrank_block_starts``)
    ritz_values: np.ndarray | None = None
    ritz_vectors: Tensor | None = None


def slq(op, n_vectors: int = 3, n_steps: int = 60, seed: int = 0, *, top_k: int = 0,
        tol: float = 1e-3, keep_ritz: bool = False, progress: bool = False) -> SLQResult:
    """SLQ nodes and weights (``n_vectors * min(n_steps, P)`` products), with the lowest node
    and, for ``top_k``, the top Ritz pairs of the probe whose pairs look best settled.

    For each normalised Rademacher start vector q, ``n_steps`` Lanczos steps give a tridiagonal
    T; its eigenvalues are the nodes and the squared first components of its eigenvectors the
    weights, so sum_i w_i f(theta_i) ~ q^T f(A) q. All start vectors run in lockstep (one
    ``op @ Q`` with ``n_vectors`` columns per step).

    Each probe's Lanczos is a full Krylov solver (``Lanczos``: reorthogonalised, no ghosts),
    so its top Ritz pairs are estimates of the top eigenpairs like those of a Lanczos run for
    them (``extreme_eigenpairs``), with recurrence residuals beta |s_last|. ``top`` takes
    the probe with the smallest largest relative recurrence residual over its ``top_k`` (and
    ``top_settled`` those residuals); ``others`` keeps the other probes' Ritz values settled
    within ``tol``, so that ``misses`` can tell whether one of them shows an eigenvalue that
    ``top`` lacks once the caller has measured its residuals with the operator
    (``lanczos.verify``): products with rounding (TF32) set the probes' Ritz values apart by
    about their measured residuals, not by ``tol``. ``keep_ritz`` also keeps all of that
    probe's Ritz pairs (``ritz_values``, ``ritz_vectors``: P x steps numbers).
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
    ritz = []  # per probe: Ritz values (ascending), eigenvectors of T, recurrence residuals
    for c in range(n_vectors):
        theta, S, beta = lz.ritz(c)
        ritz.append((theta, S, beta * np.abs(S[-1])))
    col = min(range(n_vectors), key=lambda c: ritz[c][0][0])  # the lowest node's probe
    res = SLQResult(np.array([r[0] for r in ritz]), np.array([r[1][0] ** 2 for r in ritz]),
                    lz.ritz_vectors(ritz[col][1][:, :1], col)[:, 0], float(ritz[col][0][0]),
                    steps * n_vectors)
    k = min(top_k, steps)
    if k or keep_ritz:
        best = _best_probe(ritz, max(k, 1))
        theta, S, est = ritz[best]
        if keep_ritz:
            res.ritz_values, res.ritz_vectors = theta, lz.ritz_vectors(S, best)
        if k:
            res.top_values = theta[-k:][::-1].copy()
            res.top_settled = est[-k:][::-1].copy()
            res.top = (res.ritz_vectors[:, -k:].flip(1).clone() if keep_ritz else
                       lz.ritz_vectors(S[:, -k:][:, ::-1].copy(), best))
            res.others = [(float(t), float(e)) for c, (th, _, es) in enumerate(ritz)
                          if c != best for t, e in zip(th, es) if e <= tol * abs(t)]
    return res


def _best_probe(ritz: list, k: int) -> int:
    """The probe with the smallest largest relative recurrence residual of its top k."""
    def rel(theta, est):
        return float(np.max(est[-k:] / np.maximum(np.abs(theta[-k:]), np.finfo(float).tiny)))
    return min(range(len(ritz)), key=lambda c: rel(ritz[c][0], ritz[c][2]))


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
