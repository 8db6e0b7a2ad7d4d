"""Lab: run an analysis on a stored checkpoint from the browser, and see every stored result.

Analyses run in subprocesses (`python -m landscape_lib analyze ...`, on the GPU when there is
one) held by the server's job registry (dashboard.jobs.LabJobs): a reloaded tab reattaches to a
running job, with its progress by stage and Cancel; the same run and analysis never run twice at
once; requests above the Lab's limits are refused by the registry, whatever the page sent.
"""
import json

import streamlit as st

from dashboard import charts, figures3d, jobs, widgets
from dashboard.data import core, lab
from dashboard.data import runs as runs_data
from landscape_lib.store.schema import WHOLE_MODEL

# The parameters the Lab shows, with light interactive defaults (about 10 s on a CPU; the
# per-layer spectra, the costly part on deep nets, one tick away). Bounds: jobs.LIMITS.
SHOWN = {
    "hessian": {"samples": 256, "top_k": 5, "trace_samples": 20, "density_steps": 40,
                "per_layer": False},
    "surface": {"grid": 21, "span": 1.0, "directions": ["random", "eigen", "pca"]},
    "interpolation": {"points": 31},
    "attention": {"samples": 256},
    "paths": {"steps": 200},
}


@st.cache_resource(show_spinner=False)
def registry() -> jobs.LabJobs:
    return jobs.LabJobs()


@st.cache_resource(show_spinner=False)
def analyses_of_runs() -> dict:
    """name -> spec of the library's analyses that run on a run's checkpoint."""
    from landscape_lib.analyses.registry import ANALYSES
    return {e.name: e.obj for e in ANALYSES if e.obj.needs_run}


def _fmt(value, spec: str = ".4g") -> str:
    """A number for display; missing values (an option that was off) as a dash."""
    return "–" if value is None or value != value else format(float(value), spec)


def parse_extra(text: str) -> dict:
    """`key=value` items (space-separated) -> dict; a malformed item is reported."""
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or not key:
            st.error(f"'{item}' is not key=value")
            st.stop()
        out[key.strip()] = value.strip()
    return out


@st.fragment(run_every=1)
def progress_panel(root: str, run_id: str) -> None:
    """Progress of the run's jobs (any session may have started them); on exit, a full rerun."""
    current = registry().running(root, run_id)
    for job in current:
        fraction, message = job.progress()
        elapsed, left = job.estimate(fraction)
        info = job.info
        eta = f", about {left:.0f} s left" if left is not None else ""
        st.progress(fraction, text=f"{info['what']} of {run_id} at epoch {info['epoch']}: "
                                   f"{message} ({fraction:.0%}, {elapsed:.0f} s{eta})")
        stages = [f"{m} (+{t - job.started:.0f} s)" for m, t, _ in job.stages]
        st.caption("Stages: " + " → ".join(stages))
        if st.button("Cancel", icon=":material/cancel:", key=f"lab_cancel_{info['what']}"):
            job.cancel()
    if not current and st.session_state.get("lab_watch"):
        for what in st.session_state.pop("lab_watch"):
            job = registry().get(root, run_id, what)
            if job is None:
                continue
            if job.cancelled:
                st.session_state["lab_message"] = ("warning", "The analysis was cancelled.")
            elif job.returncode != 0:
                st.session_state["lab_message"] = (
                    "error", f"The analysis failed (exit {job.returncode}): "
                             f"{job.info.get('error') or job.error() or 'no message'}")
            registry().finish(job)
        st.session_state.pop("lab_show", None)  # show the newest result: this one
        core.refresh(root)  # show the new result now, not after the caches expire
        st.rerun(scope="app")


root, filters, compare = core.context()
st.title("Lab")
filtered = runs_data.runs(root, filters)["run_id"].head(widgets.MAX_CHOICES).tolist()
ids = list(dict.fromkeys(list(compare) + filtered))
if not ids:
    st.info("No run matches the filters in the sidebar.")
    st.stop()
specs = analyses_of_runs()
run_id = st.selectbox("Run", ids, key="lab_run", bind="query-params")
if registry().running(root, run_id):
    st.session_state["lab_watch"] = [j.info["what"] for j in registry().running(root, run_id)]
if st.session_state.get("lab_watch"):
    progress_panel(root, run_id)
kind, message = st.session_state.pop("lab_message", (None, None))
if kind:
    getattr(st, kind)(message)

# ----------------------------------------------------------------------------- stored results
stored = lab.analyses(root, run_id)
st.subheader("Stored results")
if stored.empty:
    st.caption(f"{run_id} has no stored analysis yet.")
else:
    shown = stored[["analysis_id", "kind", "epoch", "status", "params_json", "device", "engine",
                    "seconds", "started_at", "error"]]
    charts.table(shown, f"analyses_{run_id}", key="csv_lab_analyses")

# ----------------------------------------------------------------------------- new analysis
st.subheader("New analysis")
ckpts = lab.checkpoints(root, run_id)
c1, c2 = st.columns([1, 2])
epochs = ckpts["epoch"].tolist()
epoch = c1.selectbox("Checkpoint epoch", epochs, index=max(len(epochs) - 1, 0),
                     key="lab_epoch", persist_state="session") if epochs else None
