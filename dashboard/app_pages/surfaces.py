"""Surfaces: 2-D loss surfaces of two to four runs side by side on one colour and z scale, 1-D
interpolations, weight trajectories, wavelet energies, persistence diagrams, the Gaussian fit and
optimizer paths over its contours."""
import altair as alt
import streamlit as st

from dashboard import charts, data

root, filters, compare = data.context()
st.title("Surfaces")
candidates = compare or data.runs(root, filters)["run_id"].tolist()
have = data.runs_with(root, "surface_points", tuple(candidates))
if not have:
    st.info("No filtered run has a 2-D surface yet. Run `python -m landscape_lib analyze RUN "
            "--what surface` or use the Lab page.")
    st.stop()
picked = st.multiselect("Runs side by side (up to 4)", have, default=have[:2], max_selections=4,
                        key="surf_runs", bind="query-params")
if not picked:
    st.stop()


def rows_or_note(table: str, what: str):
    """The chosen runs' rows of `table`; a note instead when there are none."""
    rows = data.rows_for_runs(root, table, tuple(picked))
    if rows.empty:
        st.info(f"No {what} for these runs.")
    return rows


catalog = data.surfaces(root, tuple(picked))


def _label(row) -> str:
    return f"epoch {row.epoch} · {row.directions or 'directions ?'} · {row.nx}x{row.ny}"


tabs = st.tabs(["2-D surfaces", "Interpolation", "Trajectory", "Wavelets", "Persistence",
                "Gaussian fit and optimizer paths"])
with tabs[0]:
    cols = st.columns(len(picked))
    chosen = []
    for col, run_id in zip(cols, picked):
        mine = catalog[catalog["run_id"] == run_id]
        names = [_label(r) for r in mine.itertuples()]
        labels = {(f"{n} ({r.analysis_id})" if names.count(n) > 1 else n): r.analysis_id
                  for n, r in zip(names, mine.itertuples())}
        chosen.append(labels[col.selectbox(run_id, list(labels), key=f"surf_pick_{run_id}",
                                               persist_state="session")])
    c1, c2, c3 = st.columns(3)
    value = c1.radio("Value", ["loss", "acc"], horizontal=True, key="surf_value",
                     persist_state="session")
    view = c2.radio("View", ["3-D surface", "contour"], horizontal=True, key="surf_view",
                    persist_state="session")
    log_z = c3.toggle("Log z", key="surf_log", persist_state="session", disabled=value != "loss")
    points = data.surface_points(root, tuple(chosen))
    grids = [(f"{run_id}<br>epoch {int(p['epoch'].iloc[0])}", *charts.grid_of(p, value))
             for run_id, aid in zip(picked, chosen)
             for p in [points[points["analysis_id"] == aid]]]
    fig = charts.surfaces_figure(grids, kind="surface" if view == "3-D surface" else "contour",
                                 z_title=value, log_z=log_z and value == "loss")
    charts.plotly(fig, points, "surface_points", key="csv_surface_points")
    summary = data.surface_summary(root, tuple(chosen))
    if not summary.empty:
        charts.table(summary, "surface_summary", key="csv_surface_summary")
    spread = data.surface_seed_spread(root, tuple(picked))
    if (spread["n_seeds"] > 1).any():
        st.caption("Centre curvature and basin width across random-direction seeds "
                   "(mean and standard deviation over the seeds of each run).")
        charts.table(spread, "surface_seed_spread", key="csv_surface_seed_spread")

with tabs[1]:
    interp = rows_or_note("interpolation", "linear interpolation")
    if not interp.empty:
        interp = interp.assign(pair=interp["run_id"] + " · epoch " + interp["epoch_b"].astype(str)
                               + " -> " + interp["epoch"].astype(str))
        left, right = st.columns(2)
        with left:
            chart = charts.lines(interp, "alpha", "loss", "pair", points=True,
                                 title="Loss along w(a) = (1 - a) w1 + a w2")
            charts.altair(chart, interp, "interpolation", key="csv_interpolation")
        with right:
            chart = charts.lines(interp, "alpha", "acc", "pair", points=True,
                                 title="Accuracy along the same line")
            charts.altair(chart, interp, "interpolation", key="csv_interpolation_acc")

