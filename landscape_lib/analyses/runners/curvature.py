"""The `hessian` analysis: the spectrum of a checkpoint's loss -> hessian_* tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ...store.schema import WHOLE_MODEL
from ..context import AnalysisContext
from ..hessian.analysis import hessian_analysis

EIGENVECTORS = "eigenvectors.pt"  # the artifact a surface with eigenvector directions reads


def run_hessian(ctx: AnalysisContext, p: dict) -> None:
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"])
    ctx.report(0.05, "Hessian-vector products")
    res = hessian_analysis(ctx.model, ctx.loss_fn(p["loss"]), batches, top_k=p["top_k"], bottom_k=p["bottom_k"],
                           tol=p["tol"], trace_samples=p["trace_samples"],
                           density_vectors=p["density_vectors"], density_steps=p["density_steps"],
                           per_layer=p["per_layer"], layer_trace_samples=p["layer_trace_samples"],
                           engine=p["engine"], seed=p["seed"])
    ctx.engine = f"{res.engine} (hvp {res.hvp_mode})"
    eigs = [{"which": "top", "k": i + 1, "eigenvalue": float(v)}
            for i, v in enumerate(res.top_eigenvalues)]
    eigs += [{"which": "bottom", "k": i + 1, "eigenvalue": float(v)}
             for i, v in enumerate(res.bottom_eigenvalues)]
    ctx.write("hessian_eigs", eigs)
    lam_min = float(res.bottom_eigenvalues[0]) if len(res.bottom_eigenvalues) else None
    summary = [{"layer": WHOLE_MODEL, "n_params": res.n_params,
                "top_eig": float(res.top_eigenvalues[0]), "lam_min": lam_min,
                "convexity_ratio": res.eig_ratio, "trace": res.trace,
                "trace_se": res.trace_std_err, "neg_share": res.negative_share,
                "n_products": res.n_products}]
    if res.per_layer is not None:
        for row in res.per_layer.to_dict("records"):
            summary.append({"layer": row["layer"], "n_params": row["n_params"],
                            "top_eig": row["top_eig"], "trace": row["trace"]})
    ctx.write("hessian_summary", summary)
    ctx.write("hessian_density", pd.DataFrame({"x": np.asarray(res.density_grid, float),
                                               "density": np.asarray(res.density, float)}))
    torch.save(res.top_eigenvectors, ctx.artifact(EIGENVECTORS))
