"""Benchmark: a top-5 Hessian over the whole CIFAR-10 training set on several GPUs (issue 13).

1. Study A's ResNet-18 (``runs/grid.toml``, Adam, seed 0) trained for ``--epochs`` epochs into
   ``--store`` (skipped when it is there already).
2. ``--gpus`` processes (``hessian.distributed.launch``: one per GPU, NCCL; gloo on the CPU),
   each holding its shard of the analysis' batches of all ``--images`` training images
   (0 = all 50,000) on its GPU, run the top-5 Lanczos (``tol``) in lockstep on a
   ``ShardedOperator`` (products summed by all-reduce): seconds, products, eigenvalues and
   their measured residuals.
3. On a ``--subset`` (5,000) image subset: the same on ``--gpus`` GPUs and one plain process
   on GPU 0 with the same batches, at tol 1e-4: the eigenvalues must agree to rtol 1e-4
   (PASS / FAIL printed).

The batches are the analysis' own (``AnalysisContext.batches``: the seeded subset in batches
of 512), the products in ``--hvp-mode`` (default ``forward``: the same kernels on every rank,
so the sums differ only in their order), TF32 as the analysis uses it (``--no-tf32`` to
compare in float32).

    python bench/bench_hessian_multi.py --data-folder DIR [--gpus 2] [--epochs 4]
        [--store DIR] [--images 0] [--subset 5000]
    python bench/bench_hessian_multi.py --quick      # CPU smoke run: 2 gloo processes
"""
from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch
import torch.multiprocessing as mp
from study_runs import study_a, trained

from landscape_lib.analyses.context import AnalysisContext, find_run, resolve_epoch, run_config
from landscape_lib.analyses.hessian.analysis import tf32
from landscape_lib.analyses.hessian.distributed import (ShardedOperator, default_backend,
                                                        launch, rank_device, shard)
from landscape_lib.analyses.hessian.lanczos import extreme_eigenpairs
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.store import Store
from landscape_lib.train.environment import sync

SUBSET_TOL = 1e-4


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-folder", help="ImageFolder tree with train/ and test/ (CIFAR-10)")
    p.add_argument("--data-root", help="decoded-image cache (default: the library's)")
    p.add_argument("--store", help="keep the run here (default: a temporary store)")
    p.add_argument("--gpus", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--images", type=int, default=0, help="0 = the whole training split")
    p.add_argument("--subset", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=512, help="images per batch (the "
                   "analysis' 512); each process takes whole batches")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--hvp-mode", default="forward")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--quick", action="store_true", help="CPU smoke run, 2 gloo processes")
    a = p.parse_args(argv)
    if a.quick:
        a.gpus, a.epochs, a.images, a.subset, a.hvp_mode = 2, 1, 256, 128, "cached"
        a.batch_size = 48
    return a


def context(store_root, run_id, device, data_root) -> AnalysisContext:
    store = Store(store_root)
    cfg = run_config(find_run(store, run_id))
    epoch = resolve_epoch(store, run_id, "last")
    return AnalysisContext(store, run_id, cfg, epoch, device, data_root=data_root)


def top5(op, tol, device) -> dict:
    sync(device)
    t0 = time.perf_counter()
    res = extreme_eigenpairs(op, 5, "LA", tol, seed=0, max_steps=300)
    sync(device)
    return {"values": res.values.tolist(), "residuals": res.residuals.tolist(),
            "converged": bool(res.converged.all()), "products": int(op.n_products),
            "seconds": time.perf_counter() - t0, "samples": int(op.n_samples)}


def _rank(rank, world, a, store_root, run_id, n, tol, backend, queue):
    device = rank_device(rank, backend)
    if device.type == "cpu":
        torch.set_num_threads(1)
    ctx = context(store_root, run_id, device, a.data_root)
    batches = ctx.batches("train", n, seed=0, batch_size=a.batch_size)
    with tf32(a.tf32):
        local = HessianOperator(ctx.model, ctx.loss_fn("ce"),
                                batches[shard(len(batches), rank, world)], mode=a.hvp_mode)
        out = top5(ShardedOperator(local), tol, device)
    if rank == 0:
        queue.put(out)


def sharded(a, store_root, run_id, n, tol) -> dict:
    queue = mp.get_context("spawn").SimpleQueue()
    launch(_rank, a.gpus, default_backend(),
           args=(a, store_root, run_id, n, tol, default_backend(), queue))
    return queue.get()


def single(a, store_root, run_id, n, tol) -> dict:
    device = rank_device(0, default_backend())
    ctx = context(store_root, run_id, device, a.data_root)
    with tf32(a.tf32):
        batches = ctx.batches("train", n, seed=0, batch_size=a.batch_size)
        op = HessianOperator(ctx.model, ctx.loss_fn("ce"), batches, mode=a.hvp_mode)
        return top5(op, tol, device)


def show(label: str, r: dict) -> None:
    print(f"{label}: {r['samples']:,} images, {r['seconds']:.1f} s, {r['products']} products "
          f"({1e3 * r['seconds'] / r['products']:.0f} ms each), converged {r['converged']}\n"
          f"  eigenvalues {np.array2string(np.array(r['values']), precision=6)}\n"
          f"  residuals   {np.array2string(np.array(r['residuals']), precision=2)}", flush=True)


def main(argv=None):
    a = parse_args(argv)
    if torch.cuda.is_available() and torch.cuda.device_count() < a.gpus:
        raise SystemExit(f"--gpus {a.gpus} but {torch.cuda.device_count()} GPU(s) visible")
    print(f"torch {torch.__version__}, {torch.cuda.device_count()} GPU(s), {a.gpus} processes "
          f"({default_backend()}), hvp {a.hvp_mode}, TF32 {a.tf32}", flush=True)
    store = Store(a.store or tempfile.mkdtemp(prefix="bench-multi-")).ensure()
    t0 = time.perf_counter()
    cfg = study_a("resnet18", a.epochs, a.data_folder, a.quick)
    run_id = trained(store, cfg, a.data_root, "cpu" if a.quick else None)
    unit = "GPUs" if default_backend() == "nccl" else "CPU processes"
    show(f"\nTOP-5 on {a.gpus} {unit}, tol {a.tol:g}",
         sharded(a, str(store.root), run_id, a.images, a.tol))
    many = sharded(a, str(store.root), run_id, a.subset, SUBSET_TOL)
    one = single(a, str(store.root), run_id, a.subset, SUBSET_TOL)
    show(f"\nSUBSET on {a.gpus} {unit}, tol {SUBSET_TOL:g}", many)
    show(f"SUBSET on 1 {unit[:-1]}, tol {SUBSET_TOL:g}", one)
    rel = float(np.max(np.abs(np.subtract(many["values"], one["values"]))
                       / np.abs(one["values"])))
    print(f"max relative difference {rel:.2e}: {'PASS' if rel <= 1e-4 else 'FAIL'} (rtol 1e-4)"
          f"; products {many['products']} vs {one['products']}\n"
          f"wall time {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()
