"""Running a grid: training every pending run with one or several workers, each run followed by
the analyses its config schedules; and the scheduled analyses of a whole grid again
(`analyze-all`). Above both `train` and `analyses`, so neither imports the other's caller.

A run the grid leaves unfinished (a failure, a full disk, a killed worker, a run another
process holds) is reported as one `error:` line; the next `train-all` resumes it, and completes
the scheduled analyses of finished runs that lack one (`pending`).
"""
from __future__ import annotations

import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import traceback
from multiprocessing.connection import wait

import torch
from tqdm.auto import tqdm

from .analyses.context import pick_epoch
from .analyses.provenance import analysis_id, run_analysis
from .analyses.registry import ANALYSES, resolve_params
from .config import RunConfig
from .errors import ConfigError, LandscapeError, StoreWriteError
from .store import Store, queries
from .store.schema import (ANALYSIS_DONE, ANALYSIS_FAILED, DIVERGED, DONE_STATUSES, FAILED,
                           FINISHED, INTERRUPTED)
from .train.engine import train_run

SKIPPED, BUSY = "skipped", "busy"        # train_run's statuses besides the runs table's
ANALYSES_FAILED = "analyses failed"      # the count of failed scheduled analyses
COMPLETE = (FINISHED, DIVERGED, SKIPPED)


# ---------------------------------------------------------------------- what is left to do
def pending(configs: list[RunConfig], store: Store) -> list[RunConfig]:
    """The configs whose run is not done yet, or finished with a scheduled analysis not done
    (a finished or diverged run with every analysis stored is a no-op)."""
    todo, finished = set(), []
    for cfg in configs:
        row = store.read("runs", cfg.run_id())
        status = None if row is None else row["status"].iloc[0]
        if status not in DONE_STATUSES:
            todo.add(cfg.run_id())
        elif status == FINISHED and cfg.analyses:
            finished.append(cfg)
    if finished:
        done = queries.done_analysis_ids(store)
        epochs = queries.checkpoint_epochs_of_runs(store, [c.run_id() for c in finished])
        todo |= {cfg.run_id() for cfg in finished
                 if not set(expected_analyses(cfg, epochs.get(cfg.run_id(), []))) <= done}
    return [cfg for cfg in configs if cfg.run_id() in todo]


def expected_analyses(cfg: RunConfig, checkpoint_epochs: list[int]) -> list[str]:
    """The analysis ids `cfg`'s scheduled analyses get on a run with these checkpoints."""
    out = []
    for kind, epoch, params in applicable(cfg):
        params = resolve_params(kind, params)
        if not ANALYSES.get(kind).needs_run:
            out.append(analysis_id(None, None, kind, params))
            continue
        try:
            epoch = pick_epoch(checkpoint_epochs, epoch, cfg.run_id())
        except ConfigError:  # no such checkpoint: never done, the run stays pending
            out.append(None)
            continue
        out.append(analysis_id(cfg.run_id(), epoch, kind, params))
    return out


def resolve_jobs(jobs: str | int) -> int:
    """`auto`: one worker per GPU (1 without GPUs); else a positive number (checked by the CLI)."""
    if str(jobs) == "auto":
        return max(1, torch.cuda.device_count())
    jobs = int(jobs)
    if jobs < 1:
        raise ConfigError(f"jobs must be a positive integer or 'auto', not {jobs}")
    return jobs


# ---------------------------------------------------------------------- training a grid
def run_grid(configs: list[RunConfig], store: Store, *, jobs: int = 1, data_root=None,
             device=None, progress: bool = True) -> dict[str, int]:
    """Train every pending run (then its scheduled analyses); returns a count per status.

    At most one worker per pending run. Each run left unfinished prints one `error:` line."""
    todo = pending(configs, store)
    counts = {SKIPPED: len(configs) - len(todo)}
    jobs = max(1, min(jobs, len(todo)))
    bar = tqdm(total=len(todo), desc="grid", unit="run", disable=not progress, position=0)
    common = (str(store.root), data_root, device, progress)
    if jobs == 1:
        outcomes = (_run_one(cfg.to_dict(), *common, 1) for cfg in todo)
    else:
        outcomes = _parallel(todo, jobs, *common)
    for run_id, status, error, failed_analyses in outcomes:
        counts[status] = counts.get(status, 0) + 1
        if failed_analyses:
            counts[ANALYSES_FAILED] = counts.get(ANALYSES_FAILED, 0) + failed_analyses
        if status not in COMPLETE:
            report_error(f"run {run_id}: {error or status}")
        bar.update()
    bar.close()
    return counts


