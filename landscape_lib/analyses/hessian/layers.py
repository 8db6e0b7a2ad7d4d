"""Curvature per layer: each parameterized module's diagonal block H_bb of the Hessian.

Two ways (the analysis' ``layer_method``):

- ``"shared"`` (default; ``Blocks``): the blocks are consecutive row ranges of the
  whole-network operator, so
  - the traces come from the whole network's Hutchinson products (``spectrum.deflated_trace``
    with ``blocks``): z_b^T (H z)_b estimates tr(H_bb), no extra products;
  - the top eigenvalues from every block's Lanczos advanced together
    (``block_top_eigenvalues``): the blocks' Lanczos vectors are packed into one P-vector
    (the blocks are disjoint); a step expands it into one block-supported column per active
    block, multiplies them by the whole operator in one multi-column product (forward mode
    shares the primal pass among the columns) and keeps block b of column b, which is H_bb v_b.
    Reductions and reorthogonalisation are per block (segment sums), so the basis costs
    steps x P. Start: per block, the top eigenvector of the block of a low-rank
    approximation U Theta U^T of the whole network's Hessian, the analysis' from all Ritz pairs
    of an SLQ probe (``lowrank_block_starts``, no products), usually close to the block's own;
    a block stops when its residual is within ``tol`` of its
    Ritz value, when its Krylov space is exhausted (small blocks are exact) or after ``steps``.
- ``"separate"`` (``per_layer_spectrum``): each block's own operator, Lanczos and probes: the
  way before the shared one (most of the analysis' products on deep nets), kept for
  comparison (``bench/bench_analysis.py``) and as a cross-check.

Either way each row has the block's top Ritz value (a lower bound of lambda_max(H_bb)), its
residual ||H_bb y - theta y|| (an error bound) and whether it is within tolerance.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .lanczos import extreme_eigenpairs
from .operator import HessianOperator
from .spectrum import hutchinson_trace


def parameterized_modules(model: nn.Module) -> list[tuple[str, nn.Module, list[nn.Parameter]]]:
    """(name, module, its own trainable parameters) for each module holding parameters."""
    rows = []
    for name, module in model.named_modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            rows.append((name or "(root)", module, own))
    return rows


@dataclass
class Blocks:
    """Row ranges of the whole-network operator, one block per parameterized module."""
    names: list[str]
    modules: list[str]          # class names
    sizes: list[int]
    seg: Tensor                 # (P,) block index of each row (long, on the device)

    @property
    def count(self) -> int:
        return len(self.names)

    def sums(self, X: Tensor) -> Tensor:
        """Per-block column sums of X (P, m) -> (B, m): one reduction per block when the
        blocks are consecutive row ranges (as a module's parameters are), else an index_add
        (whose atomic adds into B rows serialise on a GPU)."""
        X = X if X.ndim == 2 else X[:, None]
        if self.contiguous:
            return torch.stack([part.sum(0) for part in torch.split(X, self.sizes)])
        out = torch.zeros(self.count, X.shape[1], device=X.device, dtype=X.dtype)
        return out.index_add_(0, self.seg, X)

    @cached_property
    def contiguous(self) -> bool:
        """Block b is rows sum(sizes[:b]) to sum(sizes[:b + 1])."""
        return bool((self.seg[1:] >= self.seg[:-1]).all()) and bool(
            torch.unique_consecutive(self.seg).numel() == self.count)

    def expand(self, v: Tensor, active: Tensor) -> Tensor:
        """Packed vector (P,) -> (P, len(active)): column i is v on block active[i], 0 elsewhere."""
        return v[:, None] * (self.seg[:, None] == active[None, :]).to(v.dtype)


def module_blocks(model: nn.Module, param_names: list[str], device) -> Blocks:
    """Blocks of an operator over ``param_names`` (in its order), one per parameterized module."""
    named = dict(model.named_parameters())
    owner_of = {}
    names, modules = [], []
    for name, module, own in parameterized_modules(model):
        ids = {id(p) for p in own}
        members = [n for n in param_names if id(named[n]) in ids]
        if members:
            owner_of.update({n: len(names) for n in members})
            names.append(name)
            modules.append(type(module).__name__)
    owners = torch.tensor([owner_of[n] for n in param_names], dtype=torch.long)
    counts = torch.tensor([named[n].numel() for n in param_names], dtype=torch.long)
    sizes = torch.zeros(len(names), dtype=torch.long).index_add_(0, owners, counts).tolist()
    # built on the device: P longs made on the host and copied cost 0.08 s at P = 11M
    seg = torch.repeat_interleave(owners.to(device), counts.to(device))
    return Blocks(names, modules, sizes, seg)


def lowrank_block_starts(blocks: Blocks, U: Tensor, theta, gen: torch.Generator) -> Tensor:
    """Packed start vector: per block, the top eigenvector of U_b Theta U_b^T (Theta clipped at
    0), the block of a low-rank approximation U Theta U^T of the operator, e.g. its Rayleigh-
    Ritz approximation on an SLQ probe's Krylov space (``spectrum.slq(keep_ritz=True)``: with
    all 60 Ritz pairs the per-layer Lanczos of the tests' nets needs about a third fewer
    products than from the top 5 eigenpairs). The top eigenvector of M M^T for M = U_b
    Theta^1/2 is M w for the top eigenvector w of the small M^T M; a block where M = 0 starts
    from a seeded Gaussian."""
    th = torch.as_tensor(np.maximum(np.asarray(theta, dtype=np.float64), 0.0), device=U.device,
                         dtype=U.dtype)
    start = torch.empty(U.shape[0], device=U.device, dtype=U.dtype)
    for b in range(blocks.count):
        rows = blocks.seg == b
        M = U[rows] * th.sqrt()                         # (n_b, k)
        gram = (M.T @ M).to(torch.float64)
        values, W = torch.linalg.eigh(gram)
        start[rows] = (M @ W[:, -1].to(M.dtype) if float(values[-1]) > 0 else torch.randn(
            int(rows.sum()), generator=gen, device=U.device, dtype=U.dtype))
    return start


@dataclass
class BlockTops:
    values: np.ndarray          # (B,) top Ritz values: lower bounds of lambda_max(H_bb)
    residuals: np.ndarray       # (B,) ||H_bb y - theta y||
    converged: np.ndarray       # (B,) residual <= tol * |theta|, or the block was exhausted
    steps: np.ndarray           # (B,) Lanczos steps per block (= its products)
    n_products: int             # columns multiplied (sum of steps)


def _top_ritz(alphas: list, betas: list, b: int, n: int) -> tuple[float, float, float]:
    """Top Ritz value of block b's last n steps, its residual and the largest |Ritz value|."""
    al = np.array([x[b] for x in alphas[-n:]])
    be = np.array([x[b] for x in betas[-n:]])
    T = np.diag(al) + np.diag(be[:-1], 1) + np.diag(be[:-1], -1)
    th, S = np.linalg.eigh(T)
    return th[-1], be[-1] * abs(S[-1, -1]), max(np.abs(th).max(), 1e-30)


