"""Curvature: Hessian spectra over training (top eigenvalues, trace, negative share), eigenvalue
densities, per-layer top eigenvalues, and sharpness against generalization across runs."""
import streamlit as st

from dashboard import charts, data

root, filters, compare = data.context()
st.title("Curvature")
ids, which = data.scope(root, filters, compare, limit=10, having="hessian_summary")
log_y = st.toggle("Log scale for eigenvalues and traces", key="curv_log", persist_state="session")

if not ids:
    st.info("No compared or filtered run has Hessian results yet. Run `python -m landscape_lib "
            "analyze RUN --what hessian` or use the Lab page.")
else:
    st.caption(f"Spectra of {which}.")
    left, right = st.columns(2)
    eigs = charts.thin(data.hessian_eigs(root, tuple(ids)))
    with left:
        chart = charts.lines(eigs, "epoch", "eigenvalue", "run_id", detail="k", points=True,
                             log_y=log_y, title="Top Hessian eigenvalues (one line per rank k)")
        charts.altair(chart, eigs, "top_eigenvalues", key="csv_top_eigs")
    summary = data.hessian_summary(root, tuple(ids))
    with right:
        df = summary[["run_id", "epoch", "trace", "trace_se"]].copy()
        df["lo"] = df["trace"] - df["trace_se"].fillna(0)
        df["hi"] = df["trace"] + df["trace_se"].fillna(0)
        chart = charts.lines(df, "epoch", "trace", "run_id", band=("lo", "hi"), points=True,
                             log_y=log_y, title="Hessian trace (Hutchinson, ± standard error)")
        charts.altair(chart, df, "hessian_trace", key="csv_trace")
    left, right = st.columns(2)
    with left:
        df = summary[["run_id", "epoch", "neg_share", "lam_min", "convexity_ratio"]]
        chart = charts.lines(df, "epoch", "neg_share", "run_id", points=True,
                             title="Share of negative eigenvalues (density mass below 0)")
        charts.altair(chart, df, "negative_share", key="csv_neg_share")

    epochs = data.hessian_epochs(root, tuple(ids))
    with right:
        epoch = (st.select_slider("Epoch for densities and layers", epochs, value=epochs[-1],
                                  key="curv_epoch", persist_state="session")
                 if len(epochs) > 1 else epochs[0])
        dens = data.hessian_density(root, tuple(ids), epoch)
        if dens.empty:
            st.info(f"No eigenvalue density at epoch {epoch}.")
        else:
            chart = charts.lines(dens, "x", "density", "run_id", log_y=log_y,
                                 title=f"Eigenvalue density at epoch {epoch}",
                                 x_title="eigenvalue")
            charts.altair(chart, dens, f"eigenvalue_density_e{epoch}", key="csv_density")
    layers = data.hessian_layers(root, tuple(ids), epoch)
    if not layers.empty:
        chart = charts.bars(layers, "top_eig", "layer", "run_id", offset="run_id", log_x=log_y,
                            title=f"Per-layer top eigenvalue at epoch {epoch}")
        charts.altair(chart, layers, f"layer_top_eig_e{epoch}", key="csv_layers")

st.subheader("Sharpness and generalization")
sharp = data.sharpness(root, filters)
if sharp.empty:
    st.info("No filtered run has Hessian results yet.")
    st.stop()
st.caption(f"Across the {len(sharp)} filtered runs with Hessian results, each at its last "
           "analysed epoch. Flatness: basin width of the 2-D surface (larger = flatter).")
measures = ["top_eig", "trace", "basin_width", "surface_curvature"]
targets = ["generalization_gap", "final_val_acc"]
c1, c2, c3 = st.columns(3)
x = c1.selectbox("Sharpness measure", measures, key="sharp_x", persist_state="session")
y = c2.selectbox("Against", targets, key="sharp_y", persist_state="session")
log_x = c3.toggle("Log x", value=True, key="sharp_logx", persist_state="session")
chart = charts.scatter(sharp, x, y, "model_label", log_x=log_x,
                       tooltip=["run_id", "init", "optimizer", x, y])
charts.altair(chart, sharp, "sharpness_vs_generalization", key="csv_sharpness")
tau = data.kendall(sharp, measures, targets)
st.caption("Kendall's tau (scipy.stats.kendalltau) over the runs finite in both columns.")
charts.table(tau, "kendall_tau", key="csv_kendall",
             column_config={"tau": st.column_config.NumberColumn(format="%.3f"),
                            "p_value": st.column_config.NumberColumn(format="%.2g")})
