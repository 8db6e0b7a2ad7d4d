"""``hessian_analysis``: every curvature estimate of a model's loss, in one ``HessianResult``."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ...errors import ConfigError, check_choice
from .lanczos import top_eigenpairs
from .layers import per_layer_spectrum
from .operator import HessianOperator
from .pyhessian_adapter import pyhessian_spectrum
from .spectrum import broadened_density, hutchinson_trace, negative_share, slq_nodes

ANALYSIS_ENGINES = ("default", "pyhessian")


@dataclass
class HessianResult:
    """Everything ``hessian_analysis`` measured (eigenvalues as float64 NumPy arrays)."""
    top_eigenvalues: np.ndarray          # (top_k,) descending
    top_eigenvectors: Tensor             # (top_k, P) on CPU, unit norm, parameter order
    bottom_eigenvalues: np.ndarray       # (bottom_k,) ascending: most negative first
    eig_ratio: float                     # |lambda_min / lambda_max| (convexity, docs/studies.md A)
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
    check_choice("engine", engine, ANALYSIS_ENGINES)
    if top_k < 1 or bottom_k < 0:
        raise ConfigError(f"top_k={top_k} must be >= 1 and bottom_k={bottom_k} >= 0")
    t0 = time.perf_counter()
    n_products = 0
    if engine == "pyhessian":  # before the operator exists: one retained graph at a time
        res = pyhessian_spectrum(model, loss_fn, batches, top_k, tol, max_iter=100,
                                 trace_samples=trace_samples)
        top_vecs, trace, trace_se = res.eigenvectors, res.trace, res.trace_std_err
        n_products += res.n_products
        top_vals = torch.as_tensor(res.eigenvalues.copy())
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
