"""Attention: attention-Hessian sweeps (per run or stand-alone) and their block histograms.
(Per-head attention divergence rows come from surfaces.rows_for_runs.)"""
from __future__ import annotations

import pandas as pd
import streamlit as st

from .core import TTL, query


@st.cache_data(ttl=TTL, show_spinner=False)
def attention_hessian_sweeps(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Attention-Hessian sweeps of the runs, plus sweeps not tied to any run in the store
    (the single-block experiment is often run on its own)."""
    return query(root, """
        SELECT analysis_id, any_value(run_id) AS run_id, any_value(epoch) AS epoch,
               count(*) AS rows, min(scale) AS min_scale, max(scale) AS max_scale
        FROM attention_hessian
        WHERE list_contains(?, run_id) OR run_id IS NULL
              OR run_id NOT IN (SELECT run_id FROM runs)
        GROUP BY analysis_id ORDER BY analysis_id""", [list(run_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def attention_hessian(root: str, analysis_id: str, parts: tuple[str, ...]) -> pd.DataFrame:
    return query(root, """
        SELECT scale, attention, pre_ln, part, row_block, col_block,
               row_block || '-' || col_block AS block, frobenius
        FROM attention_hessian WHERE analysis_id = ? AND list_contains(?, part)
        ORDER BY attention, pre_ln, part, block, scale""", [analysis_id, list(parts)])


@st.cache_data(ttl=TTL, show_spinner=False)
def attention_hessian_hist(root: str, analysis_id: str) -> pd.DataFrame:
    """Histograms of the entries of each Hessian block (attention kind, part, block, bins)."""
    return query(root, """
        SELECT attention, part, block, bin_left, bin_right, (bin_left + bin_right) / 2 AS bin,
               "count" FROM attention_hessian_hist WHERE analysis_id = ?
        ORDER BY attention, part, block, bin_left""", [analysis_id])


@st.cache_data(ttl=TTL, show_spinner=False)
def attention_hessian_parts(root: str, analysis_id: str) -> list[str]:
    return query(root, "SELECT DISTINCT part FROM attention_hessian WHERE analysis_id = ? "
                       "ORDER BY part", [analysis_id])["part"].tolist()
