"""The run store: Parquet parts under one root, queried through DuckDB views.

    store = Store()                    # runs/store, or $LANDSCAPE_STORE, or Store("path")
    store.write("epochs", run_id, rows)          # atomic; one writer per (table, run_id, part)
    con = store.connect()                        # DuckDB connection with a view per table
    con.execute("SELECT * FROM epochs WHERE run_id = ?", [run_id]).df()
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from pathlib import Path

import duckdb
import pandas as pd

from ..errors import StoreError, StoreWriteError
from ..locations import store_root
from .atomic import atomic_path, sweep_temporaries, write_bytes, write_error
from .files import create_views, part_path, read_part, retry_read, write_part
from .schema import SCHEMA_VERSION, STUDY, TABLES, columns

__all__ = ["Store", "retry_read", "atomic_path", "SCHEMA_VERSION", "TABLES", "columns"]


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
        # A zero-row typed part per table keeps every view's glob non-empty, so a connection
        # made before the first run still sees rows written later. It is rewritten when the
        # schema gained columns, so that views over parts written before still bind them.
        for table in TABLES:
            path = part_path(self.tables_dir, table, "_schema", "empty")
            if not path.exists() or list(read_part(path).columns) != list(columns(table)):
                write_part(path, table, pd.DataFrame([]))

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
        write_part(path, table, rows)
        return path

    def read(self, table: str, key: str, part: str = "all") -> pd.DataFrame | None:
        """The rows of one part (a writer re-reading what it wrote, e.g. to resume)."""
        return read_part(part_path(self.tables_dir, table, key, part))

    def delete(self, table: str, key: str, part: str = "all") -> None:
        path = part_path(self.tables_dir, table, key, part)
        if path.exists():
            path.unlink()

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

    def lock_analysis(self, analysis_id: str):
        """Like `lock_run`, for one analysis (one process computes it at a time)."""
        return self._lock(f"analysis-{analysis_id}")

    def _lock(self, name: str):
        path = self._folder(self.root / "locks") / f"{name}.lock"
        try:
            handle = open(path, "a")
        except OSError as exc:
            raise write_error(path, exc) from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
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
        """Delete every file of a run (used to restart a run from scratch)."""
        for table in TABLES:
            shutil.rmtree(self.tables_dir / table / run_id, ignore_errors=True)
        shutil.rmtree(self.artifacts_dir / run_id, ignore_errors=True)

    # ----------------------------------------------------------------- reading side
    def exists(self) -> bool:
        return (self.root / "meta.json").exists()

    def connect(self) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB connection with one view per table (re-globbed per query)."""
        if not self.exists():
            raise StoreError(f"no store at {self.root}: run `make demo` or "
                             f"`python -m landscape_lib train-all` first")
        self.check_version()
        con = duckdb.connect()
        try:
            create_views(con, self.tables_dir)
        except duckdb.Error as exc:
            con.close()
            raise StoreError(f"the store at {self.root} cannot be read: {exc}") from exc
        return con

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        """Run one query; safe while writers replace part files (see `retry_read`)."""
        con = self.connect()
        try:
            return retry_read(lambda: con.execute(sql, params or []).df())
        except duckdb.Error as exc:
            raise StoreError(f"the store at {self.root} cannot be read: "
                             f"{str(exc).splitlines()[0]}") from exc
        finally:
            con.close()
