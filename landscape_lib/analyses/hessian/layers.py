"""Curvature per layer: each parameterized module's diagonal block of the Hessian."""
from __future__ import annotations

from typing import Callable, Sequence

import pandas as pd
from torch import nn
from tqdm.auto import tqdm

from .lanczos import top_eigenpairs
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
