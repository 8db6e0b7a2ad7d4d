"""Training: per-epoch curves of any recorded metric, per run or as mean and 95% interval per
group of runs (group by any config keys); optional EMA smoothing and log scale."""
import altair as alt
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
made = []  # (metric, chart, its data)
for i, metric in enumerate(metrics):
    last = i % 2 == 1 or i == len(metrics) - 1
    if groups:
        df = curves[["group", "epoch", "runs"]
                    + [c for c in curves if c.startswith(f"{metric}_")]]
        df = stats.add_interval(df, metric, runs_data.metric_kind(metric))
        df = runs_data.smooth(df, metric, "group", alpha)
        chart = charts.lines(df[df["group"].isin(drawn)], "epoch", metric, "group",
                             band=(f"{metric}_lo", f"{metric}_hi"), log_y=log_y, title=metric,
                             show_legend=last, single_points="runs")
    else:
        df = runs_data.smooth(curves[["run_id", "epoch", metric]], metric, "run_id", alpha)
        chart = charts.lines(df, "epoch", metric, "run_id", log_y=log_y, title=metric,
                             show_legend=last)
    made.append((metric, chart.properties(width=360, height=260), df))  # legend: below
# Every metric in ONE chart (two per row, one legend): one view for the browser to draw; each
# metric's CSV, PNG and SVG below it.
st.vega_lite_chart(spec=charts.spec(alt.vconcat(*(
    alt.hconcat(*(c for _, c, _ in made[k:k + 2])).resolve_legend(
        color="independent", strokeDash="independent") for k in range(0, len(made), 2)))))
for k in range(0, len(made), 2):
    for col, (metric, chart, df) in zip(st.columns(2), made[k:k + 2]):
        with col:
            st.caption(metric)
            charts.downloads(df, f"training_{metric}", key=f"csv_training_{metric}", chart=chart)
