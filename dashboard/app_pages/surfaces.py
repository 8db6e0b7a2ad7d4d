"""Surfaces: 2-D loss surfaces of up to six runs side by side (one shared or per-panel colour
and z scale), 1-D interpolations, weight trajectories, wavelet energies, persistence diagrams,
the Gaussian fit and optimizer paths over its contours. Only the open view is drawn."""
import altair as alt
import streamlit as st

from dashboard import charts, figures3d, widgets
from dashboard.data import core, surfaces
from dashboard.data import runs as runs_data

root, filters, compare = core.context()
st.title("Surfaces")
candidates = compare or runs_data.runs(root, filters)["run_id"].tolist()
have = surfaces.runs_with(root, "surface_points", tuple(candidates))
if not have:
    st.info("No filtered run has a 2-D surface yet. Run `python -m landscape_lib analyze RUN "
            "--what surface` or use the Lab page.")
    st.stop()
picked = widgets.runs_multiselect("Runs side by side (up to 6)", have, key="surf_runs",
                                 default=2, most=6)
if not picked:
    st.stop()
KINDS = ["heat map", "contour", "3-D surface"]  # Plotly (contour, 3-D) only on request
VIEWS = ["2-D surfaces", "Interpolation", "Trajectory", "Wavelets", "Persistence",
         "Gaussian fit and optimizer paths"]
view = st.segmented_control("View", VIEWS, default=VIEWS[0], key="surf_view",
                            bind="query-params") or VIEWS[0]


def rows_or_note(table: str, what: str):
    """The chosen runs' rows of `table`; a note instead when there are none."""
    rows = surfaces.rows_for_runs(root, table, tuple(picked))
    if rows.empty:
        st.info(f"No {what} for these runs.")
    return rows


def _label(row) -> str:
    seed = "" if row.dir_seed is None or row.dir_seed != row.dir_seed else \
        f" seed {int(row.dir_seed)}"
    return f"epoch {row.epoch} · {row.directions or 'directions ?'}{seed} · {row.nx}x{row.ny}"


def _axis(row, k: int) -> str:
    norm = row.normalization or ("filter" if row.directions == "random" else "unit")
    return f"{row.directions or 'direction'} {k} ({norm}-normalised)"


def two_d() -> None:
    catalog = surfaces.surfaces(root, tuple(picked))
    cols = st.columns(len(picked))
    chosen = []
    for col, run_id in zip(cols, picked):
        mine = catalog[catalog["run_id"] == run_id]
        names = [_label(r) for r in mine.itertuples()]
        labels = {(f"{n} ({r.analysis_id})" if names.count(n) > 1 else n): r
                  for n, r in zip(names, mine.itertuples())}
        chosen.append(labels[col.selectbox(run_id, list(labels), key=f"surf_pick_{run_id}",
                                           persist_state="session")])
    c1, c2, c3, c4 = st.columns(4)
    value = c1.radio("Value", ["loss", "acc"], horizontal=True, key="surf_value",
                     persist_state="session")
    kind = c2.radio("Draw as", KINDS, horizontal=True, key="surf_kind", bind="query-params",
                    help="Heat maps are drawn fastest; contours and 3-D surfaces use Plotly "
                    "(3-D with WebGL: slower on machines without a GPU).")
    shared = c3.radio("Colour and z scale", ["shared", "per panel"], horizontal=True,
                      key="surf_scale", bind="query-params") == "shared"
    log_z = c4.toggle("Log z", key="surf_log", persist_state="session", disabled=value != "loss")
    log_z = log_z and value == "loss"
    ids = tuple(r.analysis_id for r in chosen)
    points = surfaces.surface_points(root, ids, tuple(picked))
    summary = surfaces.surface_summary(root, ids).set_index("analysis_id")
    panels = {r.analysis_id: {"title": [run_id, _label(r)], "x_title": _axis(r, 1),
                              "y_title": _axis(r, 2)} for run_id, r in zip(picked, chosen)}

    def heatmap():
        return figures3d.surfaces_heatmap(points, value, panels, shared, log_z)
    if kind == KINDS[0]:
        charts.show(heatmap(), points, "surface_points", key="csv_surface_points")
    else:
        grids = []
        for run_id, row in zip(picked, chosen):
            p = points[points["analysis_id"] == row.analysis_id]
            xs, ys, Z = figures3d.grid_of(p, value)
            centre = p.loc[(p["x"].abs() + p["y"].abs()).idxmin(), value] if len(p) else None
            grids.append({"title": f"{run_id}<br>{_label(row)}", "xs": xs, "ys": ys, "Z": Z,
                          "x_title": _axis(row, 1), "y_title": _axis(row, 2),
                          "centre": centre})
        fig = figures3d.surfaces_figure(grids, kind="surface" if kind == KINDS[2] else
                                        "contour", z_title=value, log_z=log_z, shared=shared)
        charts.plotly(fig, points, "surface_points", key="csv_surface_points", static=heatmap)
    st.caption("The red cross is the checkpoint itself (the centre, 0, 0). Directions: "
               + "; ".join(f"{run}: {_axis(r, 1)} and {_axis(r, 2)}, seed "
                           f"{'?' if r.dir_seed != r.dir_seed else int(r.dir_seed)}"
                           for run, r in zip(picked, chosen)))
    # The tables on request, one at a time: the browser draws every table shown.
    spread = surfaces.surface_seed_spread(root, tuple(picked))
    tables = (["Surface statistics"] if not summary.empty else []) + (
        ["Spread over direction seeds"] if (spread["n_seeds"] > 1).any() else [])
    table = st.segmented_control("Table", tables, key="surf_table", persist_state="session")
    if table == "Surface statistics":
        st.caption("Centre loss, curvature along each direction and basin width per surface.")
        charts.table(summary.reset_index(), "surface_summary", key="csv_surface_summary")
    elif table:
        st.caption("Centre curvature and basin width across random-direction seeds "
                   "(mean and standard deviation over the seeds of each run).")
        charts.table(spread, "surface_seed_spread", key="csv_surface_seed_spread")


