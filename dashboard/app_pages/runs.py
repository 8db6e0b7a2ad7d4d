"""Runs: the filtered run table (refreshing itself while runs are running) and run details."""
import json

import streamlit as st

from dashboard import charts, data

root, filters, compare = data.context()
st.title("Runs")
runs = data.runs(root, filters)
running = bool((runs["status"] == "running").any())


def _set_compare(ids: list[str]) -> None:
    st.session_state["compare"] = ids


@st.fragment(run_every=5 if running else None)
def run_table() -> None:
    with data.guard():
        df = data.runs(root, filters)
        counts = df["status"].value_counts()
        cols = st.columns(1 + max(1, len(counts)))
        cols[0].metric("runs", len(df))
        for col, (status, n) in zip(cols[1:], counts.items()):
            col.metric(status, int(n))
        if df.empty:
            st.info("No run matches the filters in the sidebar.")
            return
        shown = df[data.RUN_TABLE_COLUMNS]
        event = st.dataframe(
            shown, hide_index=True, key="runs_table", on_select="rerun",
            selection_mode="multi-row", height=420,
            column_config={
                "final_val_acc": st.column_config.NumberColumn(format="%.4f"),
                "best_val_acc": st.column_config.NumberColumn(format="%.4f"),
                "final_train_loss": st.column_config.NumberColumn(format="%.4f"),
                "final_val_loss": st.column_config.NumberColumn(format="%.4f"),
                "generalization_gap": st.column_config.NumberColumn(format="%.4f"),
                "total_time": st.column_config.NumberColumn("total_time (s)", format="%.0f"),
                "lr": st.column_config.NumberColumn(format="%.2g"),
            })
        picked = shown["run_id"].iloc[event.selection.rows].tolist()
        left, right = st.columns([1, 3])
        with left:
            charts.download_csv(shown, "runs", key="csv_runs")
        with right:
            if st.button(f"Compare the {len(picked)} selected run(s)", disabled=not picked,
                         on_click=_set_compare, args=(picked,), icon=":material/compare_arrows:"):
                st.rerun(scope="app")  # the sidebar and other pages read the new selection
        if running:
            st.caption("Refreshing every 5 s while runs are running.")


run_table()

st.subheader("Run details")
ids = compare or runs["run_id"].tolist()
if ids:
    run_id = st.selectbox("Run", ids, key="runs_detail", persist_state="session")
    row = runs[runs["run_id"] == run_id]
    if row.empty:
        row = data.runs_by_id(root, (run_id,))
    row = row.iloc[0]
    if isinstance(row.get("error"), str) and row["error"].strip():
        st.error(f"{row['status']}: {row['error']}")
    left, right = st.columns(2)
    with left:
        st.caption("Configuration")
        config = row.get("config_json")
        st.json(json.loads(config) if isinstance(config, str) and config else {})
    with right:
        st.caption("Summary")
        st.json(row.drop(labels=["config_json"], errors="ignore").dropna()
                .to_json(date_format="iso", default_handler=str))
