"""Curvature: per run (runs on an axis) the top eigenvalues, lambda_min with its convergence,
the convexity ratio, the trace with its standard error and the negative share (every number
as a table in a view of its own); eigenvalue densities on a log axis; per-layer curvature by
depth and type; the spectra over epochs when a run has several analysed epochs; sharpness
against generalization within the shown runs."""
import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, stats
from dashboard.data import core, curvature
from dashboard.data import runs as runs_data

CAP = 40  # runs on the per-run charts
NOT_MEASURED = "not measured"

root, filters, compare = core.context()
st.title("Curvature")
have = curvature.runs_with_hessian(root, core.Filters() if compare else filters)
ids = [r for r in compare if r in set(have)] if compare else have
if not ids:
    st.info("No compared or filtered run has Hessian results yet. Run `python -m landscape_lib "
            "analyze RUN --what hessian` or use the Lab page.")
    st.stop()
if len(ids) > CAP:
    st.caption(f"The {CAP} newest of {len(ids)} runs with Hessian results are shown: narrow the "
               "filters or pick runs to compare.")
ids = tuple(ids[:CAP])
summary = curvature.hessian_summary(root, ids)
multi = bool(summary.groupby("run_id")["epoch"].nunique().gt(1).any())
# One view at a time (the browser draws only its chart or table); the default is one chart.
views = ["Per run", "Table", "Density", "Per layer", "Sharpness and generalization"] + (
    ["Over epochs"] if multi else [])
view = st.segmented_control("View", views, default=views[0], key="curv_view",
                            bind="query-params") or views[0]
last = summary.sort_values("epoch").groupby("run_id").tail(1)
at = tuple((r, int(e)) for r, e in zip(last["run_id"], last["epoch"]))
st.caption(f"{len(ids)} runs, each at its last analysed epoch "
           f"({', '.join(sorted({str(e) for _, e in at}))}).")


def flag(values) -> pd.Series:
    return pd.Series(values).map({True: "converged", False: "not converged"}).fillna(
        NOT_MEASURED)


def per_run_chart(top: pd.DataFrame, df: pd.DataFrame, log_x: bool) -> alt.TopLevelMixin:
    """One chart of five panels in two rows, runs on y: one view for the browser to draw."""
    width = 180
    return charts.panels([
        charts.dots(top, "eigenvalue", "run_id", "k", log_x=log_x, show_legend=True,
                    title="Top eigenvalues (Lanczos)", width=width),
        charts.dots(df, "trace", "run_id", "run_id", err=("trace_lo", "trace_hi"),
                    log_x=log_x, show_legend=False, title="Trace ±1.96 SE", width=width,
                    y_labels=False),
        charts.dots(df, "lam_min", "run_id", "run_id", shape="lam_min_status",
                    show_legend=True, title="lambda_min (shape: converged?)", width=width,
                    y_labels=False)], [
        charts.dots(df, "convexity_ratio", "run_id", "run_id", show_legend=False,
                    title="|lambda_min| / lambda_max", width=width),
        charts.dots(df, "neg_share", "run_id", "run_id", err=("neg_lo", "neg_hi"),
                    show_legend=False, title="Negative share ±1.96 SE", width=width,
                    y_labels=False)])


@st.cache_data(max_entries=16, show_spinner=False)
def per_run_spec(top: pd.DataFrame, df: pd.DataFrame, log_x: bool) -> dict:
    """per_run_chart's spec, made once per data (a page visited again skips Altair)."""
    return charts.spec(per_run_chart(top, df, log_x))


def per_run() -> None:
    log_x = st.toggle("Log scale for eigenvalues and traces", key="curv_log",
                      persist_state="session")
    eigs = curvature.hessian_eigs(root, ids)
    eigs = eigs.merge(pd.DataFrame(at, columns=["run_id", "epoch"]))
    top = eigs[eigs["which"] == "top"].assign(k=lambda d: "k=" + d["k"].astype(str))
    df = last.assign(lam_min_status=flag(last["lam_min_converged"].tolist()).values,
                     top_status=flag(last["top_eig_converged"].tolist()).values)
    df["trace_lo"] = df["trace"] - 1.96 * df["trace_se"].fillna(0)
    df["trace_hi"] = df["trace"] + 1.96 * df["trace_se"].fillna(0)
    df["neg_lo"] = (df["neg_share"] - 1.96 * df["neg_share_se"].fillna(0)).clip(0, 1)
    df["neg_hi"] = (df["neg_share"] + 1.96 * df["neg_share_se"].fillna(0)).clip(0, 1)
    per_run_columns = ["run_id", "epoch", "trace", "trace_se", "trace_lo", "trace_hi",
                       "lam_min", "lam_min_residual", "lam_min_status", "lowest_ritz",
                       "lam_min_lanczos",
                       "lam_min_consistent", "convexity_ratio", "neg_share", "neg_share_se",
                       "neg_lo", "neg_hi", "neg_eps", "near_zero_share"]
    charts.show(lambda: per_run_chart(top, df, log_x), df[per_run_columns], "hessian_per_run",
                key="csv_per_run", drawn=per_run_spec(top, df, log_x))
    st.caption("The top eigenvalues as CSV (one row per run and k):")
    charts.downloads(top, "top_eigenvalues", key="csv_top_eigs")
    eps = df["neg_eps"].dropna()
    st.caption("Negative share: the spectral density's mass below "
               + (f"-neg_eps x lambda_max (neg_eps = {', '.join(sorted({f'{e:g}' for e in eps}))}"
                  "; near-zero mass |lambda| <= neg_eps x lambda_max is counted apart)"
                  if len(eps) else "0 (these analyses predate the neg_eps threshold)")
               + ". Columns an analysis did not measure read 'not measured'.")
    st.caption("Every number of the whole-network analysis, per run: the view Table.")


