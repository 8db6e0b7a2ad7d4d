"""Lab: run an analysis on a stored checkpoint from the browser.

The analysis runs in a subprocess (`python -m landscape_lib analyze ...`, on the GPU when there is
one); this page polls its progress file from a fragment, can cancel it, and then shows the
result from the store. Asking again for an analysis that is already stored shows it at once.
"""
import json

import streamlit as st

from dashboard import charts, data, jobs

# Analyses of a run's checkpoint (names of landscape_lib's analyses registry) with the
# parameters the Lab shows: name -> (start value, min, max) or (start value, choices). Any other
# parameter can be given as key=value; the registry's defaults fill in the rest.
ANALYSES = {
    # Interactive defaults: light enough for ~10 s on a CPU (the per-layer spectra, the costly
    # part on deep nets, are one tick away).
    "hessian": {"samples": (256, 8, 100_000), "top_k": (5, 1, 100),
                "trace_samples": (20, 1, 10_000), "density_steps": (40, 4, 1_000),
                "per_layer": (False,)},
    "surface": {"grid": (21, 3, 401), "span": (1.0, 0.01, 10.0),
                "directions": ("random", ["random", "eigen", "pca"])},
    "interpolation": {"points": (31, 3, 1001)},
    "trajectory": {},
    "attention": {"samples": (256, 8, 100_000)},
    "paths": {"steps": (200, 1, 100_000)},
}
# The tables each analysis writes, shown as its result.
RESULT_TABLES = {
    "hessian": ("hessian_eigs", "hessian_summary", "hessian_density"),
    "surface": ("surface_points", "surface_summary", "wavelets", "persistence", "gauss_fit"),
    "interpolation": ("interpolation",), "trajectory": ("trajectory",),
    "attention": ("attention_jsd",), "paths": ("optimizer_paths",),
}
OTHER = "other (by name)"

root, filters, compare = data.context()
st.title("Lab")
filtered = data.runs(root, filters)["run_id"].tolist()
ids = list(dict.fromkeys(list(compare) + filtered))
if not ids:
    st.info("No run matches the filters in the sidebar.")
    st.stop()


def parse_extra(text: str) -> dict:
    """`key=value` lines (or space-separated pairs) -> dict; a malformed item is reported."""
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            st.error(f"'{item}' is not key=value")
            st.stop()
        out[key.strip()] = value.strip()
    return out


def _fmt(value, spec: str = ".4g") -> str:
    """A number for display; missing values (an option that was off) as a dash."""
    return "–" if value is None or value != value else format(float(value), spec)


c1, c2, c3 = st.columns([3, 1, 1])
run_id = c1.selectbox("Run", ids, key="lab_run", persist_state="session")
epochs = data.checkpoint_epochs(root, run_id)
if not epochs:
    st.info(f"{run_id} has no saved checkpoint (table `checkpoints`, kind 'checkpoint').")
    st.stop()
epoch = c2.selectbox("Checkpoint epoch", epochs, index=len(epochs) - 1, key="lab_epoch",
                     persist_state="session")
choice = c3.selectbox("Analysis", [*ANALYSES, OTHER], key="lab_what", persist_state="session")
what = (st.text_input("Analysis name", key="lab_other", persist_state="session")
        if choice == OTHER else choice)

params = {}
spec = ANALYSES.get(choice, {})
cols = st.columns(max(1, len(spec)))
for col, (name, (default, *limits)) in zip(cols, spec.items()):
    key = f"lab_{choice}_{name}"
    if isinstance(default, bool):
        params[name] = col.checkbox(name, value=default, key=key, persist_state="session")
    elif isinstance(default, str):
        params[name] = col.selectbox(name, limits[0], key=key, persist_state="session")
    else:
        params[name] = col.number_input(name, min_value=limits[0], max_value=limits[1],
                                        value=default, key=key, persist_state="session")
params |= parse_extra(st.text_input("More parameters (key=value, space-separated)",
                                    key="lab_extra", persist_state="session"))
if not what:
    st.stop()

entry = st.session_state.get("lab_job")


