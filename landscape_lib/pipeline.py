"""Running a grid: training every pending run with one or several workers, each run followed by
the analyses its config schedules; and the scheduled analyses of a whole grid again
(`analyze-all`). Above both `train` and `analyses`, so neither imports the other's caller."""
from __future__ import annotations

import multiprocessing as mp
import os
import queue
import sys
import traceback

import torch
from tqdm.auto import tqdm

from .analyses.provenance import run_analysis
from .analyses.registry import ANALYSES
from .config import RunConfig
from .errors import LandscapeError
from .store import Store
from .store.schema import ANALYSIS_DONE, ANALYSIS_FAILED, DONE_STATUSES, FAILED, FINISHED
from .train.engine import train_run


# ---------------------------------------------------------------------- training
def pending(configs: list[RunConfig], store: Store) -> list[RunConfig]:
    """The configs whose run is not done yet (a finished or diverged run is a no-op)."""
    out = []
    for cfg in configs:
        row = store.read("runs", cfg.run_id())
        if row is None or row["status"].iloc[0] not in DONE_STATUSES:
            out.append(cfg)
    return out


def resolve_jobs(jobs: str | int) -> int:
    if str(jobs) == "auto":
        return max(1, torch.cuda.device_count())
    return max(1, int(jobs))


def run_grid(configs: list[RunConfig], store: Store, *, jobs: int = 1, data_root=None,
             device=None, progress: bool = True) -> dict[str, int]:
    """Train every pending run (then its scheduled analyses); returns a count per status."""
    todo = pending(configs, store)
    counts = {"skipped": len(configs) - len(todo)}
    bar = tqdm(total=len(todo), desc="grid", unit="run", disable=not progress, position=0)
    if jobs == 1 or len(todo) <= 1:
        statuses = (_run_one(cfg.to_dict(), str(store.root), data_root, device, progress, 1)
                    for cfg in todo)
    else:
        statuses = _parallel(todo, store, jobs, data_root, device, progress)
    for status in statuses:
        counts[status] = counts.get(status, 0) + 1
        bar.update()
    bar.close()
    return counts


def _run_one(cfg_dict, store_root, data_root, device, progress, position) -> str:
    cfg = RunConfig.from_dict(cfg_dict)
    store = Store(store_root)
    status = train_run(cfg, store, data_root=data_root, device=device, progress=progress,
                       position=position)
    if status == FINISHED and cfg.analyses:
        run_scheduled(cfg, store, device=device, data_root=data_root)
    return status


def _worker(tasks, results, store_root, data_root, device, progress, position, threads):
    torch.set_num_threads(threads)
    while True:
        cfg_dict = tasks.get()
        if cfg_dict is None:
            return
        try:
            status = _run_one(cfg_dict, store_root, data_root, device, progress, position)
        except Exception as exc:  # the run is marked failed by the engine; keep the grid going
            print(f"run failed: {type(exc).__name__}: {exc}", flush=True)
            status = FAILED
        results.put(status)


def _parallel(todo, store, jobs, data_root, device, progress):
    """Spawned worker processes, one GPU each where there are several."""
    ctx = mp.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    for cfg in todo:
        tasks.put(cfg.to_dict())
    gpus = torch.cuda.device_count()
    threads = max(1, (os.cpu_count() or 1) // jobs)
    procs = []
    for i in range(jobs):
        tasks.put(None)
        env_before = os.environ.get("CUDA_VISIBLE_DEVICES")
        if gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(i % gpus)  # inherited by the child
        p = ctx.Process(target=_worker, args=(tasks, results, str(store.root), data_root, device,
                                               progress, i + 1, threads))
        p.start()
        procs.append(p)
        if gpus > 1:
            if env_before is None:
                os.environ.pop("CUDA_VISIBLE_DEVICES", None)
            else:
                os.environ["CUDA_VISIBLE_DEVICES"] = env_before
    try:
        received = 0
        while received < len(todo):
            try:
                yield results.get(timeout=1.0)
                received += 1
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # workers died (killed): what they left is resumed next time
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()


# ---------------------------------------------------------------------- scheduled analyses
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


def run_scheduled(cfg: RunConfig, store: Store, *, device=None,
                  data_root=None) -> dict[str, int]:
    """Run (or find stored) every analysis `cfg` schedules; a failure is reported, not raised."""
    counts = {ANALYSIS_DONE: 0, ANALYSIS_FAILED: 0}
    for kind, epoch, params in scheduled(cfg):
        spec = ANALYSES.get(kind)
        if spec.applies and not spec.applies(cfg):
            continue  # e.g. attention diagnostics of a CNN: nothing to measure
        run = cfg.run_id() if spec.needs_run else None
        try:
            run_analysis(store, run, kind, epoch, params, device=device, data_root=data_root)
            counts[ANALYSIS_DONE] += 1
        except LandscapeError as exc:  # e.g. attention analysis on a CNN: say so, go on
            print(f"analysis {kind} on {run}: {exc}", file=sys.stderr)
            counts[ANALYSIS_FAILED] += 1
        except Exception:
            traceback.print_exc()
            counts[ANALYSIS_FAILED] += 1
    return counts


def analyze_all(configs: list[RunConfig], store: Store, *, device=None, data_root=None,
                progress: bool = True) -> dict[str, int]:
    """`run_scheduled` for every trained run of a grid; counts of done and failed analyses."""
    total = {ANALYSIS_DONE: 0, ANALYSIS_FAILED: 0}
    for cfg in tqdm(configs, desc="analyses", unit="run", disable=not progress):
        if store.read("runs", cfg.run_id()) is None:
            continue  # not trained yet
        for key, value in run_scheduled(cfg, store, device=device,
                                        data_root=data_root).items():
            total[key] += value
    return total
