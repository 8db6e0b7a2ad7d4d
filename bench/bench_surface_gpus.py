"""A 41x41 ResNet-18 loss surface on 1 GPU against 2 GPUs (issue 13; target >= 1.8x).

Times, in this one process, the library's one-device ``surface_2d`` against
``surface_2d_multi`` over two devices (what the `surface` analysis runs when it sees several
GPUs: one thread and one model copy per GPU, rows shared out and handed over in order), and,
as the bound without the GIL, two spawned processes that each evaluate half the rows on their
own GPU (timed from a barrier after their warm-up, so their start-up is not counted).
Printed: seconds (best of --repeats after a warm-up), speed-up over one GPU, the largest
absolute / relative difference of the loss and accuracy grids from one GPU, mean GPU
utilisation per GPU while each variant runs (`gpu_sampler.py`: NVML, else nvidia-smi).
`--json` gets the figures.

Inputs: with --data-folder (a folder holding the CIFAR-10 JPEG copy's train/ and test/) a
seeded sample of --images training images through the library's `folder` data set and its
device-resident normalisation; without it random CIFAR-shaped tensors (the timing does not
depend on the pixels; the loss values then mean nothing). About 2-3 min on 2 H200s.

    python bench/bench_surface_gpus.py --data-folder /tmp/cifar --json out/surface.json
    python bench/bench_surface_gpus.py --devices cpu,cpu --grid 5 --width 4 --images 64
        # a CPU smoke run of this script
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import numpy as np
import torch
import torch.multiprocessing as mp

from gpu_sampler import GpuSampler
from landscape_lib.analyses.surface.devices import surface_2d_multi
from landscape_lib.analyses.surface.directions import get_weights, random_directions
from landscape_lib.analyses.surface.grids import surface_2d
from landscape_lib.models import create_model

TARGET = 1.8


def sync_all():
    for i in range(torch.cuda.device_count()):
        torch.cuda.synchronize(i)


def load_inputs(args, device):
    if not args.data_folder:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.images, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (args.images,), generator=g)
        return x.to(device), y.to(device), "random CIFAR-shaped tensors"
    from landscape_lib.data import DeviceData, load_dataset
    splits = load_dataset("folder", root=args.data_root, path=args.data_folder, progress=True)
    x, y = DeviceData(splits, device).subset("train", args.images, 0)
    return x, y, f"CIFAR-10 (JPEG copy), a seeded sample of {args.images} training images"


def resnet18(width, device):
    torch.manual_seed(0)
    return create_model("resnet18", in_channels=3, image_size=32, num_classes=10,
                        width=width).to(device).eval()


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        sync_all()
        t0 = time.perf_counter()
        out = fn()
        sync_all()
        best = min(best, time.perf_counter() - t0)
    return out, best


def _half(rank, device, width, path, rows, barrier, results, options):
    """One spawned process: its GPU, its half of the rows, timed from the shared barrier."""
    torch.backends.cudnn.benchmark = True
    dev = torch.device(device)
    blob = torch.load(path, weights_only=True)
    model = resnet18(width, dev)
    model.load_state_dict(blob["model"])
    batches = [(x.to(dev), y.to(dev)) for x, y in zip(blob["x"], blob["y"], strict=True)]
    d1, d2 = [d.to(dev) for d in blob["d1"]], [d.to(dev) for d in blob["d2"]]
    xs, ys = blob["xs"].numpy(), blob["ys"].numpy()[rows[0]:rows[1]]
    surface_2d(model, get_weights(model), d1, d2, xs[:3], ys[:1], batches, **options)  # warm-up
    sync_all()
    barrier.wait()
    t0 = time.perf_counter()
    res = surface_2d(model, get_weights(model), d1, d2, xs, ys, batches, **options)
    sync_all()
    results[rank] = (time.perf_counter() - t0, res["loss"])


def processes(devices, width, model, batches, d1, d2, xs, ys, options):
    """The bound without the GIL: 2 processes, start-up and warm-up excluded."""
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "blob.pt")
        torch.save({"model": {k: v.cpu() for k, v in model.state_dict().items()},
                    "x": [x.cpu() for x, _ in batches], "y": [y.cpu() for _, y in batches],
                    "d1": [d.cpu() for d in d1], "d2": [d.cpu() for d in d2],
                    "xs": torch.as_tensor(xs), "ys": torch.as_tensor(ys)}, path)
        half = len(ys) // 2 + len(ys) % 2
        barrier, manager = ctx.Barrier(2), ctx.Manager()
        results = manager.dict()
        procs = [ctx.Process(target=_half, args=(r, devices[r], width, path, rows, barrier,
                                                 results, options))
                 for r, rows in enumerate([(0, half), (half, len(ys))])]
        t_start = time.perf_counter()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        total = time.perf_counter() - t_start
        seconds = max(results[r][0] for r in range(2))
        loss = np.concatenate([results[0][1], results[1][1]])
    return seconds, total, loss


def diff(a, b):
    ab = np.abs(a - b)
    return float(ab.max()), float((ab / np.maximum(np.abs(b), 1e-12)).max())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-folder", help="CIFAR-10 JPEG copy (train/ and test/); default random")
    ap.add_argument("--data-root", help="decoded-data cache (default: runs/data)")
    ap.add_argument("--grid", type=int, default=41)
    ap.add_argument("--width", type=int, default=64, help="ResNet-18 width (64: the standard)")
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=512, help="the analyses' batch size")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-processes", action="store_true", help="skip the 2-process bound")
    ap.add_argument("--contiguous", action="store_true",
                    help="contiguous layout (default on CUDA: channels-last, as the analysis)")
    ap.add_argument("--json", help="write the figures here as JSON")
    ap.add_argument("--devices", default="cuda:0,cuda:1",
                    help="the two devices (cpu,cpu: a smoke run of this script without GPUs)")
    args = ap.parse_args(argv)
    devices = args.devices.split(",")
    on_gpu = devices[0].startswith("cuda")
    if len(devices) != 2 or (on_gpu and torch.cuda.device_count() < 2):
        raise SystemExit(f"needs two devices; --devices {args.devices}, "
                         f"{torch.cuda.device_count()} GPU(s) visible")
    torch.backends.cudnn.benchmark = True
    model = resnet18(args.width, devices[0])
    x, y, what = load_inputs(args, devices[0])
    batches = [(x[i:i + args.batch], y[i:i + args.batch]) for i in range(0, len(x), args.batch)]
    d1, d2 = random_directions(model, seed=0, count=2)
    center = get_weights(model)
    xs = ys = np.linspace(-1.0, 1.0, args.grid)
    options = dict(precision=args.precision,  # channels-last as the analysis on CUDA
                   channels_last=on_gpu and not args.contiguous)
    name = torch.cuda.get_device_name(0) if on_gpu else "CPU"
    print(f"{name} x2, torch {torch.__version__}; ResNet-18 width {args.width} "
          f"({sum(p.numel() for p in model.parameters()):,} params); {args.grid}x{args.grid} "
          f"grid on {args.images} images ({what}), batch {args.batch}, {args.precision}, "
          f"{'channels-last' if options['channels_last'] else 'contiguous'}")

    variants = {
        "1 GPU (surface_2d)": lambda: surface_2d(model, center, d1, d2, xs, ys, batches,
                                                 **options),
        "2 GPUs (surface_2d_multi)": lambda: surface_2d_multi(
            model, center, d1, d2, xs, ys, batches, devices=devices, **options),
    }
    rows = {}
    for label, fn in variants.items():
        t_first = timed(fn, 1)[1]  # warm-up: cuDNN autotuning, allocator, model copies
        with GpuSampler(period=0.2) as gpus:
            res, t = timed(fn, args.repeats)
        rows[label] = dict(seconds=t, warmup_extra=max(0.0, t_first - t), util=gpus.summary(),
                           loss=res["loss"], acc=res["acc"], method=res["method"])
    ref = rows["1 GPU (surface_2d)"]
    if not args.no_processes:
        with GpuSampler(period=0.2) as gpus:
            t, total, loss = processes(devices, args.width, model, batches, d1, d2, xs, ys,
                                       options)
        rows["2 GPUs (2 processes, bound)"] = dict(seconds=t, warmup_extra=total - t,
                                                   util=gpus.summary(), loss=loss, acc=None,
                                                   method=ref["method"])
    summary = {}
    print(f"\n{'variant':<30} {'seconds':>8} {'speed-up':>9} {'max |dloss|':>12} "
          f"{'max rel':>9} {'max |dacc|':>10}  GPU util % (start-up/warm-up s)")
    for label, r in rows.items():
        speed = ref["seconds"] / r["seconds"]
        d_abs, d_rel = diff(r["loss"], ref["loss"])
        d_acc = diff(r["acc"], ref["acc"])[0] if r["acc"] is not None else float("nan")
        print(f"{label:<30} {r['seconds']:8.2f} {speed:8.2f}x {d_abs:12.2e} {d_rel:9.1e} "
              f"{d_acc:10.1e}  {r['util']['util_mean']} ({r['warmup_extra']:.1f})")
        summary[label] = dict(seconds=r["seconds"], speedup=speed, max_abs_loss_diff=d_abs,
                              max_rel_loss_diff=d_rel, max_abs_acc_diff=d_acc, gpus=r["util"],
                              warmup_or_startup_s=r["warmup_extra"], method=r["method"])
    speed = summary["2 GPUs (surface_2d_multi)"]["speedup"]
    print(f"\n2-GPU speed-up {speed:.2f}x, target >= {TARGET}x: "
          f"{'PASS' if speed >= TARGET else 'FAIL'}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"inputs": what, "grid": args.grid, "images": args.images,
                       "width": args.width, "precision": args.precision,
                       "device": name, "variants": summary}, fh, indent=2)


if __name__ == "__main__":
    main()