def report_error(message: str) -> None:
    """One `error:` line on stderr (above the progress bars)."""
    tqdm.write(f"error: {message}", file=sys.stderr)


def _run_one(cfg_dict, store_root, data_root, device, progress, position) -> tuple:
    """Train one run, then its scheduled analyses when it is finished:
    (run id, status, why it is not complete or None, number of failed analyses)."""
    cfg = RunConfig.from_dict(cfg_dict)
    store = Store(store_root)
    try:
        status = train_run(cfg, store, data_root=data_root, device=device, progress=progress,
                           position=position)
    except LandscapeError as exc:  # found before training started (data, device, store)
        return cfg.run_id(), FAILED, str(exc), 0
    except Exception as exc:  # a bug or an out-of-memory while building: keep the grid going
        traceback.print_exc()
        return cfg.run_id(), FAILED, f"{type(exc).__name__}: {exc}", 0
    error = getattr(status, "error", None)
    if status == BUSY:
        error = "another process is training it; run train-all again when it ends"
    failed = 0
    if status in (FINISHED, SKIPPED) and cfg.analyses and _finished(store, cfg):
        failed = run_scheduled(cfg, store, device=device, data_root=data_root)[ANALYSIS_FAILED]
    return cfg.run_id(), str(status), error, failed


def _finished(store: Store, cfg: RunConfig) -> bool:
    row = store.read("runs", cfg.run_id())
    return row is not None and row["status"].iloc[0] == FINISHED


# ---------------------------------------------------------------------- supervised workers
def _parallel(todo, jobs, store_root, data_root, device, progress):
    """Spawned workers (one GPU each where there are several), one run at a time each, over a
    pipe. A worker that dies (killed, out of memory) is seen at once: its run is reported and
    marked `interrupted`, and a new worker takes the remaining runs. Workers die with the
    parent (SIGTERM on its death, turned into an interruption)."""
    ctx = mp.get_context("spawn")
    queue = list(todo)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    workers: dict[int, list] = {}  # slot -> [process, connection, the config it trains]

    def start(slot: int) -> None:
        ours, theirs = ctx.Pipe()
        with _visible_gpu(slot):
            proc = ctx.Process(target=_worker, args=(theirs, os.getpid(), store_root, data_root,
                                                      device, progress, slot + 1, threads))
            proc.start()
        theirs.close()
        workers[slot] = [proc, ours, None]

    def assign(slot: int) -> None:
        cfg = queue.pop(0) if queue else None
        with contextlib.suppress(OSError):
            workers[slot][1].send(None if cfg is None else cfg.to_dict())
        workers[slot][2] = cfg

    for slot in range(jobs):
        start(slot)
        assign(slot)
    try:
        while busy := {slot: w for slot, w in workers.items() if w[2] is not None}:
            ready = wait([w[1] for w in busy.values()] + [w[0].sentinel for w in busy.values()])
            for slot, (proc, conn, cfg) in busy.items():
                if conn not in ready and proc.sentinel not in ready:
                    continue
                outcome = _receive(conn, block=False)
                if outcome not in (None, _GONE):
                    yield outcome
                    assign(slot)
                elif outcome == _GONE or proc.sentinel in ready:  # died without a result
                    proc.join()
                    yield _lost(Store(store_root), cfg, proc)
                    conn.close()
                    if queue:
                        start(slot)
                        assign(slot)
                    else:
                        workers[slot][2] = None
    finally:
        _stop(workers.values())


_GONE = "gone"  # what `_receive` returns when the other end of the pipe has closed


