"""Attention: Jensen-Shannon divergence between adjacent layers' attention per head (SEEDS C)
and the Frobenius norms of self-attention Hessian blocks against the input scale (SEEDS D), one
view at a time (the browser draws the open one only)."""
import altair as alt
import streamlit as st

from dashboard import charts, widgets
from dashboard.data import attention, core, surfaces
from dashboard.data import runs as runs_data

root, filters, compare = core.context()
st.title("Attention")
candidates = tuple(compare or runs_data.runs(root, filters)["run_id"].tolist())

VIEWS = ["Adjacent-layer divergence", "Hessian blocks against input scale"]
view = st.segmented_control("View", VIEWS, default=VIEWS[0], key="att_view",
                            bind="query-params") or VIEWS[0]  # only the open view is drawn


def divergence() -> None:
    have = surfaces.runs_with(root, "attention_jsd", candidates)
    if not have:
        st.info("No filtered run has attention-divergence results (transformer runs with the "
                "`attention` analysis).")
        return
    picked = widgets.runs_multiselect("Runs (up to 4)", have, key="jsd_runs", default=2, most=4)
    jsd = surfaces.rows_for_runs(root, "attention_jsd", tuple(picked))
    jsd = jsd[jsd["epoch"] == jsd.groupby("run_id")["epoch"].transform("max")]  # latest epoch
    if jsd.empty:
        return
    domain = (0.0, float(jsd["jsd"].max()))  # one colour scale for all runs
    chart = alt.hconcat(*(
        charts.heatmap(df, "head", "layer", "jsd", domain=domain,
                       title=f"{run_id} (epoch {df['epoch'].max()})")
        for run_id, df in ((r, jsd[jsd["run_id"] == r]) for r in picked) if len(df)))
    charts.show(chart.resolve_scale(color="shared"), jsd, "attention_jsd", key="csv_jsd")
    st.caption("Row `layer` compares the attention of block `layer` with block `layer + 1`; "
               "one panel per run, one colour scale.")


def hessian_blocks() -> None:
    sweeps = attention.attention_hessian_sweeps(root, candidates)
    if sweeps.empty:
        st.info("No attention-Hessian sweep in the store (the `attention-hessian` analysis).")
        return
    labels = {f"{r.analysis_id} ({r.run_id or 'stand-alone'})": r.analysis_id
              for r in sweeps.itertuples()}
    aid = labels[st.selectbox("Sweep", list(labels), key="ah_sweep", persist_state="session")]
    parts = attention.attention_hessian_parts(root, aid)
    chosen = st.multiselect("Parts (full = Gauss-Newton + functional)", parts, default=parts,
                            key="ah_parts", persist_state="session")
    df = attention.attention_hessian(root, aid, tuple(chosen))
    df = df.assign(setting=df["attention"]
                   + df["pre_ln"].map({True: " · pre-LN", False: " · post-LN"}))
    df = df[df["frobenius"] > 0]  # log axes
    chart = alt.Chart(charts.chart_safe(df)).mark_line(point=True).encode(
        x=alt.X("scale:Q", scale=alt.Scale(type="log"), title="input scale (std)"),
        y=alt.Y("frobenius:Q", scale=alt.Scale(type="log"), title="Frobenius norm"),
        color=alt.Color("block:N", legend=charts.legend(True, 9)),
        tooltip=["setting", "part", "block", "scale", "frobenius"],
    ).properties(width=160, height=160).facet(
        row=alt.Row("part:N"), column=alt.Column("setting:N"))
    charts.show(chart, df, f"attention_hessian_{aid}", key="csv_attention_hessian")

    hist = attention.attention_hessian_hist(root, aid)
    if not hist.empty:
        st.subheader("Entries of the Hessian blocks")
        st.caption("Histograms of each block's entries at input scale 1: linear attention "
                   "gives more uniform blocks than softmax; softmax makes the functional part's "
                   "diagonal blocks non-zero.")
        part = st.selectbox("Part", sorted(hist["part"].unique()), key="ah_hist_part",
                            persist_state="session")
        df = hist[hist["part"] == part]
        chart = alt.Chart(charts.chart_safe(df)).mark_line(interpolate="step-after").encode(
            x=alt.X("bin:Q", title="entry value"), y=alt.Y("count:Q"),
            color=alt.Color("block:N", legend=charts.legend(True, 9)),
            tooltip=["attention", "block", "bin", "count"],
        ).properties(width=320, height=200).facet(column=alt.Column("attention:N"))
        charts.show(chart, df, f"attention_hessian_hist_{aid}_{part}", key="csv_ah_hist")


{VIEWS[0]: divergence, VIEWS[1]: hessian_blocks}[view]()
