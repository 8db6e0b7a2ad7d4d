"""Every default of the Hessian analysis, in one dataclass (imports no torch: the analyses
registry reads it for the `hessian` analysis' parameters, and the README's option table is
checked against the registry).

Costs (Hessian-vector products, "p"; each about two passes over the ``samples``): top ~15-30 +
``top_k`` checks; trace ``trace_samples``; density ``density_vectors * density_steps``; bottom
1 to ``bottom_max_steps`` + ``bottom_k`` checks; per layer (``layer_method = "shared"``) at most
``layer_steps`` columns per parameterized module, in multi-column products. The measured
products and seconds of each part are stored in ``analysis_costs``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

DEFAULT_EPS = 1e-3          # neg_eps: see shares.py for why 1e-3
LAYER_METHODS = ("shared", "separate")
ENGINES = ("default", "pyhessian")


@dataclass(frozen=True)
class HessianSettings:
    # which examples: `samples` of `split` (0 = all of it), a fixed seeded subset
    samples: int = 512
    split: str = "train"
    data_seed: int = 0
    # the loss differentiated: "ce" = plain mean cross-entropy, "train" = the run's training
    # objective (its label smoothing); see analyses.context.ANALYSIS_LOSSES
    loss: str = "ce"
    # top eigenpairs: stop when every ||H y - theta y|| <= tol * |theta|
    top_k: int = 5
    tol: float = 1e-3
    # lambda_min (bottom_k eigenvalues): deflated by the top eigenvectors, warm-started from
    # the lowest SLQ Ritz vector, residual <= bottom_tol * max(|theta|, neg_eps * lambda_max)
    bottom_k: int = 1
    bottom_tol: float = 1e-2
    bottom_max_steps: int = 150
    # negative share = mass below -neg_eps * lambda_max; near-zero share within +-neg_eps * it
    neg_eps: float = DEFAULT_EPS
    # Hutchinson probes (Rademacher), the top_k eigenpairs counted exactly
    trace_samples: int = 32
    # stochastic Lanczos quadrature: probes x steps
    density_vectors: int = 3
    density_steps: int = 60
    # per-layer top eigenvalue and trace: "shared" = traces from the trace probes and every
    # layer's Lanczos advanced together (layer_steps at most, until residual <= layer_tol *
    # theta); "separate" = each layer's own Lanczos (layer_tol) and trace_samples probes
    per_layer: bool = True
    layer_method: str = "shared"
    layer_steps: int = 8
    layer_tol: float = 1e-2
    # how Hessian-vector products are computed (operator.HVP_MODES; hvp_chunk 0 = auto's
    # choice, for "compile" the shape auto compiles: 4 columns over half batches; else
    # columns per vmap call); TF32 matmuls/convolutions on CUDA
    hvp_mode: str = "auto"
    hvp_chunk: int = 0
    tf32: bool = True
    # "pyhessian": top eigenpairs and trace from PyHessian (a cross-check), the rest as default
    engine: str = "default"
    seed: int = 0


def defaults() -> dict:
    """The settings as the registry's parameter dict (field order)."""
    return dataclasses.asdict(HessianSettings())
