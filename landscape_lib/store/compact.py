"""Compaction: the loose parts of done runs folded into a few large files per table.

A store of 10,000 runs holds ~250,000 part files; listing and opening them is what made every
query slow. Compaction never blocks a reader or a writer (only compactors take the store's
compaction lock, and a second compactor skips instead of waiting), never loses or duplicates a
row, and any crash leaves a readable store whose next compaction finishes the job. Per table:

1. recover: delete `_compacted` temporaries and files no manifest lists (a compactor killed
   before its commit); settle `.retire` parts of a killed compactor.
2. choose the loose parts of done runs (finished or diverged; or of keys that are not runs,
   such as 'study') untouched for `min_age` seconds; a part already compacted with the same
   stamp is only retired.
3. read them in key order, in DuckDB batches (parts.read_parts: unreadable or foreign files are
   left in place and reported; a part whose stamp changed meanwhile waits for the next time),
   and stream them into files of about `file_rows` rows, each written, fsync'd and renamed.
   Once a table has more than `max_files` files, its small ones are merged into the new one.
4. COMMIT: the new manifest, atomically. Older files holding a re-compacted key list it as
   `excluded`; merged files go to `retired`. A tombstone (keys.delete_part) keeps no row: its
   key is only excluded from the older files.
5. retire the covered loose parts: rename to a hidden name (atomic: exactly one version), then
   unlink if it is the covered version, else link it back (a writer replaced it meanwhile: it
   stays the newest, and link() never overwrites an even newer one); empty run folders go.
6. delete retired compacted files `grace` seconds after they left the manifest.

A crash before 4 leaves only unlisted files (deleted at 1); after 4, covered loose parts are
still there and readers prefer them to the compacted copy (the same rows, read once); step 2
of the next compaction retires them.
"""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from . import manifest as mf
from .atomic import atomic_path
from .layout import SCHEMA_KEY, Stamp, list_table, retire_path, retired_part, split_key
from .parts import HIDDEN_KEY, is_tombstone, read_parquet, read_parts, write_tombstone
from .schema import DONE_STATUSES

LOCK = ".compact.lock"


@dataclass
class Report:
    """What one compaction did to one table."""
    table: str
    compacted_parts: int = 0
    retired_parts: int = 0
    rows: int = 0
    files_written: int = 0
    merged_files: int = 0
    skipped: list = field(default_factory=list)  # (path, reason): left in place, reported
    busy: bool = False  # another compactor held the lock: nothing done

    def summary(self) -> dict:
        return {k: v for k, v in vars(self).items() if v}


class DoneKeys(set):
    """Run ids whose parts are final; `universe`: every run id in the runs table (a key not in
    it, e.g. 'study', is not a run and is compacted once its parts are old enough)."""

    def __init__(self, done, universe):
        super().__init__(done)
        self.universe = set(universe)

    def final(self, key: str) -> bool:
        return key != SCHEMA_KEY and (key in self or key not in self.universe)


def done_keys(runs: pa.Table, statuses=DONE_STATUSES) -> DoneKeys:
    """DoneKeys from the runs table (Arrow): runs whose status is done."""
    ids = runs.column("run_id")
    mask = pc.fill_null(pc.is_in(runs.column("status"), pa.array(list(statuses))), False)
    return DoneKeys(pc.filter(ids, mask).to_pylist(), ids.to_pylist())


def _reached(step: str) -> None:
    """Each step's end (tests replace this to kill the process there)."""


