"""Benchmark: every way of computing a Hessian-vector product, timed and checked.

The CIFAR ResNet-18 (or ``--arch`` with ``--option key=value``) at a checkpoint
(``--checkpoint``: a state_dict such as the store's ``checkpoints/epoch_0004.pt``) or at
initialization, on ``--images`` images (one batch): real ones from ``--data-folder`` (the
analysis' seeded subset of the training split) or synthetic ones. Or a trained run of a store
(``--store DIR --run ID-PREFIX``): its last checkpoint and the analysis' own sample of
``--images`` training images, as the ``hessian`` analysis builds them. One process, one GPU.

1. Reference: float32 with TF32 off, forward-over-reverse products; the top 5 eigenvalues by
   Lanczos at tol 1e-5.
2. Every candidate of ``CANDIDATES`` (the operator's modes: cached graph, reverse,
   forward-over-reverse per column or ``xN`` columns per ``vmap`` (``/N``: over N micro-batches),
   CUDA graphs, torch.compile, channels-last, bf16 autocast; and ``auto``, the operator's own timed choice among the
   float32-exact ones), with TF32 as the analysis uses it (``--tf32``, default on): setup
   seconds (construction and first product: graph capture, compilation), ms per product with
   1 column and with 8 columns per call, peak GPU memory, the relative error of its products
   and the max relative error of its top-5 eigenvalues (tol 1e-3) against the reference;
   the max relative residual ||A y - theta y|| / |theta| of its top-5 Ritz pairs under its own
   products (``top5_res``) and under the reference's (``top5_res_ref``). A candidate labelled
   ``... fp32`` is the same one with TF32 off. The checkpoint's smallest BatchNorm running
   variances are printed (a near-dead channel amplifies the rounding of its inputs).
   A candidate that fails prints its error and the run goes on.
The acceptance of issue 14: <= 45 ms per product within 20 GiB, top-5 within 0.5%
(``ok`` column). Rows print as they finish and go to ``--json`` after each one.

    python bench/bench_hvp.py [--data-folder DIR] [--checkpoint CKPT] [--images 512]
                              [--candidates auto,graph,...] [--no-compile] [--json F] [--quick]

``--quick`` is a CPU smoke run (~1 min): a small CNN on 64 synthetic images, CPU candidates.
"""
from __future__ import annotations

import argparse
import ast
import gc
import json
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape_lib.analyses.hessian.lanczos import extreme_eigenpairs, verify
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.analyses.hessian.products import WARMUPS
from landscape_lib.data import DeviceData, load_dataset
from landscape_lib.models import create_model
from landscape_lib.train.environment import resolve_device, set_tf32, sync

CE = nn.CrossEntropyLoss()
# label -> HessianOperator keyword arguments
CANDIDATES = {
    "auto": {"mode": "auto"},
    "cached": {"mode": "cached"},
    "reverse": {"mode": "reverse"},
    "forward": {"mode": "forward"},
    "forward x2": {"mode": "forward", "chunk_size": 2},
    "forward x4": {"mode": "forward", "chunk_size": 4},
    "graph": {"mode": "graph"},
    "graph x2": {"mode": "graph", "chunk_size": 2},
    "graph x4": {"mode": "graph", "chunk_size": 4},
    "graph x8": {"mode": "graph", "chunk_size": 8},
    "graph chlast": {"mode": "graph", "channels_last": True},
    "graph chlast x4": {"mode": "graph", "chunk_size": 4, "channels_last": True},
    # vmapped columns over micro-batches (1/chunk of the batch each): x4's speed, x1's memory
    "forward x4 /4": {"mode": "forward", "chunk_size": 4, "split": 4},
    "graph x4 /4": {"mode": "graph", "chunk_size": 4, "split": 4},
    "graph x4 /4 chlast": {"mode": "graph", "chunk_size": 4, "split": 4, "channels_last": True},
    "graph x8 /8 chlast": {"mode": "graph", "chunk_size": 8, "split": 8, "channels_last": True},
    "graph x4 /2": {"mode": "graph", "chunk_size": 4, "split": 2},
    "graph x4 /2 chlast": {"mode": "graph", "chunk_size": 4, "split": 2, "channels_last": True},
    "graph /2 chlast": {"mode": "graph", "split": 2, "channels_last": True},
    "compile": {"mode": "compile", "chunk_size": 1, "split": 1},
    "compile x4": {"mode": "compile", "chunk_size": 4},
    "compile x4 /2": {"mode": "compile", "chunk_size": 4, "split": 2},
    "compile x4 /4": {"mode": "compile", "chunk_size": 4, "split": 4},
    "compile x4 /4 chlast": {"mode": "compile", "chunk_size": 4, "split": 4,
                             "channels_last": True},
    "graph bf16": {"mode": "graph", "autocast": "bf16"},
    "graph bf16 x4": {"mode": "graph", "chunk_size": 4, "autocast": "bf16"},
}
# "<label> fp32": the same candidate with TF32 off (true float32 products)
CANDIDATES.update({f"{label} fp32": {**kw, "tf32": False} for label, kw in list(CANDIDATES.items())
                   if kw["mode"] not in ("auto", "compile")})
