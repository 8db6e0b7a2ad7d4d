"""The run store: Parquet parts under one root, read through one Arrow snapshot per process.

    store = Store()                    # runs/store, or $LANDSCAPE_STORE, or Store("path")
    store.write("epochs", run_id, rows)          # atomic; one writer per (table, run_id, part)
    con = store.connect()                        # DuckDB cursor with every table registered
    con.execute("SELECT * FROM epochs WHERE run_id = ?", [run_id]).df()
    store.compact()                              # done runs' parts -> a few files per table

Writers (files.py) write loose parts; `compact.py` folds done runs' parts into compacted files;
`reader.py` (StoreReader) and `keys.py` (one part, for writers) read both.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import duckdb

from ..errors import StoreError, StoreWriteError
from ..locations import store_root
from .atomic import atomic_path, sweep_temporaries, write_bytes, write_error
from .files import part_path, write_part
from .keys import KeyReader, delete_part, remove_run
from .parts import part_columns, retry_read
from .reader import StoreReader, shared_reader
from .schema import SCHEMA_VERSION, STUDY, TABLES, columns

__all__ = ["Store", "StoreReader", "retry_read", "atomic_path", "SCHEMA_VERSION", "TABLES",
           "columns"]


class Store:
    """A store root (default: `locations.store_root`): tables, artifacts and run locks.

    Files under `artifacts/<run id>/`: `checkpoints/epoch_0004.pt` (model state_dict, buffers
    included), `trajectory/epoch_0004.pt` (flattened parameters or their count-sketch),
    `resume.pt` (model, optimizer and RNG state at the last finished epoch) and
    `analyses/<analysis id>-<name>` (e.g. a Hessian's eigenvectors). `locks/<run id>.lock`
    keeps two processes off one run.
    """

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = store_root(root).resolve()
        self.tables_dir = self.root / "tables"
        self.artifacts_dir = self.root / "artifacts"
        self._keys: KeyReader | None = None

    def __reduce__(self):
        """A store travels to another process (spawn, Ray) as its root: the copy reads afresh."""
        return Store, (str(self.root),)

    # ----------------------------------------------------------------- writing side
    def ensure(self) -> "Store":
        """Create the store (or check an existing one) and prove that it is writable."""
        meta = self.root / "meta.json"
        try:
            self.tables_dir.mkdir(parents=True, exist_ok=True)
            self.artifacts_dir.mkdir(parents=True, exist_ok=True)
            if not meta.exists():
                write_bytes(meta, json.dumps({
                    "schema_version": SCHEMA_VERSION,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode())
            self._write_empty_parts()
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except StoreWriteError as exc:
            raise StoreError(f"cannot write the store at {self.root}: {exc.reason}") from None
        except OSError as exc:
            raise StoreError(f"cannot write the store at {self.root}: {exc.strerror or exc}") from exc
        self.check_version()
        return self

    def _write_empty_parts(self) -> None:
        # A zero-row typed part per table: the table's schema as a file. It is rewritten when
        # the schema gained columns (a store written by an older version).
        for table in TABLES:
            path = part_path(self.tables_dir, table, "_schema", "empty")
            if part_columns(path) != list(columns(table)):
                write_part(path, table, [])

    def check_version(self) -> None:
        """meta.json must be a JSON object with an integer `schema_version` this code reads."""
        meta = self.root / "meta.json"
        if not meta.exists():
            return
        try:
            info = json.loads(meta.read_bytes().decode("utf-8"))
            version = info["schema_version"] if isinstance(info, dict) else None
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f"schema_version {version!r} is not a positive integer")
        except (OSError, ValueError, KeyError) as exc:  # UnicodeDecodeError is a ValueError
            raise StoreError(f"the store's {meta} is malformed ({str(exc)[:120]}): restore it "
                             "or move it aside") from None
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store at {self.root} has schema v{version}, newer than this "
                             f"landscape (v{SCHEMA_VERSION}): update the code")

    def write(self, table: str, key: str, rows, part: str = "all") -> Path:
        path = part_path(self.tables_dir, table, key, part)
        for attempt in range(3):
            try:
                write_part(path, table, rows)
                return path
            except (StoreError, duckdb.IOException, OSError):
                # a compaction removed the (empty) key folder between its mkdir and the write
                if attempt == 2 or path.parent.is_dir():
                    raise
        return path

    def read(self, table: str, key: str, part: str = "all"):
        """The rows of one part, loose or compacted, as a DataFrame (None: no such part, or
        deleted): a writer re-reading what it wrote, e.g. to resume."""
        part_path(self.tables_dir, table, key, part)  # validates the names
        tbl = self.keys().read(table, key, part)
        return None if tbl is None else tbl.to_pandas()

    def delete(self, table: str, key: str, part: str = "all") -> None:
        part_path(self.tables_dir, table, key, part)
        delete_part(self.tables_dir, table, key, part, self.keys())

    def keys(self) -> KeyReader:
        """Where each part lives (loose or compacted), for `read` and `delete`."""
        if self._keys is None:
            self._keys = KeyReader(self.root)
        return self._keys

    # ----------------------------------------------------------------- artifacts and locks
    def run_dir(self, run_id: str | None) -> Path:
        """`artifacts/<run id>/` (created); None: the folder of stand-alone studies."""
        return self._folder(self.artifacts_dir / (run_id or STUDY))

    @staticmethod
    def _folder(d: Path) -> Path:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise write_error(d, exc) from None
        return d

    def checkpoint_path(self, run_id: str, epoch: int) -> Path:
        return self.run_dir(run_id) / "checkpoints" / f"epoch_{epoch:04d}.pt"

    def trajectory_path(self, run_id: str, epoch: int) -> Path:
        return self.run_dir(run_id) / "trajectory" / f"epoch_{epoch:04d}.pt"

    def resume_path(self, run_id: str) -> Path:
        return self.run_dir(run_id) / "resume.pt"

    def analysis_artifact(self, run_id: str | None, analysis_id: str, name: str) -> Path:
        """A file an analysis keeps beside its rows (e.g. `eigenvectors.pt`); its folder is
        made by the writer."""
        return self.artifacts_dir / (run_id or STUDY) / "analyses" / f"{analysis_id}-{name}"

    def lock_run(self, run_id: str):
        """An open file holding this run's exclusive lock, or None if another process has it.

        The lock lasts until the file is closed (or the process ends, even when killed).
        """
        return self._lock(run_id)

    def lock_analysis(self, analysis_id: str, wait: bool = False):
        """Like `lock_run`, for one analysis (one process computes it at a time); `wait`:
        block until the process holding it ends or lets go."""
        return self._lock(f"analysis-{analysis_id}", wait)

    def _lock(self, name: str, wait: bool = False):
        path = self._folder(self.root / "locks") / f"{name}.lock"
        try:
            handle = open(path, "a")
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
        return handle

    def sweep_temporaries(self, run_id: str | None = None) -> list[Path]:
        """Remove temporaries left by killed writers (of one run, or of the whole store)."""
        if run_id is None:
            return sweep_temporaries(self.root)
        return sweep_temporaries(self.artifacts_dir / run_id,
                                 *(self.tables_dir / table / run_id for table in TABLES))

    def remove_run(self, run_id: str) -> None:
        """Delete every row and file of a run (used to restart a run from scratch)."""
        part_path(self.tables_dir, "runs", run_id, "all")
        remove_run(self.tables_dir, run_id, TABLES, self.keys())
        shutil.rmtree(self.artifacts_dir / run_id, ignore_errors=True)

    # ----------------------------------------------------------------- reading side
    def exists(self) -> bool:
        return (self.root / "meta.json").exists()

    def reader(self) -> StoreReader:
        """The process's shared snapshot of this store (Arrow tables, incremental refresh)."""
        if not self.exists():
            raise StoreError(f"no store at {self.root}: run `make demo` or "
                             f"`python -m landscape_lib train-all` first")
        self.check_version()
        return shared_reader(self.root)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor with every table registered from the snapshot (refreshed now).

        The snapshot is consistent and complete: parts being replaced or compacted meanwhile
        are read whole or not at all, so a query on it never fails on a torn file.
        """
        return self.reader().cursor()

    def query(self, sql: str, params: list | None = None, *, arrow: bool = False):
        """Run one parameterised query over the snapshot (refreshed now); a DataFrame, or an
        Arrow table with arrow=True."""
        return self.reader().query(sql, params, arrow=arrow)

    def compact(self, tables=None, **settings) -> list:
        """Fold done runs' loose parts into compacted files (see compact.py); a report per
        table. Never waits: when another compactor is running, every report says busy."""
        from .compact import compact, done_keys
        done = done_keys(self.reader().table("runs"))
        return compact(self.root, list(tables or TABLES), done, **settings)
