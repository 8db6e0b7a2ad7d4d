"""StoreReader: the store's tables as in-memory Arrow snapshots with incremental refresh.

One per process and store root (`Store(root).reader()`), shared by `Store.query`,
`Store.connect()`, the CLI and the dashboard, and thread-safe. A table is loaded at its first
use; a refresh then stats its manifest and lists its loose parts, and reads again only what
changed: compacted files are immutable (read once), a loose part is re-read when its inode,
size or mtime changed. Queries run in DuckDB over the Arrow tables registered on a cursor:
DuckDB never opens a part file itself, so a part replaced during a query cannot tear it.

The reading rule (manifest.py): every readable loose part, plus the compacted rows whose key is
neither excluded nor present as a loose part. A refresh reads the manifest's stamp, lists and
reads the loose parts, then stats the manifest again: if a compaction committed meanwhile, it
lists again (keeping what it read), so a part retired after being listed is never missed and
no row is counted twice.

Files that cannot be parts of their table (truncated, garbled, another table's columns, rows of
another run, stray names) are skipped and named in `problems` ({path: reason}); the rest stays
readable. A bad part is read again once it changes.

Large tables (`DISK_TABLES`, millions of rows at 10,000 runs) keep their compacted rows on
disk: a query scans them through a pyarrow dataset of the manifest's files (explicit paths,
projection and row-group pruning), minus the excluded and loose keys, plus the loose parts.
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pyarrow as pa

from ..errors import StoreError
from . import manifest as mf
from .layout import list_table, stamp_of
from .parts import (HIDDEN_KEY, Retry, arrow_schema, conform, read_parquet, read_parts,
                    retry_read)
from .schema import TABLES

DISK_TABLES = ("layers", "hessian_density", "surface_points", "trajectory")


class Changed(Retry):
    """A compaction committed while the table was read: list again."""


@dataclass
class _State:
    manifest_stamp: object = None
    manifest: dict | None = None
    files: dict = field(default_factory=dict)     # (file name, Stamp) -> (table|None, {key: (off, n)})
    loose: dict = field(default_factory=dict)     # key -> (Stamp, pa.Table)
    seen: dict = field(default_factory=dict)      # key -> (Stamp, pa.Table) read in this refresh
    bad: dict = field(default_factory=dict)       # path -> Stamp of a file found bad
    problems: dict = field(default_factory=dict)  # path -> reason
    combined: pa.Table | None = None
    checked: float = -1e18
    lock: threading.Lock = field(default_factory=threading.Lock)


class StoreReader:
    """Arrow snapshots of one store's tables. `refresh_every`: seconds a table is used before
    its files are checked again (0: at every use)."""

    def __init__(self, root: str | os.PathLike, *, refresh_every: float = 0.0,
                 disk_tables=DISK_TABLES):
        self.root = Path(root)
        self.tables_dir = self.root / "tables"
        self.refresh_every = refresh_every
        self.disk_tables = set(disk_tables)
        self._states = {t: _State() for t in TABLES}
        self._con = duckdb.connect()
        self._con_lock = threading.Lock()
        self._parsed: dict[str, frozenset] = {}

    @property
    def problems(self) -> dict[str, str]:
        """Files skipped by the last refresh of each table loaded: {path: reason}."""
        out = {}
        for st in self._states.values():
            out.update(st.problems)
        return out

    # ------------------------------------------------------------------ tables
    def table(self, name: str) -> pa.Table:
        """The whole table now (a disk table is read from its files for this call)."""
        if name in self.disk_tables:
            cur = self.cursor([name])
            try:
                return cur.sql(f'SELECT * FROM "{name}"').to_arrow_table()
            finally:
                cur.close()
        return self._held(name)

    def _held(self, name: str) -> pa.Table:
        """The rows held in memory: the whole table, or a disk table's loose parts."""
        if name not in self._states:
            raise StoreError(f"unknown table '{name}'; tables: {', '.join(TABLES)}")
        st = self._states[name]
        with st.lock:
            if st.combined is None or time.monotonic() - st.checked >= self.refresh_every:
                retry_read(lambda: self._refresh(name, st), attempts=40, delay=0.005)
                st.checked = time.monotonic()
            return st.combined

    def refresh(self, names=None) -> None:
        """Check the files of `names` (default: every table loaded) now."""
        for name in names or [t for t, s in self._states.items() if s.combined is not None]:
            self._states[name].checked = -1e18
            self._held(name)

    def invalidate(self) -> None:
        """Check every loaded table's files at its next use (e.g. after this process wrote)."""
        for st in self._states.values():
            st.checked = -1e18

    def _refresh(self, name: str, st: _State) -> None:
        before = mf.manifest_stamp(self.tables_dir, name)
        problems, good = {}, True
        man = st.manifest if before == st.manifest_stamp and st.manifest else None
        if man is None:
            try:
                man = mf.load(self.tables_dir, name)
            except mf.BadManifest as exc:  # its compacted rows are unavailable: say so
                problems[str(mf.compacted_dir(self.tables_dir, name))] = str(exc)
                man, good = mf.empty(name), False
        listing = list_table(self.tables_dir, name)
        for path in listing.foreign:
            problems[str(path)] = f"not a part file of table '{name}': ignored"
        on_disk = name in self.disk_tables
        files = {}
        for e in man["files"]:
            stamp = stamp_of(mf.compacted_dir(self.tables_dir, name) / e["name"])
            if stamp is None:
                raise Changed(name)  # retired and collected: the manifest changed
            fkey = (e["name"], stamp)
            files[fkey] = st.files.get(fkey) or self._read_compacted(name, e, on_disk)
        loose, todo = {}, {}
        for key, (path, stamp) in listing.parts.items():
            old = st.seen.get(key) or st.loose.get(key)
            if old is not None and old[0] == stamp:
                loose[key] = old
            elif st.bad.get(str(path)) == stamp:
                problems[str(path)] = st.problems.get(str(path), "unreadable")
            else:
                todo[key] = (path, stamp)
        if todo:
            tables, bad = read_parts(todo, name)  # parts removed meanwhile are just absent
            for key, (path, stamp) in todo.items():
                if str(path) in bad:
                    st.bad[str(path)], problems[str(path)] = stamp, bad[str(path)]
                elif key in tables:
                    loose[key] = st.seen[key] = (stamp, tables[key])
        if mf.manifest_stamp(self.tables_dir, name) != before:
            st.files.update(files)
            raise Changed(name)  # retry_read lists again; what was read is kept in `seen`
        if (st.combined is None or before != st.manifest_stamp
                or {k: v[0] for k, v in loose.items()} != {k: v[0] for k, v in st.loose.items()}):
            st.combined = _combine(name, [] if on_disk else man["files"], files, loose)
        st.manifest_stamp, st.loose, st.files = before, loose, files
        st.manifest = man if good else None  # a bad manifest is read again at every refresh
        st.seen, st.problems = {}, problems
        st.bad = {p: s for p, s in st.bad.items() if p in problems}

    def _read_compacted(self, name: str, entry: dict, index_only: bool):
        cdir = mf.compacted_dir(self.tables_dir, name)
        try:
            tbl = None
            if not index_only:
                with open(cdir / entry["name"], "rb") as fh:
                    tbl = conform(read_parquet(fh).drop_columns([HIDDEN_KEY]), name)
            idx = read_parquet(cdir / entry["index"], columns=["key", "offset", "rows"])
        except FileNotFoundError as exc:
            raise Changed(name) from exc
        keys = dict(zip(idx.column("key").to_pylist(),
                        zip(idx.column("offset").to_pylist(), idx.column("rows").to_pylist())))
        return tbl, keys

    # ------------------------------------------------------------------ queries
    def tables_in(self, sql: str) -> frozenset | None:
        """The store tables a query reads, from DuckDB's own parser (None: it cannot tell,
        e.g. a statement it does not serialize; then every table is registered)."""
        if sql not in self._parsed:
            with self._con_lock:
                tree = json.loads(self._con.execute("SELECT json_serialize_sql(?)", [sql])
                                  .fetchone()[0])
            if tree.get("error"):
                return None
            found, stack = set(), [tree]
            while stack:
                node = stack.pop()
                if isinstance(node, dict):
                    if node.get("type") == "BASE_TABLE":
                        found.add(node.get("table_name", ""))
                    stack.extend(node.values())
                elif isinstance(node, list):
                    stack.extend(node)
            if len(self._parsed) > 512:
                self._parsed.clear()
            self._parsed[sql] = frozenset(found & set(TABLES))
        return self._parsed[sql]

    def cursor(self, tables=None) -> duckdb.DuckDBPyConnection:
        """A DuckDB cursor with `tables` (default: all) registered from the snapshot, each
        table checked for changes first (see refresh_every)."""
        with self._con_lock:
            cur = self._con.cursor()
        try:
            for t in (TABLES if tables is None else tables):
                if t in self.disk_tables:
                    self._register_disk(cur, t)
                else:
                    cur.register(t, self._held(t))
        except BaseException:
            cur.close()
            raise
        return cur

    def _register_disk(self, cur, name: str) -> None:
        """View `name` = the manifest's files minus excluded and loose keys, + loose parts."""
        import pyarrow.dataset as pads
        loose = self._held(name)
        st = self._states[name]
        with st.lock:
            man, present = st.manifest or mf.empty(name), set(st.loose)
        cur.register(f"__loose_{name}", loose)
        if not man["files"]:
            cur.execute(f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT * FROM "__loose_{name}"')
            return
        cdir = mf.compacted_dir(self.tables_dir, name)
        schema = arrow_schema(name).append(pa.field(HIDDEN_KEY, pa.string()))
        cur.register(f"__compacted_{name}", pads.dataset(
            [str(cdir / e["name"]) for e in man["files"]], format="parquet", schema=schema))
        drop = sorted(present.union(*(e["excluded"] for e in man["files"])))
        where = ""
        if drop:
            cur.register(f"__drop_{name}", pa.table({"k": pa.array(drop, pa.string())}))
            where = f'WHERE {HIDDEN_KEY} NOT IN (SELECT k FROM "__drop_{name}")'
        cur.execute(f'CREATE OR REPLACE TEMP VIEW "{name}" AS SELECT * EXCLUDE ({HIDDEN_KEY}) '
                    f'FROM "__compacted_{name}" {where} '
                    f'UNION ALL BY NAME SELECT * FROM "__loose_{name}"')

    def query(self, sql: str, params=None, *, arrow: bool = False):
        """Run one parameterised query; a pandas DataFrame (or an Arrow table)."""
        def run():
            cur = self.cursor(self.tables_in(sql))
            try:
                res = cur.sql(sql, params=list(params or []))
                return res.to_arrow_table() if arrow else res.df()
            except Exception:  # e.g. a compacted file collected under an older snapshot
                self.invalidate()
                raise
            finally:
                cur.close()
        try:
            return retry_read(run)
        except (duckdb.BinderException, duckdb.ParserException) as exc:  # the SQL, not the data
            raise StoreError(f"a query on the store at {self.root} is not valid: "
                             f"{first_line(exc)}") from exc
        except duckdb.Error as exc:
            raise StoreError(f"the store at {self.root} cannot be read: "
                             f"{first_line(exc)}") from exc


_SHARED: dict[str, StoreReader] = {}
_SHARED_LOCK = threading.Lock()
MAX_SHARED = 16  # store roots whose readers a process keeps (the oldest is dropped)


def shared_reader(root: str | os.PathLike) -> StoreReader:
    """The process's one StoreReader of a store root."""
    key = os.fspath(root)
    with _SHARED_LOCK:
        reader = _SHARED.pop(key, None) or StoreReader(root)
        _SHARED[key] = reader  # most recently used last
        while len(_SHARED) > MAX_SHARED:
            _SHARED.pop(next(iter(_SHARED)))
    return reader


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _combine(name: str, entries: list, files: dict, loose: dict) -> pa.Table:
    """Compacted rows whose key is neither excluded nor present as a loose part, then the
    loose parts: zero-copy slices, every row exactly once."""
    pieces = []
    by_name = {fname: v for (fname, _), v in files.items()}
    for entry in entries:
        tbl, keys = by_name[entry["name"]]
        drop = sorted(keys[k] for k in set(entry["excluded"]) | (set(loose) & set(keys))
                      if k in keys)
        start = 0
        for off, n in drop:
            if off > start:
                pieces.append(tbl.slice(start, off - start))
            start = off + n
        if start < tbl.num_rows:
            pieces.append(tbl.slice(start))
    pieces += [t.replace_schema_metadata(None) for _, t in loose.values()]
    return pa.concat_tables(pieces) if pieces else arrow_schema(name).empty_table()
