"""Surfaces: 2-D loss surfaces (catalogue, grid points, summaries, spread over direction seeds)
and the row tables of the analyses derived from them (interpolation, trajectory, wavelets,
persistence, Gaussian fit, optimizer paths)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from landscape_lib.store import TABLES
from landscape_lib.store.queries import SURFACE_SEED_SPREAD

from .core import TTL, by_version, check, marks, query


# A surface's points are written with its summary row (INDEX_OF below) and never change:
# their queries are cached until the summaries or the analyses change.
@by_version("surface_summary", "analyses")
def surfaces(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Every 2-D surface of the runs: analysis_id, run_id, epoch, grid size, directions, their
    seed and normalisation (from the analysis' parameters), newest first."""
    return query(root, f"""
        SELECT p.analysis_id, p.run_id, p.epoch, count(*) AS points,
               max(p.i) + 1 AS nx, max(p.j) + 1 AS ny, any_value(s.directions) AS directions,
               any_value(s.dir_seed) AS dir_seed,
               any_value(json_extract_string(a.params_json, '$.normalization')) AS normalization,
               any_value(json_extract_string(a.params_json, '$.span')) AS span,
               any_value(a.started_at) AS started_at
        FROM surface_points p
        LEFT JOIN surface_summary s ON s.analysis_id = p.analysis_id
        LEFT JOIN analyses a ON a.analysis_id = p.analysis_id
        WHERE p.run_id IN ({marks(run_ids)})
        GROUP BY p.analysis_id, p.run_id, p.epoch
        ORDER BY p.run_id, p.epoch DESC, started_at DESC NULLS LAST""", list(run_ids))


@by_version("surface_summary", "analyses")
def surface_points(root: str, analysis_ids: tuple[str, ...], run_ids: tuple[str, ...]
                   ) -> pd.DataFrame:
    """Grid points (i, j, x, y, loss, acc) of the given surfaces of the given runs (the run ids
    let the scan skip the other runs' row groups: compacted files are in run order)."""
    return query(root, f"""SELECT analysis_id, run_id, epoch, i, j, x, y, loss, acc
                           FROM surface_points WHERE run_id IN ({marks(run_ids)})
                           AND analysis_id IN ({marks(analysis_ids)})
                           ORDER BY analysis_id, i, j""", [*run_ids, *analysis_ids])


@st.cache_data(ttl=TTL, show_spinner=False)
def surface_summary(root: str, analysis_ids: tuple[str, ...]) -> pd.DataFrame:
    return query(root, "SELECT * FROM surface_summary WHERE list_contains(?, analysis_id) "
                       "ORDER BY analysis_id", [list(analysis_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def surface_seed_spread(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Surface summaries over direction seeds: mean and std per run, epoch and directions."""
    return query(root, SURFACE_SEED_SPREAD, [list(run_ids)])


ROW_ORDER = {
    "interpolation": "run_id, epoch, epoch_b, alpha",
    "trajectory": "run_id, method, analysis_id, point_epoch",
    "wavelets": "run_id, analysis_id, level, kind",
    "persistence": "run_id, analysis_id, dim, birth",
    "gauss_fit": "run_id, epoch, analysis_id",
    "optimizer_paths": "run_id, analysis_id, surface, optimizer, step",
    "attention_jsd": "run_id, epoch, layer, head",
}


@st.cache_data(ttl=TTL, show_spinner=False)
def rows_for_runs(root: str, table: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """All rows of an analysis result table (one of ROW_ORDER) for the given runs."""
    check([table], ROW_ORDER, "table")
    return query(root, f"SELECT * FROM {table} WHERE list_contains(?, run_id) "
                       f"ORDER BY {ROW_ORDER[table]}", [list(run_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def standalone_rows(root: str, table: str) -> pd.DataFrame:
    """Rows of an analysis result table that belong to no run (stand-alone studies, written
    under the pseudo run id "study")."""
    check([table], ROW_ORDER, "table")
    return query(root, f"SELECT * FROM {table} WHERE run_id IS NULL OR run_id NOT IN "
                       f"(SELECT run_id FROM runs) ORDER BY {ROW_ORDER[table]}")


# A large table -> the small one written by the same analysis run, with the same run ids
# (landscape_lib.analyses.runners.surfaces writes a surface's points and its summary together).
INDEX_OF = {"surface_points": "surface_summary"}


@st.cache_data(ttl=TTL, show_spinner=False)
def runs_with(root: str, table: str, run_ids: tuple[str, ...]) -> list[str]:
    """The given runs that have rows in `table` (order kept). A table read from disk at each
    query is looked up in the small table its analysis writes with it (a surface's summary
    row): testing thousands of run ids against millions of grid points takes seconds."""
    check([table], TABLES, "table")
    source = INDEX_OF.get(table, table)
    have = set(query(root, f"SELECT DISTINCT run_id FROM {source} WHERE list_contains(?, run_id)",
                     [list(run_ids)])["run_id"])
    return [r for r in run_ids if r in have]
