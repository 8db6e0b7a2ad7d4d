"""Benchmark: what the Hessian analysis costs besides its products.

The default analysis (``analysis.analyse``, every part, per-layer on) of a registry model
(``--arch``: the CIFAR ResNet-18 and study A's ViT patch 4 by default) runs on a diagonal
operator over the model's parameters whose product costs one elementwise kernel: what each part
then takes is its own work (Lanczos reorthogonalisation, the trace probes, the per-layer
Lanczos' segment sums, host syncs, Ritz vectors), which the real analysis adds to its products'
time. The diagonal has a Hessian-like spectrum (5 outliers up to 1,500, 20 negative eigenvalues
down to -48, a bulk within +-0.05), so the parts take their usual number of calls. Printed per
part: seconds, calls of the operator, milliseconds per call. (With real products, each part's
product time against its seconds: ``bench_hessian_analysis.py --product-times``.)

    python bench/bench_analysis_overhead.py [--arch resnet18 vit:patch_size=4] [--repeats 2]
        [--detail]

``--detail`` runs it once more with each of ``DETAIL``'s functions timed on its own (a sync
before and after each: nested ones count in both).
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import time
from collections import defaultdict

import torch

from bench_hvp import arch_options

from landscape_lib.analyses.hessian.analysis import analyse, settings, tf32
from landscape_lib.models import create_model
from landscape_lib.train.environment import sync

# functions timed one by one with --detail (synchronised: exact with free products)
DETAIL = ("spectrum:slq", "lanczos:Lanczos.step", "lanczos:Lanczos.ritz_vectors",
          "spectrum:TraceProbes._keep", "spectrum:TraceProbes.finish",
          "layers:lowrank_block_starts", "spectrum:broadened_density",
          "extremes:top_from_density", "lanczos:extreme_eigenpairs", "extremes:lowest_of_both",
          "layers:block_top_eigenvalues", "layers:module_blocks")
SECONDS: dict[str, list] = defaultdict(lambda: [0.0, 0])


@contextlib.contextmanager
def detail(device):
    """Wrap DETAIL's functions with synchronised timers (SECONDS: name -> [s, calls])."""
    undo, depth = [], [0]
    for spec in DETAIL:
        mod_name, _, path = spec.partition(":")
        mod = importlib.import_module(f"landscape_lib.analyses.hessian.{mod_name}")
        owner, attr = (mod, path) if "." not in path else (getattr(mod, path.split(".")[0]),
                                                           path.split(".")[1])
        fn = getattr(owner, attr)

        def timed(*a, __fn=fn, __name=path, **k):
            sync(device)
            t0 = time.perf_counter()
            try:
                return __fn(*a, **k)
            finally:
                sync(device)
                SECONDS[__name][0] += time.perf_counter() - t0
                SECONDS[__name][1] += 1
        functools.update_wrapper(timed, fn)
        setattr(owner, attr, timed)
        undo.append((owner, attr, fn))
        for other in ("analysis", "extremes", "spectrum", "layers"):  # names imported there
            m = importlib.import_module(f"landscape_lib.analyses.hessian.{other}")
            if "." not in path and getattr(m, attr, None) is fn:
                setattr(m, attr, timed)
                undo.append((m, attr, fn))
    try:
        yield
    finally:
        for owner, attr, fn in reversed(undo):
            setattr(owner, attr, fn)


class Diagonal:
    """``diag(d) @ V`` over a model's parameters, counting products and calls."""

    def __init__(self, model, device, seed: int = 0):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self.param_names = [n for n, _ in named]
        n = sum(p.numel() for _, p in named)
        self.shape, self.device, self.dtype = (n, n), torch.device(device), torch.float32
        g = torch.Generator().manual_seed(seed)
        d = torch.randn(n, generator=g) * 0.02
        d[:5] = torch.tensor([1500.0, 1200.0, 990.0, 740.0, 550.0])
        d[5:25] = -torch.linspace(0.5, 48.0, 20)
        self.d = d[torch.randperm(n, generator=g)].to(self.device)
        self.n_products = self.calls = 0

    def __matmul__(self, V):
        self.n_products += V.shape[1] if V.ndim == 2 else 1
        self.calls += 1
        return self.d[:, None] * V if V.ndim == 2 else self.d * V


def run(model, device) -> tuple[float, list[dict]]:
    op = Diagonal(model, device)
    calls = {}

    def report(_fraction, part):
        calls[part] = op.calls

    t0 = time.perf_counter()
    with tf32(True):
        res = analyse(op, model, settings(), report=report)
    wall = time.perf_counter() - t0
    names = list(calls) + ["end"]
    calls["end"] = op.calls
    rows = []
    for r, (a, b) in zip(res.costs.itertuples(), zip(names, names[1:])):
        rows.append({"part": r.part, "seconds": r.seconds, "products": r.n_products,
                     "calls": calls[b] - calls[a]})
    return wall, rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", nargs="*", default=["resnet18", "vit:patch_size=4"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--detail", action="store_true",
                   help="also time the parts' functions one by one")
    args = p.parse_args(argv)
    for spec in args.arch:
        name, _, opts = spec.partition(":")
        torch.manual_seed(0)
        model = create_model(name, in_channels=3, image_size=32, num_classes=10,
                             **arch_options(list(filter(None, opts.split(";"))))
                             ).to(args.device).eval()
        for i in range(args.repeats):
            wall, rows = run(model, args.device)
            print(f"{spec} (free products) #{i}: {wall:.2f} s")
            for r in rows:
                print(f"  {r['part']:>9}: {r['seconds']:6.2f} s, {r['calls']:3d} calls "
                      f"({r['products']} products), "
                      f"{1e3 * r['seconds'] / max(1, r['calls']):6.1f} ms per call", flush=True)
        if args.detail:
            SECONDS.clear()
            with detail(torch.device(args.device)):
                wall, _ = run(model, args.device)
            print(f"{spec} (free products, each function synchronised): {wall:.2f} s")
            for name, (sec, n) in sorted(SECONDS.items(), key=lambda kv: -kv[1][0]):
                print(f"  {name:>28}: {sec:7.3f} s in {n:3d} calls "
                      f"({1e3 * sec / max(1, n):7.2f} ms each)", flush=True)


if __name__ == "__main__":
    main()
