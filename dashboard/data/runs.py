"""Runs: the run table, the config keys a page can group by, per-epoch curves per run or group."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

from landscape_lib.store import columns

from .core import (MAX_POINTS, TTL, Filters, by_version, check, filtered_runs, finite, query,
                   with_runs)

# Config keys a page can group or filter by: key -> (SQL over the runs relation r, label).
# Run-table columns first, then RunConfig fields that only the stored config_json holds.
_JSON_KEYS = ("momentum", "schedule", "warmup_epochs", "label_smoothing", "grad_clip",
              "train_subset", "augment", "init_options", "optimizer_options", "arch_options")
KEYS = {
    "study": ("r.study", "study"), "data_set": ("r.data_set", "data set"),
    "model_label": ("r.model_label", "model"), "arch": ("r.arch", "architecture"),
    "init": ("r.init", "initializer"), "optimizer": ("r.optimizer", "optimizer"),
    "lr": ("r.lr", "learning rate"), "weight_decay": ("r.weight_decay", "weight decay"),
    "batch_size": ("r.batch_size", "batch size"), "epochs": ("r.epochs", "epochs"),
    "seed": ("r.seed", "seed"),
    **{k: (f"json_extract_string(r.config_json, '$.{k}')", k.replace("_", " "))
       for k in _JSON_KEYS},
}
# Keys shown as bare values in group labels (the others as key=value).
_BARE = {"study", "data_set", "model_label", "arch", "init", "optimizer"}
LABELS = {k: label for k, (_, label) in KEYS.items()}

# The run table: final metrics first, then the configuration, then bookkeeping.
METRIC_COLUMNS = ["final_val_acc", "best_val_acc", "final_val_loss", "final_train_loss",
                  "final_train_acc", "generalization_gap", "total_time", "epochs_done"]
RUN_COLUMNS = (["run_id"] + METRIC_COLUMNS
               + ["status", "study", "data_set", "model_label", "init", "optimizer", "lr",
                  "weight_decay", "batch_size", "seed", "epochs", "diverged_epoch", "arch",
                  "device", "n_params", "tags", "created_at", "updated_at", "error"])
DEFAULT_COLUMNS = ["run_id", "final_val_acc", "final_val_loss", "generalization_gap",
                   "status", "study", "data_set", "model_label", "init", "optimizer", "lr",
                   "seed", "epochs_done"]
MAX_TABLE_ROWS = 2000  # rows sent to the browser's run table (the CSV has them all)

EPOCH_METRICS = [c for c, t in columns("epochs").items()
                 if t in ("DOUBLE", "INTEGER") and c != "epoch"]
# How an interval over runs is taken for each per-epoch metric (see dashboard.stats).
EPOCH_KINDS = {"train_acc": "fraction", "val_acc": "fraction", "avg_eff_rank_ratio": "fraction",
               "train_loss": "positive", "val_loss": "positive", "grad_norm": "positive",
               "weight_norm": "positive", "avg_cond": "positive",
               "avg_spectral_norm": "positive", "lr": "positive", "loss_improvement": "real"}


def metric_kind(metric: str) -> str:
    return EPOCH_KINDS.get(metric, "nonneg")


def key_sql(keys) -> list[str]:
    return [KEYS[k][0] for k in check(keys, KEYS, "config key")]


def group_label_sql(keys) -> str:
    """SQL of a readable label of the group a run belongs to (values joined by ' · ')."""
    if not keys:
        return "'all runs'"
    parts = [f"coalesce(CAST({KEYS[k][0]} AS VARCHAR), '–')" if k in _BARE
             else f"'{k}=' || coalesce(CAST({KEYS[k][0]} AS VARCHAR), '–')"
             for k in check(keys, KEYS, "config key")]
    return " || ' · ' || ".join(parts)


@by_version("runs")
def runs(root: str, f: Filters) -> pd.DataFrame:
    """The filtered runs, newest first: the run table's columns, every config key, config_json
    (made again only when the runs table changes)."""
    sql, params = filtered_runs(f)
    extra = ", ".join(f"{expr} AS {k}" for k, (expr, _) in KEYS.items() if k in _JSON_KEYS)
    cols = ", ".join(f"r.{c}" for c in RUN_COLUMNS)
    return query(root, f"SELECT {cols}, {extra}, r.config_json FROM ({sql}) r "
                       "ORDER BY r.created_at DESC NULLS LAST, r.run_id", params)


@st.cache_data(ttl=TTL, show_spinner=False)
def runs_by_id(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Rows of the given runs (in the order given), like `runs`."""
    df = runs(root, Filters())
    df = df[df["run_id"].isin(run_ids)]
    order = {r: i for i, r in enumerate(run_ids)}
    return df.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)


