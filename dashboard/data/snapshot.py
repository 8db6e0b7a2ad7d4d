"""In-memory copies of the store's tables, refreshed part by part.

Why not query the store's DuckDB views directly: each view re-globs and re-opens every part file
at every query, which is right for a one-off query but costs ~0.5 s per table at 1,000 runs
(one file per run), several times per page. Here each table is read once into Arrow, one slice
per part file; afterwards a refresh (at most every REFRESH seconds) only stats the files and
re-reads those whose size or mtime changed, so new epochs of a running run appear within seconds
for the price of reading that run's part. Writers replace parts atomically (os.replace), so a
file read here is always a complete version.
"""
from __future__ import annotations

import glob
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from landscape_lib.errors import StoreError
from landscape_lib.store import TABLES, retry_read

REFRESH = 2.0  # seconds between checks of a table's files
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_.\-]+$")  # the store's rule for keys (run ids)

_ARROW = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "INTEGER": pa.int32(),
          "BIGINT": pa.int64(), "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us")}


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a store table, from the store's schema (the one source of truth)."""
    return pa.schema([(c, _ARROW[t]) for c, t in TABLES[table].items()])


def _conform(tbl: pa.Table, schema: pa.Schema) -> pa.Table:
    """Columns in schema order and types; a column an older part lacks becomes nulls."""
    arrays = [tbl.column(f.name).cast(f.type) if f.name in tbl.column_names
              else pa.nulls(tbl.num_rows, f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


@dataclass
class _Table:
    stamps: dict = field(default_factory=dict)   # path -> (mtime_ns, size)
    parts: dict = field(default_factory=dict)    # path -> pa.Table
    combined: pa.Table | None = None
    checked: float = -1e9
    lock: threading.Lock = field(default_factory=threading.Lock)


class Snapshots:
    """Arrow copies of one store's tables (thread-safe; one instance per store root)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._tables = {name: _Table() for name in TABLES}

    def table(self, name: str) -> pa.Table:
        entry = self._tables[name]
        with entry.lock:
            if entry.combined is None or time.monotonic() - entry.checked >= REFRESH:
                self._refresh(name, entry)
                entry.checked = time.monotonic()
            return entry.combined

    def run_table(self, name: str, run_id: str) -> pa.Table:
        """One run's rows of a table, read now from its own part files
        (tables/<table>/<run_id>/*.parquet): cheap, always current, nothing cached."""
        schema = arrow_schema(name)
        if not _SAFE_KEY.match(run_id):  # a key the store could not have written
            return schema.empty_table()
        paths = glob.glob(str(self.root / "tables" / name / run_id / "*.parquet"))
        parts = list(self._read(paths, schema).values())
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def preload(self, names) -> threading.Thread:
        """Load tables in a background thread (data only, no Streamlit calls), so the first
        visit of a page finds them ready; an unreadable table is left for the page to report."""
        def load():
            for name in names:
                try:
                    self.table(name)
                except StoreError:
                    return
        thread = threading.Thread(target=load, name="landscape-preload", daemon=True)
        thread.start()
        return thread

    def invalidate(self) -> None:
        """Check every table's files at its next use (after this process wrote to the store)."""
        for entry in self._tables.values():
            entry.checked = -1e9

    def _stamps(self, name: str) -> dict:
        stamps = {}
        for path in glob.glob(str(self.root / "tables" / name / "*" / "*.parquet")):
            try:
                st = os.stat(path)
            except FileNotFoundError:  # replaced or removed meanwhile; seen at the next check
                continue
            stamps[path] = (st.st_mtime_ns, st.st_size)
        return stamps

    def _refresh(self, name: str, entry: _Table) -> None:
        stamps = self._stamps(name)
        changed = [p for p, s in stamps.items() if entry.stamps.get(p) != s]
        removed = set(entry.stamps) - set(stamps)
        if entry.combined is not None and not changed and not removed:
            return
        schema = arrow_schema(name)
        parts = {p: t for p, t in entry.parts.items() if p not in removed}
        parts.update(self._read(changed, schema))
        entry.parts, entry.stamps = parts, {p: stamps[p] for p in parts}
        entry.combined = (pa.concat_tables(list(parts.values())) if parts
                          else schema.empty_table())

    def _read(self, paths: list[str], schema: pa.Schema) -> dict[str, pa.Table]:
        """Read part files in one DuckDB scan and split the rows back per file."""
        if not paths:
            return {}
        con = duckdb.connect()

        def scan():  # parts replaced or removed since they were listed: read what is there now
            present = [p for p in paths if os.path.exists(p)]
            if not present:
                return None
            return con.sql("SELECT * FROM read_parquet(?, union_by_name = true, "
                           "filename = '_file')", params=[present]).to_arrow_table()
        try:
            tbl = retry_read(scan)
            if tbl is None:
                return {}
        except duckdb.Error as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"the store at {self.root} cannot be read: {msg}") from exc
        finally:
            con.close()
        files = pc.dictionary_encode(tbl.column("_file")).combine_chunks()
        index, names = files.indices.to_numpy(), files.dictionary.to_pylist()
        tbl = _conform(tbl.drop_columns(["_file"]), schema)
        if np.count_nonzero(np.diff(index)) != max(len(names) - 1, 0):  # files interleaved
            order = np.argsort(index, kind="stable")
            tbl, index = tbl.take(order), index[order]
        starts = np.r_[0, np.flatnonzero(np.diff(index)) + 1] if len(index) else np.array([], int)
        ends = np.r_[starts[1:], len(index)]
        out = {names[index[a]]: tbl.slice(a, b - a) for a, b in zip(starts, ends)}
        for p in paths:  # files without rows (e.g. the typed empty parts)
            out.setdefault(p, schema.empty_table())
        return out
