"""Benchmark: the default Hessian analysis of study A's ViT patch 4 and ResNet-18, before/after.

Issue 14 acceptance 1 (targets on one H200, alone on the GPU: ViT patch 4 <= 20 s, ResNet-18
<= 15 s; 512 samples, per-layer on). Study A's run of each model (``runs/grid.toml``, Adam,
seed 0) is trained for ``--epochs`` epochs into ``--store`` (skipped when it is there already),
then analysed through ``run_analysis`` (checkpoint loading, data, writing rows included) in one
process:

- ``before``: the old way of the per-layer table, each module its own Lanczos and its own
  ``trace_samples`` Hutchinson probes (``layer_method="separate"``), every product one column
  of forward-over-reverse (``hvp_mode="forward"``, the former default); the other parts are
  today's (the old code measured in issue 14 on an H200: ViT patch 4 66 s for 1,852 products,
  ResNet-18 81.5 s for 1,370, with a lambda_min that was wrong);
- ``after``: the defaults (``HessianSettings``: per-layer traces from the whole-network probes,
  all modules' Lanczos in lockstep, ``hvp_mode="auto"``), ``--repeats`` times (the first run
  of a process includes CUDA/cuDNN warm-up and auto's trials; the second also tries the
  compiled product, compilation included (``auto.COMPILE_AT``); later runs of the process reuse
  auto's choice for the same model and batch shapes, as the analyses of a grid worker do: with
  ``--repeats 4`` the 3rd and 4th are the steady state).

Printed per run and variant: wall seconds of ``run_analysis`` (loading and writing included) and
the parts' own seconds, products, and products / seconds of each part
(``analysis_costs``), lambda_max, lambda_min with its residual and ``lam_min_consistent``,
auto's trials (``hvp_trials.json``: ms per column of each product mode, or why it was dropped); then
the ratio before / after measured in this run. ``--variants after`` skips the (slow) old way.

    python bench/bench_hessian_analysis.py --data-folder DIR [--archs vit-p4,resnet18]
        [--epochs 4] [--store DIR] [--variants before,after] [--repeats 2] [--json F]
        [--profile N] [--hvp-mode compile] [--no-cudnn-benchmark] [--product-times]
        [--compiled-split N] [--stages] [--cudnn-benchmark-limit N] [--callers K]
        [--custom-ops]
    python bench/bench_hessian_analysis.py --quick     # CPU smoke run, tiny models
"""
from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
import time
from pathlib import Path

from study_runs import ARCHS, study_a, trained

from landscape_lib.analyses.hessian.analysis import PARTS
from landscape_lib.analyses.provenance import run_analysis
from landscape_lib.analyses.runners.curvature import HVP_TRIALS
from landscape_lib.store import Store
from landscape_lib.store.queries import table_rows
from landscape_lib.store.schema import WHOLE_MODEL

TARGET_S = {"vit-p4": 20.0, "resnet18": 15.0}
VARIANTS = {"before": {"layer_method": "separate", "hvp_mode": "forward", "hvp_chunk": 1},
            "after": {}}
