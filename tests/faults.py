"""Fault injection for the store's and the trainer's writes (the harness of test_faults.py).

Every write of the library goes through a few primitives; this module wraps each of them with a
counter per kind of write (its label, `label_of`), so that the k-th write of a kind can be made
to fail:

    LANDSCAPE_FAULT=record                      log every write point, fail nothing
    LANDSCAPE_FAULT=kill:before:part:epochs#3   SIGKILL the process just before the 3rd epochs part
    LANDSCAPE_FAULT=kill:during:part:epochs#3   ... after its temporary is written, before the rename
    LANDSCAPE_FAULT=raise:after:part:epochs#3   raise InjectedCrash just after it completed
    LANDSCAPE_FAULT=enospc:during:save:resume#1 disk full from that write on (every write started
                                                later fails too), raised as the real primitive does
    LANDSCAPE_FAULT=enospc1:during:save:resume#1  only that write fails with ENOSPC
    LANDSCAPE_FAULT_LOG=/path/points.jsonl      one JSON line per write point (its index in the
                                                process, label, occurrence of the label, path)

A point is named by label and occurrence, not by its index in the process: the library writes
some files from a thread while its main thread writes others (the Hessian analysis saves its
eigenvectors meanwhile), so the index depends on timing. Nesting (a wrapped primitive calling
another) is tracked per thread, so concurrent writes are each counted and injectable.

`install_from_env()` applies it to the current process; `sitecustomize/` makes every Python
process started with it on PYTHONPATH (grid workers included) call it at start-up.

Every file the library writes in place goes through `landscape_lib.store.atomic.atomic_path`, so
that one context manager is the injection point of every store, checkpoint, resume and cache
write; direct `torch.save` calls and the store's deletions are wrapped as well.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import threading
from pathlib import Path

ENV, LOG_ENV = "LANDSCAPE_FAULT", "LANDSCAPE_FAULT_LOG"


class InjectedCrash(RuntimeError):
    """The exception injected by `raise:` plans (an unexpected failure at a write)."""


# What a full disk really raises, measured on a 64 KiB tmpfs: DuckDB's COPY an IOException
# carrying the errno in its text (no file left); our own writes (store.atomic.write_bytes, which
# save_tensor uses) an OSError; torch.save straight to a file a RuntimeError without errno,
# leaving a partial file (the library no longer does that: a direct call is still wrapped).
TORCH_ENOSPC = "[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534"
DUCKDB_ENOSPC = ('IO Error: Could not write file "{path}": No space left on device '
                 '{{"errno":"28"}}')


class Plan:
    def __init__(self, spec: str, log: str | None = None):
        parts = spec.split(":", 2)
        self.mode = parts[0]
        assert self.mode in ("record", "kill", "raise", "enospc", "enospc1"), spec
        self.phase = parts[1] if len(parts) > 1 else None
        self.target = None  # (label, k): the k-th write of that label ("part:gauss_fit#2")
        if len(parts) > 2:
            label, _, k = parts[2].rpartition("#")
            self.target = (label, int(k))
        self.count = 0          # write points seen so far (1-based index of the current one)
        self.seen: dict[str, int] = {}  # writes seen so far per label
        self.hit_index = None   # the global index the target got, once it started
        self.log = open(log, "a", buffering=1) if log else None
        self.local = threading.local()  # .depth > 0 inside a wrapped write of this thread
        self.lock = threading.Lock()

    @property
    def depth(self) -> int:
        return getattr(self.local, "depth", 0)

    @depth.setter
    def depth(self, value: int) -> None:
        self.local.depth = value

    # ------------------------------------------------------------------ the hooks
    def start(self, label: str, path) -> int:
        with self.lock:
            self.count += 1
            index = self.count
            occurrence = self.seen[label] = self.seen.get(label, 0) + 1
            if (label, occurrence) == self.target:
                self.hit_index = index
        if self.log:
            self.log.write(json.dumps({"index": index, "label": label,
                                       "occurrence": occurrence, "path": str(path),
                                       "pid": os.getpid()}) + "\n")
        self.hit(index, "before")
        return index

    def hit(self, index: int, phase: str) -> None:
        if self.mode in ("record", "enospc", "enospc1") or self.hit_index != index \
                or self.phase != phase:
            return
        if self.mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise InjectedCrash(f"injected crash {phase} write {index}")

    def full(self, index: int) -> bool:
        """Disk-full plans: this write and every one started later fail (`enospc1`: this one
        only)."""
        if self.hit_index is None:
            return False
        return (self.mode == "enospc" and index >= self.hit_index) or (
            self.mode == "enospc1" and index == self.hit_index)


PLAN: Plan | None = None


# ---------------------------------------------------------------------- wrappers
def label_of(path) -> str:
    """The kind of write, from the target's path (the store's layout)."""
    path = Path(path)
    if path.suffix == ".parquet":
        table = path.parent.parent.name
        return f"part:{table}" + (":schema" if path.parent.name == "_schema" else "")
    if path.name == "resume.pt":
        return "save:resume"
    if path.suffix == ".pt" and path.parent.name in ("checkpoints", "trajectory"):
        return f"save:{path.parent.name}"
    return f"file:{path.name.split('-')[-1]}"


def full_disk_error(path: Path, tmp: Path) -> BaseException:
    """What the real writer raises on a full disk (measured on a full tmpfs)."""
    if path.suffix == ".parquet":
        import duckdb
        return duckdb.IOException(DUCKDB_ENOSPC.format(path=tmp))
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))


def _wrap_atomic_path(real):
    """`atomic_path(path)`: 'before' on entry, 'during' once the temporary is written (not yet
    renamed), 'after' once renamed. A full disk fails the write itself (the temporary is then
    removed by `atomic_path`, as it is for a real error)."""
    @contextlib.contextmanager
    def atomic_path(path):
        plan = PLAN
        if plan is None or plan.depth:
            with real(path) as tmp:
                yield tmp
            return
        label = label_of(path)
        index = plan.start(label.replace("file:", "atomic:", 1), path)
        plan.depth += 1
        try:
            with real(path) as tmp:
                yield tmp
                plan.hit(index, "during")
                if plan.full(index):
                    raise full_disk_error(Path(path), tmp)
        finally:
            plan.depth -= 1
        plan.hit(index, "after")
    atomic_path.faults_real = real
    return atomic_path


def _wrap_plain(fn, label, fail_full):
    """A write that is not atomic (a direct torch.save) or a deletion: before / after points."""
    def wrapped(*args, **kwargs):
        plan = PLAN
        if plan is None or plan.depth:
            return fn(*args, **kwargs)
        index = plan.start(*label(*args, **kwargs))
        plan.depth += 1
        try:
            if plan.full(index):
                fail_full(*args, **kwargs)
            result = fn(*args, **kwargs)
        finally:
            plan.depth -= 1
        plan.hit(index, "after")
        return result
    wrapped.__wrapped__ = fn
    return wrapped


def _torch_save_full(obj, f, *a, **k):
    Path(f).write_bytes(b"PK\x03\x04" + b"\0" * 60)  # the partial zip torch leaves behind
    raise RuntimeError(TORCH_ENOSPC)


def _no_failure(*a, **k):
    return None


def install(plan: Plan) -> None:
    """Wrap the library's write primitives in this process: `store.atomic.atomic_path` (in every
    module that imported it), direct `torch.save` calls to a path, and the store's deletions."""
    global PLAN
    import torch

    import landscape_lib.store.atomic as atomic
    from landscape_lib.store import Store
    PLAN = plan
    if getattr(atomic.atomic_path, "faults_real", None):  # installed already
        return
    real = atomic.atomic_path
    wrapped = _wrap_atomic_path(real)
    atomic.atomic_path = wrapped
    for name, module in list(sys.modules.items()):
        if name.startswith("landscape_lib") and getattr(module, "atomic_path", None) is real:
            module.atomic_path = wrapped
    save = torch.save
    direct = _wrap_plain(save, lambda obj, f, *a, **k: (label_of(f), f), _torch_save_full)
    torch.save = lambda obj, f, *a, **k: (direct if isinstance(f, (str, os.PathLike))
                                          else save)(obj, f, *a, **k)
    # Deletions are mutations too (kill points), but they free space: never ENOSPC.
    Store.delete = _wrap_plain(Store.delete, lambda st, table, *a, **k: (f"delete:{table}",
                                                                         st.root), _no_failure)
    Store.remove_run = _wrap_plain(Store.remove_run, lambda st, run_id: ("remove_run", st.root),
                                   _no_failure)


def install_from_env() -> None:
    spec = os.environ.get(ENV)
    if spec:
        install(Plan(spec, os.environ.get(LOG_ENV)))


def read_points(log: Path) -> list[dict]:
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
