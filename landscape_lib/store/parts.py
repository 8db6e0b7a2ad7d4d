"""Reading part files robustly (issue 12, items 5 and 7).

- `read_part(path, table)`: one part read by pyarrow through ONE open file handle, so an atomic
  replacement can never mix two versions (DuckDB's multi-file scan reads a file's metadata when
  the query is bound and its data later: a replacement in between was the "TProtocolException:
  Invalid data" of issue 12). The rows are checked against the table (`conform`): a file with
  columns the table lacks or without `run_id` (another table's part), or with rows of another
  run or analysis than its name says (a stray copy), is a `BadFile`, never silently unioned.
- `read_parts(items, table)`: many parts in DuckDB batches (far less CPU than a Python loop),
  each file's stamp checked after the scan; a failing batch is read file by file, which names
  the bad files and keeps the rest.
- `retry_read(fn)`: retries every error that is not a mistake in the SQL itself.
- `write_tombstone(path, table)`: a typed empty part marked as a deletion (keys.py).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .atomic import atomic_path
from .layout import SCHEMA_KEY, SUFFIX, Stamp, owner_column, split_key
from .schema import TABLES

ARROW_TYPES = {"VARCHAR": pa.string(), "DOUBLE": pa.float64(), "INTEGER": pa.int32(),
               "BIGINT": pa.int64(), "BOOLEAN": pa.bool_(), "TIMESTAMP": pa.timestamp("us")}
HIDDEN_KEY = "_key"  # the "<key>/<part>" column of compacted files
TOMBSTONE = {b"landscape": b"tombstone"}  # schema metadata of a deletion

# DuckDB errors that are mistakes in the SQL or the data asked for (never transient).
_NOT_TRANSIENT = (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                  duckdb.SyntaxException, duckdb.NotImplementedException,
                  duckdb.ConversionException, duckdb.TypeMismatchException,
                  duckdb.ConstraintException, duckdb.OutOfRangeException,
                  duckdb.InterruptException, duckdb.InvalidTypeException,
                  duckdb.OutOfMemoryException)


class BadFile(Exception):
    """A file that is not a readable part of its table (the reason in the message)."""


class Retry(Exception):
    """The store changed under a reader in a way that reading again resolves."""


def arrow_schema(table: str) -> pa.Schema:
    """The Arrow schema of a store table, from schema.TABLES (the one source of truth)."""
    return pa.schema([(c, ARROW_TYPES[t]) for c, t in TABLES[table].items()])


def transient(exc: BaseException) -> bool:
    """Whether reading again may succeed: a file replaced or removed under the reader."""
    if isinstance(exc, duckdb.Error):
        return not isinstance(exc, _NOT_TRANSIENT)
    return isinstance(exc, (OSError, pa.ArrowInvalid, BadFile, Retry))


def retry_read(read, attempts: int = 8, delay: float = 0.02):
    """Call `read()`, again after any transient error (exponential back-off, ~2.5 s in all).

    A reader can open a part's metadata, then the part is atomically replaced (or compacted
    away) before its data are read; the replacement is complete at once, so reading again
    sees a consistent store.
    """
    for attempt in range(attempts):
        try:
            return read()
        except Exception as exc:  # noqa: BLE001 - classified just below
            if attempt == attempts - 1 or not transient(exc):
                raise
            time.sleep(min(delay * 2 ** attempt, 0.5))


def read_parquet(source, columns=None) -> pa.Table:
    """A Parquet file (path or open handle) read whole on this thread. Not pq.read_table: it
    goes through pyarrow.dataset, whose import costs pandas' (0.3 s of CPU per process)."""
    return pq.ParquetFile(source).read(columns=columns, use_threads=False)


def part_columns(path) -> list[str] | None:
    """A part file's column names from its footer (None: missing or unreadable)."""
    try:
        return pq.read_schema(path).names
    except (OSError, pa.ArrowInvalid):
        return None


def is_tombstone(tbl: pa.Table) -> bool:
    return (tbl.schema.metadata or {}).get(b"landscape") == TOMBSTONE[b"landscape"]


def conform(tbl: pa.Table, table: str, where: str = "", key: str | None = None) -> pa.Table:
    """Columns in schema order and types; a column an older writer lacked becomes nulls.

    BadFile for columns the table lacks or a missing run_id (another table's part), and, given
    the part's "<key>/<part>", for rows of another run or analysis (a copy under a wrong name).
    """
    schema = arrow_schema(table)
    extra = set(tbl.column_names) - set(schema.names) - {HIDDEN_KEY}
    if extra or "run_id" not in tbl.column_names:
        raise BadFile(f"{where}: not a part of table '{table}' "
                      f"(columns {', '.join(sorted(tbl.column_names)[:8])})")
    if key is not None and tbl.num_rows:
        run, part = split_key(key)
        col = owner_column(part)
        want = run if col == "run_id" else part
        values = (pc.unique(tbl.column(col)).to_pylist() if col in tbl.column_names else [None])
        if values != [want]:
            raise BadFile(f"{where}: holds rows of {col} {values[:3]}, not '{want}'")
    try:
        arrays = [tbl.column(f.name).cast(f.type) if f.name in tbl.column_names
                  else pa.nulls(tbl.num_rows, f.type) for f in schema]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadFile(f"{where}: columns of the wrong type ({exc})") from exc
    return pa.Table.from_arrays(arrays, schema=schema.with_metadata(
        TOMBSTONE if is_tombstone(tbl) else None))


