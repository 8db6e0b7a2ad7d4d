"""Each optimizer at its best learning rate (issue 10: a fair optimizer comparison).

The rule is the library's (`landscape_lib.store.comparisons`: mean over seeds per setting, a
setting where a seed diverged ranks below every setting where none did, `at_edge` when the best
rate is the smallest or largest tried) and so is the query (`queries.RUNS_FOR_LR_SELECTION`);
here they run over the dashboard's snapshots, and each mean gets its 95% Student-t interval
over the seeds it averages (clipped to the metric's range).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from landscape_lib.store import comparisons, queries
from landscape_lib.store.schema import DONE_STATUSES

from .. import stats
from .core import TTL, query

METRICS = queries.LR_METRICS  # what a rate may be chosen on
KINDS = {"final_val_acc": "fraction", "best_val_acc": "fraction", "final_val_loss": "nonneg"}
SETTING = [*comparisons.LR_CELL, *comparisons.LR_SETTING]


class _Snapshots:
    """The `store.query(sql, params)` the library's query functions call, answered from the
    dashboard's snapshots (the same SQL text as `Store.query` would run)."""

    def __init__(self, root: str):
        self.root = root

    def query(self, sql: str, params=None) -> pd.DataFrame:
        return query(self.root, sql, params or ())


def _runs(root: str, study: str) -> pd.DataFrame:
    return query(root, queries.RUNS_FOR_LR_SELECTION, [study])


def _with_interval(df: pd.DataFrame, runs: pd.DataFrame, metric: str, mean: str,
                   lr: str = "lr") -> pd.DataFrame:
    """`df` (one row per setting; its rate in column `lr`, its mean in `mean`) with `lo`, `hi`:
    the 95% interval of the mean over the seeds that have a value (`n_values`)."""
    done = runs[runs["status"].isin(DONE_STATUSES)]
    counts = (done.groupby(SETTING, dropna=False)[metric].count().rename("n_values")
              .reset_index().rename(columns={"lr": lr}))
    df = df.merge(counts, on=[*comparisons.LR_CELL, lr, "weight_decay"], how="left")
    half = stats.t_quantile(df["n_values"].fillna(0)) * df["se"]
    low, high = stats.RANGES[KINDS[metric]]
    df["lo"], df["hi"] = np.clip(df[mean] - half, low, high), np.clip(df[mean] + half, low, high)
    return df


@st.cache_data(ttl=TTL, show_spinner=False)
def best(root: str, study: str, metric: str = "final_val_acc") -> pd.DataFrame:
    """One row per (study, dataset, model_label, optimizer): best_lr, weight_decay, the
    metric's mean over seeds with se, n, n_diverged, lrs_tried, at_edge (the library's
    `optimizers_at_best_lr`), plus lo, hi and n_values."""
    df = queries.optimizers_at_best_lr(_Snapshots(root), study, metric)
    if df.empty:
        return df
    return _with_interval(df, _runs(root, study), metric, metric, lr="best_lr")


@st.cache_data(ttl=TTL, show_spinner=False)
def curves(root: str, study: str, metric: str = "final_val_acc") -> pd.DataFrame:
    """Every setting tried (the library's `lr_table`): per cell, lr and weight decay the mean
    over seeds, std, se, n, n_diverged, n_missing, plus lo, hi, n_values and `best` (the
    setting chosen)."""
    runs = _runs(root, study)
    if runs.empty:
        return pd.DataFrame()
    table = _with_interval(comparisons.lr_table(runs, metric), runs, metric, "mean")
    chosen = best(root, study, metric)[[*comparisons.LR_CELL, "best_lr", "weight_decay"]]
    table = table.merge(chosen.rename(columns={"best_lr": "lr"}).assign(best=True),
                        on=SETTING, how="left")
    table["best"] = table["best"].fillna(False).astype(bool)
    return table