with tabs[2]:
    traj = rows_or_note("trajectory", "weight trajectory")
    if not traj.empty:
        method = st.radio("Embedding", sorted(traj["method"].dropna().unique()), horizontal=True,
                          key="traj_method", persist_state="session")
        df = traj[traj["method"] == method]
        var = df.groupby("run_id")["explained_variance"].first().dropna()
        if len(var):
            st.caption("Explained variance of the plane: " + ", ".join(
                f"{r}: {v:.0%}" for r, v in var.items()))
        base = alt.Chart(charts.chart_safe(df)).encode(x="x:Q", y="y:Q")
        path = base.mark_line(color="lightgray").encode(order="point_epoch:Q",
                                                        detail="run_id:N")
        dots = base.mark_point(filled=True, size=70).encode(
            color=alt.Color("point_epoch:Q", scale=alt.Scale(scheme="viridis"), title="epoch"),
            shape=alt.Shape("run_id:N", legend=alt.Legend(orient="bottom", columns=1,
                                                          labelLimit=600)),
            tooltip=["run_id", "point_epoch", "x", "y"])
        chart = (path + dots).properties(
            height=460, title=f"Weights per epoch on the {method} plane").interactive()
        charts.altair(chart, df, f"trajectory_{method}", key="csv_trajectory")

with tabs[3]:
    wav = rows_or_note("wavelets", "wavelet analysis")
    if not wav.empty:
        chart = alt.Chart(charts.chart_safe(wav)).mark_line(point=True).encode(
            x=alt.X("level:O"), y=alt.Y("energy:Q", scale=alt.Scale(type="log")),
            color=charts.color_channel("kind:N"), column=alt.Column("run_id:N", title=None),
            tooltip=["run_id", "level", "kind", "energy"],
        ).properties(width=220, height=260, title="Energy per level (1 = finest)")
        charts.altair(chart, wav, "wavelet_energy", key="csv_wavelets")

with tabs[4]:
    pers = rows_or_note("persistence", "persistence diagram")
    if not pers.empty:
        cols = st.columns(len(picked))
        for col, run_id in zip(cols, picked):
            df = pers[pers["run_id"] == run_id]
            if df.empty:
                continue
            points_chart = alt.Chart(charts.chart_safe(df)).mark_circle(size=70).encode(
                x="birth:Q", y="death:Q", color=charts.color_channel("dim:N", "circle"),
                tooltip=["dim", "birth", "death", "lifetime"])
            with col:
                charts.altair((charts.diagonal_rule(df, "birth", "death") + points_chart)
                              .properties(title=run_id, height=300), df,
                              f"persistence_{run_id}", key=f"csv_persistence_{run_id}")

def _pad(values) -> tuple[float, float]:
    return float(values.min()) - 0.5, float(values.max()) + 0.5


def _analytic(surface: str):
    """(xs, ys, Z) of a registered analytic test surface; imports torch, hence on request."""
    from landscape_lib.analyses.paths import surface_grid
    from landscape_lib.errors import LandscapeError
    try:  # Z[j, i] at (xs[i], ys[j]): Plotly's layout already
        return surface_grid(surface, n=101)
    except LandscapeError as exc:
        st.caption(f"No contours for '{surface}': {exc}")
        return None


with tabs[5]:
    fits = data.rows_for_runs(root, "gauss_fit", tuple(picked))
    paths = data.rows_for_runs(root, "optimizer_paths", tuple(picked))
    if fits.empty and paths.empty:
        st.info("No Gaussian fit or optimizer paths for these runs (analyses `surface` and "
                "`paths`).")
    if not fits.empty:
        charts.table(fits, "gauss_fit", key="csv_gauss_fit")
    for (run_id, epoch, aid, surface), group in paths.groupby(
            ["run_id", "epoch", "analysis_id", "surface"], sort=False, dropna=False):
        # The `paths` analysis runs on the Gaussian fitted to the run's surface at that epoch.
        fit = fits[(fits["run_id"] == run_id) & (fits["epoch"] == epoch)]
        background = None
        if surface == "gaussian-fit" and not fit.empty:
            background = charts.gaussian_grid(fit.iloc[-1], _pad(group["x"]), _pad(group["y"]))
        fig = charts.paths_figure(background, group, f"{run_id} (epoch {epoch}): optimizer "
                                  f"paths on {surface}")
        charts.plotly(fig, group, f"optimizer_paths_{run_id}_{surface}",
                      key=f"csv_paths_{aid}_{surface}")

    study = data.standalone_rows(root, "optimizer_paths")
    if not study.empty:
        st.subheader("Analytic test surfaces")
        analytic = st.toggle("Draw their contours (loads torch: a few seconds)",
                             key="paths_analytic", persist_state="session")
        for (aid, surface), group in study.groupby(["analysis_id", "surface"], sort=False):
            fig = charts.paths_figure(_analytic(surface) if analytic else None, group,
                                      f"Optimizer paths on {surface}")
            charts.plotly(fig, group, f"optimizer_paths_{surface}",
                          key=f"csv_paths_{aid}_{surface}")