QUICK = {"samples": 128, "trace_samples": 4, "density_vectors": 2, "density_steps": 12,
         "layer_steps": 3, "bottom_max_steps": 20}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-folder", help="ImageFolder tree with train/ and test/ (CIFAR-10)")
    p.add_argument("--data-root", help="decoded-image cache (default: the library's)")
    p.add_argument("--archs", default=",".join(ARCHS), help=f"of {', '.join(ARCHS)}")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--store", help="keep the runs here (default: a temporary store)")
    p.add_argument("--variants", default="before,after")
    p.add_argument("--repeats", type=int, default=2, help="runs of 'after'")
    p.add_argument("--compile", action="store_true", help="torch.compile the training")
    p.add_argument("--device", default=None)
    p.add_argument("--json", help="write every measured row here")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="cProfile the last analysis of each model: its N costliest calls")
    p.add_argument("--quick", action="store_true", help="CPU smoke run with tiny models")
    p.add_argument("--hvp-mode", help="'after' with this hvp_mode (e.g. compile: no trials)")
    p.add_argument("--compiled-split", type=int, metavar="N",
                   help="the compiled product's micro-batches (auto.COMPILED: 4 columns over "
                        "1/N of a batch; default the library's)")
    p.add_argument("--product-times", action="store_true",
                   help="per part, the GPU time of its product calls (CUDA events around each "
                        "call of the forward products) against the part's seconds")
    p.add_argument("--stages", action="store_true",
                   help="seconds of each stage of run_analysis (loading, parts, writes)")
    p.add_argument("--no-cudnn-benchmark", action="store_true",
                   help="the analysis without cuDNN's autotuner (a process' first analysis "
                        "times every new convolution shape with it)")
    p.add_argument("--cudnn-benchmark-limit", type=int, metavar="N",
                   help="cuDNN's autotuner times at most N plans per new convolution shape "
                        "(torch.backends.cudnn.benchmark_limit; PyTorch's default 10)")
    p.add_argument("--callers", type=int, default=0, metavar="K",
                   help="with --profile: who calls the K costliest functions (own time)")
    p.add_argument("--custom-ops", action="store_true",
                   help="time each registration of a custom operator (torch.library) and say "
                        "which module asked for it")
    args = p.parse_args(argv)
    if args.quick:
        args.device, args.epochs, args.repeats = "cpu", 1, 1
    return args


def analyse(store, run_id, params, device, data_root) -> dict:
    t0 = time.perf_counter()
    aid = run_analysis(store, run_id, "hessian", "last", params, device=device,
                       data_root=data_root, force=True)
    wall = time.perf_counter() - t0

    def rows(table):
        df = table_rows(store, table, [run_id])
        return df[df["analysis_id"] == aid]

    costs, summary, analyses = rows("analysis_costs"), rows("hessian_summary"), rows("analyses")
    whole = summary[summary.layer == WHOLE_MODEL].iloc[0]
    layers = summary[summary.layer != WHOLE_MODEL]
    engine = analyses["engine"].iloc[-1]
    trials = store.analysis_artifact(run_id, aid, HVP_TRIALS)
    return {"wall_s": wall, "parts_s": float(costs["seconds"].sum()),
            "products": int(costs["n_products"].sum()), "engine": engine,
            "parts": {r.part: (int(r.n_products), round(float(r.seconds), 2))
                      for r in costs.sort_values("part", key=lambda s: s.map(PARTS.index))
                      .itertuples()},
            "layers": int((summary.layer != WHOLE_MODEL).sum()),
            "layer_steps": {int(k): int(v) for k, v in sorted(
                layers["n_products"].value_counts().items())},
            "layers_unconverged": int((~layers["top_eig_converged"].astype(bool)).sum()),
            "top_eig_converged": bool(whole.top_eig_converged),
            "lambda_max": float(whole.top_eig), "lam_min": float(whole.lam_min),
            "lam_min_residual": float(whole.lam_min_residual),
            "lam_min_consistent": bool(whole.lam_min_consistent),
            "neg_share": float(whole.neg_share),
            "hvp_trials": json.loads(trials.read_text()) if trials.exists() else {}}


def cudnn_settings(**settings):
    """The analysis' TF32 context with these ``torch.backends.cudnn`` settings on top, restored
    after: ``benchmark=False`` (``--no-cudnn-benchmark``: no autotuner) or ``benchmark_limit=N``
    (``--cudnn-benchmark-limit``: the fastest of the heuristics' first N plans per new shape)."""
    import contextlib

    import torch

    from landscape_lib.analyses.hessian import analysis
    tf32, cudnn = analysis.tf32, torch.backends.cudnn

    @contextlib.contextmanager
    def changed(on: bool):
        before = {k: getattr(cudnn, k) for k in settings}
        with tf32(on):
            for k, v in settings.items():
                setattr(cudnn, k, v)
            try:
                yield
            finally:
                for k, v in before.items():
                    setattr(cudnn, k, v)
    analysis.tf32 = changed


PRODUCT_TIMES: list[dict] = []  # per part of each analysis (--product-times)


