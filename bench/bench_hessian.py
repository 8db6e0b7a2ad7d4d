"""Benchmark: top Hessian eigenvalues, this library's engines against PyHessian.

CIFAR ResNet-18 (``create_model("resnet18")``) at a checkpoint (``--checkpoint``, a state_dict)
or at initialization, on ``--images`` images put through in batches of ``--batch-size``
(default: all in one batch): real ones from an ImageFolder (``--data-folder``), otherwise
synthetic normal images with random labels (nothing is downloaded).

In one process, after a warm-up of every engine:
1. reference: ARPACK ``eigsh`` with TF32 off, at tol 1e-8 on a float64 copy of model and data
   (default on CPU) or at tol 1e-6 in float32 (default on CUDA, where float64 convolutions are
   slow; float32 products limit it to ~1e-6 relative, far below the errors measured at 1e-3);
2. timed, each the top ``--top`` eigenvalues at ``--tol``:
   - ``lanczos``: ``top_eigenpairs`` (torch Lanczos on the device, the default engine),
   - ``eigsh``: ``top_eigenpairs(engine="eigsh")`` (ARPACK driving the same operator),
   - ``pyhessian``: ``hessian(...).eigenvalues(top_n, tol)`` (power iteration + deflation).
   PyHessian differentiates twice through one retained gradient graph; ours compute products
   in the operator's ``--hvp-mode`` (``auto``: the retained graph on CPU; on CUDA the faster of
   forward-over-reverse and the retained graph, timed on the first product; see
   ``landscape_lib/analyses/hessian/operator.py``), so compare products and ms/product separately.
   PyHessian's ``tol`` bounds the change between iterations, ours the residual, hence the
   error column against the reference.
Printed per engine: seconds (fastest of ``--repeats`` runs, graph construction included),
Hessian-vector products, ms per product, max relative error of the eigenvalues against the
reference, speed-up over PyHessian.

    python bench/bench_hessian.py [--device auto] [--images 512] [--tol 1e-3] [--top 5]
                                  [--checkpoint PATH] [--data-folder DIR] [--quick]

``--quick`` is a CPU smoke run (< 1 min): a small CNN (widths 4, 8) on 64 images.
TF32 stays off for every run unless ``--tf32`` (then only the timed runs use it).
"""
from __future__ import annotations

import argparse
import copy
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from landscape_lib.analyses.hessian.lanczos import top_eigenpairs
from landscape_lib.analyses.hessian.operator import HVP_MODES, HessianOperator
from landscape_lib.analyses.hessian.pyhessian_adapter import pyhessian_engine
from landscape_lib.models import create_model
from landscape_lib.train.environment import resolve_device, set_tf32, sync

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--images", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=None, help="default: all images at once")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--top", type=int, default=5)
    p.add_argument("--checkpoint", default=None, help="state_dict of the CIFAR ResNet-18")
    p.add_argument("--data-folder", default=None,
                   help="ImageFolder of CIFAR-like images, or a folder holding one as train/ "
                        "(the offline CIFAR-10 copy's layout)")
    p.add_argument("--reference-dtype", choices=["auto", "float64", "float32"], default="auto",
                   help="auto: float64 on CPU, float32 on CUDA")
    p.add_argument("--pyhessian-max-iter", type=int, default=100, help="PyHessian's maxIter")
    p.add_argument("--hvp-mode", default="auto", choices=HVP_MODES,
                   help="how our engines compute Hessian-vector products")
    p.add_argument("--tf32", action="store_true", help="allow TF32 in the timed runs")
    p.add_argument("--repeats", type=int, default=2,
                   help="timed runs per engine; the fastest counts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engines", default="lanczos,eigsh,pyhessian",
                   help="comma-separated subset of lanczos, eigsh, pyhessian (pyhessian is the base)")
    p.add_argument("--quick", action="store_true", help="CPU smoke run with a small CNN")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.images, args.repeats = "cpu", 64, 1
    return args


def build_model(args) -> nn.Module:
    if args.quick:
        return create_model("cnn", in_channels=3, image_size=32, num_classes=10, widths=(4, 8))
    model = create_model("resnet18", in_channels=3, image_size=32, num_classes=10)
    if args.checkpoint:
        model.load_state_dict(torch.load(args.checkpoint, map_location="cpu", weights_only=True))
    return model


def load_images(args) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(args.seed)
    if args.data_folder is None:
        return (torch.randn(args.images, 3, 32, 32, generator=gen),
                torch.randint(0, 10, (args.images,), generator=gen))
    from torchvision import datasets, transforms
    tf = transforms.Compose([transforms.Resize((32, 32)), transforms.ToTensor(),
                             transforms.Normalize(CIFAR_MEAN, CIFAR_STD)])
    folder = Path(args.data_folder)
    if (folder / "train").is_dir():  # train/ and test/ side by side: the classes are one level down
        folder = folder / "train"
    data = datasets.ImageFolder(folder, transform=tf)
    print(f"images from {folder}: {len(data):,} in {len(data.classes)} classes")
    idx = torch.randperm(len(data), generator=gen)[:args.images].tolist()
    xs, ys = zip(*(data[i] for i in idx))
    return torch.stack(xs), torch.tensor(ys)


