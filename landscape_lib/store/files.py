"""Writing and reading the store's Parquet parts.

Why Parquet parts and not one DuckDB file: DuckDB lets one process write a database file and no
other process open it meanwhile, not even read-only. Training workers, analyses and the dashboard
run at once, so each writer owns its own files (`tables/<table>/<run_id>/<part>.parquet`), replaces
them atomically (write a temporary file, then `os.replace`); readers (reader.py) read each part
through one open handle, so they see either the old or the new version of a part, never half of
one, and no process ever waits on a lock.
"""
from __future__ import annotations

import re
from pathlib import Path

import duckdb

from ..errors import StoreError
from .atomic import atomic_path, write_error
from .schema import KEYS, TABLES, columns

_SAFE = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _sql_str(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def part_path(tables_dir: Path, table: str, key: str, part: str) -> Path:
    columns(table)  # validates the table name
    for name in (key, part):
        if not _SAFE.match(str(name)):
            raise StoreError(f"invalid store key '{name}' (letters, digits, '.', '_', '-')")
    return tables_dir / table / key / f"{part}.parquet"


def _select_list(table: str, present: set[str]) -> str:
    """A SELECT list casting every schema column; absent ones become typed NULLs."""
    cols = columns(table)
    extra = present - set(cols)
    if extra:
        raise StoreError(f"table '{table}' has no column(s) {sorted(extra)}")
    return ", ".join(
        f'CAST("{c}" AS {t}) AS "{c}"' if c in present else f'CAST(NULL AS {t}) AS "{c}"'
        for c, t in cols.items())


def check_unique(table: str, df: pd.DataFrame) -> None:
    """Refuse rows that repeat a key of the table (`schema.KEYS`): a bug, stopped loudly."""
    key = [c for c in KEYS.get(table, ()) if c in df.columns]
    if not key or len(key) < len(KEYS[table]) or df.empty:
        return
    repeated = df[df.duplicated(key, keep=False)]
    if len(repeated):
        first = ", ".join(f"{c}={v}" for c, v in repeated.iloc[0][key].items())
        raise StoreError(f"refusing to write {len(repeated)} rows of '{table}' with the same key "
                         f"({first}): each row is stored once")


def write_part(path: Path, table: str, rows: pd.DataFrame | list[dict]) -> None:
    """Atomically (re)write one part file with the table's typed columns.

    A write error (full disk, permissions) raises `StoreWriteError`; rows repeating a key
    raise `StoreError` and nothing is written.
    """
    import pandas as pd  # here: readers (e.g. the `runs` command) never import pandas
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    check_unique(table, df)
    con = duckdb.connect()
    try:
        if len(df.columns):
            con.register("frame", df)
            query = f"SELECT {_select_list(table, set(df.columns))} FROM frame"
        else:  # a zero-row typed part
            query = f"SELECT {_select_list(table, set())} WHERE false"
        with atomic_path(path) as tmp:
            con.execute(f"COPY ({query}) TO {_sql_str(tmp)} (FORMAT parquet)")
    except (OSError, duckdb.IOException) as exc:
        raise write_error(path, exc) from None
    finally:
        con.close()