@contextmanager
def compaction_lock(tables_dir: Path):
    """The store's one compactor: yields False (do nothing) when another one holds the lock."""
    tables_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(tables_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


@dataclass
class Settings:
    min_age: float = 60.0       # seconds a part must be untouched
    max_files: int = 6          # more files than this: merge the small ones
    merge_rows: int = 2_000_000  # a file below this many rows is small
    file_rows: int = 8_000_000  # rows per compacted file
    grace: float = 600.0        # seconds a retired file stays for readers of an old manifest
    clock: object = time.time


def compact(root, tables, done: DoneKeys, **settings) -> list[Report]:
    """Compact `tables` of the store at `root`; `done`: keys whose parts are final."""
    tables_dir = Path(root) / "tables"
    cfg = Settings(**settings)
    with compaction_lock(tables_dir) as mine:
        if not mine:
            return [Report(t, busy=True) for t in tables]
        return [_Table(tables_dir, t, cfg).run(done) for t in tables]


class _Table:
    def __init__(self, tables_dir: Path, table: str, cfg: Settings):
        self.tables_dir, self.table, self.cfg = tables_dir, table, cfg
        self.cdir = mf.compacted_dir(tables_dir, table)
        self.rep = Report(table)

    def run(self, done: DoneKeys) -> Report:
        self.cdir.mkdir(parents=True, exist_ok=True)
        man = mf.load(self.tables_dir, self.table)
        self._recover(man)
        index = _key_index(self.tables_dir, self.table, man)  # key -> (file name, Stamp)
        listing = list_table(self.tables_dir, self.table)
        for hidden in listing.retiring:
            _settle(hidden, index)
        take, retire_only = self._choose(listing, index, done)
        merge = _to_merge(man, self.cfg.max_files, self.cfg.merge_rows)
        if take or merge or retire_only:
            man, covered = self._write_and_commit(man, index, take, merge)
            covered.update(retire_only)
            for i, (path, stamp) in enumerate(sorted(covered.values())):
                _retire(path, stamp, self.table)
                self.rep.retired_parts += 1
                if i == len(covered) // 2:
                    _reached("retiring")
        self._collect(man)
        return self.rep

    def _recover(self, man: dict) -> None:
        listed = {e[k] for e in man["files"] + man["retired"] for k in ("name", "index")}
        for p in self.cdir.iterdir():
            if p.name.endswith(".tmp") or (p.name.endswith(".parquet") and p.name not in listed):
                p.unlink(missing_ok=True)

    def _choose(self, listing, index, done) -> tuple[dict, dict]:
        now = self.cfg.clock()
        take, retire_only = {}, {}
        for key, (path, stamp) in sorted(listing.parts.items()):
            if not done.final(split_key(key)[0]) or now - stamp.mtime_ns / 1e9 < self.cfg.min_age:
                continue
            if key in index and index[key][1] == stamp:
                retire_only[key] = (path, stamp)
            else:
                take[key] = (path, stamp)
        return take, retire_only

    def _write_and_commit(self, man, index, take, merge) -> tuple[dict, dict]:
        gen = man["generation"] + 1
        sources = [(key, 0, stamp, path) for key, (path, stamp) in take.items()]
        for entry in merge:  # rows of merged files; a loose version (read below) comes first
            sources += [(key, 1, Stamp(ino, size, mt), (entry["name"], off, n))
                        for key, ino, size, mt, off, n in mf.index_rows(
                            self.tables_dir, self.table, entry, mf.INDEX_SCHEMA.names)]
        sources.sort(key=lambda s: (s[0], s[1]))
        reader = _Prefetch(self.table, [(k, w, st) for k, src, st, w in sources if src == 0],
                           self.rep)
        entries, chunk, rows, last, opened, held = [], [], 0, None, {}, {}
        new_keys = set()  # keys whose loose part was read: they leave older files
        for key, _, stamp, where in sources:
            if key == last:
                continue  # the loose version of this key was read: the merged copy is older
            tbl = reader.get(key) if not isinstance(where, tuple) else _slice(where, self.cdir,
                                                                                opened)
            if tbl is None:
                continue
            last = key
            if key in take:
                new_keys.add(key)
                if is_tombstone(tbl):
                    continue  # a deletion keeps no row
            chunk.append((key, stamp, tbl))
            rows += tbl.num_rows
            if rows >= self.cfg.file_rows:
                entries.append(self._write_file(f"{gen:06d}-{len(entries)}", chunk, held))
                chunk, rows = [], 0
        if chunk:
            entries.append(self._write_file(f"{gen:06d}-{len(entries)}", chunk, held))
        self.rep.files_written = len(entries)
        gone = set()
        for e in entries:  # parts deleted (unlinked) since they were read keep no row
            e["excluded"] = sorted(k for k in held[e["name"]]
                                   if k in take and not take[k][0].exists())
            gone.update(e["excluded"])
        # COMMIT: older files give up the keys read again; merged files are retired
        merged = {e["name"] for e in merge}
        files = [{**e, "excluded": sorted(set(e["excluded"]) | {
            k for k in new_keys if index.get(k, (None,))[0] == e["name"]})}
            for e in man["files"] if e["name"] not in merged]
        retired = man["retired"] + [{"name": e["name"], "index": e["index"],
                                     "at": self.cfg.clock()} for e in merge]
        man = {**man, "generation": gen, "files": files + entries, "retired": retired}
        mf.save(self.tables_dir, self.table, man)
        self.rep.compacted_parts = len(new_keys)
        self.rep.rows = sum(e["rows"] for e in entries)
        self.rep.merged_files = len(merge)
        _reached("committed")
        return man, {k: take[k] for k in new_keys - gone}

    def _write_file(self, name: str, chunk, held: dict) -> dict:
        keys = [k for k, _, _ in chunk]
        held[f"{name}.parquet"] = keys
        counts = np.array([t.num_rows for _, _, t in chunk], dtype=np.int64)
        data = pa.concat_tables([t.replace_schema_metadata(None) for _, _, t in chunk])
        data = data.append_column(HIDDEN_KEY, pa.DictionaryArray.from_arrays(
            pa.array(np.repeat(np.arange(len(keys), dtype=np.int32), counts)), pa.array(keys)))
        index = pa.table({"key": keys, "ino": [s.ino for _, s, _ in chunk],
                          "size": [s.size for _, s, _ in chunk],
                          "mtime_ns": [s.mtime_ns for _, s, _ in chunk],
                          "offset": np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
                          "rows": counts}, schema=mf.INDEX_SCHEMA)
        for tbl, final in ((data, f"{name}.parquet"), (index, f"{name}.index.parquet")):
            with atomic_path(self.cdir / final) as tmp, open(tmp, "wb") as fh:
                pq.write_table(tbl, fh, row_group_size=131072)
                fh.flush()
                os.fsync(fh.fileno())
        mf.fsync_dir(self.cdir)
        _reached("file-written")
        return {"name": f"{name}.parquet", "index": f"{name}.index.parquet",
                "rows": int(counts.sum()), "keys": len(keys), "excluded": []}

    def _collect(self, man: dict) -> None:
        """Delete compacted files retired more than `grace` seconds ago."""
        now = self.cfg.clock()
        gone = [e for e in man["retired"] if now - e["at"] > self.cfg.grace]
        if not gone:
            return
        mf.save(self.tables_dir, self.table,
                {**man, "retired": [e for e in man["retired"] if e not in gone]})
        for e in gone:
            (self.cdir / e["name"]).unlink(missing_ok=True)
            (self.cdir / e["index"]).unlink(missing_ok=True)


def _to_merge(man, max_files, merge_rows) -> list:
    """The small files, once a new file would make more than max_files."""
    small = [e for e in man["files"] if e["rows"] < merge_rows]
    return small if (len(man["files"]) + 1 > max_files and len(small) > 1) else []


def _slice(where, cdir, opened):
    """The rows of one key in a compacted file being merged (one file open at a time: merged
    files are read in key order)."""
    name, off, n = where
    if name not in opened:
        opened.clear()
        opened[name] = read_parquet(cdir / name).drop_columns([HIDDEN_KEY])
    return opened[name].slice(off, n)


class _Prefetch:
    """Loose parts read in batches of 2,000 in key order; unreadable or foreign ones are
    reported and left in place."""

    def __init__(self, table, order, rep, batch=2000):
        self.table, self.order, self.rep, self.batch = table, order, rep, batch
        self.pos, self.cache = {k: i for i, (k, _, _) in enumerate(order)}, {}

    def get(self, key):
        if key not in self.cache:
            i = self.pos[key]
            chunk = {k: (p, st) for k, p, st in self.order[i:i + self.batch]}
            self.cache = dict.fromkeys(chunk)
            tables, bad = read_parts(chunk, self.table, exact=True)
            self.cache.update(tables)
            self.rep.skipped += sorted(bad.items())
        return self.cache.get(key)


def _key_index(tables_dir, table, man) -> dict:
    """key -> (file name, Stamp of the loose part it was compacted from)."""
    return {key: (e["name"], Stamp(ino, size, mt)) for e in man["files"]
            for key, ino, size, mt in mf.index_rows(tables_dir, table, e,
                                                    ("key", "ino", "size", "mtime_ns"))}


def _retire(path: Path, stamp: Stamp, table: str) -> None:
    """Remove a loose part only if it is still the version the manifest holds."""
    hidden = retire_path(path)
    try:
        os.rename(path, hidden)
    except FileNotFoundError:  # deleted since it was read (after the check before the commit)
        _tombstone_if_absent(path, table)
        return
    _settle(hidden, {f"{path.parent.name}/{path.stem}": (None, stamp)})


def _tombstone_if_absent(path: Path, table: str) -> None:
    """A tombstone at `path` unless a part exists there (link() never overwrites)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tombstone.tmp"
    write_tombstone(tmp, table)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _settle(hidden: Path, index: dict) -> None:
    """A part renamed for retirement: deleted if covered, else put back unless a newer version
    exists (link() never overwrites); the run's folder goes once empty."""
    path = retired_part(hidden)
    try:
        st = Stamp.of(os.stat(hidden))
    except FileNotFoundError:
        return
    covered = index.get(f"{path.parent.name}/{path.stem}")
    if covered is None or covered[1] != st:
        try:
            os.link(hidden, path)
        except FileExistsError:
            pass
    os.unlink(hidden)
    try:
        os.rmdir(hidden.parent)
    except OSError:
        pass