QUICK = "auto,cached,reverse,forward,forward x4,forward x4 /4,forward fp32"
TARGET_MS, TARGET_GIB, TARGET_ERR = 45.0, 20.0, 5e-3
COLUMNS = ["candidate", "setup_s", "ms_1col", "ms_8col", "peak_GiB", "prod_err", "top5_err",
           "top5_res", "top5_res_ref", "top5_products", "ok", "chosen", "error"]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--data-folder", help="ImageFolder tree with train/ and test/ (CIFAR-10)")
    p.add_argument("--cache-root", default=None, help="decoded-image cache (default: data root)")
    p.add_argument("--checkpoint", help="state_dict of the model (e.g. a 4-epoch checkpoint)")
    p.add_argument("--store", help="a store with trained runs (with --run)")
    p.add_argument("--run", help="run id or prefix in --store: its last checkpoint and data")
    p.add_argument("--arch", default="resnet18", help="a registry architecture")
    p.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="architecture options (values parsed as Python literals)")
    p.add_argument("--candidates", default=",".join(CANDIDATES))
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile candidates")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="TF32 in the candidates' products (the analysis default)")
    p.add_argument("--cudnn-benchmark", action=argparse.BooleanOptionalAction, default=True,
                   help="cuDNN's autotuner in the candidates' products (as the analysis)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls per width")
    p.add_argument("--json", help="write the rows here (after each candidate)")
    p.add_argument("--quick", action="store_true", help="CPU smoke run with a small CNN")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.images, args.repeats = "cpu", 64, 1
        args.arch, args.option = "cnn", ["widths=(4, 8)"]
        if args.candidates == ",".join(CANDIDATES):
            args.candidates = QUICK
    return args