def path_key(path: str | os.PathLike) -> str:
    """"<key>/<part>" of a loose part's path."""
    name = os.path.basename(path)
    return f"{os.path.basename(os.path.dirname(path))}/{name[:-len(SUFFIX)]}"


def _owner_key(key: str) -> str | None:
    return None if key.startswith(f"{SCHEMA_KEY}/") else key


def read_part(path: str | os.PathLike, table: str, attempts: int = 3) -> pa.Table | None:
    """One part's rows, conformed (None when the file is gone); BadFile when it is no part."""
    for attempt in range(attempts):
        try:
            with open(path, "rb") as fh:  # one handle: one version, whatever replaces the name
                tbl = read_parquet(fh)
            return conform(tbl, table, str(path), _owner_key(path_key(path)))
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError) as exc:  # corrupt, or a non-atomic foreign writer
            if attempt == attempts - 1:
                raise BadFile(f"{path}: unreadable ({str(exc).splitlines()[0]})") from exc
            time.sleep(0.02)


MIN_BATCH = 16  # fewer parts than this are read one by one


def read_parts(items: dict, table: str, batch: int = 2000, exact: bool = False
               ) -> tuple[dict, dict]:
    """Many parts: {key: (path, Stamp)} -> ({key: pa.Table}, {path: reason}).

    A DuckDB multi-file scan per batch (with each row's file name to split them back); a file
    replaced during the scan could be torn, so every file's stamp is compared after the scan
    and a changed one is read again on its own. exact: leave out a part whose stamp is no
    longer the one given (the compactor records the stamp it read). Parts that vanished are
    simply absent from the result.
    """
    out, bad, single = {}, {}, []
    items = list(items.items())
    allowed = set(TABLES[table]) | {"__file"}
    for i in range(0, len(items), batch):
        chunk = items[i:i + batch]
        tbl = _scan([str(p) for _, (p, _) in chunk]) if len(chunk) >= MIN_BATCH else None
        if tbl is None or set(tbl.column_names) - allowed:
            single += chunk
            continue
        by_file = _split(tbl)
        for key, (path, stamp) in chunk:
            now = _stamp(path)
            if now != stamp:
                if now is not None:
                    single.append((key, (path, stamp)))
                continue
            part = by_file.get(str(path))
            if part is None:  # no rows: read alone (a tombstone's mark is in its metadata)
                single.append((key, (path, stamp)))
                continue
            try:
                out[key] = conform(part, table, str(path), _owner_key(key))
            except BadFile as exc:
                bad[str(path)] = str(exc)
    for key, (path, stamp) in single:
        try:
            tbl = read_part(path, table)
        except BadFile as exc:
            bad[str(path)] = str(exc)
            continue
        if tbl is not None and not (exact and _stamp(path) != stamp):
            out[key] = tbl
    return out, bad


def _stamp(path) -> Stamp | None:
    try:
        return Stamp.of(os.stat(path))
    except FileNotFoundError:
        return None


def _scan(paths: list[str]) -> pa.Table | None:
    """Rows of many files with a `__file` column; None when any of them fails (read singly)."""
    con = duckdb.connect()
    try:
        con.execute("SET enable_progress_bar = false")
        return con.sql("SELECT * FROM read_parquet(?, union_by_name = true, filename = '__file')",
                       params=[paths]).to_arrow_table()
    except (duckdb.Error, OSError):
        return None
    finally:
        con.close()


def _split(tbl: pa.Table) -> dict:
    """Rows of a multi-file scan per file name (zero-copy slices after one sort if needed)."""
    import numpy as np
    files = pc.dictionary_encode(tbl.column("__file")).combine_chunks()
    index, names = files.indices.to_numpy(), files.dictionary.to_pylist()
    tbl = tbl.drop_columns(["__file"])
    if len(index) > 1 and (index[1:] < index[:-1]).any():
        order = np.argsort(index, kind="stable")
        tbl, index = tbl.take(order), index[order]
    starts = np.r_[0, np.flatnonzero(np.diff(index)) + 1] if len(index) else np.array([], int)
    ends = np.r_[starts[1:], len(index)]
    return {names[index[a]]: tbl.slice(a, b - a) for a, b in zip(starts, ends)}


def write_arrow(path: Path, tbl: pa.Table) -> None:
    """Atomically write an Arrow table as a part; the key folder is made again when a
    compaction removed it (empty) between its creation and the write."""
    for attempt in range(3):
        try:
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:
                pq.write_table(tbl, fh)
            return
        except FileNotFoundError:
            if attempt == 2 or path.parent.is_dir():
                raise


def write_tombstone(path: Path, table: str) -> None:
    """A typed empty part marked as a deletion: it hides a compacted copy of its key."""
    write_arrow(path, arrow_schema(table).with_metadata(TOMBSTONE).empty_table())