def product_times():
    """Time every call of the forward products with CUDA events (no sync) and, per part of the
    analysis, sum them after the part's own sync (``--product-times``)."""
    import contextlib

    import torch

    from landscape_lib.analyses.hessian import analysis, products
    events = []
    call = products.ForwardProducts.__call__

    def timed_call(self, V):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = call(self, V)
        end.record()
        events.append((start, end))
        return out
    products.ForwardProducts.__call__ = timed_call
    part = analysis._Clock.part

    @contextlib.contextmanager
    def timed_part(self, name):
        first = len(events)
        with part(self, name) as extra:
            yield extra
        mine = events[first:]
        PRODUCT_TIMES.append({"part": name, "seconds": self.rows[-1]["seconds"],
                              "calls": len(mine),
                              "product_s": sum(s.elapsed_time(e) for s, e in mine) / 1e3})
    analysis._Clock.part = timed_part


CUSTOM_OPS: list[tuple[str, float, str]] = []  # (operator, seconds, where) (--custom-ops)


def custom_ops():
    """Time every registration of a custom operator with the dispatcher (``--custom-ops``):
    ``CustomOpDef._register_to_dispatcher``, with the first frame outside ``torch/_library``
    that led to it."""
    import traceback

    from torch._library import custom_ops as ops
    register = ops.CustomOpDef._register_to_dispatcher

    def timed(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return register(self, *a, **k)
        finally:
            frames = [f for f in traceback.extract_stack()[:-1]
                      if "_library" not in f.filename and "importlib" not in f.filename]
            where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
            CUSTOM_OPS.append((getattr(self, "_qualname", "?"), time.perf_counter() - t0, where))
    ops.CustomOpDef._register_to_dispatcher = timed


def print_custom_ops():
    if not CUSTOM_OPS:
        print("custom operators registered: none", flush=True)
        return
    total = sum(t for _, t, _ in CUSTOM_OPS)
    print(f"custom operators registered: {len(CUSTOM_OPS)}, {total:.2f} s; the costliest:",
          flush=True)
    for name, t, where in sorted(CUSTOM_OPS, key=lambda r: -r[1])[:15]:
        print(f"  {t:7.3f} s  {name}  from {where}", flush=True)
    CUSTOM_OPS.clear()


STAGES: list[tuple[str, float]] = []  # (stage, seconds) of each analysis (--stages)


def stages():
    """Time the stages of ``run_analysis`` (``--stages``), each ended by a CUDA sync: what a
    process' first analysis spends outside its parts as well as in them. A stage inside
    another (a layer's operator inside the parts) counts in the outer one only."""
    import functools

    import torch

    from landscape_lib.analyses import context, provenance
    from landscape_lib.analyses.hessian import analysis
    from landscape_lib.analyses.runners import curvature
    depth = [0]

    def timed(owner, name, label):
        fn = getattr(owner, name)

        @functools.wraps(fn)
        def wrapper(*a, **k):
            depth[0] += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if torch.cuda.is_available():
                    torch.cuda.synchronize()
                depth[0] -= 1
                if depth[0] == 0:
                    STAGES.append((label, time.perf_counter() - t0))
        setattr(owner, name, wrapper)
    timed(provenance, "prepare", "prepare")
    timed(context, "build_data", "data")
    timed(context.AnalysisContext, "model_at", "model")
    timed(analysis, "check_finite_loss", "finite check")
    timed(analysis, "make_operator", "operator")
    timed(analysis, "analyse", "parts")
    timed(curvature, "write", "writes")
    if torch.cuda.is_available():  # the CUDA context, before the first analysis
        t0 = time.perf_counter()
        torch.zeros(1, device="cuda")
        torch.cuda.synchronize()
        print(f"CUDA context: {time.perf_counter() - t0:.2f} s", flush=True)


def main(argv=None):
    args = parse_args(argv)
    if args.stages:
        stages()
    if args.custom_ops:
        custom_ops()
    if args.no_cudnn_benchmark or args.cudnn_benchmark_limit is not None:
        cudnn_settings(**({"benchmark": False} if args.no_cudnn_benchmark else {}),
                       **({} if args.cudnn_benchmark_limit is None
                          else {"benchmark_limit": args.cudnn_benchmark_limit}))
    if args.product_times:
        product_times()
    if args.compiled_split:
        import dataclasses

        from landscape_lib.analyses.hessian import auto
        auto.COMPILED = dataclasses.replace(auto.COMPILED, split=args.compiled_split)
    store = Store(args.store or tempfile.mkdtemp(prefix="bench-hessian-")).ensure()
    rows = []
    for arch in args.archs.split(","):
        cfg = study_a(arch, args.epochs, args.data_folder, args.quick, args.compile)
        rid = trained(store, cfg, args.data_root, args.device)
        for variant in args.variants.split(","):
            params = {**(QUICK if args.quick else {}), **VARIANTS[variant],
                      **({"hvp_mode": args.hvp_mode} if args.hvp_mode and variant == "after"
                         else {})}
            repeats = args.repeats if variant == "after" else 1
            for i in range(repeats):
                prof = cProfile.Profile() if args.profile and i == repeats - 1 else None
                if prof:
                    prof.enable()
                row = {"arch": arch, "variant": variant, "repeat": i,
                       **analyse(store, rid, params, args.device, args.data_root)}
                if prof:
                    prof.disable()
                    stats = pstats.Stats(prof)
                    stats.sort_stats("cumulative").print_stats("landscape_lib", args.profile)
                    stats.sort_stats("tottime").print_stats(args.profile // 2)
                    if args.callers:
                        stats.print_callers(args.callers)
                rows.append(row)
                if args.custom_ops:
                    print_custom_ops()
                if args.stages:
                    row["stages"] = list(STAGES)
                    rest = row["wall_s"] - sum(t for _, t in STAGES)
                    print(f"{'':>17}stages: " + ", ".join(f"{n} {t:.2f}" for n, t in STAGES)
                          + f", the rest {rest:.2f} s", flush=True)
                    STAGES.clear()
                if args.product_times:
                    for t in PRODUCT_TIMES:
                        print(f"{'':>17}{t['part']:>9}: {t['seconds']:6.2f} s, {t['calls']:3d} "
                              f"product calls {t['product_s']:6.2f} s "
                              f"({1e3 * t['product_s'] / max(1, t['calls']):.1f} ms each), the "
                              f"rest {t['seconds'] - t['product_s']:5.2f} s", flush=True)
                    row["product_times"] = list(PRODUCT_TIMES)
                    PRODUCT_TIMES.clear()
                print(f"{arch:>8} {variant:>6} #{i}: {row['wall_s']:6.1f} s (parts "
                      f"{row['parts_s']:.1f} s), "
                      f"{row['products']:5d} products ({row['engine']}); lambda_max "
                      f"{row['lambda_max']:.4g}, lambda_min {row['lam_min']:.4g} +- "
                      f"{row['lam_min_residual']:.2g} (consistent {row['lam_min_consistent']}), "
                      f"neg share {row['neg_share']:.3f}, {row['layers']} layers "
                      f"(Lanczos steps: layers {row['layer_steps']}, "
                      f"{row['layers_unconverged']} not within tol)\n"
                      f"{'':>17}parts (products, s): {row['parts']}\n"
                      f"{'':>17}auto's trials (ms per column): {row['hvp_trials']}", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
        times = {v: min(r["wall_s"] for r in rows if r["arch"] == arch and r["variant"] == v)
                 for v in VARIANTS if any(r["arch"] == arch and r["variant"] == v for r in rows)}
        if "after" in times:
            verdict = ("a CPU smoke run of tiny models: no target" if args.quick else
                       f"target {TARGET_S[arch]:g} s: "
                       f"{'met' if times['after'] <= TARGET_S[arch] else 'NOT met'}")
            line = f"{arch}: after {times['after']:.1f} s ({verdict})"
            if "before" in times:
                line += f", before {times['before']:.1f} s: {times['before'] / times['after']:.1f}x"
            print(line + "\n", flush=True)


if __name__ == "__main__":
    main()