def interpolation() -> None:
    interp = rows_or_note("interpolation", "linear interpolation")
    if interp.empty:
        return
    interp = interp.assign(pair=interp["run_id"] + " · epoch " + interp["epoch_b"].astype(str)
                           + " -> " + interp["epoch"].astype(str))
    left, right = st.columns(2)
    for col, value, title, show_legend in ((left, "loss", "Loss along (1 - a) w1 + a w2", False),
                                           (right, "acc", "Accuracy along the same line", True)):
        with col:
            chart = charts.lines(interp, "alpha", value, "pair", points=True, title=title,
                                 show_legend=show_legend)
            charts.show(chart, interp, f"interpolation_{value}", key=f"csv_interp_{value}")


def trajectory() -> None:
    traj = rows_or_note("trajectory", "weight trajectory")
    if traj.empty:
        return
    method = st.radio("Embedding", sorted(traj["method"].dropna().unique()), horizontal=True,
                      key="traj_method", persist_state="session")
    df = traj[traj["method"] == method]
    var = df.groupby("run_id")["explained_variance"].first().dropna()
    if len(var):
        st.caption("Explained variance of the plane: " + ", ".join(
            f"{r}: {v:.0%}" for r, v in var.items()))
    base = alt.Chart(charts.chart_safe(df)).encode(x="x:Q", y="y:Q")
    path = base.mark_line(color="lightgray").encode(order="point_epoch:Q", detail="run_id:N")
    dots = base.mark_point(filled=True, size=70).encode(
        color=alt.Color("point_epoch:Q", scale=alt.Scale(scheme="viridis"), title="epoch"),
        shape=alt.Shape("run_id:N", legend=charts.legend(True, len(picked))),
        tooltip=["run_id", "point_epoch", "x", "y"])
    chart = (path + dots).properties(
        height=460, title=alt.TitleParams(f"Weights per epoch on the {method} plane",
                                          **charts.TITLE)).interactive()
    charts.show(chart, df, f"trajectory_{method}", key="csv_trajectory")


def wavelets() -> None:
    wav = rows_or_note("wavelets", "wavelet analysis")
    if wav.empty:
        return
    chart = alt.Chart(charts.chart_safe(wav)).mark_line(point=True).encode(
        x=alt.X("level:O"), y=alt.Y("energy:Q", scale=alt.Scale(type="log")),
        color=alt.Color("kind:N", legend=charts.legend(True, 4)),
        column=alt.Column("run_id:N", title=None), tooltip=["run_id", "level", "kind", "energy"],
    ).properties(width=200, height=240, title="Energy per level (1 = finest)")
    charts.show(chart, wav, "wavelet_energy", key="csv_wavelets")


def persistence() -> None:
    pers = rows_or_note("persistence", "persistence diagram")
    if pers.empty:
        return
    cols = st.columns(min(len(picked), 3))
    for k, run_id in enumerate(picked):
        df = pers[pers["run_id"] == run_id]
        if df.empty:
            continue
        points = alt.Chart(charts.chart_safe(df)).mark_point(filled=True, size=60).encode(
            x="birth:Q", y="death:Q", **charts.series(df.assign(dim=df["dim"].astype(str)),
                                                      "dim", mark="point"),
            tooltip=["dim", "birth", "death", "lifetime"])
        with cols[k % len(cols)]:
            charts.show((charts.diagonal_rule(df, "birth", "death") + points).properties(
                title=run_id, height=280), df, f"persistence_{run_id}",
                key=f"csv_persistence_{run_id}")


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


def paths_view() -> None:
    fits = surfaces.rows_for_runs(root, "gauss_fit", tuple(picked))
    paths = surfaces.rows_for_runs(root, "optimizer_paths", tuple(picked))
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
            background = figures3d.gaussian_grid(fit.iloc[-1], _pad(group["x"]),
                                                 _pad(group["y"]))
        title = f"{run_id} (epoch {epoch}): optimizer paths on {surface}"
        charts.plotly(figures3d.paths_figure(background, group, title), group,
                      f"optimizer_paths_{run_id}_{surface}", key=f"csv_paths_{aid}_{surface}",
                      static=lambda g=group, t=title: figures3d.paths_static(g, t))
    study = surfaces.standalone_rows(root, "optimizer_paths")
    if not study.empty:
        st.subheader("Analytic test surfaces")
        analytic = st.toggle("Draw their contours (loads torch: a few seconds)",
                             key="paths_analytic", persist_state="session")
        for (aid, surface), group in study.groupby(["analysis_id", "surface"], sort=False):
            title = f"Optimizer paths on {surface}"
            fig = figures3d.paths_figure(_analytic(surface) if analytic else None, group, title)
            charts.plotly(fig, group, f"optimizer_paths_{surface}",
                          key=f"csv_paths_{aid}_{surface}",
                          static=lambda g=group, t=title: figures3d.paths_static(g, t))


dict(zip(VIEWS, [two_d, interpolation, trajectory, wavelets, persistence, paths_view]))[view]()