@st.fragment(run_every=1 if entry else None)
def progress_panel() -> None:
    """Progress of the running analysis; on exit, hand over to a full rerun."""
    current = st.session_state.get("lab_job")
    if current is None:
        return
    job = current["job"]
    if job.running:
        fraction, message = job.progress()
        st.progress(fraction, text=f"{current['what']} of {current['run_id']} at epoch "
                                   f"{current['epoch']}: {message}")
        if st.button("Cancel", icon=":material/cancel:", key="lab_cancel"):
            job.cancel()
        else:
            return
    st.session_state["lab_job"] = None
    with data.guard():
        data.refresh(root)  # show the new result now, not after the caches expire
    if job.cancelled:
        st.session_state["lab_message"] = ("warning", "The analysis was cancelled.")
    elif job.returncode != 0:
        st.session_state["lab_message"] = (
            "error", f"The analysis failed (exit {job.returncode}): {job.error() or 'no message'}")
    st.rerun(scope="app")


if entry:
    progress_panel()
    st.stop()
kind, message = st.session_state.pop("lab_message", (None, None))
if kind:
    getattr(st, kind)(message)

stored = data.find_analysis(root, run_id, epoch, what, params)
label = "Run again" if stored is not None else "Run"
if st.button(label, type="primary", icon=":material/play_arrow:", key="lab_run_button"):
    st.session_state["lab_job"] = {"job": jobs.start_analysis(root, run_id, epoch, what, params),
                                   "run_id": run_id, "epoch": epoch, "what": what}
    st.rerun()
if stored is None:
    st.caption(f"No stored {what} result of {run_id} at epoch {epoch} with these parameters.")
    st.stop()

# ----------------------------------------------------------------------------- the result
aid = stored["analysis_id"]
st.success(f"Stored result `{aid}`: computed on **{stored['device'] or 'unknown device'}** "
           f"({stored['engine'] or 'engine ?'}) at {stored['started_at']} in "
           f"{_fmt(stored['seconds'], '.1f')} s.")
with st.expander("Parameters"):
    st.json(json.loads(stored["params_json"] or "{}"))

if what == "hessian":
    result = data.analysis_result(root, run_id, aid,
                                  ("hessian_eigs", "hessian_summary", "hessian_density"))
    whole = result["hessian_summary"]
    whole = whole[whole["layer"].isna() | whole["layer"].isin(data.WHOLE_MODEL_LAYERS)]
    if not whole.empty:
        row = whole.iloc[0]
        m = st.columns(4)
        m[0].metric("top eigenvalue", _fmt(row["top_eig"]))
        m[1].metric("trace", _fmt(row["trace"]), help=f"standard error {_fmt(row['trace_se'])}")
        m[2].metric("lowest eigenvalue", _fmt(row["lam_min"]))
        m[3].metric("negative share", _fmt(row["neg_share"], ".1%"))
    left, right = st.columns(2)
    with left:
        charts.table(result["hessian_eigs"][["which", "k", "eigenvalue"]], f"eigenvalues_{aid}",
                     key="csv_lab_eigs")
        charts.table(result["hessian_summary"], f"hessian_summary_{aid}", key="csv_lab_summary")
    with right:
        dens = result["hessian_density"][["x", "density"]].assign(run_id=run_id)
        if not dens.empty:
            chart = charts.lines(dens, "x", "density", "run_id", x_title="eigenvalue",
                                 title="Eigenvalue density")
            charts.altair(chart, dens, f"density_{aid}", key="csv_lab_density")
elif what == "surface":
    result = data.analysis_result(root, run_id, aid, RESULT_TABLES["surface"])
    points = result["surface_points"]
    if points.empty:
        st.info("The analysis wrote no grid points.")
    else:
        grid = [(f"{run_id} epoch {epoch}", *charts.grid_of(points, "loss"))]
        left, right = st.columns(2)
        with left:
            charts.plotly(charts.surfaces_figure(grid, kind="surface"), points,
                          f"surface_{aid}", key="csv_lab_surface_3d")
        with right:
            charts.plotly(charts.surfaces_figure(grid, kind="contour"), points,
                          f"surface_{aid}", key="csv_lab_surface")
        charts.table(result["surface_summary"], f"surface_summary_{aid}",
                     key="csv_lab_surface_summary")
else:
    result = data.analysis_result(root, run_id, aid, RESULT_TABLES.get(what, ()))
    for table, df in result.items():
        st.caption(f"`{table}` ({len(df)} rows)")
        charts.table(df, f"{table}_{aid}", key=f"csv_lab_{table}")
    if not result:
        charts.table(stored.to_frame().T, f"analysis_{aid}", key="csv_lab_other")
st.caption("Other pages (Curvature, Surfaces, Attention) show this result next to other runs.")
