"""Lab: one run's checkpoints (and whether their files exist) and its stored analyses."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd
import streamlit as st

from landscape_lib.store import TABLES

from .core import TTL, check, query


@st.cache_data(ttl=TTL, show_spinner=False)
def checkpoints(root: str, run_id: str) -> pd.DataFrame:
    """The run's saved checkpoints: epoch, path (relative to the store) and whether the file
    is there."""
    df = query(root, "SELECT epoch, any_value(path) AS path FROM checkpoints WHERE run_id = ? "
                     "AND kind = 'checkpoint' GROUP BY epoch ORDER BY epoch", [run_id],
               run_id=run_id)
    df["epoch"] = df["epoch"].astype(int)
    df["exists"] = [bool(p) and (Path(root) / p).is_file() for p in df["path"]]
    return df


def analyses(root: str, run_id: str) -> pd.DataFrame:
    """Every `analyses` row of a run, newest first; never cached (the Lab polls it)."""
    return query(root, """
        SELECT * FROM analyses WHERE run_id = ?
        ORDER BY started_at DESC NULLS LAST, analysis_id DESC""", [run_id], run_id=run_id)


def analysis_result(root: str, run_id: str, analysis_id: str,
                    tables: Iterable[str]) -> dict[str, pd.DataFrame]:
    """The rows of one analysis in each of `tables` (read from the run's own parts)."""
    return {t: query(root, f"SELECT * FROM {check([t], TABLES, 'table')[0]} "
                           "WHERE analysis_id = ?", [analysis_id], run_id=run_id)
            for t in tables}
