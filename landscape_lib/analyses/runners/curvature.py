"""The `hessian` analysis: the spectrum of a checkpoint's loss -> hessian_* tables and the
products and seconds of each part -> analysis_costs.

With ``ctx.gpus > 1`` (``analyze --gpus N``; not a parameter: the result does not depend on
it) the analysis runs in N processes, one per GPU (gloo processes on the CPU), each holding its
shard of the sample's batches (``hessian.distributed``); rank 0 writes the rows.
"""
from __future__ import annotations

import dataclasses
import json
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import torch

from ...errors import ConfigError
from ...store.atomic import save_tensor
from ...store.schema import WHOLE_MODEL
from ..context import AnalysisContext
from ..hessian.analysis import (HessianResult, analyse, check_finite_loss, hessian_analysis,
                                make_operator, settings, tf32)

EIGENVECTORS = "eigenvectors.pt"  # the artifact a surface with eigenvector directions reads
HVP_TRIALS = "hvp_trials.json"    # the artifact with "auto"'s trial of each product mode
LAYER_COLUMNS = ("layer", "n_params", "top_eig", "top_eig_residual", "top_eig_converged",
                 "trace", "trace_se", "n_products")


def check_hessian(ctx: AnalysisContext, p: dict) -> None:
    """Settings, and for several processes the devices and batches, before anything runs."""
    s = settings(**p)
    ctx.loss_fn(s.loss)  # a bad name fails here
    if ctx.gpus > 1:
        from ..hessian.distributed import default_backend
        if default_backend() == "nccl" and torch.cuda.device_count() < ctx.gpus:
            raise ConfigError(f"gpus={ctx.gpus} but {torch.cuda.device_count()} CUDA "
                              "device(s) are visible")
        n_batches = len(ctx.batches(s.split, s.samples, seed=s.data_seed))
        if n_batches < ctx.gpus:
            raise ConfigError(f"{n_batches} batch(es) of samples cannot be shared by "
                              f"{ctx.gpus} processes: use more samples or fewer GPUs")


def run_hessian(ctx: AnalysisContext, p: dict) -> None:
    s = settings(**p)
    if ctx.gpus > 1:
        return run_sharded(ctx, s)
    batches = ctx.batches(s.split, s.samples, seed=s.data_seed)
    report = (lambda fraction, part: ctx.report(0.05 + 0.9 * fraction, part))
    write(ctx, hessian_analysis(ctx.model, ctx.loss_fn(s.loss), batches, s, report=report))


def write(ctx: AnalysisContext, res: HessianResult, processes: int = 1) -> None:
    """The result's rows: eigenvalues, summary (whole network and per layer), density, costs;
    the top eigenvectors' artifact is written meanwhile, in a thread (223 MB at ResNet-18's
    top 5: 0.26 s, with its flush to the disk)."""
    ctx.engine = f"{res.engine} (hvp {res.hvp_mode})" + (
        f", {processes} processes" if processes > 1 else "")
    with ThreadPoolExecutor(max_workers=1) as pool:
        vectors = pool.submit(save_tensor, res.top_eigenvectors, ctx.artifact(EIGENVECTORS),
                              digest=False)
        _write_rows(ctx, res)
        vectors.result()  # its error (a full disk) is raised here
    if res.hvp_trials:  # how "auto" chose the product (ms per column, or why a mode was dropped)
        ctx.artifact(HVP_TRIALS).write_text(json.dumps(res.hvp_trials, indent=1, default=str))


def _write_rows(ctx: AnalysisContext, res: HessianResult) -> None:
    eigs = [{"which": "top", "k": i + 1, "eigenvalue": float(v)}
            for i, v in enumerate(res.top_eigenvalues)]
    eigs += [{"which": "bottom", "k": i + 1, "eigenvalue": float(v)}
             for i, v in enumerate(res.bottom_eigenvalues)]
    ctx.write("hessian_eigs", eigs)
    summary = [{"layer": WHOLE_MODEL, **res.summary()}]
    if res.per_layer is not None:
        summary += res.per_layer[list(LAYER_COLUMNS)].to_dict("records")
    ctx.write("hessian_summary", summary)
    ctx.write("hessian_density", pd.DataFrame({"x": np.asarray(res.density_grid, float),
                                               "density": np.asarray(res.density, float)}))
    ctx.write("analysis_costs", res.costs[["part", "n_products", "seconds"]])


# ------------------------------------------------------------------- several processes
def run_sharded(ctx: AnalysisContext, s) -> None:
    from ..hessian.distributed import default_backend, launch
    backend = default_backend()
    ctx.report(0.05, f"Hessian on {ctx.gpus} processes ({backend})")
    fields = (ctx.store, ctx.run_id, ctx.cfg, ctx.epoch, ctx.analysis_id, ctx.data_root)
    launch(_rank, ctx.gpus, backend, args=(fields, dataclasses.asdict(s), backend))
    ctx.engine = _read_engine(ctx)


def _rank(rank: int, world: int, fields: tuple, params: dict, backend: str) -> None:
    import torch.distributed as dist

    from ..hessian.distributed import ShardedOperator, rank_device, shard
    store, run_id, cfg, epoch, analysis_id, data_root = fields
    device = rank_device(rank, backend)
    if device.type == "cpu":
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    ctx = AnalysisContext(store, run_id, cfg, epoch, device, analysis_id, data_root)
    s = settings(**params)
    batches = ctx.batches(s.split, s.samples, seed=s.data_seed)
    mine = batches[shard(len(batches), rank, world)]
    model, loss = ctx.model, ctx.loss_fn(s.loss)  # NaN weights: a ConfigError, via launch
    check_finite_loss(model, loss, mine, reduce=dist.all_reduce, total=len(batches))
    with tf32(s.tf32):
        op = ShardedOperator(make_operator(model, loss, mine, s))

        def layer_op(own):
            return ShardedOperator(make_operator(model, loss, mine, s, own, like=op.local))

        res = analyse(op, model, s, make_op=layer_op)
    if rank == 0:
        write(ctx, res, processes=world)
        ctx.artifact("engine.txt").write_text(ctx.engine)


def _read_engine(ctx: AnalysisContext) -> str:
    path = ctx.artifact("engine.txt")
    engine = path.read_text()
    path.unlink()
    return engine
