"""Running analyses with provenance: one `analyses` row per (run, epoch, kind, parameters).

The analysis id is a hash of those four, so asking again for the same thing returns the stored
result, and an interrupted analysis (a surface half filled) resumes under the same id. Every
check that can fail (run, epoch, parameters, memory) runs before the first row is written.
"""
from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime

from ..errors import ConfigError, LandscapeError, StoreWriteError
from ..store import TABLES, Store
from ..store.schema import ANALYSIS_DONE, ANALYSIS_FAILED, ANALYSIS_RUNNING, STUDY
from ..train.environment import package_versions, resolve_device, resolve_devices
from .context import AnalysisContext, find_run, resolve_epoch, run_config
from .registry import ANALYSES, resolve_params

# Recorded with every analysis (`lib_version`): the project and the libraries computing it.
PACKAGES = ("landscape", "torch", "pyhessian", "scipy", "gudhi", "pywavelets")


def analysis_id(run_id: str | None, epoch: int | None, kind: str, params: dict) -> str:
    blob = json.dumps([run_id, epoch, kind, params], sort_keys=True, default=str)
    return f"{kind}-{hashlib.sha1(blob.encode()).hexdigest()[:12]}"


def prepare(store: Store, run: str | None, kind: str, epoch="last", params: dict | None = None,
            *, device=None, data_root=None, report=None, gpus: int = 1,
            devices=None) -> tuple[AnalysisContext, dict]:
    """Resolve and check everything; writes nothing. `devices`: where the analysis may spread
    its work (default: every visible GPU for device auto or cuda, else `device`; a surface's
    rows). `gpus`: processes (one per GPU) an analysis that runs in several may use (the
    Hessian). Neither is part of the id."""
    if int(gpus) < 1:
        raise ConfigError(f"gpus={gpus!r} must be at least 1")
    spec = ANALYSES.get(kind)
    params = resolve_params(kind, params or {})
    if spec.needs_run:
        if not run or run == STUDY:
            raise ConfigError(f"analysis '{kind}' needs a run id")
        row = find_run(store, run)
        run_id, cfg = row["run_id"], run_config(row)
        epoch = resolve_epoch(store, run_id, epoch)
    else:
        run_id, cfg, epoch = None, None, None
    ctx = AnalysisContext(store, run_id, cfg, epoch, resolve_device(device),
                          data_root=data_root, report=report or (lambda f, m: None),
                          gpus=int(gpus), devices=list(devices or resolve_devices(device)))
    ctx.analysis_id = analysis_id(run_id, epoch, kind, params)
    if spec.needs_run:
        ctx.checkpoint(epoch, load=False)  # a changed or damaged file fails here
    check = spec.checker()
    if check:
        check(ctx, params)
    return ctx, params


def stored_status(ctx: AnalysisContext) -> str | None:
    row = ctx.read("analyses")
    return None if row is None else row["status"].iloc[0]


def run_analysis(store: Store, run: str | None, kind: str, epoch="last", params=None, *,
                 device=None, data_root=None, report=None, force=False, gpus: int = 1,
                 devices=None) -> str:
    """Run one analysis (or find it stored); returns its analysis id.

    One process at a time computes a given analysis (its lock; a second caller waits for it);
    the stored status is read under that lock, so two callers never both compute it."""
    store.ensure()
    ctx, params = prepare(store, run, kind, epoch, params, device=device, data_root=data_root,
                          report=report, gpus=gpus, devices=devices)
    lock = store.lock_analysis(ctx.analysis_id)
    if lock is None:  # e.g. a study's analysis scheduled after every run of a grid: wait for
        ctx.report(0.0, "computed by another process: waiting for its result")  # its result
        lock = store.lock_analysis(ctx.analysis_id, wait=True)
    try:
        if not force and stored_status(ctx) == ANALYSIS_DONE:
            ctx.report(1.0, "stored result")
            return ctx.analysis_id
        _compute(ctx, kind, params)
    finally:
        lock.close()
    ctx.report(1.0, "done")
    return ctx.analysis_id


def _compute(ctx: AnalysisContext, kind: str, params: dict) -> None:
    row = {"kind": kind, "status": ANALYSIS_RUNNING,
           "params_json": json.dumps(params, sort_keys=True),
           "split": params.get("split"), "n_samples": params.get("samples"),
           "device": str(ctx.device), "engine": params.get("engine"),
           "lib_version": versions(), "started_at": datetime.now()}
    started = time.perf_counter()
    try:
        ctx.write("analyses", [row])  # a full disk here too: the failure stored if it can be
        ANALYSES.get(kind).runner()(ctx, params)
        ctx.write("analyses", [{**row, "status": ANALYSIS_DONE,
                                "engine": ctx.engine or row["engine"],
                                "seconds": time.perf_counter() - started}])
    except StoreWriteError as exc:  # a full disk: store the failure if the store still can
        _failed(ctx, row, str(exc), started)
        raise
    except LandscapeError:
        forget(ctx)  # a user error found late (e.g. missing eigenvectors): leave no trace
        raise
    except BaseException as exc:
        ctx.write("analyses", [{**row, "status": ANALYSIS_FAILED,
                                "error": f"{type(exc).__name__}: {exc}",
                                "seconds": time.perf_counter() - started}])
        raise


def _failed(ctx: AnalysisContext, row: dict, error: str, started: float) -> None:
    try:
        ctx.write("analyses", [{**row, "status": ANALYSIS_FAILED, "error": error,
                                "seconds": time.perf_counter() - started}])
    except StoreWriteError:  # still full: the caller's error line says why
        pass


def forget(ctx: AnalysisContext) -> None:
    """Delete every row an analysis wrote (its parts in all tables)."""
    for table in TABLES:
        ctx.store.delete(table, ctx.run_id or STUDY, part=ctx.analysis_id)


def versions() -> str:
    """`PACKAGES` that are installed, as "name=version ..."."""
    return " ".join(f"{name}={version}" for name, version in package_versions(PACKAGES).items()
                    if version is not None)
