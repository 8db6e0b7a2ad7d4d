"""Benchmark: where a forward-over-reverse Hessian-vector product spends its time, and what its
columns per call and micro-batches cost.

For each architecture (``--arch``: the CIFAR ResNet-18 and study A's ViT patch 4 by default) on
``--images`` synthetic CIFAR-shaped images, at initialization, TF32 on as in the analysis:

1. ms per column of CUDA-graph products for each ``(columns per call, micro-batches,
   channels-last)`` of ``--shapes`` (``WxS[c][k]``: W columns in one ``vmap`` over S equal
   micro-batches; ``c`` = channels-last; ``k`` = compiled, ``mode="compile"``), the mean of
   ``--repeats`` calls after the warm-ups and the capture (``bench_hvp.ms_per_product``);
   e.g. ``3x3`` against ``3x4`` shows what a micro-batch of 171 images costs against one of
   128, ``4x4k`` against ``4x2k`` what the compiled product gains from larger micro-batches;
2. a ``torch.profiler`` trace of one eager product of ``--profile`` (default ``4x4``): the
   CUDA kernels taking the most time, and the share of convolution / matrix kernels against
   the rest (elementwise, reductions, copies).

    python bench/bench_hvp_shapes.py [--arch resnet18 vit:patch_size=4] [--images 512]
"""
from __future__ import annotations

import argparse
import gc
import time
from collections import defaultdict

import torch
from torch import nn

from bench_hvp import arch_options, ms_per_product

from landscape_lib.analyses.hessian.analysis import tf32
from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.models import create_model
from landscape_lib.train.environment import sync

CE = nn.CrossEntropyLoss()
SHAPES = "1x1,2x2,3x3,3x4,3x1,4x4,4x2,4x1,8x8,8x4,8x2,4x4c,8x8c"
MATMUL = ("gemm", "conv", "sm90", "sm80", "cutlass", "xmma", "implicit", "wgrad", "dgrad",
          "cudnn", "nchw", "nhwc")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="*", default=["resnet18", "vit:patch_size=4"],
                   help="NAME[:key=value;...] (values parsed as Python literals)")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--shapes", default=SHAPES)
    p.add_argument("--profile", default="4x4", help="a shape to profile ('' for none)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--top", type=int, default=25)
    return p.parse_args(argv)


def model_of(spec: str, device) -> nn.Module:
    """``NAME[:key=value;...]`` -> the registry's model, seeded, in eval mode on ``device``."""
    name, _, opts = spec.partition(":")
    torch.manual_seed(0)
    return create_model(name, in_channels=3, image_size=32, num_classes=10,
                        **arch_options(list(filter(None, opts.split(";"))))).to(device).eval()


def shape_of(text: str) -> tuple[int, int, bool, bool]:
    """``WxS[c][k]`` -> (columns, micro-batches, channels-last, compiled)."""
    compiled = text.endswith("k")
    text = text.rstrip("k")
    cl = text.endswith("c")
    w, s = text.rstrip("c").split("x")
    return int(w), int(s), cl, compiled


def profile(model, batch, width: int, split: int, cl: bool, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile as prof
    op = HessianOperator(model, CE, [batch], mode="forward", chunk_size=width, split=split,
                         channels_last=cl)
    V = torch.randn(op.shape[0], width, device=op.device)
    op @ V
    sync(op.device)
    cuda = op.device.type == "cuda"
    with prof(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as p:
        op @ V
        sync(op.device)
    kernels = defaultdict(lambda: [0.0, 0])
    if cuda:  # the kernels
        for e in p.events():
            if e.device_type == torch.autograd.DeviceType.CUDA:
                kernels[e.name][0] += e.device_time_total / 1e3
                kernels[e.name][1] += 1
    else:  # the operators' own CPU time (a smoke run)
        for e in p.key_averages():
            kernels[e.key] = [e.self_cpu_time_total / 1e3, e.count]
    total = sum(t for t, _ in kernels.values())
    mm = sum(t for name, (t, _) in kernels.items() if any(k in name.lower() for k in MATMUL))
    print(f"  profile {width}x{split}{'c' if cl else ''}: {total:.1f} ms of kernels in "
          f"{sum(n for _, n in kernels.values())} launches; convolution/matrix kernels "
          f"{mm:.1f} ms ({100 * mm / total:.0f}%), the rest {total - mm:.1f} ms")
    for name, (t, n) in sorted(kernels.items(), key=lambda kv: -kv[1][0])[:top]:
        print(f"    {t:8.2f} ms {n:5d}x  {name[:110]}")


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(args.images, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (args.images,), generator=gen).to(device)
    with tf32(True):
        for spec in args.arch:
            model = model_of(spec, device)
            conv = any(p.ndim == 4 for p in model.parameters())
            print(f"{spec}: {sum(p.numel() for p in model.parameters()):,} parameters, "
                  f"{args.images} images, {device}")
            mode = "graph" if device.type == "cuda" else "forward"
            for text in args.shapes.split(","):
                w, s, cl, compiled = shape_of(text)
                if cl and not conv:
                    continue
                try:
                    t0 = time.perf_counter()
                    op = HessianOperator(model, CE, [(x, y)], mode="compile" if compiled
                                         else mode, chunk_size=w, split=s, channels_last=cl)
                    if device.type == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    ms = ms_per_product(op, op.device, w, args.repeats)
                    gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" \
                        else float("nan")
                    print(f"  {text:>6}: {ms:7.2f} ms per column, {ms * w:8.2f} ms per call, "
                          f"peak {gib:5.1f} GiB ({time.perf_counter() - t0:.0f} s with the "
                          f"warm-ups{' and compilation' if compiled else ''})", flush=True)
                except Exception as err:  # noqa: BLE001 - a shape that fails is reported
                    print(f"  {text:>6}: failed: {type(err).__name__}: {str(err)[:100]}")
                op = None
                gc.collect()  # the captured graphs' memory pool
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            if args.profile:
                w, s, cl, _ = shape_of(args.profile)
                profile(model, (x, y), w, s, cl and conv, args.top)


if __name__ == "__main__":
    main()
