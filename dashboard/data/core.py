"""Plumbing of the data layer: the store's connection and snapshots, the sidebar's filters and
the SQL of the filtered runs that every other module builds on.

One `StoreReader` per store root is cached for the process (`st.cache_resource`): the store's
own Arrow snapshot of its tables (loose and compacted parts, re-read part by part as files
change, bad files skipped and listed; the CLI reads through the same class). Each query runs on
its own cursor with the tables it reads registered from the snapshot, and its result is cached
for a few seconds (`st.cache_data`, keyed by the store root and the filter values).

All SQL takes user values as parameters (`?`); lists go in as one list parameter tested with
`list_contains(?, col)`, or a few values on a disk table as `col IN (?, ?, ...)` (`marks`).
Names that vary (a chosen metric, a group-by key) are checked against fixed lists first, so no
user text ever becomes SQL.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterable, NamedTuple

import pandas as pd
import streamlit as st

from landscape_lib.errors import StoreError
from landscape_lib.store import Store, StoreReader

TTL = 3  # seconds a query result is reused; new rows show up after at most this long
REFRESH = 2.0  # seconds a table's snapshot is used before its files are checked again
MAX_POINTS = 1200  # rows per curve chart (every k-th epoch beyond): a browser on 2 CPU cores
# draws 2,000 rows of lines in about a second; Altair refuses more than 5,000

# Tables the pages read across runs, loaded in the background when a store is first opened.
PRELOAD = ("runs", "epochs", "hessian_summary", "analyses", "surface_summary", "hessian_eigs",
           "surface_points", "attention_jsd", "attention_hessian", "checkpoints")


class Filters(NamedTuple):
    """The sidebar's selection; empty means "all"."""
    studies: tuple = ()
    datasets: tuple = ()
    archs: tuple = ()
    model_labels: tuple = ()
    inits: tuple = ()
    optimizers: tuple = ()
    statuses: tuple = ()
    seeds: tuple = ()
    text: str = ""


FILTER_COLUMNS = {"studies": "study", "datasets": "data_set", "archs": "arch",
                  "model_labels": "model_label", "inits": "init", "optimizers": "optimizer",
                  "statuses": "status", "seeds": "seed"}


# ----------------------------------------------------------------------------- connection
def store_root() -> str:
    """The store shown: $LANDSCAPE_STORE, else runs/store (resolved now, so tests can switch)."""
    return str(Store().root)


@st.cache_resource(show_spinner=False, max_entries=8)
def _store(root: str) -> StoreReader:
    """The process-wide snapshot of one store; PRELOAD tables load in a background thread
    (data only, no Streamlit calls), so the first visit of a page finds them ready."""
    Store(root).check_version()
    reader = StoreReader(root, refresh_every=REFRESH)

    def load():
        for name in PRELOAD:
            try:
                reader.refresh([name])  # a disk table: its loose parts only
            except StoreError:
                return
    threading.Thread(target=load, name="landscape-preload", daemon=True).start()
    return reader


def refresh(root: str) -> None:
    """Forget cached results and re-check the store's files now (e.g. after a Lab analysis)."""
    _store(root).invalidate()
    st.cache_data.clear()


def first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def query(root: str, sql: str, params: Iterable = (), run_id: str | None = None
          ) -> pd.DataFrame:
    """Run one parameterised query over the store's snapshot (the tables the SQL reads are
    found by DuckDB's parser); with `run_id`, those tables' files are checked first, so a run's
    own newest rows are seen now. Problems become StoreError."""
    reader = _store(root)
    tables = reader.tables_in(sql) if run_id is not None else None
    if tables:
        reader.refresh(tables)
    return reader.query(sql, list(params))


_SEEN: dict[tuple[str, str], tuple[object, int]] = {}  # (root, table) -> (snapshot held, number)
_SEEN_LOCK = threading.Lock()


def versions(root: str, tables: Iterable[str] = ("runs",)) -> tuple[int, ...]:
    """Numbers that change whenever one of `tables` does (tables held in memory): the reader
    replaces its Arrow snapshot of a table when any of its files changes (checked every REFRESH
    seconds), so a new snapshot object means new rows. Keys the caches of results costly at
    10,000 runs (the run list, the study report), so that they are made once per change, not
    once per page visit (each snapshot is held here, so its identity cannot be reused by
    another object)."""
    reader, out = _store(root), []
    for name in tables:
        if name in reader.disk_tables:  # read from its files at each use: no snapshot to key
            raise ValueError(f"{name} is not held in memory: it has no version")
        table = reader.table(name)
        with _SEEN_LOCK:
            held, number = _SEEN.get((root, name), (None, 0))
            if held is not table:
                _SEEN[root, name] = table, number + 1
            out.append(_SEEN[root, name][1])
    return tuple(out)


