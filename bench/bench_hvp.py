"""Benchmark: milliseconds per Hessian-vector product in each ``HessianOperator`` mode.

The numbers behind ``mode="auto"`` (``landscape_lib/analyses/hessian/operator.py``). A
registry model at initialization (default: the CIFAR ResNet-18; ``--arch``, ``--option
key=value``, ``--size``, ``--channels``) on ``--images`` synthetic images (one batch), in eval mode, one process:

- ``cached``: double backward through one retained gradient graph (PyHessian's way);
- ``reverse``: double backward, the graph rebuilt for every product;
- ``forward``: forward-over-reverse (``torch.func.jvp`` of ``grad``), one column at a time;
- ``forward, vmap 4``: the same with 4 columns per ``vmap`` call.

Printed per mode: ms per product (mean of ``--repeats`` calls after two warm-up calls, each call
``--columns`` products), relative error of the products against ``cached`` in float32 with TF32
off, peak GPU memory, and the speed-up over ``cached``.

    python bench/bench_hvp.py [--device auto] [--images 512] [--tf32] [--quick]
                              [--arch vit --option patch_size=2 dim=32 --size 8 --channels 1]

``--quick`` is a CPU smoke run (< 1 min): a small CNN (widths 4, 8) on 64 images.
"""
from __future__ import annotations

import argparse
import ast
import time

import torch
from torch import nn

from landscape_lib.analyses.hessian.operator import HessianOperator
from landscape_lib.models import create_model
from landscape_lib.train.environment import resolve_device, set_tf32, sync

MODES = [("cached", "cached", 1), ("reverse", "reverse", 1), ("forward", "forward", 1),
         ("forward, vmap 4", "forward", 4)]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--arch", default="resnet18", help="a registry architecture")
    p.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE",
                   help="architecture options (values parsed as Python literals)")
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--columns", type=int, default=4, help="vectors per timed call of op @ V")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tf32", action="store_true", help="allow TF32 in the timed products")
    p.add_argument("--quick", action="store_true", help="CPU smoke run with a small CNN")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.images, args.repeats = "cpu", 64, 2
        args.arch, args.option = "cnn", ["widths=(4, 8)"]
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


def measure(op, V, device, repeats):
    """(ms per product, last result): two warm-up calls, then the mean of ``repeats``."""
    for _ in range(2):
        op @ V
    sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = op @ V
    sync(device)
    return 1e3 * (time.perf_counter() - t0) / (repeats * V.shape[1]), out


def main(argv=None):
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    options = arch_options(args.option)
    model = create_model(args.arch, in_channels=args.channels, image_size=args.size,
                         num_classes=10, **options).to(device).eval()
    batches = [(torch.randn(args.images, args.channels, args.size, args.size, device=device),
                torch.randint(0, 10, (args.images,), device=device))]
    loss = nn.CrossEntropyLoss()
    n = sum(p.numel() for p in model.parameters())
    V = torch.randn(n, args.columns, device=device)
    set_tf32(False)
    ref = HessianOperator(model, loss, batches, mode="cached") @ V
    set_tf32(args.tf32)
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    label = args.arch + "".join(f" {k}={v}" for k, v in options.items())
    print(f"{label}: {n:,} parameters, {args.images} images of {args.size}x{args.size}, "
          f"device {device}{gpu}, torch {torch.__version__}, TF32 {'on' if args.tf32 else 'off'}")
    print(f"{'mode':<16} {'ms/product':>10} {'rel. error':>11} {'peak GiB':>9} "
          f"{'speed-up vs cached':>19}", flush=True)
    base = None
    for label, mode, chunk in MODES:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        op = HessianOperator(model, loss, batches, mode=mode, chunk_size=chunk)
        ms, out = measure(op, V, device, args.repeats)
        err = float((out - ref).norm() / ref.norm())
        peak = (f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f}"
                if device.type == "cuda" else "-")
        base = base or ms
        print(f"{label:<16} {ms:10.1f} {err:11.2e} {peak:>9} {base / ms:18.2f}x", flush=True)
        del op, out


if __name__ == "__main__":
    main()
