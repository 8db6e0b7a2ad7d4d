"""Comparisons across runs that need a rule, not only a query (pandas on rows the store read).

Each optimizer at its best learning rate (issue 10: a fair optimizer comparison): runs are
grouped by comparison cell (study, dataset, model, optimizer) and candidate setting (lr,
weight_decay); the metric is averaged over seeds and, per cell, the setting with the best mean
is chosen. Rules:
- only done runs count (finished or diverged); running, failed and interrupted ones are left
  out and counted in ``n_missing``; a divergence is a result: a setting where any seed
  diverged ranks below every setting where none did (a practitioner would not pick it);
- the metric is the mean over seeds, with n, the standard deviation and the standard error;
- ``at_edge`` is True when the best lr is the smallest or the largest tried in its cell: the
  range should be extended before the comparison is trusted.
Caveat (to show beside the numbers): ``final_val_acc`` is measured on the test split, so
choosing on it and reporting it is optimistic, for every optimizer alike.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import DIVERGED, DONE_STATUSES

LR_CELL = ("study", "dataset", "model_label", "optimizer")
LR_SETTING = ("lr", "weight_decay")


def lr_table(runs: pd.DataFrame, metric: str = "final_val_acc") -> pd.DataFrame:
    """Per cell and setting: mean, std, se and n of ``metric`` over done seeds, n_diverged,
    n_missing (runs not done yet)."""
    keys = list(LR_CELL + LR_SETTING)
    runs = runs.assign(_done=runs["status"].isin(DONE_STATUSES),
                       _diverged=runs["status"].eq(DIVERGED))
    done = runs[runs["_done"]].groupby(keys, dropna=False)
    out = done[metric].agg(["mean", "std", "count"]).rename(columns={"count": "_n_metric"})
    out["n"] = done.size()
    out["n_diverged"] = done["_diverged"].sum().astype(int)
    out["se"] = out["std"] / np.sqrt(out["_n_metric"].where(out["_n_metric"] > 0))
    missing = runs[~runs["_done"]].groupby(keys, dropna=False).size()
    out["n_missing"] = missing.reindex(out.index, fill_value=0).astype(int)
    return out.reset_index().drop(columns="_n_metric")


def best_lr_settings(runs: pd.DataFrame, metric: str = "final_val_acc",
                     higher_is_better: bool = True) -> pd.DataFrame:
    """One row per cell (study, dataset, model_label, optimizer): best_lr, its weight_decay,
    the metric's mean over seeds, se, n, n_diverged, the rates tried and at_edge."""
    table = lr_table(runs, metric)
    sign = 1.0 if higher_is_better else -1.0
    rank = list(zip(table["n_diverged"].eq(0), (sign * table["mean"]).fillna(-np.inf)))
    table["_rank"] = pd.Series(rank, index=table.index, dtype=object)
    rows = []
    for cell, part in table.groupby(list(LR_CELL), dropna=False):
        best = part.loc[max(part.index, key=lambda i: part.at[i, "_rank"])]
        lrs = part["lr"]
        rows.append({**dict(zip(LR_CELL, cell)), "best_lr": best["lr"],
                     "weight_decay": best["weight_decay"], metric: best["mean"],
                     "se": best["se"], "n": int(best["n"]), "n_diverged": int(best["n_diverged"]),
                     "lrs_tried": sorted(lrs.unique().tolist()),
                     "at_edge": bool(lrs.nunique() > 1 and best["lr"] in (lrs.min(), lrs.max()))})
    return pd.DataFrame(rows)
