"""Benchmark: fast 2-D loss surfaces (``surface_2d``) against the straightforward loop.

Two cases, each timed in this one process against ``surface_2d_loop`` (fp32, batches of 128,
weights copied into the model point by point):
1. CIFAR ResNet-18, 21x21 random-direction surface on 1,024 images (synthetic CIFAR-shaped
   inputs: timing does not depend on the pixels, and nothing is downloaded);
2. MLP on the 8x8 digits (scikit-learn's bundled copy, 1,797 images), 41x41 surface.

Printed per fast variant: the steady-state time of the whole grid, the speed-up over the loop,
the largest relative difference of the loss from the loop's (fp32 variants should be ~1e-6;
bf16 shows its error), and apart from that the one-off warm-up (first call minus a steady-state
call: vmap tracing, cuDNN autotuning, ``torch.compile``).
Targets on an H100: ResNet-18 >= 4x, MLP >= 20x. ``--quick`` is a CPU smoke run (< 1 min):
smaller grids, fewer images and a narrow ResNet-18 (width 16).

    python bench/bench_surface.py [--device auto|cpu|cuda] [--quick] [--compile]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from landscape_lib.analyses.surface.directions import get_weights, random_directions
from landscape_lib.analyses.surface.grids import surface_2d, surface_2d_loop
from landscape_lib.models import create_model
from landscape_lib.train.environment import resolve_device, sync

TARGETS = {"resnet18": 4.0, "mlp": 20.0}


def batched(X, Y, size):
    return [(X[i:i + size], Y[i:i + size]) for i in range(0, len(X), size)]


def cifar_like(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, 32, 32, generator=g)
    Y = torch.randint(0, 10, (n,), generator=g)
    return X.to(device), Y.to(device)


def digits(device):
    from sklearn.datasets import load_digits
    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32).unsqueeze(1)
    return X.to(device), torch.tensor(d.target).to(device)


def timed(fn, device, repeats=1):
    """(result, best wall time over ``repeats`` runs)."""
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return out, best


def run_case(name, model, X, Y, grid, fast_batch, variants, device, repeats):
    """Time the loop reference and each fast variant on the same grid; print one line each."""
    torch.manual_seed(0)
    d1, d2 = random_directions(model, seed=0, count=2)
    center = get_weights(model)
    xs = ys = np.linspace(-1.0, 1.0, grid)
    loop_batches, fast_batches = batched(X, Y, 128), batched(X, Y, fast_batch)
    print(f"\n[{name}] {grid}x{grid} grid, {len(X)} images, "
          f"{sum(p.numel() for p in model.parameters()):,} parameters")

    # warm the reference too (allocator, cuDNN heuristics), so it is not charged for them
    surface_2d_loop(model, center, d1, d2, xs[:1], ys[:1], loop_batches)
    ref, t_loop = timed(lambda: surface_2d_loop(model, center, d1, d2, xs, ys, loop_batches),
                        device, repeats)
    print(f"  loop reference (fp32, batch 128)            {t_loop:8.2f} s")
    speedups = []
    for label, kwargs in variants:
        def fast():
            return surface_2d(model, center, d1, d2, xs, ys, fast_batches, **kwargs)

        # the first call pays the one-off costs (vmap tracing, cuDNN autotuning, compilation);
        # warm-up = first call minus a steady-state call
        _, t_first = timed(fast, device)
        res, t_fast = timed(fast, device, repeats)
        t_warm = max(t_first - t_fast, 0.0)
        rel = np.max(np.abs(res["loss"] - ref["loss"]) / np.abs(ref["loss"]))
        speedups.append(t_loop / t_fast)
        print(f"  {label:<44s}{t_fast:8.2f} s   {t_loop / t_fast:6.1f}x   "
              f"max rel diff {rel:.1e}   warm-up {t_warm:.2f} s "
              f"[{res['method']}, {res['points_per_chunk']} pts/chunk]")
    return max(speedups)


def fast_variants(device, compile_, loop_too):
    """Fast configurations: the default (vmap engine) in fp32, plus bf16 on a GPU; with
    ``loop_too`` the point-by-point engine as well (bf16 + channels-last on a GPU)."""
    tag = " +compile" if compile_ else ""
    cuda = device.type == "cuda"
    out = [(f"fast fp32, vmap{tag}", dict(compile=compile_))]
    if cuda:
        out.append((f"fast bf16, vmap{tag}", dict(compile=compile_, precision="bf16")))
    if loop_too:
        loop = dict(method="loop", compile=compile_)
        out.append((f"fast fp32, loop engine{tag}", loop))
        if cuda:
            out.append((f"fast bf16 channels-last, loop engine{tag}",
                        dict(loop, precision="bf16", channels_last=True)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="auto", help="auto (cuda if available), cpu or cuda")
    ap.add_argument("--quick", action="store_true", help="small CPU smoke run (< 1 minute)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the fast paths")
    ap.add_argument("--repeats", type=int, default=None,
                    help="time each run N times and keep the best (default 1; 3 with --quick, "
                         "since a shared CPU is noisy)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 1
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name}), torch {torch.__version__}, quick={args.quick}")

    torch.manual_seed(0)
    if args.quick:
        resnet = create_model("resnet18", in_channels=3, image_size=32, num_classes=10, width=16)
        r_grid, r_images, m_grid = 3, 8, 7
    else:
        resnet = create_model("resnet18", in_channels=3, image_size=32, num_classes=10)
        r_grid, r_images, m_grid = 21, 1024, 41
    resnet = resnet.to(device).eval()
    X, Y = cifar_like(r_images, device)
    best = {"resnet18": run_case("resnet18" + (" (width 16)" if args.quick else ""), resnet,
                                 X, Y, r_grid, r_images,
                                 fast_variants(device, args.compile, loop_too=True), device,
                                 args.repeats)}

    mlp = create_model("mlp", in_channels=1, image_size=8, num_classes=10).to(device).eval()
    X, Y = digits(device)
    best["mlp"] = run_case("mlp (digits)", mlp, X, Y, m_grid, len(X),
                           fast_variants(device, args.compile, loop_too=False), device,
                           args.repeats)

    print()
    for name, target in TARGETS.items():
        verdict = ("PASS" if best[name] >= target else "FAIL") if device.type == "cuda" \
            else "(targets are for an H100)"
        print(f"{name}: best speed-up {best[name]:.1f}x, target >= {target:.0f}x {verdict}")


if __name__ == "__main__":
    main()
