"""The compacted files of one table: `tables/<table>/_compacted/manifest.json`.

    {"format": 1, "table": "epochs", "generation": 12,
     "files":   [{"name": "000012-0.parquet", "index": "000012-0.index.parquet",
                  "rows": 1010000, "keys": 10000, "excluded": ["<key>/<part>", ...]}],
     "retired": [{"name": ..., "index": ..., "at": 1764500000.0}]}

A table's rows are every loose part, plus each listed file's rows whose hidden `_key`
("<key>/<part>") is neither in its `excluded` list nor the key of a loose part present now (a
loose part is always the newest version of its key). The manifest is replaced atomically,
after the files it lists are complete on disk: it is the one commit point of a compaction.
Compacted files are immutable; a file merged into a newer one is `retired` and deleted a grace
period later (a reader of the previous manifest may still be scanning it).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa

from .atomic import atomic_path
from .layout import COMPACTED, Stamp, stamp_of
from .parts import read_parquet

FORMAT = 1
MANIFEST = "manifest.json"
INDEX_SCHEMA = pa.schema([("key", pa.string()), ("ino", pa.int64()), ("size", pa.int64()),
                          ("mtime_ns", pa.int64()), ("offset", pa.int64()),
                          ("rows", pa.int64())])


class BadManifest(ValueError):
    """A manifest that cannot be read: its table's compacted rows are unavailable."""


def compacted_dir(tables_dir: str | os.PathLike, table: str) -> Path:
    return Path(tables_dir) / table / COMPACTED


def empty(table: str) -> dict:
    return {"format": FORMAT, "table": table, "generation": 0, "files": [], "retired": []}


def manifest_stamp(tables_dir, table) -> Stamp | None:
    return stamp_of(compacted_dir(tables_dir, table) / MANIFEST)


def load(tables_dir, table) -> dict:
    path = compacted_dir(tables_dir, table) / MANIFEST
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return empty(table)
    except (ValueError, OSError) as exc:
        raise BadManifest(f"{path}: unreadable ({exc})") from exc
    if not (isinstance(data, dict) and data.get("format") == FORMAT
            and data.get("table") == table and isinstance(data.get("files"), list)
            and all(isinstance(e, dict) and {"name", "index", "excluded"} <= set(e)
                    for e in data["files"])):
        raise BadManifest(f"{path}: not a manifest of table '{table}'")
    return data


def save(tables_dir, table, manifest: dict) -> None:
    """Atomic and durable: a temporary, fsync, os.replace, fsync of the folder."""
    d = compacted_dir(tables_dir, table)
    with atomic_path(d / MANIFEST) as tmp, open(tmp, "w") as fh:
        json.dump(manifest, fh)
        fh.flush()
        os.fsync(fh.fileno())
    fsync_dir(d)


def fsync_dir(d: Path) -> None:
    fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_index(tables_dir, table, entry: dict) -> pa.Table:
    return read_parquet(compacted_dir(tables_dir, table) / entry["index"])


def index_rows(tables_dir, table, entry: dict, columns) -> list[tuple]:
    """The rows of one file's key index (only `columns`), its excluded keys left out."""
    idx = read_index(tables_dir, table, entry)
    excluded = set(entry["excluded"])
    rows = zip(*(idx.column(c).to_pylist() for c in columns))
    return [r for r in rows if r[0] not in excluded]
