"""One part's rows wherever they live (loose or compacted), and deletions that survive compaction.

`Store.read(table, key, part)` is how writers look at what they wrote (resume, `train-all`
skipping finished runs, an analysis' stored status); once compacted, a part is no longer a loose
file, so it is found in its compacted file through the key index. Deleting a compacted part
writes a tombstone (a typed empty part marked as a deletion): a loose part wins over the
compacted copy, and the next compaction keeps no row of that key.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import manifest as mf
from .layout import SUFFIX, list_key, part_key, split_key
from .parts import HIDDEN_KEY, conform, is_tombstone, read_part, retry_read, write_tombstone


class KeyReader:
    """Per Store: each table's key index of its compacted files, reloaded when the manifest
    changes (one stat per call otherwise)."""

    def __init__(self, root: str | os.PathLike):
        self.tables_dir = Path(root) / "tables"
        self._cache: dict = {}  # table -> (manifest stamp, {key: (file, offset, rows)})
        self._lock = threading.Lock()

    def _index(self, table: str):
        stamp = mf.manifest_stamp(self.tables_dir, table)
        with self._lock:
            cached = self._cache.get(table)
        if cached and cached[0] == stamp:
            return cached
        index = {} if stamp is None else {
            key: (e["name"], off, n) for e in mf.load(self.tables_dir, table)["files"]
            for key, off, n in mf.index_rows(self.tables_dir, table, e, ("key", "offset", "rows"))}
        with self._lock:
            self._cache[table] = (stamp, index)
        return stamp, index

    def read(self, table: str, key: str, part: str = "all") -> pa.Table | None:
        """The part's rows; None when it does not exist or was deleted."""
        return retry_read(lambda: self._read(table, key, part))

    def _read(self, table, key, part):
        stamp, index = self._index(table)
        path = self.tables_dir / table / key / f"{part}{SUFFIX}"
        tbl = read_part(path, table)
        if tbl is not None:
            return None if is_tombstone(tbl) else tbl
        hit = index.get(part_key(key, part))
        if hit is None:
            if mf.manifest_stamp(self.tables_dir, table) != stamp:
                raise FileNotFoundError(path)  # compacted meanwhile: look again
            return None
        name, offset, rows = hit
        tbl = _read_rows(mf.compacted_dir(self.tables_dir, table) / name, offset, rows)
        return conform(tbl.drop_columns([HIDDEN_KEY]), table)

    def keys_of_run(self, table: str, run_id: str) -> list[str]:
        """The compacted keys of one run in a table."""
        _, index = self._index(table)
        return [k for k in index if split_key(k)[0] == run_id]


def _read_rows(path: Path, offset: int, rows: int) -> pa.Table:
    """Rows [offset, offset + rows) of a Parquet file, reading only the row groups they span."""
    with open(path, "rb") as fh:
        pf = pq.ParquetFile(fh)
        groups, start, first = [], 0, None
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if start + n > offset and start < offset + rows:
                groups.append(g)
                first = start if first is None else first
            start += n
        tbl = pf.read_row_groups(groups) if groups else pf.schema_arrow.empty_table()
    return tbl.slice(offset - (first or 0), rows)


def delete_part(tables_dir: Path, table: str, key: str, part: str, keys: KeyReader) -> None:
    """Remove a part's rows, loose or compacted. A compacted part gets a tombstone; a loose
    one is unlinked, and gets a tombstone after all when a compaction committed it meanwhile
    (the compactor also checks, before its commit and when it retires, that each part it read
    still exists, and leaves a deleted one out)."""
    path = Path(tables_dir) / table / key / f"{part}{SUFFIX}"
    k = part_key(key, part)
    if k in keys._index(table)[1]:
        write_tombstone(path, table)
        return
    path.unlink(missing_ok=True)
    if k in keys._index(table)[1]:
        write_tombstone(path, table)


def remove_run(tables_dir: Path, run_id: str, tables, keys: KeyReader) -> None:
    """Every part of a run gone (a restart from scratch), loose and compacted."""
    for table in tables:
        found = set(list_key(tables_dir, table, run_id).parts) | set(
            keys.keys_of_run(table, run_id))
        for k in found:
            delete_part(tables_dir, table, *split_key(k), keys)
