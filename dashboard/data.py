"""Every query the dashboard makes, in one place; the pages hold no SQL.

One DuckDB connection per store root is cached for the process (`st.cache_resource`) together
with in-memory snapshots of the store's tables (snapshot.py: re-read part by part as files
change); each query runs on its own cursor (a connection is not thread-safe, its cursors are)
with the tables it reads registered from the snapshots, and its result is cached for a few
seconds (`st.cache_data`, keyed by the store root and the filter values). New rows show up
within about five seconds.

All SQL takes user values as parameters (`?`); lists go in as one list parameter tested with
`list_contains(?, col)`. Column names that vary (a chosen metric, the factor a page groups by) are
checked against the store's schema first, so no user text ever becomes SQL.
"""
from __future__ import annotations

import contextlib
import json
import math
import re
from typing import Iterable, NamedTuple

import duckdb
import pandas as pd
import streamlit as st

from landscape_lib.errors import StoreError
from landscape_lib.store import TABLES, Store, columns
from landscape_lib.store.queries import SURFACE_SEED_SPREAD

from .snapshot import Snapshots

TTL = 3  # seconds a query result is reused; new rows show up after at most this long
MAX_POINTS = 4000  # rows per chart; Altair refuses more than 5,000

# hessian_summary rows about the whole model (the others are per layer): the analyses write
# "<all>"; NULL and the other spellings are accepted too.
WHOLE_MODEL_LAYERS = ["<all>", "", "all", "model", "*"]

# Config columns that make two runs "the same experiment" except for the seed.
CONFIG_COLUMNS = ["dataset", "model_label", "init", "optimizer", "lr", "weight_decay",
                  "batch_size"]
FACTORS = {"init": "initializer", "optimizer": "optimizer", "model_label": "architecture",
           "dataset": "data set", "lr": "learning rate", "weight_decay": "weight decay",
           "batch_size": "batch size"}
EPOCH_METRICS = [c for c, t in columns("epochs").items()
                 if t in ("DOUBLE", "INTEGER") and c not in ("epoch",)]
RUN_TABLE_COLUMNS = [
    "run_id", "status", "study", "dataset", "model_label", "init", "optimizer", "lr",
    "weight_decay", "batch_size", "seed", "epochs_done", "epochs", "final_train_loss",
    "final_val_loss", "final_val_acc", "best_val_acc", "generalization_gap", "total_time",
    "diverged_epoch", "device", "n_params", "tags", "updated_at", "error"]


class Filters(NamedTuple):
    """The sidebar's selection; empty means "all"."""
    datasets: tuple = ()
    archs: tuple = ()
    model_labels: tuple = ()
    inits: tuple = ()
    optimizers: tuple = ()
    statuses: tuple = ()
    seeds: tuple = ()
    text: str = ""


FILTER_COLUMNS = {"datasets": "dataset", "archs": "arch", "model_labels": "model_label",
                  "inits": "init", "optimizers": "optimizer", "statuses": "status",
                  "seeds": "seed"}


# ----------------------------------------------------------------------------- connection
def store_root() -> str:
    """The store shown: $LANDSCAPE_STORE, else runs/store (resolved now, so tests can switch)."""
    return str(Store().root)


# Tables the pages read across runs, loaded in the background when a store is first opened.
PRELOAD = ("runs", "epochs", "hessian_summary", "analyses", "surface_points", "hessian_eigs",
           "surface_summary", "attention_jsd", "attention_hessian")


@st.cache_resource(show_spinner=False, max_entries=8)
def _store(root: str) -> tuple[duckdb.DuckDBPyConnection, Snapshots]:
    """The process-wide connection and table snapshots of one store."""
    Store(root).check_version()
    snapshots = Snapshots(root)
    snapshots.preload(PRELOAD)
    return duckdb.connect(), snapshots


_TABLE_REF = re.compile(r"\b(?:FROM|JOIN)\s+([a-z_]+)", re.IGNORECASE)


