"""Training: per-epoch curves of any recorded metric, overlaid per run or as mean +/- std over
seeds; optional EMA smoothing and log scale."""
import streamlit as st

from dashboard import charts, data

root, filters, compare = data.context()
st.title("Training")
ids, which = data.scope(root, filters, compare, limit=10)
if not ids:
    st.info("No run matches the filters in the sidebar.")
    st.stop()
st.caption(f"Showing {which}.")

metrics = st.multiselect("Metrics", data.EPOCH_METRICS, key="train_metrics",
                         persist_state="session",
                         default=["train_loss", "val_loss", "val_acc"])
rows = data.runs_by_id(root, tuple(ids))
groups = data.seed_groups(rows)
sizes = groups.map(groups.value_counts())
c1, c2, c3 = st.columns([2, 1, 1])
alpha = c1.slider("Smoothing (EMA weight of the past)", 0.0, 0.95, 0.0, 0.05, key="train_ema",
                  persist_state="session")
log_y = c2.toggle("Log scale", key="train_log", persist_state="session")
bands = c3.toggle("Mean ± std over seeds", key="train_bands", persist_state="session",
                  disabled=not (sizes > 1).any(), value=bool((sizes > 1).all()),
                  help="Runs whose configurations differ only by their seed are averaged.")

curves = data.epoch_curves(root, tuple(ids), tuple(metrics))
cols = st.columns(2)
for i, metric in enumerate(metrics):
    df = data.smooth(curves[["run_id", "epoch", metric]], metric, "run_id", alpha)
    if bands and (sizes > 1).any():
        df = data.seed_bands(df, groups, metric)
        chart = charts.lines(df, "epoch", "mean", "config", band=("lo", "hi"), log_y=log_y,
                             title=metric, y_title=metric)
    else:
        chart = charts.lines(df, "epoch", metric, "run_id", log_y=log_y, title=metric)
    with cols[i % 2]:
        charts.altair(chart, df, f"training_{metric}", key=f"csv_training_{metric}")