what = c2.selectbox("Analysis", list(specs), key="lab_what", persist_state="session",
                    format_func=lambda n: f"{n}: {specs[n].description[:70]}")
params = {}
spec = SHOWN.get(what, {})
cols = st.columns(max(1, len(spec)))
for col, (name, default) in zip(cols, spec.items()):
    key = f"lab_{what}_{name}"
    lo, hi = jobs.LIMITS.get(what, {}).get(name, (None, None))
    if isinstance(default, bool):
        params[name] = col.checkbox(name, value=default, key=key, persist_state="session")
    elif isinstance(default, list):
        params[name] = col.selectbox(name, default, key=key, persist_state="session")
    else:
        params[name] = col.number_input(name, min_value=lo, max_value=hi, value=default, key=key,
                                        persist_state="session")
params |= parse_extra(st.text_input(
    "More parameters (key=value, space-separated; defaults: "
    + ", ".join(f"{k}={v}" for k, v in specs[what].defaults.items()) + ")",
    key="lab_extra", persist_state="session"))

reason = None
if epoch is None:
    reason = f"{run_id} has no saved checkpoint (table `checkpoints`, kind 'checkpoint')."
elif not bool(ckpts.loc[ckpts["epoch"] == epoch, "exists"].iloc[0]):
    path = ckpts.loc[ckpts["epoch"] == epoch, "path"].iloc[0]
    reason = f"The checkpoint file `{path}` is missing from the store: it cannot be analysed."
if reason:
    st.warning(reason, icon=":material/block:")
if st.button("Run", type="primary", icon=":material/play_arrow:", key="lab_run_button",
             disabled=reason is not None, help=reason):
    try:
        job, started = registry().start(root, run_id, int(epoch), what, params,
                                        {n: s.defaults for n, s in specs.items()})
    except jobs.LabRequestError as exc:
        st.error(f"Refused: {exc}", icon=":material/block:")
        st.stop()
    if not started:
        st.session_state["lab_message"] = ("info", f"{what} of {run_id} is already running: "
                                                   "showing its progress.")
    st.rerun()

# ----------------------------------------------------------------------------- one result
done = stored[stored["status"] == "done"] if not stored.empty else stored
if done.empty:
    st.stop()
labels = {f"{r.kind} · epoch {r.epoch} · {r.analysis_id}": r.analysis_id
          for r in done.itertuples()}
aid = labels[st.selectbox("Show stored result", list(labels), key="lab_show",
                          persist_state="session")]
row = done[done["analysis_id"] == aid].iloc[0]
given = json.loads(row["params_json"] or "{}")
st.success(f"Stored result `{aid}`: computed on **{row['device'] or 'unknown device'}** "
           f"({row['engine'] or 'engine ?'}) at {row['started_at']} in "
           f"{_fmt(row['seconds'], '.1f')} s. Parameters: "
           + (", ".join(f"`{k}={json.dumps(v)}`" for k, v in given.items()) or "the defaults"))
tables = specs[row["kind"]].tables if row["kind"] in specs else ()
result = lab.analysis_result(root, run_id, aid, tables)
CHART = "chart"  # the result's chart: the eigenvalue density or the surface heat map
charted = {"hessian": "hessian_density", "surface": "surface_points"}.get(row["kind"])
if row["kind"] == "hessian":
    whole = result["hessian_summary"]
    whole = whole[whole["layer"] == WHOLE_MODEL] if "layer" in whole else whole
    if not whole.empty:
        r = whole.iloc[0]
        m = st.columns(4)
        m[0].metric("top eigenvalue", _fmt(r["top_eig"]))
        m[1].metric("trace", _fmt(r["trace"]), help=f"standard error {_fmt(r['trace_se'])}")
        m[2].metric("lowest eigenvalue", _fmt(r["lam_min"]))
        m[3].metric("negative share", _fmt(r["neg_share"], ".1%"))
# The result's chart and tables one at a time, none until picked: a browser draws every chart
# and table shown (even in a closed expander), and the Lab is first for starting analyses.
parts = ([CHART] if charted and not result[charted].empty else []) + list(result)
part = st.segmented_control(
    "Show", parts, key="lab_part", persist_state="session",
    format_func=lambda t: {"hessian": "Eigenvalue density", "surface": "Loss surface"}[
        row["kind"]] if t == CHART else f"{t} ({len(result[t])} rows)")
if part == CHART and row["kind"] == "hessian":
    dens = result["hessian_density"][["x", "density"]].assign(run_id=run_id)
    chart = charts.lines(dens, "x", "density", "run_id", x_title="eigenvalue", log_y=True,
                         title="Eigenvalue density (log)", show_legend=False)
    charts.show(chart, dens, f"density_{aid}", key="csv_lab_density")
elif part == CHART:
    points = result["surface_points"]
    chart = figures3d.surfaces_heatmap(points, "loss", {aid: {
        "title": f"{run_id} epoch {row['epoch']}", "x_title": "direction 1",
        "y_title": "direction 2"}})
    charts.show(chart, points, f"surface_{aid}", key="csv_lab_surface")
elif part in result:
    charts.table(result[part], f"{part}_{aid}", key=f"csv_lab_{part}")
st.caption("Other pages (Curvature, Surfaces, Attention) show this result next to other runs.")