def varying_keys(df: pd.DataFrame, exclude=("seed",)) -> list[str]:
    """Config keys with more than one value among the runs of `df`."""
    return [k for k in KEYS if k not in exclude and k in df
            and df[k].astype(str).nunique(dropna=False) > 1]


def distinct_keys(df: pd.DataFrame, keys) -> list[str]:
    """`keys` without those that follow from an earlier one (e.g. arch_options from the
    model label): grouping by them splits nothing further."""
    kept = []
    for k in keys:
        if not any(not df[[j, k]].astype(str).drop_duplicates()[j].duplicated().any()
                   for j in kept):
            kept.append(k)
    return kept


def determined_by(df: pd.DataFrame, factor: str, keys) -> list[str]:
    """The keys whose value follows from the factor's (e.g. each optimizer's own learning rate):
    splitting by them adds no group."""
    out = []
    for k in keys:
        pairs = df[[factor, k]].astype(str).drop_duplicates()
        if k != factor and not pairs[factor].duplicated().any():
            out.append(k)
    return out


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """Nested config keys joined by dots, each value as JSON text (None -> "null")."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict) and value:
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True)
    return out


def config_diff(rows: pd.DataFrame) -> pd.DataFrame:
    """The config keys (of config_json, flattened) that differ between the given runs: one row
    per key, one column per run (a key a run lacks reads "-")."""
    configs = {r.run_id: flatten(json.loads(r.config_json or "{}")) for r in rows.itertuples()}
    table = pd.DataFrame(configs).fillna("-")
    differ = table.nunique(axis=1) > 1
    return table[differ].rename_axis("key").reset_index()


# ----------------------------------------------------------------------------- curves
def _moments(expr: str, name: str, kind: str) -> str:
    """avg, sd and n of a value (and of its log for positive quantities) as {name}_avg ..."""
    v = finite(expr)
    out = f"avg({v}) AS {name}_avg, stddev_samp({v}) AS {name}_sd, count({v}) AS {name}_n"
    if kind == "positive":
        lv = f"ln(CASE WHEN {v} > 0 THEN {v} END)"
        out += (f", avg({lv}) AS {name}_lavg, stddev_samp({lv}) AS {name}_lsd, "
                f"count({lv}) AS {name}_ln")
    return out


def moments(quantities: dict) -> str:
    """The aggregates of several {name: (SQL, kind)} quantities."""
    return ",\n".join(_moments(expr, name, kind) for name, (expr, kind) in quantities.items())


_THIN = """QUALIFY epoch % CAST(greatest(1, ceil(count(*) OVER () / ?)) AS INTEGER) = 0
             OR epoch = max(epoch) OVER (PARTITION BY {by})"""


@by_version("epochs")
def epoch_curves(root: str, run_ids: tuple[str, ...], metrics: tuple[str, ...],
                 max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Per-epoch values of `metrics` for the runs: columns run_id, epoch, *metrics.

    Epochs are thinned to every k-th (plus each run's last) so that one metric's chart has at
    most about `max_points` rows; k is the same for every run, so epochs stay aligned."""
    cols = ", ".join(check(metrics, EPOCH_METRICS, "metric"))
    return query(root, f"""
        SELECT run_id, epoch, {cols} FROM epochs WHERE list_contains(?, run_id)
        {_THIN.format(by='run_id')}
        ORDER BY run_id, epoch""", [list(run_ids), max_points])


@by_version("runs", "epochs")
def group_curves(root: str, f: Filters, keys: tuple[str, ...], metrics: tuple[str, ...],
                 run_ids: tuple[str, ...] = (), max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Per group of the filtered runs (or of `run_ids`) that share the `keys` values, and per
    epoch: runs and the moments of each metric (for dashboard.stats.add_interval)."""
    metrics = check(metrics, EPOCH_METRICS, "metric")
    head, params = with_runs(f)
    only = "AND list_contains(?, r.run_id)" if run_ids else ""
    aggs = moments({m: (f"e.{m}", metric_kind(m)) for m in metrics})
    return query(root, f"""
        {head},
        g AS (SELECT {group_label_sql(keys)} AS "group", e.epoch, count(*) AS runs, {aggs}
              FROM epochs e JOIN r ON e.run_id = r.run_id {only} GROUP BY ALL)
        SELECT * FROM g {_THIN.format(by='"group"')}
        ORDER BY "group", epoch""", params + ([list(run_ids)] if run_ids else []) + [max_points])


def smooth(df: pd.DataFrame, value: str, by: str, alpha: float) -> pd.DataFrame:
    """Exponential moving average of `value` within each `by` group (alpha = weight of the past)."""
    if alpha <= 0:
        return df
    out = df.copy()
    out[value] = out.groupby(by, sort=False)[value].transform(
        lambda s: s.ewm(alpha=1 - alpha, ignore_na=True).mean())
    return out