def refresh(root: str) -> None:
    """Forget cached results and re-check the store's files now (e.g. after a Lab analysis)."""
    _store(root)[1].invalidate()
    st.cache_data.clear()


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def query(root: str, sql: str, params: Iterable = (), run_id: str | None = None
          ) -> pd.DataFrame:
    """Run one parameterised query on a fresh cursor over the store's tables (each table the
    SQL reads FROM or JOINs is registered from its snapshot, or with `run_id` from that run's
    own part files only); problems become StoreError."""
    con, snapshots = _store(root)
    cur = con.cursor()
    try:
        for table in {t.lower() for t in _TABLE_REF.findall(sql)} & set(TABLES):
            cur.register(table, snapshots.table(table) if run_id is None
                         else snapshots.run_table(table, run_id))
        return cur.execute(sql, list(params)).df()
    except duckdb.Error as exc:
        raise StoreError(f"the store at {root} cannot be read: {_first_line(exc)}") from exc
    finally:
        cur.close()


@st.cache_data(ttl=TTL, show_spinner=False)
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


def context() -> tuple[str, "Filters", list[str]]:
    """(store root, sidebar filters, runs to compare), set by app.py on every run."""
    return st.session_state["context"]


# ----------------------------------------------------------------------------- runs
_RUNS = ("SELECT * FROM runs QUALIFY row_number() OVER "
         "(PARTITION BY run_id ORDER BY updated_at DESC NULLS LAST) = 1")


def _filtered_runs(f: Filters) -> tuple[str, list]:
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
    return f"SELECT * FROM ({_RUNS}) WHERE {where}", params


@st.cache_data(ttl=TTL, show_spinner=False)
def filter_options(root: str) -> pd.DataFrame:
    """Distinct combinations of the filterable columns (for the sidebar's choices)."""
    return query(root, "SELECT DISTINCT dataset, arch, model_label, init, optimizer, status, seed "
                       f"FROM ({_RUNS})")


def options_for(combos: pd.DataFrame, column: str, where: dict | None = None) -> list:
    """Sorted choices of `column`, restricted to combos matching `where` {column: values}."""
    rows = combos
    for col, values in (where or {}).items():
        if values:
            rows = rows[rows[col].isin(values)]
    return sorted(rows[column].dropna().unique().tolist())


@st.cache_data(ttl=TTL, show_spinner=False)
def runs(root: str, f: Filters) -> pd.DataFrame:
    """The filtered runs, newest first, with the run table's columns and config_json."""
    sql, params = _filtered_runs(f)
    cols = ", ".join(RUN_TABLE_COLUMNS + ["config_json"])
    return query(root, f"SELECT {cols} FROM ({sql}) ORDER BY created_at DESC, run_id", params)


