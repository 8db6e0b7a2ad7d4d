"""The landscape dashboard: `streamlit run dashboard/app.py`; store: $LANDSCAPE_STORE or runs/store.

This file holds only the page setup, the sidebar shared by every page (study and other filters,
runs to compare, the store in use) and the navigation; the pages are in app_pages/, the queries
in data/. Sidebar widgets are bound to the URL's query parameters, so a filtered view can be
shared as a link, and every page has its own URL (/runs, /curvature, ...).
"""
from __future__ import annotations

import streamlit as st

from dashboard import jobs, widgets
from dashboard.pages import PAGES
from dashboard.data import core
from landscape_lib.errors import StoreError

# (widget key = URL parameter, label, runs column)
FILTERS = [("study", "Study", "study"), ("dataset", "Data set", "data_set"),
           ("arch", "Architecture", "arch"),
           ("model", "Model (architecture and options)", "model_label"),
           ("init", "Initializer", "init"), ("opt", "Optimizer", "optimizer"),
           ("status", "Status", "status"), ("seed", "Seed", "seed")]
FILTERS_BY_KEY = {key: column for key, _, column in FILTERS}
UPSTREAM = {"dataset": ["study"], "arch": ["study", "dataset"],
            "model": ["study", "dataset", "arch"]}


def _multiselect(key: str, label: str, options: list) -> tuple:
    # A value that is no longer a choice (e.g. after narrowing the data set) is dropped, not an
    # error; widget state may be set before the widget is drawn in this run.
    if key in st.session_state:
        st.session_state[key] = [v for v in st.session_state[key] if v in options]
    return tuple(st.multiselect(label, options, key=key, bind="query-params", placeholder="all"))


def _clear_filters() -> None:
    for key, *_ in FILTERS:
        st.session_state[key] = []
    st.session_state["q"] = ""


def sidebar_filters(root: str) -> core.Filters:
    """The study filter, and the others in a popover: a browser draws a popover's widgets only
    when it is open (each select box costs every page's first render), while their values, in
    the URL, filter as ever; the active ones are listed under it."""
    combos = core.filter_options(root)
    chosen: dict[str, tuple] = {}

    def draw(filters: list) -> None:
        for key, label, column in filters:
            where = {FILTERS_BY_KEY[k]: chosen[k] for k in UPSTREAM.get(key, [])}
            chosen[key] = _multiselect(key, label, core.options_for(combos, column, where))
    draw(FILTERS[:1])
    with st.popover("More filters", icon=":material/filter_list:", width="stretch"):
        draw(FILTERS[1:])
        text = st.text_input("Search run id, study or tags", key="q", bind="query-params")
        st.button("Clear filters", on_click=_clear_filters, icon=":material/filter_alt_off:")
    active = [f"{label}: {', '.join(map(str, chosen[key]))}" for key, label, _ in FILTERS[1:]
              if chosen[key]] + ([f"search: {text}"] if text else [])
    if active:
        st.caption(":material/filter_alt: " + " · ".join(active))
    return core.Filters(studies=chosen["study"], datasets=chosen["dataset"],
                        archs=chosen["arch"], model_labels=chosen["model"],
                        inits=chosen["init"], optimizers=chosen["opt"],
                        statuses=chosen["status"], seeds=chosen["seed"], text=text or "")


def sidebar_compare(root: str, filters: core.Filters) -> list[str]:
    """Runs picked for side-by-side views; kept when the filters change."""
    from dashboard.data import runs as runs_data
    filtered = runs_data.runs(root, filters)["run_id"].tolist()
    n_filtered, filtered = len(filtered), filtered[:widgets.MAX_CHOICES]  # the newest
    current = [r for r in st.session_state.get("compare", []) if r not in set(filtered)]
    known = set(runs_data.runs(root, core.Filters())["run_id"]) if current else set()
    options = filtered + [r for r in current if r in known]
    st.session_state.setdefault("compare", [])
    st.session_state["compare"] = [r for r in st.session_state["compare"] if r in set(options)]
    return st.multiselect("Runs to compare", options, key="compare", bind="query-params",
                          placeholder=f"none: pages use the filtered runs ({n_filtered})")


def guidance(root: str, status: str, message: str) -> None:
    """What to do when there is nothing to show yet; a button starts the quick grid."""
    st.title("landscape")
    st.info(f"{message} Fill it with the demo grid:\n\n"
            "```\nmake demo\n# or\npython -m landscape_lib train-all runs/quick.toml\n```\n"
            f"(set `LANDSCAPE_STORE` or pass `--store` to use another folder than `{root}`).")
    grid_jobs = _quick_grid_jobs()
    job = grid_jobs.get(root)
    if job is None or not job.running:
        if job is not None and job.returncode not in (0, None):
            st.error(f"The quick grid stopped (exit {job.returncode}): {job.error()}")
        if st.button("Start the quick grid now", type="primary", icon=":material/play_arrow:"):
            grid_jobs[root] = jobs.start_quick_grid(root)
            st.rerun()
    else:
        _wait_for_runs(root, job)


@st.cache_resource
def _quick_grid_jobs() -> dict:
    return {}  # store root -> Job, shared by every session so a grid starts once


@st.fragment(run_every=3)
def _wait_for_runs(root: str, job) -> None:
    st.success(f"The quick grid is running (pid {job.proc.pid}): "
               f"`{' '.join(job.command[1:])}`. Runs appear here as they start.")
    if core.store_status(root)[0] == "ok":
        st.rerun(scope="app")


def _home() -> None:
    """Never drawn: main() sends the root URL to the first page."""


def main() -> None:
    st.set_page_config(page_title="landscape", page_icon=":material/landscape:", layout="wide")
    pages = [st.Page(f"app_pages/{name}.py", title=title, icon=icon, url_path=name)
             for name, title, icon in PAGES]
    # The navigation menu is drawn below (page links), so that the root URL can be a page of
    # its own and every listed page keeps its URL (a default page would be served at / only).
    nav = st.navigation([st.Page(_home, title="Home", url_path="home", default=True), *pages],
                        position="hidden")
    if nav.url_path in ("", "home"):  # the root URL: the run table at its own URL, same filters
        params = [(k, v) for k in st.query_params for v in st.query_params.get_all(k)]
        st.switch_page(pages[0], query_params=params)
    root = core.store_root()
    status, message = core.store_status(root)
    with st.sidebar:
        for page in pages:
            st.page_link(page)
        st.caption(f":material/database: Store `{root}` ({message if status == 'ok' else status})")
        if status == "ok" and (skipped := core.problems(root)):
            with st.expander(f":material/warning: {len(skipped)} file(s) skipped"):
                st.dataframe(list(skipped.items()), hide_index=True)
        filters, compare = core.Filters(), []
        if status == "ok":
            try:
                filters = sidebar_filters(root)
                compare = sidebar_compare(root, filters)
            except StoreError as exc:
                status, message = "error", str(exc)
    st.session_state["context"] = (root, filters, list(compare))
    if status in ("missing", "empty"):
        guidance(root, status, message)
    elif status == "error":
        st.error(f"The store cannot be read. {message}", icon=":material/error:")
    else:
        with core.guard():
            nav.run()


main()