def summary_table() -> None:
    table = last[["run_id", "epoch", *curvature.SUMMARY_COLUMNS]].copy()
    for col in curvature.SUMMARY_COLUMNS:  # text: a value, or "not measured" where NULL
        table[col] = table[col].map(lambda v: NOT_MEASURED if pd.isna(v) else
                                    (str(v) if isinstance(v, (bool, np.bool_)) else f"{v:.4g}"))
    charts.table(table, "hessian_summary", key="csv_hessian_summary")


def density() -> None:
    dens = curvature.hessian_density(root, ids, at)
    if dens.empty:
        st.info("No eigenvalue density for these runs.")
        return
    floor = 1e-8
    dens = dens.assign(density=dens["density"].clip(lower=floor))
    step = max(1, -(-len(dens) // charts.ALTAIR_MAX_ROWS))  # every k-th point of each run
    dens = dens[dens.groupby("run_id").cumcount() % step == 0]
    chart = alt.Chart(charts.chart_safe(dens)).mark_line().encode(
        x=alt.X("x:Q", title="eigenvalue"),
        y=alt.Y("density:Q", scale=alt.Scale(type="log"), title="density (log)"),
        color=alt.value(charts.COLORS[0]), tooltip=["run_id", "epoch", "x", "density"],
    ).properties(width=260, height=180).facet(
        facet=alt.Facet("run_id:N", title=None), columns=3).resolve_scale(x="independent")
    charts.show(chart, dens, "eigenvalue_density", key="csv_density")
    st.caption(f"Stochastic Lanczos quadrature densities, log density axis (floored at "
               f"{floor:g}), so the negative tail shows next to the bulk (PyHessian's style).")


def per_layer() -> None:
    layers = curvature.with_depth(curvature.hessian_layers(root, ids, at))
    if layers.empty:
        st.info("No per-layer curvature for these runs (the hessian analysis with per_layer).")
        return
    value = st.radio("Value", ["top_eig", "trace"], horizontal=True, key="layer_value",
                     persist_state="session")
    chart = alt.Chart(charts.chart_safe(layers[layers[value] > 0])).mark_bar().encode(
        x=alt.X("depth:O", title="layer (depth order)"),
        y=alt.Y(f"{value}:Q", scale=alt.Scale(type="log"), title=f"{value} (log)"),
        color=alt.Color("type:N", scale=alt.Scale(range=charts.COLORS),
                        legend=charts.legend(True, 5)),
        tooltip=["run_id", "layer", "type", "n_params", "top_eig", "trace"],
    ).properties(width=420, height=160).facet(row=alt.Row("run_id:N", title=None)
                                              ).resolve_scale(x="independent")
    charts.show(chart, layers, f"layer_{value}", key="csv_layers")


def over_epochs() -> None:
    left, right = st.columns(2)
    for i, (col, name) in enumerate([("top_eig", "lambda_max"), ("trace", "trace"),
                                     ("neg_share", "negative share"), ("lam_min", "lambda_min")]):
        with (left if i % 2 == 0 else right):
            df = summary[["run_id", "epoch", col]]
            chart = charts.lines(df, "epoch", col, "run_id", points=True, title=name,
                                 show_legend=i % 2 == 1)
            charts.show(chart, df, f"{col}_over_epochs", key=f"csv_epochs_{col}")


def sharpness() -> None:
    measures = curvature.run_measures(root, core.Filters() if compare else filters, ids)
    measures = measures[measures["top_eig"].notna()]
    varying = runs_data.distinct_keys(measures, runs_data.varying_keys(measures)) or [
        "model_label"]
    c1, c2, c3 = st.columns(3)
    x = c1.selectbox("Sharpness measure", ["top_eig", "trace", "surface_curvature",
                                           "basin_width"], key="sharp_x", persist_state="session")
    y = c2.selectbox("Against", ["generalization_gap", "final_val_acc"], key="sharp_y",
                     persist_state="session")
    log_x = c3.toggle("Log x", value=True, key="sharp_logx", persist_state="session")
    df = measures.assign(**{k: measures[k].astype(str) for k in varying[:2]})
    chart = charts.scatter(df, x, y, varying[0], shape=varying[1] if len(varying) > 1 else None,
                           log_x=log_x, tooltip=["run_id", *varying[:3], x, y, "n_dir_seeds"])
    charts.show(chart, df, "sharpness_vs_generalization", key="csv_sharpness")
    st.caption(f"The {len(df)} shown runs ({'compared' if compare else 'filtered'}); colour "
               f"and shape by {', '.join(runs_data.LABELS[k] for k in varying[:2])}. Surface "
               "statistics are the mean over each run's direction seeds (n_dir_seeds).")
    tau = stats.kendall(df, ["top_eig", "trace", "surface_curvature", "basin_width"],
                        ["generalization_gap", "final_val_acc"])
    charts.table(tau, "kendall_tau", key="csv_kendall",
                 column_config={"tau": st.column_config.NumberColumn(format="%.3f"),
                                "p_value": st.column_config.NumberColumn(format="%.2g")})


{"Per run": per_run, "Table": summary_table, "Density": density, "Per layer": per_layer,
 "Over epochs": over_epochs, "Sharpness and generalization": sharpness}[view]()