def block_top_eigenvalues(op, blocks: Blocks, start: Tensor, *, steps: int = 8,
                          tol: float = 1e-2, progress: bool = False) -> BlockTops:
    """Top eigenvalue of every diagonal block H_bb, all blocks' Lanczos in lockstep."""
    B, dtype, device, seg = blocks.count, start.dtype, start.device, blocks.seg
    sizes = np.array(blocks.sizes)
    q = start / blocks.sums(start ** 2)[:, 0].sqrt()[seg]
    basis, alphas, betas = [q], [], []
    active, done = np.ones(B, bool), np.zeros(B, int)
    values, residuals = np.full(B, np.nan), np.full(B, np.nan)
    products, tiny = 0, 100 * torch.finfo(dtype).eps
    for _ in tqdm(range(steps), desc="per-layer Lanczos", disable=not progress, leave=False):
        act = torch.as_tensor(np.flatnonzero(active), device=device)
        HV = op @ blocks.expand(q, act)                   # (P, active blocks)
        products += len(act)
        col = torch.full((B,), -1, dtype=torch.long, device=device)
        col[act] = torch.arange(len(act), device=device)
        rows = torch.nonzero(col[seg] >= 0)[:, 0]
        w = torch.zeros_like(q)
        w[rows] = HV[rows, col[seg[rows]]]                # H_bb q_b, packed
        a = blocks.sums(q * w)[:, 0]
        Q = torch.stack(basis)                            # (j+1, P)
        for _ in range(2):                                # per-block CGS2
            C = blocks.sums((Q * w[None]).T).T            # (j+1, B)
            w = w - (C[:, seg] * Q).sum(0)
        beta = blocks.sums(w ** 2)[:, 0].sqrt()
        alphas.append(a.to("cpu", torch.float64).numpy())
        betas.append(beta.to("cpu", torch.float64).numpy())
        done[active] += 1
        for b in np.flatnonzero(active):
            values[b], residuals[b], scale = _top_ritz(alphas, betas, b, done[b])
            exhausted = done[b] >= sizes[b] or betas[-1][b] <= tiny * scale
            if exhausted or residuals[b] <= tol * abs(values[b]):
                active[b] = False
        if not active.any():
            break
        safe = torch.where(beta > 0, beta, torch.ones_like(beta))
        q = torch.where(torch.as_tensor(active, device=device)[seg], w / safe[seg],
                        torch.zeros_like(w))
        basis.append(q)
    converged = (residuals <= tol * np.abs(values)) | (done >= sizes)
    return BlockTops(values, residuals, converged, done, products)


def per_layer_spectrum(model: nn.Module, loss_fn: Callable, batches: Sequence, k: int = 1,
                       trace_samples: int = 20, *, tol: float = 1e-3, seed: int = 0,
                       mode: str = "auto", progress: bool = False,
                       make_op: Callable | None = None) -> pd.DataFrame:
    """The separate way: each layer's own operator, Lanczos (``tol`` on each Ritz value, the
    residual measured with the block operator) and ``trace_samples`` Hutchinson probes.

    ``make_op(params)`` builds a block's operator (default: a ``HessianOperator`` over
    ``batches`` in ``mode``). One row per parameterized module: ``layer``, ``module``,
    ``n_params``, ``top_eig`` (and ``eig_2`` ... ``eig_k``), ``top_eig_residual``,
    ``top_eig_converged``, ``trace``, ``trace_se``, ``n_products``.
    """
    make_op = make_op or (lambda own: HessianOperator(model, loss_fn, batches, params=own,
                                                      mode=mode))
    rows = []
    layers = parameterized_modules(model)
    for name, module, own in tqdm(layers, desc="per-layer", disable=not progress, leave=False):
        op = make_op(own)
        kk = min(k, op.shape[0])
        top = extreme_eigenpairs(op, kk, "LA", tol, seed=seed)
        trace, trace_se = hutchinson_trace(op, trace_samples, seed)
        row = {"layer": name, "module": type(module).__name__, "n_params": op.shape[0],
               "top_eig": float(top.values[0])}
        row.update({f"eig_{i + 1}": float(top.values[i]) if i < kk else float("nan")
                    for i in range(1, k)})
        row.update(top_eig_residual=float(top.residuals[0]),
                   top_eig_converged=bool(top.converged[0]), trace=trace, trace_se=trace_se,
                   n_products=op.n_products)
        rows.append(row)
        del op  # drop a cached graph before building the next
    return pd.DataFrame(rows)
