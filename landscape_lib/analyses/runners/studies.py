"""The stand-alone and trajectory analyses: trajectory embeddings, attention diagnostics and
optimizer paths -> trajectory, attention_* and optimizer_paths tables."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ...errors import ConfigError
from ...optim import OPTIMIZERS
from ...store import queries
from ..attention import attention_hessian_sweep, block_histograms, model_attention_jsd
from ..context import AnalysisContext
from ..paths import compare_optimizers, gaussian_surface, path_start
from ..trajectory import pca_embedding, tsne_embedding


def run_trajectory(ctx: AnalysisContext, p: dict) -> None:
    epochs, W, _ = ctx.trajectory()
    coords, ratio = pca_embedding(W)
    rows = [{"method": "pca", "point_epoch": e, "x": float(c[0]), "y": float(c[1]),
             "explained_variance": float(np.sum(ratio))} for e, c in zip(epochs, coords)]
    if len(epochs) >= 3:
        tsne = tsne_embedding(W, seed=p["seed"])
        rows += [{"method": "tsne", "point_epoch": e, "x": float(c[0]), "y": float(c[1])}
                 for e, c in zip(epochs, tsne)]
    ctx.write("trajectory", rows)


def check_attention(ctx: AnalysisContext, p: dict) -> None:
    if not hasattr(ctx.new_model(), "attention_maps"):
        raise ConfigError(f"run {ctx.run_id} is a {ctx.cfg.arch}: attention analyses need a ViT")


def run_attention(ctx: AnalysisContext, p: dict) -> None:
    batches = ctx.batches(p["split"], p["samples"], seed=p["data_seed"], batch_size=128)
    df = model_attention_jsd(ctx.model, [x for x, _ in batches])
    ctx.write("attention_jsd", df[["layer", "head", "jsd"]])


def run_attention_hessian(ctx: AnalysisContext, p: dict) -> None:
    size = {"d": p["d"], "T": p["T"], "n": p["n"], "seed": p["seed"]}
    sweep = attention_hessian_sweep(p["scales"], **size)
    ctx.write("attention_hessian", sweep)
    hist = pd.concat([block_histograms(scale=1.0, pre_ln=pre_ln, bins=p["bins"], **size)
                      .assign(part=lambda d, pl=pre_ln: d["part"] + (" pre-LN" if pl else ""))
                      for pre_ln in (False, True)])
    ctx.write("attention_hessian_hist", hist)


def _default_optimizers() -> list[str]:
    return [e.name for e in OPTIMIZERS if e.name != "sophia"] + ["sam-sgd-momentum"]


def _fit_and_start(ctx: AnalysisContext, p: dict) -> tuple[dict, tuple[float, float]]:
    fit = queries.latest_gauss_fit(ctx.store, ctx.run_id, ctx.epoch)
    if fit is None:
        raise ConfigError(f"paths need a surface (with its Gaussian fit) of run {ctx.run_id} at "
                          f"epoch {ctx.epoch} first")
    return fit, path_start(fit, p["start"])  # raises for a failed fit or a start off the grid


def check_paths(ctx: AnalysisContext, p: dict) -> None:
    _fit_and_start(ctx, p)


def run_paths(ctx: AnalysisContext, p: dict) -> None:
    """Optimizer paths on a run's fitted surface (Gaussian fit of its latest surface), from a
    start inside the fitted grid (`paths.path_start`)."""
    fit, start = _fit_and_start(ctx, p)
    names = p["optimizers"] or _default_optimizers()
    paths = compare_optimizers(gaussian_surface(fit), names, start=start, steps=p["steps"],
                               lr=p["lr"])
    ctx.write("optimizer_paths", paths.assign(surface="gaussian-fit"))


def run_paths_analytic(ctx: AnalysisContext, p: dict) -> None:
    names = p["optimizers"] or _default_optimizers()
    frames = [compare_optimizers(s, names, steps=p["steps"], lr=p["lr"])
              for s in p["surfaces"]]
    ctx.write("optimizer_paths", pd.concat(frames))
