"""Stores for the store's own tests: written by the library's writer (`Store.write`) through
bench/gen_store.py's RunMaker (row templates of a real `train-all` run), and an independent
reference reader (DuckDB over an explicit list of the loose part files)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from conftest import REPO
from landscape_lib.store import TABLES, Store

_SPEC = importlib.util.spec_from_file_location("gen_store", REPO / "bench" / "gen_store.py")
gen_store = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(gen_store)

# Compaction in a subprocess (min_age 0), optionally killed with SIGKILL at one of its steps;
# `grace` 0 (default here): merged files are deleted at once, the harshest case for its steps.
COMPACT = """
import os, sys
import landscape_lib.store.compact as c
from landscape_lib.store import Store, TABLES
crash = os.environ.get("CRASH_AT")
if crash:
    c._reached = lambda step: os.kill(os.getpid(), 9) if step == crash else None
root = Store(sys.argv[1])
c.compact(root.root, list(TABLES), c.done_keys(root.reader().table("runs")), min_age=0,
          max_files=int(sys.argv[2]), merge_rows=10**9, grace=float(sys.argv[3]))
"""


def make_store(root, runs=12, epochs=6) -> Store:
    """`runs` runs (a quarter still running), their analyses, written part by part."""
    store = Store(root).ensure()
    maker = gen_store.RunMaker(gen_store.read_templates(), epochs, runs)
    for i in range(runs):
        maker.write(store, i)
    return store


def reference_rows(root) -> dict[str, pd.DataFrame]:
    """Every table of a store of loose parts only, read by DuckDB from the explicit file list
    (not the store's reader): the reference the reader must equal, before and after
    compaction."""
    out, con = {}, duckdb.connect()
    for t in TABLES:
        d = Path(root) / "tables" / t
        files = sorted(str(p) for p in d.glob("*/*.parquet"))
        cols = ", ".join(f'"{c}"' for c in TABLES[t])
        out[t] = con.sql(f"SELECT {cols} FROM read_parquet(?, union_by_name = true)",
                         params=[files]).df()
    return out


def canon(df: pd.DataFrame) -> list[tuple]:
    """Rows as sorted tuples of strings (NaN/NULL alike), for exact multiset comparison."""
    return sorted(tuple("∅" if pd.isna(v) else repr(v) for v in row)
                  for row in df.astype(object).itertuples(index=False))


def assert_same(got: dict, want: dict) -> None:
    for t in TABLES:
        assert canon(got[t][list(TABLES[t])]) == canon(want[t]), t


def reader_rows(root) -> dict[str, pd.DataFrame]:
    """Every table through a fresh StoreReader (no process-wide cache)."""
    from landscape_lib.store import StoreReader
    r = StoreReader(root)
    return {t: r.query(f'SELECT * FROM "{t}"') for t in TABLES}


def run_compact(root, max_files=6, crash=None, kill_after=None, grace=0.0) -> int:
    env = {**os.environ, "PYTHONPATH": str(REPO), **({"CRASH_AT": crash} if crash else {})}
    p = subprocess.Popen([sys.executable, "-c", COMPACT, str(root), str(max_files), str(grace)],
                         env=env)
    if kill_after is not None:
        try:
            p.wait(kill_after)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGKILL)
    return p.wait()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A 12-run store (3 running) and its reference rows, written once per test module."""
    root = tmp_path_factory.mktemp("written") / "store"
    make_store(root)
    return root, reference_rows(root)


@pytest.fixture
def small(written, tmp_path):
    """A fresh copy of `written` for one test: (root, reference rows)."""
    root, before = written
    shutil.copytree(root, tmp_path / "store")
    return tmp_path / "store", before