def by_version(*tables: str):
    """st.cache_data for a query function `fn(root, ...)` that reads only `tables` (tables
    held in memory, not DISK_TABLES): a result is kept until one of them changes (versions()),
    not for TTL seconds, so that a page visited again finds its costly results ready."""
    def wrap(fn):
        def cached(version, root, *args, **kwargs):
            return fn(root, *args, **kwargs)
        # st.cache_data keys a function by its module, name and source: those of `fn`
        cached.__module__, cached.__qualname__ = fn.__module__, fn.__qualname__
        cached = st.cache_data(max_entries=64, show_spinner=False)(cached)

        @functools.wraps(fn)
        def call(root: str, *args, **kwargs):
            return cached(versions(root, tables), root, *args, **kwargs)
        call.clear = cached.clear
        return call
    return wrap


def problems(root: str) -> dict[str, str]:
    """Files the snapshot skipped (corrupt, foreign, stray): {path: reason}."""
    return _store(root).problems


def check(names: Iterable[str], allowed: Iterable[str], what: str) -> list[str]:
    """`names` if every one is in `allowed` (a fixed list), else StoreError: the guard that
    keeps user text out of SQL identifiers."""
    names, allowed = list(names), set(allowed)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise StoreError(f"unknown {what}: {', '.join(map(str, bad))}")
    return names


def marks(values) -> str:
    """Placeholders for `col IN (...)` over a few values (one `?` each; NULL for none): on a
    table read from Parquet at each query, DuckDB pushes such a filter into the scan, which
    list_contains(?, col) is not (0.02 s instead of 0.2 s on 9 million surface points)."""
    return ", ".join("?" * len(values)) or "NULL"


def finite(expr: str) -> str:
    """NULL for NaN and infinities, so aggregates skip diverged values."""
    return f"CASE WHEN isfinite({expr}) THEN {expr} END"


@by_version("runs")
def run_count(root: str) -> int:
    return int(query(root, "SELECT count(DISTINCT run_id) AS n FROM runs")["n"].iloc[0])


def store_status(root: str) -> tuple[str, str]:
    """("ok" | "missing" | "empty" | "error", message) for the guidance shown instead of pages."""
    if not Store(root).exists():
        return "missing", f"There is no store at `{root}` yet."
    try:
        n = run_count(root)
    except StoreError as exc:
        return "error", str(exc)
    return ("ok", f"{n} runs") if n else ("empty", f"The store at `{root}` has no runs yet.")


@contextlib.contextmanager
def guard():
    """Show a store that cannot be read as a message, not a traceback (pages, fragments)."""
    try:
        yield
    except StoreError as exc:
        st.error(f"The store cannot be read. {exc}", icon=":material/error:")


def context() -> tuple[str, Filters, list[str]]:
    """(store root, sidebar filters, runs to compare), set by app.py on every run."""
    return st.session_state["context"]


# ----------------------------------------------------------------------------- filtered runs
# The newest row of each run, with `data_set`: the data set's name, or for a folder data set
# the name of its folder (config dataset_options.path).
RUNS = r"""
    SELECT *, CASE WHEN dataset = 'folder' THEN coalesce(nullif(regexp_extract(
                  json_extract_string(config_json, '$.dataset_options.path'),
                  '([^/\\]+)[/\\]*$', 1), ''), 'folder') ELSE dataset END AS data_set
    FROM runs QUALIFY row_number() OVER
        (PARTITION BY run_id ORDER BY updated_at DESC NULLS LAST) = 1"""


def filtered_runs(f: Filters) -> tuple[str, list]:
    """SQL of the runs that pass the filters (one row per run) and its parameters."""
    clauses, params = [], []
    for field, col in FILTER_COLUMNS.items():
        values = list(getattr(f, field))
        if values:
            clauses.append(f"list_contains(?, {col})")
            params.append(values)
    if f.text.strip():
        clauses.append("(contains(lower(run_id), ?) OR contains(lower(coalesce(study, '')), ?)"
                       " OR contains(lower(coalesce(tags, '')), ?))")
        params += [f.text.strip().lower()] * 3
    where = " AND ".join(clauses) or "true"
    return f"SELECT * FROM ({RUNS}) WHERE {where}", params


def with_runs(f: Filters) -> tuple[str, list]:
    """`WITH r AS (filtered runs)` and its parameters: the head of most page queries."""
    sql, params = filtered_runs(f)
    return f"WITH r AS ({sql})", params


@by_version("runs")
def filter_options(root: str) -> pd.DataFrame:
    """Distinct combinations of the filterable columns (for the sidebar's choices)."""
    cols = ", ".join(dict.fromkeys(FILTER_COLUMNS.values()))
    return query(root, f"SELECT DISTINCT {cols} FROM ({RUNS})")


def options_for(combos: pd.DataFrame, column: str, where: dict | None = None) -> list:
    """Sorted choices of `column`, restricted to combos matching `where` {column: values}."""
    rows = combos
    for col, values in (where or {}).items():
        if values:
            rows = rows[rows[col].isin(values)]
    return sorted(rows[column].dropna().unique().tolist())