def _receive(conn, block: bool = True):
    """The next message; None when nothing is waiting (`block=False`); `_GONE` at the end."""
    try:
        return conn.recv() if block or conn.poll() else None
    except (EOFError, OSError):
        return _GONE


def _lost(store: Store, cfg: RunConfig, proc) -> tuple:
    """A worker died holding `cfg`: mark its run `interrupted` with the reason (under the run's
    lock, which the kernel released with the dead worker)."""
    code = proc.exitcode
    how = (f"killed by {signal.Signals(-code).name}" if code is not None and code < 0
           else f"exit status {code}")
    why = f"its worker (pid {proc.pid}) died ({how}); train-all again resumes it"
    lock = None
    try:
        lock = store.lock_run(cfg.run_id())
        row = store.read("runs", cfg.run_id()) if lock is not None else None
        if row is not None and row["status"].iloc[0] not in DONE_STATUSES:
            store.write("runs", cfg.run_id(), row.assign(status=INTERRUPTED, error=why))
    except LandscapeError:
        pass  # the store cannot take it now: the row stays `running`, resumed all the same
    finally:
        if lock is not None:
            lock.close()
    return cfg.run_id(), INTERRUPTED, why, 0


def _stop(workers) -> None:
    for proc, conn, _ in workers:
        with contextlib.suppress(OSError):
            conn.send(None)
    for proc, conn, _ in workers:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=10)
        conn.close()


@contextlib.contextmanager
def _visible_gpu(slot: int):
    """With several GPUs, the worker started in this block sees only GPU `slot % count`."""
    gpus = torch.cuda.device_count()
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if gpus > 1:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)  # inherited by the child
    try:
        yield
    finally:
        if gpus > 1 and before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        elif gpus > 1:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


def _worker(conn, parent, store_root, data_root, device, progress, position, threads):
    try:
        _die_with_parent(parent)
        torch.set_num_threads(threads)
        while (cfg_dict := _receive(conn)) not in (None, _GONE):
            conn.send(_run_one(cfg_dict, store_root, data_root, device, progress, position))
    except KeyboardInterrupt:  # the parent ended (or Ctrl-C): the run is marked interrupted
        pass


def _die_with_parent(parent: int) -> None:
    """SIGTERM this process when the parent dies (Linux), raised as KeyboardInterrupt so the
    engine marks the run interrupted; exit now if the parent is gone already."""
    signal.signal(signal.SIGTERM, _interrupt)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


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


def applicable(cfg: RunConfig) -> list[tuple[str, object, dict]]:
    """`scheduled(cfg)` without the analyses that do not apply to the run (e.g. attention
    diagnostics of a CNN: nothing to measure)."""
    return [(kind, epoch, params) for kind, epoch, params in scheduled(cfg)
            if not ANALYSES.get(kind).applies or ANALYSES.get(kind).applies(cfg)]


def run_scheduled(cfg: RunConfig, store: Store, *, device=None,
                  data_root=None) -> dict[str, int]:
    """Run (or find stored) every analysis `cfg` schedules; counts of done and failed ones.

    A failure is reported as one `error:` line, not raised; a store write error (a full disk)
    stops the run's remaining analyses, which the next `train-all` runs."""
    counts = {ANALYSIS_DONE: 0, ANALYSIS_FAILED: 0}
    for kind, epoch, params in applicable(cfg):
        run = cfg.run_id() if ANALYSES.get(kind).needs_run else None
        try:
            run_analysis(store, run, kind, epoch, params, device=device, data_root=data_root)
            counts[ANALYSIS_DONE] += 1
            continue
        except LandscapeError as exc:
            error, stop = str(exc), isinstance(exc, StoreWriteError) or "cannot write" in str(exc)
        except Exception as exc:  # a bug: its traceback, and the grid goes on
            traceback.print_exc()
            error, stop = f"{type(exc).__name__}: {exc}", False
        counts[ANALYSIS_FAILED] += 1
        report_error(f"run {cfg.run_id()}: analysis {kind} at epoch {epoch}: {error}"
                     + ("; its other analyses wait for the next train-all" if stop else ""))
        if stop:
            break
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
