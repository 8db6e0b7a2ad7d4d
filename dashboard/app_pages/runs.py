"""Runs: the filtered run table (metrics first, columns of your choice kept in the URL,
refreshing itself while runs are running), the config diff of the compared runs, parallel
coordinates and a final metric against a hyperparameter."""
import pandas as pd
import streamlit as st

from dashboard import charts
from dashboard.data import core
from dashboard.data import runs as runs_data

PARALLEL_RUNS = 200  # lines of the parallel-coordinates chart

root, filters, compare = core.context()
st.title("Runs")
runs = runs_data.runs(root, filters)
running = bool((runs["status"] == "running").any())
columns = st.multiselect("Columns", runs_data.RUN_COLUMNS + list(runs_data.KEYS),
                         default=runs_data.DEFAULT_COLUMNS, key="cols", bind="query-params")
columns = list(dict.fromkeys(["run_id", *columns]))


def _set_compare(ids: list[str]) -> None:
    st.session_state["compare"] = ids


@st.fragment(run_every=5 if running else None)
def run_table() -> None:
    with core.guard():
        df = runs_data.runs(root, filters)
        counts = df["status"].value_counts()
        cols = st.columns(1 + max(1, len(counts)))
        cols[0].metric("runs", len(df))
        for col, (status, n) in zip(cols[1:], counts.items()):
            col.metric(status, int(n))
        if df.empty:
            st.info("No run matches the filters in the sidebar.")
            return
        shown = df[columns]
        if len(shown) > runs_data.MAX_TABLE_ROWS:
            st.caption(f"The {runs_data.MAX_TABLE_ROWS:,} newest of {len(shown):,} runs are "
                       "listed (the CSV has them all): narrow the filters to see the others.")
        event = st.dataframe(
            shown.head(runs_data.MAX_TABLE_ROWS), hide_index=True, key="runs_table",
            on_select="rerun", selection_mode="multi-row", height=420,
            column_config={c: st.column_config.NumberColumn(format="%.4f")
                           for c in runs_data.METRIC_COLUMNS[:6]}
            | {"total_time": st.column_config.NumberColumn("total_time (s)", format="%.0f"),
               "lr": st.column_config.NumberColumn(format="%.2g")})
        picked = shown["run_id"].iloc[event.selection.rows].tolist()
        left, right = st.columns([1, 3])
        with left:
            charts.downloads(shown, "runs", key="csv_runs")
        with right:
            if st.button(f"Compare the {len(picked)} selected run(s)", disabled=not picked,
                         on_click=_set_compare, args=(picked,), icon=":material/compare_arrows:"):
                st.rerun(scope="app")  # the sidebar and other pages read the new selection
        if running:
            st.caption("Refreshing every 5 s while runs are running.")


run_table()
if runs.empty:
    st.stop()

if compare:
    st.subheader("Config diff of the compared runs")
    diff = runs_data.config_diff(runs_data.runs_by_id(root, tuple(compare)))
    if diff.empty:
        st.info("The compared runs have the same configuration.")
    else:
        st.caption("Only the config keys that differ; one column per run.")
        charts.table(diff, "config_diff", key="csv_config_diff")

done = runs[runs["final_val_acc"].notna()]
varying = runs_data.distinct_keys(done, runs_data.varying_keys(done, exclude=()))
metric_choices = runs_data.METRIC_COLUMNS[:6]
numeric = [k for k in varying if pd.to_numeric(done[k], errors="coerce").notna().all()]


def parallel() -> None:
    if len(done) < 2 or not varying:
        st.info("Parallel coordinates need two finished runs that differ in a config key.")
        return
    c1, c2 = st.columns([3, 1])
    axes = c1.multiselect("Config keys", list(runs_data.KEYS), default=varying[:6],
                          key="par_axes", bind="query-params",
                          format_func=lambda k: runs_data.LABELS[k])
    metric = c2.selectbox("Final metric", metric_choices, key="par_metric", bind="query-params")
    if axes:
        sample = done.head(PARALLEL_RUNS)  # one line per run: the browser draws each
        if len(done) > PARALLEL_RUNS:
            st.caption(f"The {PARALLEL_RUNS} newest of {len(done):,} finished runs: narrow the "
                       "filters to see others.")
        chart, long = charts.parallel(sample, axes, metric)
        charts.show(chart, long, "parallel_coordinates", key="csv_parallel")


def against_hyperparameter() -> None:
    if len(done) < 2 or not numeric:
        st.info("No numeric hyperparameter varies among the finished runs.")
        return
    c1, c2, c3 = st.columns(3)
    x = c1.selectbox("Hyperparameter", numeric, key="hp_x", bind="query-params",
                     format_func=lambda k: runs_data.LABELS[k])
    y = c2.selectbox("Final metric", metric_choices, key="hp_y", bind="query-params")
    color = c3.selectbox("Colour by", [k for k in varying if k != x] or [x], key="hp_color",
                         format_func=lambda k: runs_data.LABELS[k])
    df = done[list(dict.fromkeys(["run_id", x, y, color]))].copy()
    df[x] = pd.to_numeric(df[x], errors="coerce")
    df[color if color != x else "_colour"] = df[color].astype(str)
    color = color if color != x else "_colour"
    log_x = x in ("lr", "weight_decay") and bool((df[x] > 0).all())
    chart = charts.scatter(df.head(runs_data.MAX_TABLE_ROWS), x, y, color, log_x=log_x,
                           tooltip=["run_id", x, y, color], x_title=runs_data.LABELS[x])
    charts.show(chart, df, f"{y}_vs_{x}", key="csv_hp_scatter")


def details() -> None:
    ids = compare or runs["run_id"].head(runs_data.MAX_TABLE_ROWS).tolist()
    run_id = st.selectbox("Run", ids, key="runs_detail", persist_state="session")
    row = runs[runs["run_id"] == run_id]
    if row.empty:
        row = runs_data.runs_by_id(root, (run_id,))
    row = row.iloc[0]
    if isinstance(row.get("error"), str) and row["error"].strip():
        st.error(f"{row['status']}: {row['error']}")
    left, right = st.columns(2)
    with left:
        st.caption("Configuration")
        config = row.get("config_json")
        st.json(config if isinstance(config, str) and config else "{}")
    with right:
        st.caption("Summary")
        st.json(row.drop(labels=["config_json"], errors="ignore").dropna()
                .to_json(date_format="iso", default_handler=str))


# One view at a time, none until picked: the table above loads first, and the browser draws
# only the picked view's chart.
VIEWS = {"Parallel coordinates": parallel, "Final metric against a hyperparameter":
         against_hyperparameter, "Run details": details}
view = st.segmented_control("View", list(VIEWS), key="runs_view", bind="query-params")
if view:
    st.subheader(view)
    VIEWS[view]()
else:
    st.caption("Pick a view: parallel coordinates (config keys to a final metric), a final "
               "metric against a hyperparameter, or one run's configuration and summary.")