def batched(x, y, size):
    return [(x[i:i + size], y[i:i + size]) for i in range(0, len(x), size)]


def release(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def reference(model, batches, k, args, device):
    """Tightly converged top-k eigenvalues (ARPACK) of a float64 (or float32) copy."""
    name = args.reference_dtype
    if name == "auto":
        name = "float32" if device.type == "cuda" else "float64"
    dtype = getattr(torch, name)
    tol = 1e-8 if dtype == torch.float64 else 1e-6
    ref_model = copy.deepcopy(model).to(dtype)
    ref_batches = [(x.to(dtype), y) for x, y in batches]
    t0 = time.perf_counter()
    op = HessianOperator(ref_model, nn.CrossEntropyLoss(), ref_batches)
    vals, _ = top_eigenpairs(op, k, tol=tol, engine="eigsh", seed=args.seed + 1)
    sync(device)
    seconds, products = time.perf_counter() - t0, op.n_products
    del op, ref_model, ref_batches
    release(device)
    return vals.numpy(), seconds, products, f"{name}, eigsh tol {tol:g}"


def run_ours(engine, model, batches, args):
    op = HessianOperator(model, nn.CrossEntropyLoss(), batches, mode=args.hvp_mode)
    vals, _ = top_eigenpairs(op, args.top, tol=args.tol, engine=engine, seed=args.seed)
    return vals.numpy(), op.n_products, op.mode


def run_pyhessian(model, batches, args):
    torch.manual_seed(args.seed)  # PyHessian draws its start vectors from the global RNG
    vals, _, products = pyhessian_engine(model, nn.CrossEntropyLoss(), batches, args.top,
                                         args.tol, max_iter=args.pyhessian_max_iter)
    return vals, products, "cached"


def warm_up(model, batches, device, hvp_mode):
    """First calls pay for kernel selection and allocation; keep that out of the timings."""
    loss = nn.CrossEntropyLoss()
    op = HessianOperator(model, loss, batches, mode=hvp_mode)
    v = torch.randn(op.shape[0], device=device)
    for _ in range(2):
        op @ v
    del op
    pyhessian_engine(model, loss, batches, top_n=1, tol=1.0, max_iter=2)
    sync(device)
    release(device)


def timed(fn, device):
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def main(argv=None):
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message=".*torch.jit.script.*")  # torch-internal notice
    device = resolve_device(args.device)
    set_tf32(False)
    torch.manual_seed(args.seed)
    model = build_model(args).to(device).eval()
    x, y = load_images(args)
    batches = batched(x.to(device), y.to(device), args.batch_size or len(x))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    name = "cnn(4,8)" if args.quick else "resnet18"
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    print(f"{name}: {n_params:,} parameters, {len(x)} images in {len(batches)} batch(es), "
          f"device {device}{gpu}, torch {torch.__version__}, top {args.top}, tol {args.tol:g}")

    ref, ref_s, ref_products, ref_how = reference(model, batches, args.top, args, device)
    print(f"reference ({ref_how}): {ref_s:.1f} s, "
          f"{ref_products} products; eigenvalues "
          + ", ".join(f"{v:.6g}" for v in ref))

    warm_up(model, batches, device, args.hvp_mode)
    set_tf32(args.tf32)
    runs = {
        "lanczos": lambda: run_ours("lanczos", model, batches, args),
        "eigsh": lambda: run_ours("eigsh", model, batches, args),
        "pyhessian": lambda: run_pyhessian(model, batches, args),
    }
    chosen = [e for e in ("pyhessian", "lanczos", "eigsh") if e in args.engines.split(",")]
    if "pyhessian" not in chosen:
        raise SystemExit("--engines must include pyhessian (the base of the ratios)")
    print(f"{'engine':<10} {'hvp mode':>8} {'seconds':>8} {'products':>9} {'ms/product':>11} "
          f"{'max rel err':>12} {'speed-up vs pyhessian':>22}", flush=True)
    base = None
    for engine in chosen:  # pyhessian first, so each line can print its ratio at once
        seconds = float("inf")
        for _ in range(args.repeats):  # same seed each time: identical work, noise-free minimum
            (vals, products, mode), t = timed(runs[engine], device)
            seconds = min(seconds, t)
        err = float(np.max(np.abs(np.sort(vals)[::-1] - ref) / np.abs(ref)))
        release(device)
        base = base or seconds
        print(f"{engine:<10} {mode:>8} {seconds:8.2f} {products:9d} {1e3 * seconds / products:11.1f} "
              f"{err:12.2e} {base / seconds:21.2f}x", flush=True)


if __name__ == "__main__":
    main()
