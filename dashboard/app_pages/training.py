"""Training: per-epoch curves of any recorded metric, per run or as mean and 95% interval per
group of runs (group by any config keys); optional EMA smoothing and log scale."""
import altair as alt
import pandas as pd
import streamlit as st

from dashboard import charts, stats
from dashboard.data import core
from dashboard.data import runs as runs_data

LIMIT = 10  # runs drawn one by one when nothing is compared; groups drawn

root, filters, compare = core.context()
st.title("Training")
filtered = runs_data.runs(root, filters)
if filtered.empty and not compare:
    st.info("No run matches the filters in the sidebar.")
    st.stop()

# Two charts by default (one row): every chart is drawn by the browser; add more here.
metrics = st.multiselect("Metrics", runs_data.EPOCH_METRICS, key="train_metrics",
                         bind="query-params", default=["train_loss", "val_acc"])
keys = [k for k in runs_data.KEYS if k != "seed"]
pool = runs_data.runs_by_id(root, tuple(compare)) if compare else filtered
varying = runs_data.distinct_keys(pool, runs_data.varying_keys(pool))
default = varying if pool.duplicated(varying or ["run_id"]).any() else []
groups = tuple(st.multiselect(
    "Group by (mean and 95% CI over each group's runs; none = one line per run)", keys,
    default=default, key="train_group", bind="query-params",
    format_func=lambda k: runs_data.LABELS[k]))
c1, c2 = st.columns([2, 1])
alpha = c1.slider("Smoothing (EMA weight of the past)", 0.0, 0.95, 0.0, 0.05, key="train_ema",
                  persist_state="session")
log_y = c2.toggle("Log scale", key="train_log", persist_state="session")

if groups:
    ids = tuple(compare)
    curves = runs_data.group_curves(root, core.Filters() if compare else filters, groups,
                                    tuple(metrics), ids)
    names = curves["group"].drop_duplicates()
    drawn = set(names.head(LIMIT))  # one line and band each: the browser draws every one
    st.caption(f"{'The compared' if compare else 'The filtered'} runs "
               f"({len(pool)}) in {len(names)} groups"
               + (f", the first {LIMIT} drawn (the CSVs have them all: narrow the filters or "
                  "group by fewer keys to see others)" if len(names) > LIMIT else "")
               + "; runs per group in the CSV (`runs`). Groups of one run are drawn as points.")
else:
    ids = tuple(compare or filtered["run_id"].head(LIMIT))
    curves = runs_data.epoch_curves(root, ids, tuple(metrics))
    st.caption("Showing " + (f"the {len(ids)} compared runs." if compare else
                             f"the {len(ids)} newest of {len(filtered)} filtered runs: pick "
                             "runs to compare in the sidebar, or group them."))
def metric_chart(df: pd.DataFrame, metric: str, by: str, log_y: bool, legend: bool
                 ) -> alt.TopLevelMixin:
    """One metric's lines per run or group (with its 95% band), its legend below."""
    band = (f"{metric}_lo", f"{metric}_hi") if by == "group" else None
    return charts.lines(df, "epoch", metric, by, band=band, log_y=log_y, title=metric,
                        show_legend=legend, single_points="runs").properties(width=360,
                                                                              height=260)


@st.cache_data(max_entries=16, show_spinner=False)
def all_metrics_spec(parts: tuple, by: str, log_y: bool) -> dict:
    """Every metric in ONE chart (two per row, one legend per row): one view for the browser
    to draw; made once per data (Altair takes a few tenths of a second for it)."""
    made = [metric_chart(df, metric, by, log_y, legend) for metric, df, legend in parts]
    return charts.spec(alt.vconcat(*(alt.hconcat(*made[k:k + 2]).resolve_legend(
        color="independent", strokeDash="independent") for k in range(0, len(made), 2))))


by = "group" if groups else "run_id"
parts = []  # (metric, the data drawn, legend?); each metric's CSV has all its rows
data = {}
for i, metric in enumerate(metrics):
    if groups:
        df = curves[["group", "epoch", "runs"]
                    + [c for c in curves if c.startswith(f"{metric}_")]]
        df = stats.add_interval(df, metric, runs_data.metric_kind(metric))
    else:
        df = curves[["run_id", "epoch", metric]]
    data[metric] = runs_data.smooth(df, metric, by, alpha)
    drawn_df = data[metric][data[metric]["group"].isin(drawn)] if groups else data[metric]
    parts.append((metric, drawn_df, i % 2 == 1 or i == len(metrics) - 1))
st.vega_lite_chart(spec=all_metrics_spec(tuple(parts), by, log_y))
for k in range(0, len(parts), 2):  # each metric's CSV, PNG and SVG below it
    for col, (metric, df, legend) in zip(st.columns(2), parts[k:k + 2]):
        with col:
            st.caption(metric)
            charts.downloads(data[metric], f"training_{metric}", key=f"csv_training_{metric}",
                             chart=lambda m=metric, d=df, g=legend: metric_chart(d, m, by,
                                                                                 log_y, g))
