"""Probe: can the Hessian product be compiled ahead of time and loaded by another process?

A new process that starts from a saved compiled choice (``analyses.hessian.auto``) still
traces the product with Dynamo before Inductor's on-disk caches answer: on an H200 the first
ResNet-18 analysis of such a process took 38.4 s against 15.1 s once compiled. PyTorch's
experimental ``torch.compile(...).aot_compile`` packages the whole compilation (tracing
included) for ``torch.compiler.load_compiled_function``. This probe tries it on the product
the analysis compiles (``products.product_function``: forward-over-reverse, 4 columns per
``vmap`` over ``--split`` micro-batches of the run's 512 analysis images, TF32 as the analysis):

    python bench/probe_aot_compile.py save --store S --run resnet18 --file F   # compile, save
    python bench/probe_aot_compile.py load --store S --run resnet18 --file F   # new process

``save`` prints the compilation's seconds; ``load`` the loading seconds, the first call's, ms
per call, and the largest relative difference from the eager product on the same inputs.
Whatever fails is printed (the feature is experimental): a probe, not a test. It compiles and
loads as the library does (``analyses.hessian.precompiled``: its guard filter and loader), on
the bare product function without the library's file format or fallbacks.
"""
from __future__ import annotations

import argparse
import time
import traceback
from argparse import Namespace

import torch
import torch.nn.functional as F

from bench_hvp import run_model_and_batch
from landscape_lib.analyses.hessian import precompiled
from landscape_lib.analyses.hessian.products import ForwardProducts, product_function


def inputs(args):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, batches = run_model_and_batch(
        Namespace(store=args.store, run=args.run, cache_root=args.data_root, images=512),
        device)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    fp = ForwardProducts(model, F.cross_entropy, names, params, batches, [1.0],
                         split=args.split, chunk=4)
    rest = [n for n, _ in model.named_parameters() if n not in set(names)]
    rest += [n for n, _ in model.named_buffers()]
    x, y, _ = fp.pieces(4)[0]
    V = torch.randn(sum(p.numel() for p in params), 4, device=device,
                    generator=torch.Generator(device=device).manual_seed(0))
    fn = product_function(model, F.cross_entropy, names, rest)
    return fn, (fp.primals, fp.others, x, y, V), device, model


def timed(device, f):
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    t0 = time.perf_counter()
    out = f()
    torch.cuda.synchronize(device) if device.type == "cuda" else None
    return out, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("step", choices=["save", "load"])
    p.add_argument("--store", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--data-root")
    p.add_argument("--file", required=True)
    p.add_argument("--split", type=int, default=2,
                   help="micro-batches of a 4-column call (the analysis' compile x4 /2: 2)")
    args = p.parse_args(argv)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    if hasattr(torch._dynamo.config, "enable_aot_compile"):  # off by default in older torch
        print(f"torch {torch.__version__}: enable_aot_compile was "
              f"{torch._dynamo.config.enable_aot_compile}", flush=True)
        torch._dynamo.config.enable_aot_compile = True
    fn, example, device, model = inputs(args)
    external = {"model": model}  # the module the product's closure calls (its tensors inputs)
    with torch.no_grad():
        eager, _ = timed(device, lambda: fn(*example))
        try:
            if args.step == "save":
                compiled, s = timed(device, lambda: torch.compile(  # the library's filter
                    fn, fullgraph=True, dynamic=False,
                    options={"guard_filter_fn": precompiled.keep_guard}
                ).aot_compile((example, {})))
                print(f"aot_compile: {s:.1f} s", flush=True)
                compiled.save_compiled_function(args.file, external_data=external)
            else:
                with open(args.file, "rb") as f:
                    compiled, s = timed(device, lambda: precompiled.load_function(
                        f, None, external))
                print(f"load_compiled_function: {s:.1f} s", flush=True)
            out, first = timed(device, lambda: compiled(*example))
            _, ten = timed(device, lambda: [compiled(*example) for _ in range(10)])
            err = float(((out - eager).norm(dim=0) / eager.norm(dim=0)).max())
            print(f"{args.step}: first call {first:.2f} s, {1e3 * ten / 10:.1f} ms per call "
                  f"(4 columns, {len(example[2])} images), max relative difference from eager {err:.2e}",
                  flush=True)
        except Exception:  # the feature is experimental: say how it failed
            traceback.print_exc()
            print(f"{args.step}: failed", flush=True)


if __name__ == "__main__":
    main()