@st.cache_data(ttl=TTL, show_spinner=False)
def runs_by_id(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Rows of the given runs (in the order given) with the run table's columns."""
    cols = ", ".join(RUN_TABLE_COLUMNS)
    df = query(root, f"SELECT {cols} FROM ({_RUNS}) WHERE list_contains(?, run_id)",
               [list(run_ids)])
    order = {r: i for i, r in enumerate(run_ids)}
    return df.sort_values("run_id", key=lambda s: s.map(order)).reset_index(drop=True)


def scope(root: str, f: Filters, compare: Iterable[str], limit: int = 10,
          having: str | None = None) -> tuple[list, str]:
    """Run ids a per-run chart shows: the compared runs, else the first `limit` filtered ones;
    with `having`, only runs that have rows in that table. Returns (run_ids, a caption)."""
    compare = list(compare or [])
    ids = compare or runs(root, f)["run_id"].tolist()
    if having:
        ids = runs_with(root, having, tuple(ids))
    what = "compared" if compare else "filtered"
    with_ = f" with {having} results" if having else ""
    if not compare and len(ids) > limit:
        return ids[:limit], (f"the {limit} newest of {len(ids)} {what} runs{with_}; choose runs "
                             "to compare in the sidebar to see others")
    return ids, f"{len(ids)} {what} run(s){with_}"


def seed_groups(run_rows: pd.DataFrame) -> pd.Series:
    """A label per run naming its configuration without the seed (only columns that vary)."""
    varying = [c for c in CONFIG_COLUMNS if run_rows[c].astype(str).nunique() > 1]
    if not varying:
        label = run_rows[CONFIG_COLUMNS[:4]].astype(str).agg(" | ".join, axis=1)
    else:
        label = run_rows[varying].apply(
            lambda row: " | ".join(f"{c}={v}" if c in ("lr", "weight_decay", "batch_size")
                                   else str(v) for c, v in row.items()), axis=1)
    return pd.Series(label.values, index=run_rows["run_id"].values)


# ----------------------------------------------------------------------------- epochs
def _check(names: Iterable[str], allowed: Iterable[str], what: str) -> list[str]:
    names, allowed = list(names), set(allowed)
    bad = [n for n in names if n not in allowed]
    if bad:
        raise StoreError(f"unknown {what} {bad}; known: {sorted(allowed)}")
    return names


@st.cache_data(ttl=TTL, show_spinner=False)
def epoch_curves(root: str, run_ids: tuple[str, ...], metrics: tuple[str, ...],
                 max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Per-epoch values of `metrics` for the runs: columns run_id, epoch, *metrics.

    Epochs are thinned to every k-th (plus each run's last) so that one metric's chart has at
    most about `max_points` rows; k is the same for every run, so epochs stay aligned."""
    cols = ", ".join(_check(metrics, EPOCH_METRICS, "metric"))
    return query(root, f"""
        SELECT run_id, epoch, {cols} FROM epochs WHERE list_contains(?, run_id)
        QUALIFY epoch % CAST(greatest(1, ceil(count(*) OVER () / ?)) AS INTEGER) = 0
             OR epoch = max(epoch) OVER (PARTITION BY run_id)
        ORDER BY run_id, epoch""", [list(run_ids), max_points])


def smooth(df: pd.DataFrame, value: str, by: str, alpha: float) -> pd.DataFrame:
    """Exponential moving average of `value` within each `by` group (alpha = weight of the past)."""
    if alpha <= 0:
        return df
    out = df.copy()
    out[value] = out.groupby(by, sort=False)[value].transform(
        lambda s: s.ewm(alpha=1 - alpha, ignore_na=True).mean())
    return out


def seed_bands(curves: pd.DataFrame, groups: pd.Series, metric: str) -> pd.DataFrame:
    """Mean and std over seeds of `metric` per configuration and epoch."""
    df = curves[["run_id", "epoch", metric]].copy()
    df["config"] = df["run_id"].map(groups)
    out = (df.groupby(["config", "epoch"])[metric].agg(["mean", "std", "count"])
           .reset_index().rename(columns={"count": "runs"}))
    out["lo"], out["hi"] = out["mean"] - out["std"], out["mean"] + out["std"]
    return out


# ----------------------------------------------------------------------------- factor pages
def _finite(expr: str) -> str:
    return f"CASE WHEN isfinite({expr}) THEN {expr} END"


# The factor pages' per-run quantities: key -> (SQL over the factor_table query's r, c and l
# relations, label shown in the table header). One table, so the query and the page agree.
FACTOR_QUANTITIES = {
    "final_error": ("1 - r.final_val_acc", "final error (1 - val acc)"),
    "final_train_loss": ("r.final_train_loss", "train loss"),
    "final_val_loss": ("r.final_val_loss", "val loss"),
    "final_val_acc": ("r.final_val_acc", "val accuracy"),
    "generalization_gap": ("r.generalization_gap", "gap (val - train loss)"),
    "conv_epoch": ("c.conv_epoch", "convergence epoch"),
    "avg_cond": ("l.avg_cond", "avg condition number"),
    "spectral_norm": ("l.spectral_norm", "spectral norm"),
    "eff_rank_ratio": ("l.eff_rank_ratio", "effective-rank ratio"),
    "grad_norm": ("l.grad_norm", "gradient norm"),
    "peak_mem_mb": ("l.peak_mem_mb", "peak memory (MB)"),
    "wall_time": ("r.total_time", "wall time (s)"),
}


@st.cache_data(ttl=TTL, show_spinner=False)
def factor_table(root: str, f: Filters, factor: str, split: tuple[str, ...] = (),
                 conv_fraction: float = 0.9) -> pd.DataFrame:
    """Per value of `factor` (and of the `split` columns): run counts and the mean and std over
    those runs of final metrics, convergence epoch, matrix statistics and wall time.

    Convergence epoch = first epoch whose val_acc reaches conv_fraction x the run's best val_acc.
    Non-finite values (diverged runs) are left out of means; `diverged` counts those runs."""
    keys = _check([factor, *[s for s in split if s != factor]], CONFIG_COLUMNS + ["seed"],
                  "column")
    key_sql = ", ".join(f"r.{k}" for k in keys)
    runs_sql, params = _filtered_runs(f)
    aggs = ",\n".join(f"avg({_finite(v)}) AS {k}_mean, stddev_samp({_finite(v)}) AS {k}_std"
                      for k, (v, _) in FACTOR_QUANTITIES.items())
    return query(root, f"""
        WITH r AS ({runs_sql}),
        e AS (SELECT * FROM epochs WHERE run_id IN (SELECT run_id FROM r)),
        best AS (SELECT run_id, max(val_acc) AS best FROM e GROUP BY run_id),
        c AS (SELECT e.run_id, min(e.epoch) AS conv_epoch FROM e JOIN best USING (run_id)
              WHERE e.val_acc >= ? * best.best GROUP BY e.run_id),
        l AS (SELECT run_id,
                     arg_max(avg_cond, epoch) FILTER (WHERE isfinite(avg_cond)) AS avg_cond,
                     arg_max(avg_spectral_norm, epoch) FILTER (WHERE isfinite(avg_spectral_norm))
                         AS spectral_norm,
                     arg_max(avg_eff_rank_ratio, epoch)
                         FILTER (WHERE isfinite(avg_eff_rank_ratio)) AS eff_rank_ratio,
                     arg_max(grad_norm, epoch) FILTER (WHERE isfinite(grad_norm)) AS grad_norm,
                     max(peak_mem_mb) AS peak_mem_mb
              FROM e GROUP BY run_id)
        SELECT {key_sql}, count(*) AS runs,
               count(*) FILTER (WHERE r.status = 'diverged' OR r.diverged_epoch IS NOT NULL)
                   AS diverged,
               {aggs}
        FROM r LEFT JOIN c USING (run_id) LEFT JOIN l USING (run_id)
        GROUP BY ALL ORDER BY ALL""", params + [conv_fraction])


@st.cache_data(ttl=TTL, show_spinner=False)
def factor_curves(root: str, f: Filters, factor: str, metrics: tuple[str, ...],
                  split: tuple[str, ...] = (), max_points: int = MAX_POINTS) -> pd.DataFrame:
    """Mean and std over runs of per-epoch `metrics`, per value of `factor` (and `split`).

    Columns: group, epoch, runs, <metric>_mean, <metric>_std; epochs thinned to <= max_points
    rows in all."""
    keys = _check([factor, *[s for s in split if s != factor]], CONFIG_COLUMNS + ["seed"],
                  "column")
    metrics = _check(metrics, EPOCH_METRICS, "metric")
    label = " || ' | ' || ".join(f"CAST(r.{k} AS VARCHAR)" for k in keys)
    aggs = ", ".join(f"avg({_finite('e.' + m)}) AS {m}_mean, stddev_samp({_finite('e.' + m)}) "
                     f"AS {m}_std" for m in metrics)
    runs_sql, params = _filtered_runs(f)
    return query(root, f"""
        WITH r AS ({runs_sql}),
        g AS (SELECT {label} AS "group", e.epoch, count(*) AS runs, {aggs}
              FROM epochs e JOIN r USING (run_id) GROUP BY ALL)
        SELECT * FROM g
        QUALIFY epoch % CAST(greatest(1, ceil(count(*) OVER () / ?)) AS INTEGER) = 0
             OR epoch = max(epoch) OVER (PARTITION BY "group")
        ORDER BY "group", epoch""", params + [max_points])


@st.cache_data(ttl=TTL, show_spinner=False)
def final_errors(root: str, f: Filters, factor: str) -> pd.DataFrame:
    """Per run: the factor's value and final error (1 - final val acc), for distribution plots."""
    _check([factor], CONFIG_COLUMNS, "column")
    runs_sql, params = _filtered_runs(f)
    return query(root, f"""
        SELECT run_id, {factor}, lr, weight_decay, 1 - final_val_acc AS final_error
        FROM ({runs_sql}) WHERE final_val_acc IS NOT NULL ORDER BY {factor}, final_error""",
                 params)


# ----------------------------------------------------------------------------- analyses
def _latest(table: str, where: str = "true") -> str:
    """SQL of the analysis_id chosen per (run, epoch) in `table` for runs in list param ?:
    the most recent finished analysis (rows without an `analyses` row count as finished)."""
    return f"""
        SELECT t.analysis_id, t.run_id, t.epoch FROM {table} t
        LEFT JOIN analyses a ON a.analysis_id = t.analysis_id
        WHERE list_contains(?, t.run_id) AND (a.status IS NULL OR a.status = 'done') AND {where}
        QUALIFY row_number() OVER (PARTITION BY t.run_id, t.epoch
                                   ORDER BY a.started_at DESC NULLS LAST, t.analysis_id DESC) = 1"""


_WHOLE = "(t.layer IS NULL OR list_contains(?, t.layer))"


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_summary(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Whole-model Hessian summaries over epochs (one analysis per run and epoch)."""
    return query(root, f"""
        WITH pick AS ({_latest('hessian_summary', _WHOLE)})
        SELECT h.run_id, h.epoch, h.top_eig, h.lam_min, h.trace, h.trace_se, h.neg_share,
               h.convexity_ratio, h.analysis_id
        FROM hessian_summary h JOIN pick USING (analysis_id)
        WHERE h.layer IS NULL OR list_contains(?, h.layer)
        ORDER BY h.run_id, h.epoch""",
                 [list(run_ids), WHOLE_MODEL_LAYERS, WHOLE_MODEL_LAYERS])


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_eigs(root: str, run_ids: tuple[str, ...], which: str = "top") -> pd.DataFrame:
    """Top (or bottom) Hessian eigenvalues per run, epoch and rank k."""
    return query(root, f"""
        WITH pick AS ({_latest('hessian_eigs')})
        SELECT h.run_id, h.epoch, h.k, h.eigenvalue
        FROM hessian_eigs h JOIN pick USING (analysis_id)
        WHERE h.which = ? ORDER BY h.run_id, h.epoch, h.k""", [list(run_ids), which])


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_epochs(root: str, run_ids: tuple[str, ...]) -> list[int]:
    """Epochs at which any of the runs has a Hessian density or per-layer summary."""
    df = query(root, """SELECT DISTINCT epoch FROM hessian_density WHERE list_contains(?, run_id)
                        UNION SELECT DISTINCT epoch FROM hessian_summary
                        WHERE list_contains(?, run_id) ORDER BY epoch""",
               [list(run_ids), list(run_ids)])
    return df["epoch"].astype(int).tolist()


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_density(root: str, run_ids: tuple[str, ...], epoch: int) -> pd.DataFrame:
    """Eigenvalue density estimates of the runs at `epoch`."""
    return query(root, f"""
        WITH pick AS ({_latest('hessian_density')})
        SELECT h.run_id, h.epoch, h.x, h.density
        FROM hessian_density h JOIN pick USING (analysis_id)
        WHERE h.epoch = ? ORDER BY h.run_id, h.x""", [list(run_ids), epoch])


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_layers(root: str, run_ids: tuple[str, ...], epoch: int) -> pd.DataFrame:
    """Per-layer Hessian summaries (top eigenvalue, trace) of the runs at `epoch`."""
    return query(root, f"""
        WITH pick AS ({_latest('hessian_summary')})
        SELECT h.run_id, h.epoch, h.layer, h.n_params, h.top_eig, h.trace, h.neg_share
        FROM hessian_summary h JOIN pick USING (analysis_id)
        WHERE h.epoch = ? AND NOT (h.layer IS NULL OR list_contains(?, h.layer))
        ORDER BY h.run_id, h.layer""", [list(run_ids), epoch, WHOLE_MODEL_LAYERS])


@st.cache_data(ttl=TTL, show_spinner=False)
def sharpness(root: str, f: Filters) -> pd.DataFrame:
    """Per filtered run: sharpness at its last analysed epoch (top eigenvalue, trace; surface
    basin width and mean curvature) next to its generalization gap and final val accuracy."""
    runs_sql, params = _filtered_runs(f)
    return query(root, f"""
        WITH r AS ({runs_sql}),
        h AS (SELECT t.run_id, arg_max(t.top_eig, t.epoch) AS top_eig,
                     arg_max(t.trace, t.epoch) AS trace, max(t.epoch) AS hessian_epoch
              FROM hessian_summary t LEFT JOIN analyses a USING (analysis_id)
              WHERE t.run_id IN (SELECT run_id FROM r) AND {_WHOLE}
                AND (a.status IS NULL OR a.status = 'done')
              GROUP BY t.run_id),
        s AS (SELECT t.run_id, arg_max(t.basin_width, t.epoch) AS basin_width,
                     arg_max((t.curvature_x + t.curvature_y) / 2, t.epoch) AS surface_curvature
              FROM surface_summary t WHERE t.run_id IN (SELECT run_id FROM r) GROUP BY t.run_id)
        SELECT r.run_id, r.dataset, r.model_label, r.init, r.optimizer, h.hessian_epoch,
               h.top_eig, h.trace, s.basin_width, s.surface_curvature,
               r.generalization_gap, r.final_val_acc
        FROM r JOIN h USING (run_id) LEFT JOIN s USING (run_id)
        ORDER BY r.run_id""", params + [WHOLE_MODEL_LAYERS])


def kendall(df: pd.DataFrame, xs: Iterable[str], ys: Iterable[str]) -> pd.DataFrame:
    """Kendall's tau (scipy.stats.kendalltau) of every (x, y) pair over rows finite in both."""
    from scipy.stats import kendalltau
    rows = []
    for x in xs:
        for y in ys:
            pair = df[[x, y]].apply(pd.to_numeric, errors="coerce").replace(
                [math.inf, -math.inf], math.nan).dropna()
            tau, p = (kendalltau(pair[x], pair[y]) if len(pair) >= 3 else (math.nan, math.nan))
            rows.append({"sharpness": x, "against": y, "tau": float(tau), "p_value": float(p),
                         "runs": len(pair)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- surfaces
@st.cache_data(ttl=TTL, show_spinner=False)
def surfaces(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Every 2-D surface of the runs: analysis_id, run_id, epoch, grid size, directions."""
    return query(root, """
        SELECT p.analysis_id, p.run_id, p.epoch, count(*) AS points,
               max(p.i) + 1 AS nx, max(p.j) + 1 AS ny, any_value(s.directions) AS directions,
               any_value(a.params_json) AS params_json, any_value(a.started_at) AS started_at
        FROM surface_points p
        LEFT JOIN surface_summary s ON s.analysis_id = p.analysis_id
        LEFT JOIN analyses a ON a.analysis_id = p.analysis_id
        WHERE list_contains(?, p.run_id)
        GROUP BY p.analysis_id, p.run_id, p.epoch
        ORDER BY p.run_id, p.epoch DESC, started_at DESC NULLS LAST""", [list(run_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def surface_points(root: str, analysis_ids: tuple[str, ...]) -> pd.DataFrame:
    """Grid points (i, j, x, y, loss, acc) of the given surfaces."""
    return query(root, """SELECT analysis_id, run_id, epoch, i, j, x, y, loss, acc
                          FROM surface_points WHERE list_contains(?, analysis_id)
                          ORDER BY analysis_id, i, j""", [list(analysis_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def surface_summary(root: str, analysis_ids: tuple[str, ...]) -> pd.DataFrame:
    return query(root, "SELECT * FROM surface_summary WHERE list_contains(?, analysis_id) "
                       "ORDER BY analysis_id", [list(analysis_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def surface_seed_spread(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Surface summaries over direction seeds: mean and std per run, epoch and directions."""
    return query(root, SURFACE_SEED_SPREAD, [list(run_ids)])


_ROW_ORDER = {
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
    """All rows of an analysis result table (one of _ROW_ORDER) for the given runs."""
    _check([table], _ROW_ORDER, "table")
    return query(root, f"SELECT * FROM {table} WHERE list_contains(?, run_id) "
                       f"ORDER BY {_ROW_ORDER[table]}", [list(run_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def standalone_rows(root: str, table: str) -> pd.DataFrame:
    """Rows of an analysis result table that belong to no run (stand-alone studies, written
    under the pseudo run id "study")."""
    _check([table], _ROW_ORDER, "table")
    return query(root, f"SELECT * FROM {table} WHERE run_id IS NULL OR run_id NOT IN "
                       f"(SELECT run_id FROM runs) ORDER BY {_ROW_ORDER[table]}")


@st.cache_data(ttl=TTL, show_spinner=False)
def runs_with(root: str, table: str, run_ids: tuple[str, ...]) -> list[str]:
    """The given runs that have rows in `table` (order kept)."""
    _check([table], TABLES, "table")
    have = set(query(root, f"SELECT DISTINCT run_id FROM {table} WHERE list_contains(?, run_id)",
                     [list(run_ids)])["run_id"])
    return [r for r in run_ids if r in have]


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


# ----------------------------------------------------------------------------- lab
@st.cache_data(ttl=TTL, show_spinner=False)
def checkpoint_epochs(root: str, run_id: str) -> list[int]:
    df = query(root, "SELECT DISTINCT epoch FROM checkpoints WHERE run_id = ? "
                     "AND kind = 'checkpoint' ORDER BY epoch", [run_id], run_id=run_id)
    return df["epoch"].astype(int).tolist()


def analyses(root: str, run_id: str, epoch: int | None = None,
             kind: str | None = None) -> pd.DataFrame:
    """`analyses` rows of a run (optionally one epoch / kind), newest first; never cached, the
    Lab polls it while an analysis runs."""
    return query(root, """
        SELECT * FROM analyses WHERE run_id = ? AND (? IS NULL OR epoch = ?)
              AND (? IS NULL OR kind = ?)
        ORDER BY started_at DESC NULLS LAST, analysis_id DESC""",
                 [run_id, epoch, epoch, kind, kind], run_id=run_id)


def _same(a, b) -> bool:
    """Parameter values equal up to representation (256 == "256", 1 == 1.0, "true" == True)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    try:
        return math.isclose(float(a), float(b))
    except (TypeError, ValueError):
        return str(a) == str(b)


def params_match(params_json: str | None, wanted: dict) -> bool:
    """Whether a stored params_json has every wanted key with an equal value.

    The CLI stores the fully resolved parameters; the Lab only knows the ones it set."""
    try:
        stored = json.loads(params_json or "{}")
    except ValueError:
        return False
    return all(k in stored and _same(stored[k], v) for k, v in wanted.items())


def find_analysis(root: str, run_id: str, epoch: int, kind: str, wanted: dict) -> pd.Series | None:
    """The newest finished analysis of this run, epoch and kind with these parameters."""
    df = analyses(root, run_id, epoch, kind)
    for _, row in df[df["status"] == "done"].iterrows():
        if params_match(row["params_json"], wanted):
            return row
    return None


def analysis_result(root: str, run_id: str, analysis_id: str,
                    tables: Iterable[str]) -> dict[str, pd.DataFrame]:
    """The rows of one analysis in each of `tables` (read from the run's own parts)."""
    return {t: query(root, f"SELECT * FROM {_check([t], TABLES, 'table')[0]} "
                           "WHERE analysis_id = ?", [analysis_id], run_id=run_id)
            for t in tables}
