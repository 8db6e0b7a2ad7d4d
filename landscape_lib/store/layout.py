"""Names in the store's `tables/` folder, and listing them without any glob.

    tables/<table>/<key>/<part>.parquet                  a loose part (key: a run id or 'study')
    tables/<table>/<key>/.<part>.parquet.<pid>.<hex>.tmp  a writer's temporary (atomic.py; hidden)
    tables/<table>/<key>/.<part>.retire                  a part the compactor is retiring (hidden)
    tables/<table>/_compacted/manifest.json              the compacted files (manifest.py)
    tables/<table>/_compacted/<gen>-<n>.parquet          compacted rows (+ a hidden `_key` column)
    tables/<table>/_compacted/<gen>-<n>.index.parquet    their key index (key, stamp, offset, rows)
    tables/.compact.lock                                 held by the one running compactor

Parts carry the names the library writes: `all` (a run's training rows), an analysis id
(`<kind>-<12 hex>`, analyses/provenance.py) and `empty` (the typed empty parts under `_schema`).
Anything else (`all (1).parquet`, `backup.parquet`, a file at the table level, a folder with
glob characters) is foreign: never read, reported by name. Paths are joined and listed with
os.scandir, so a store path holding glob characters (`glob[1]`) is only ever that folder.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

KEY = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")  # run ids and 'study': no leading dot
PART_NAME = re.compile(r"^(all|empty|[a-z][a-z0-9_\-]*-[0-9a-f]{12})$")
COMPACTED = "_compacted"
SCHEMA_KEY = "_schema"  # typed empty parts written by Store.ensure(): never compacted
SUFFIX = ".parquet"
TMP = ".tmp"
RETIRE = ".retire"


@dataclass(frozen=True)
class Stamp:
    """One version of a file: os.replace gives every version a new inode."""
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "Stamp":
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)


def stamp_of(path) -> Stamp | None:
    try:
        return Stamp.of(os.stat(path))
    except FileNotFoundError:
        return None


@dataclass
class Listing:
    parts: dict = field(default_factory=dict)     # "key/part" -> (Path, Stamp)
    temps: list = field(default_factory=list)     # writers' temporaries (hidden)
    retiring: list = field(default_factory=list)  # parts a compactor was retiring (hidden)
    foreign: list = field(default_factory=list)   # anything else: skipped and reported


def part_key(key: str, part: str) -> str:
    return f"{key}/{part}"


def split_key(part_key_: str) -> tuple[str, str]:
    key, part = part_key_.split("/", 1)
    return key, part


def owner_column(part: str) -> str:
    """The column every row of a part must hold its name in: analysis parts are named by their
    analysis id, the others (`all`, `empty`) by their folder's run id."""
    return "run_id" if part in ("all", "empty") else "analysis_id"


def is_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(TMP)


def retire_path(path: Path) -> Path:
    return path.parent / f".{path.stem}{RETIRE}"


def retired_part(hidden: Path) -> Path:
    return hidden.parent / f"{hidden.name[1:-len(RETIRE)]}{SUFFIX}"


def list_table(tables_dir: str | os.PathLike, table: str) -> Listing:
    """The loose parts, temporaries and foreign files of one table (one scandir per key)."""
    out = Listing()
    base = os.path.join(os.fspath(tables_dir), table)
    try:
        top = list(os.scandir(base))
    except FileNotFoundError:
        return out
    for entry in top:
        if entry.name == COMPACTED:
            continue
        if not entry.is_dir(follow_symlinks=False):
            (out.temps if is_temp(entry.name) else out.foreign).append(Path(entry.path))
            continue
        if not KEY.match(entry.name):
            out.foreign.append(Path(entry.path))
            continue
        try:
            files = list(os.scandir(entry.path))
        except (FileNotFoundError, NotADirectoryError):  # removed meanwhile (compaction)
            continue
        for f in files:
            _sort(f, entry.name, out)
    return out


def list_key(tables_dir: str | os.PathLike, table: str, key: str) -> Listing:
    """The loose parts (and temporaries, foreign files) of one key of one table."""
    out = Listing()
    try:
        files = list(os.scandir(os.path.join(os.fspath(tables_dir), table, key)))
    except (FileNotFoundError, NotADirectoryError):
        return out
    for f in files:
        _sort(f, key, out)
    return out


def _sort(f: os.DirEntry, key: str, out: Listing) -> None:
    name = f.name
    if is_temp(name):
        out.temps.append(Path(f.path))
    elif name.startswith(".") and name.endswith(RETIRE):
        out.retiring.append(Path(f.path))
    elif (name.endswith(SUFFIX) and PART_NAME.match(name[:-len(SUFFIX)])
          and f.is_file(follow_symlinks=False)):
        try:
            stamp = Stamp.of(f.stat(follow_symlinks=False))
        except FileNotFoundError:
            return
        out.parts[part_key(key, name[:-len(SUFFIX)])] = (Path(f.path), stamp)
    else:
        out.foreign.append(Path(f.path))
