"""The work one Ray task does, in a worker process on any node (no Ray import here).

A task trains one run (or resumes it from its last saved epoch, or finds it done) and then runs
the run's scheduled analyses, through the same library functions as the local backend, so a
grid on Ray writes exactly the rows a local grid writes. The driver gets a small dict back.
"""
from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path

from ..config import RunConfig
from ..pipeline import run_scheduled
from ..store import Store
from ..store.schema import FINISHED
from ..train.engine import train_run

# Outcomes a task reports besides the run statuses of the store's schema.
SKIPPED = "skipped"          # the engine's word for a run already done
BUSY = "busy"                # another process held the run's lock for the whole wait
NOT_TRAINED = "not-trained"  # analyze-all: the run has no row yet


class RunBusy(RuntimeError):
    """The run's lock stayed held: its previous attempt is still alive, or a dead node's lock
    has not been released yet by the shared filesystem. Ray retries the task."""


def _setup(threads: int) -> None:
    import torch
    torch.set_num_threads(max(1, int(threads)))


def _where() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


def _finished(store: Store, cfg: RunConfig) -> bool:
    row = store.read("runs", cfg.run_id())
    return row is not None and row["status"].iloc[0] == FINISHED


def train_task(cfg_dict: dict, store_root: str, data_root, device, *, threads: int = 1,
               lock_wait_s: float = 150.0) -> dict:
    """Train (or resume, or skip) one run, then its scheduled analyses.

    A held lock is waited for (polling each second, up to `lock_wait_s`): after a node dies
    its lock may outlive it for a while on a shared filesystem (NFSv4: its 90 s lease).
    The analyses also run when the engine finds the run already finished: a retried task
    whose first attempt died during the analyses completes them (stored ones are found).
    """
    _setup(threads)
    cfg, store = RunConfig.from_dict(cfg_dict), Store(store_root)
    started = time.perf_counter()
    deadline = time.monotonic() + lock_wait_s
    while (status := train_run(cfg, store, data_root=data_root, device=device,
                               progress=False)) == BUSY:
        if time.monotonic() >= deadline:
            raise RunBusy(f"run {cfg.run_id()}: its lock stayed held for {lock_wait_s:.0f} s "
                          f"({store.root / 'locks'})")
        time.sleep(1.0)
    analyses = {}
    if cfg.analyses and (status == FINISHED or (status == SKIPPED and _finished(store, cfg))):
        analyses = run_scheduled(cfg, store, device=device, data_root=data_root)
    return {"run_id": cfg.run_id(), "status": status, "analyses": analyses,
            "seconds": time.perf_counter() - started, **_where()}


def analyze_task(cfg_dict: dict, store_root: str, data_root, device, *, threads: int = 1
                 ) -> dict:
    """The scheduled analyses of one trained run (those stored already are found, not redone)."""
    _setup(threads)
    cfg, store = RunConfig.from_dict(cfg_dict), Store(store_root)
    started = time.perf_counter()
    row = store.read("runs", cfg.run_id())
    if row is None:
        return {"run_id": cfg.run_id(), "status": NOT_TRAINED, "analyses": {}, **_where()}
    analyses = run_scheduled(cfg, store, device=device, data_root=data_root)
    return {"run_id": cfg.run_id(), "status": row["status"].iloc[0], "analyses": analyses,
            "seconds": time.perf_counter() - started, **_where()}


# ---------------------------------------------------------------------- pre-flight probe
def code_digest() -> str:
    """A digest of the library's source: every node must run the driver's code."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:12]


def probe_task(token: str, paths: list[str]) -> dict:
    """Run on each node before the grid: does it see the store and the data, and the same
    code? (Importing torch here also warms the node's worker for the first run.)"""
    import torch
    return {**_where(), "token": Path(token).is_file(),
            "missing": [p for p in paths if not Path(p).exists()],
            "digest": code_digest(), "torch": torch.__version__,
            "cuda": torch.cuda.device_count()}
