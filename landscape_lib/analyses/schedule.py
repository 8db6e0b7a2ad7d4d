"""Running analyses with provenance: one `analyses` row per (run, epoch, kind, parameters).

The analysis id is a hash of those four, so asking again for the same thing returns the stored
result, and an interrupted analysis (a surface half filled) resumes under the same id. Every
check that can fail (run, epoch, parameters, memory) runs before the first row is written.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
import traceback
from datetime import datetime
from importlib import metadata

from tqdm.auto import tqdm

from ..config import RunConfig, parse_overrides
from ..errors import ConfigError, LandscapeError
from ..store import Store
from ..train.environment import resolve_device
from . import runners  # noqa: F401  (registers the analyses)
from .context import AnalysisContext, checkpoint_epochs, find_run, run_config
from .registry import ANALYSES, resolve_params

STUDY = "study"  # the pseudo run id of stand-alone studies (e.g. attention-hessian)


def analysis_id(run_id: str | None, epoch: int | None, kind: str, params: dict) -> str:
    blob = json.dumps([run_id, epoch, kind, params], sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def resolve_epoch(store: Store, run_id: str, epoch) -> int:
    epochs = checkpoint_epochs(store, run_id)
    if not epochs:
        raise ConfigError(f"run {run_id} has no checkpoint: train it first")
    if epoch in (None, "last"):
        return epochs[-1]
    if str(epoch) == "first":
        return epochs[0]
    try:
        epoch = int(epoch)
    except ValueError:
        raise ConfigError(f"epoch must be a number, 'first' or 'last', not '{epoch}'") from None
    if epoch not in epochs:
        raise ConfigError(f"run {run_id} has no checkpoint at epoch {epoch}; checkpoints: "
                          + ", ".join(map(str, epochs)))
    return epoch


def prepare(store: Store, run: str | None, kind: str, epoch="last", params: dict | None = None,
            *, device=None, data_root=None, report=None) -> tuple[AnalysisContext, dict]:
    """Resolve and check everything; writes nothing."""
    spec = ANALYSES.get(kind)
    params = resolve_params(kind, params or {})
    if spec.needs_run:
        if run in (None, STUDY):
            raise ConfigError(f"analysis '{kind}' needs a run id")
        row = find_run(store, run)
        run_id, cfg = row["run_id"], run_config(row)
        epoch = resolve_epoch(store, run_id, epoch)
    else:
        run_id, cfg, epoch = None, None, None
    ctx = AnalysisContext(store, run_id, cfg, epoch, resolve_device(device),
                          data_root=data_root, report=report or (lambda f, m: None))
    ctx.analysis_id = analysis_id(run_id, epoch, kind, params)
    if spec.check:
        spec.check(ctx, params)
    return ctx, params


def stored_status(ctx: AnalysisContext) -> str | None:
    row = ctx.store.read("analyses", ctx.run_id or STUDY, part=ctx.analysis_id)
    return None if row is None else row["status"].iloc[0]


def run_analysis(store: Store, run: str | None, kind: str, epoch="last", params=None, *,
                 device=None, data_root=None, report=None, force=False) -> str:
    """Run one analysis (or find it stored); returns its analysis id."""
    store.ensure()
    ctx, params = prepare(store, run, kind, epoch, params, device=device, data_root=data_root,
                          report=report)
    if not force and stored_status(ctx) == "done":
        ctx.report(1.0, "stored result")
        return ctx.analysis_id
    row = {"kind": kind, "status": "running", "params_json": json.dumps(params, sort_keys=True),
           "split": params.get("split"), "n_samples": params.get("samples"),
           "device": str(ctx.device), "engine": params.get("engine"),
           "lib_version": _versions(), "started_at": datetime.now()}
    ctx.write("analyses", [row])
    started = time.perf_counter()
    try:
        ANALYSES.get(kind).run(ctx, params)
    except LandscapeError:
        forget(ctx)  # a user error found late (e.g. missing eigenvectors): leave no trace
        raise
    except BaseException as exc:
        ctx.write("analyses", [{**row, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                                "seconds": time.perf_counter() - started}])
        raise
    ctx.write("analyses", [{**row, "status": "done", "engine": ctx.engine or row["engine"],
                            "seconds": time.perf_counter() - started}])
    ctx.report(1.0, "done")
    return ctx.analysis_id


def forget(ctx: AnalysisContext) -> None:
    from ..store import TABLES
    for table in TABLES:
        ctx.store.delete(table, ctx.run_id or STUDY, part=ctx.analysis_id)


def _versions() -> str:
    names = ("landscape", "torch", "pyhessian", "scipy", "gudhi", "pywavelets")
    out = []
    for name in names:
        try:
            out.append(f"{name}={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            continue
    return " ".join(out)


# ---------------------------------------------------------------------- scheduled (grid files)
def scheduled(cfg: RunConfig) -> list[tuple[str, object, dict]]:
    """(kind, epoch, params) for each analysis in a config's `analyses` table.

    Each entry may give `epochs = [...]` ("last", "first" or numbers) and, for surfaces,
    `seeds = [...]` (one surface per direction seed); every other key is a parameter.
    """
    out = []
    for kind, spec in (cfg.analyses or {}).items():
        spec = dict(spec)
        epochs = spec.pop("epochs", ["last"])
        seeds = spec.pop("seeds", None)
        ANALYSES.entry(kind)
        for epoch in epochs:
            for seed in (seeds if seeds is not None else [None]):
                params = dict(spec) if seed is None else {**spec, "seed": seed}
                out.append((kind, epoch, params))
    return out


def run_scheduled(cfg: RunConfig, store: Store, *, device=None, data_root=None,
                  progress=True) -> dict[str, int]:
    counts = {"done": 0, "failed": 0}
    for kind, epoch, params in scheduled(cfg):
        spec = ANALYSES.get(kind)
        if spec.applies and not spec.applies(cfg):
            continue  # e.g. attention diagnostics of a CNN: nothing to measure
        run = cfg.run_id() if spec.needs_run else None
        try:
            run_analysis(store, run, kind, epoch, params, device=device, data_root=data_root)
            counts["done"] += 1
        except LandscapeError as exc:  # e.g. attention analysis on a CNN: say so, go on
            print(f"analysis {kind} on {run}: {exc}", file=sys.stderr)
            counts["failed"] += 1
        except Exception:
            traceback.print_exc()
            counts["failed"] += 1
    return counts


# ---------------------------------------------------------------------- CLI
class ProgressWriter:
    """tqdm on the terminal and, for the dashboard, JSON lines in a file."""

    def __init__(self, path: str | None, show: bool, desc: str):
        self.file = open(path, "a", buffering=1) if path else None
        self.bar = tqdm(total=100, desc=desc, disable=not show, unit="%")

    def __call__(self, fraction: float, message: str) -> None:
        self.bar.n = int(100 * fraction)
        self.bar.set_postfix_str(message[:40])
        if self.file:
            self.file.write(json.dumps({"fraction": float(fraction), "message": message,
                                        "time": time.time()}) + "\n")

    def close(self) -> None:
        self.bar.close()
        if self.file:
            self.file.close()


def analyze_command(args) -> int:
    store = Store(args.store)
    params = parse_overrides(args.set)
    kinds = [k.strip() for k in args.what.split(",") if k.strip()]
    own = {kind: {k: v for k, v in params.items() if k in ANALYSES.get(kind).defaults}
           for kind in kinds}  # unknown analysis names fail here, before anything runs
    unused = set(params) - {k for p in own.values() for k in p}
    if unused:
        raise ConfigError(f"no analysis in '{args.what}' takes parameter(s) {sorted(unused)}")
    for kind in kinds:  # every check of every analysis passes before the first one runs
        prepare(store, args.run, kind, args.epoch, own[kind], device=args.device,
                data_root=args.data_root)
    for kind in kinds:
        report = ProgressWriter(args.progress_file, not args.no_progress, kind)
        try:
            aid = run_analysis(store, args.run, kind, args.epoch, own[kind], device=args.device,
                               data_root=args.data_root, report=report)
        finally:
            report.close()
        print(aid)
    return 0


def analyze_all_command(args) -> int:
    from ..train.grid import load_grid
    overrides = {"epochs": args.epochs} if args.epochs else {}
    store = Store(args.store).ensure()
    configs = load_grid(args.grid, overrides=overrides, studies=args.study)
    total = {"done": 0, "failed": 0}
    for cfg in tqdm(configs, desc="analyses", unit="run", disable=args.no_progress):
        if store.read("runs", cfg.run_id()) is None:
            continue  # not trained yet
        for key, value in run_scheduled(cfg, store, device=args.device,
                                        data_root=args.data_root).items():
            total[key] += value
    print(f"analyses: {total['done']} done or stored, {total['failed']} failed", file=sys.stderr)
    return 0 if not total["failed"] else 1