def arch_options(pairs: list[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"--option wants key=value, got {pair!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare word, e.g. norm=post
    return out


def run_model_and_batch(args, device):
    """The run's last checkpoint and the analysis' sample, as the `hessian` analysis gets them."""
    from landscape_lib.analyses.context import (AnalysisContext, find_run, resolve_epoch,
                                                run_config)
    from landscape_lib.store import Store
    store = Store(args.store)
    row = find_run(store, args.run)
    epoch = resolve_epoch(store, row["run_id"], "last")
    ctx = AnalysisContext(store, row["run_id"], run_config(row), epoch, device,
                          data_root=args.cache_root)
    args.arch, args.checkpoint = ctx.cfg.arch, f"{row['run_id']} epoch {epoch}"
    return ctx.model.eval(), ctx.batches("train", args.images)


def model_and_batch(args, device):
    if args.store and args.run:
        return run_model_and_batch(args, device)
    if args.data_folder:
        splits = load_dataset("folder", root=args.cache_root, path=args.data_folder)
        data = DeviceData(splits, device)
        x, y = data.subset("train", args.images, seed=0)
        shape = (data.in_channels, data.image_size, data.num_classes)
    else:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(args.images, 3, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 10, (args.images,), generator=gen).to(device)
        shape = (3, 32, 10)
    torch.manual_seed(0)
    model = create_model(args.arch, in_channels=shape[0], image_size=shape[1],
                         num_classes=shape[2], **arch_options(args.option))
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    return model.to(device).eval(), [(x, y)]


def bn_variances(model) -> str:
    """The smallest BatchNorm running variance and how many channels lie below 1e-3 and 1e-5
    (a near-dead channel's normalisation amplifies the rounding of its inputs)."""
    v = [m.running_var.detach().float().cpu() for m in model.modules()
         if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None]
    if not v:
        return "none"
    v = torch.cat(v)
    return (f"min {v.min().item():.3g}, {int((v < 1e-3).sum())} of {v.numel()} channels < 1e-3, "
            f"{int((v < 1e-5).sum())} < 1e-5")


def ms_per_product(op, device, columns: int, repeats: int) -> float:
    V = torch.randn(op.shape[0], columns, device=device,
                    generator=torch.Generator(device=device).manual_seed(1))
    for _ in range(WARMUPS + 1):  # warm-up: a graph mode's eager calls, then its capture
        op @ V
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        op @ V
    sync(device)
    return 1e3 * (time.perf_counter() - t0) / (repeats * columns)


def top5(op, tol, quick):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return extreme_eigenpairs(op, 5, "LA", tol, seed=0, check=False,
                                  max_steps=20 if quick else 300)


def relative_residuals(op, eig, tf32: bool) -> np.ndarray:
    """||A y - theta y|| / |theta| of ``eig``'s vectors under ``op`` (TF32 as given), where
    theta is ``op``'s own Rayleigh quotient: the Ritz pairs checked by a second operator."""
    set_tf32(tf32)
    theta, res, _ = verify(op, eig.vectors, 0.0)
    return res / np.abs(theta)


def run_candidate(label, kwargs, model, batches, ref, device, args) -> dict:
    row = {"candidate": label}
    kwargs = dict(kwargs)
    tf32 = kwargs.pop("tf32", args.tf32)
    set_tf32(tf32)
    gc.collect()  # the previous candidate's CUDA graphs and their memory pools go first
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    op = HessianOperator(model, CE, batches, **kwargs)
    HV = op @ ref["V"]
    sync(device)
    row["setup_s"] = time.perf_counter() - t0
    row["prod_err"] = float((HV - ref["HV"]).norm() / ref["HV"].norm())
    row["ms_1col"] = ms_per_product(op, device, 1, args.repeats)
    row["ms_8col"] = ms_per_product(op, device, 8, max(1, args.repeats // 2))
    res = top5(op, 1e-2 if args.quick else 1e-3, args.quick)
    row["top5"] = res.values.tolist()
    row["top5_err"] = float(np.max(np.abs(res.values - ref["top"]) / np.abs(ref["top"])))
    # its Ritz pairs' residuals under its own products and under the float32 reference's
    row["top5_res"] = float(relative_residuals(op, res, tf32).max())
    row["top5_res_ref"] = float(relative_residuals(ref["op"], res, False).max())
    set_tf32(tf32)
    row["top5_products"] = res.n_products
    row["peak_GiB"] = (torch.cuda.max_memory_allocated(device) / 2**30
                       if device.type == "cuda" else float("nan"))
    best_ms = min(row["ms_1col"], row["ms_8col"])
    row["ok"] = bool(best_ms <= TARGET_MS and row["top5_err"] <= TARGET_ERR
                     and not row["peak_GiB"] > TARGET_GIB)
    if label == "auto":
        row["chosen"] = op.label
        row["trials"] = op.trials
        row["trial_products"] = op.trial_products
    return row


def fmt(row: dict) -> str:
    cells = []
    for c in COLUMNS:
        v = row.get(c, "")
        cells.append(f"{v:>10.4g}" if isinstance(v, float) else f"{str(v):>10}")
    return " | ".join(cells)


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    model, batches = model_and_batch(args, device)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"{args.arch} {args.option}: {n:,} parameters, {args.images} images, device "
          f"{device}{gpu}, torch {torch.__version__}, TF32 {'on' if args.tf32 else 'off'}, cuDNN "
          f"benchmark {'on' if args.cudnn_benchmark else 'off'}, "
          f"checkpoint {args.checkpoint or 'none (initialization)'}", flush=True)
    set_tf32(False)
    t0 = time.perf_counter()
    ref_op = HessianOperator(model, CE, batches, mode="forward" if device.type == "cuda"
                             else "cached")
    V = torch.randn(n, 2, device=device, generator=torch.Generator(device=device).manual_seed(2))
    ref_top = top5(ref_op, 1e-2 if args.quick else 1e-5, args.quick)
    ref = {"V": V, "HV": ref_op @ V, "top": ref_top.values, "op": ref_op}
    ref_res = relative_residuals(ref_op, ref_top, False)
    print(f"reference (float32, TF32 off): top-5 {np.array2string(ref_top.values, precision=6)}"
          f" in {time.perf_counter() - t0:.1f} s, {ref_op.n_products} products; relative "
          f"residuals {np.array2string(ref_res, precision=2)}", flush=True)
    print(f"BatchNorm running variances: {bn_variances(model)}", flush=True)
    set_tf32(args.tf32)
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    report = {"model": args.arch, "params": n, "images": args.images, "device": str(device),
              "gpu": gpu.strip(" ()"), "tf32": args.tf32, "reference_top5": ref["top"].tolist(),
              "reference_residuals": ref_res.tolist(), "bn_variances": bn_variances(model),
              "targets": {"ms": TARGET_MS, "GiB": TARGET_GIB, "top5_rel_err": TARGET_ERR},
              "rows": []}
    print(" | ".join(f"{c:>10}" for c in COLUMNS), flush=True)
    for label in args.candidates.split(","):
        if args.no_compile and "compile" in label:
            continue
        try:
            row = run_candidate(label, CANDIDATES[label], model, batches, ref, device, args)
        except Exception as err:  # noqa: BLE001 - one failing candidate must not stop the run
            row = {"candidate": label, "error": f"{type(err).__name__}: {str(err)[:100]}"}
            traceback.print_exc(limit=1)
        report["rows"].append(row)
        print(fmt(row), flush=True)
        if "top5" in row:
            print(f"    top-5 {np.array2string(np.array(row['top5']), precision=6)}", flush=True)
        if "trials" in row:
            print(f"    auto's trials (ms per column): {row['trials']}; "
                  f"{row['trial_products']} trial products", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))
    passing = [r["candidate"] for r in report["rows"] if r.get("ok")]
    print(f"\nwithin {TARGET_MS:g} ms, {TARGET_GIB:g} GiB and {TARGET_ERR:.1%} top-5 error: "
          f"{', '.join(passing) or 'none'}", flush=True)


if __name__ == "__main__":
    main()
