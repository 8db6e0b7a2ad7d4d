"""The Initializers, Optimizers and Architectures pages: one factor's levels side by side.

By default a page shows one study that varies its factor (the sidebar's study filter, else the
largest such study) and groups the runs by every other config key that varies in it, so each
row holds runs that differ only by their seed and its interval is over seeds. The user can
group by any config keys instead. Every aggregate shows n; see dashboard.stats for intervals.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import streamlit as st

from dashboard import charts, stats
from dashboard.data import core, curvature, factors
from dashboard.data import runs as runs_data

ALL = "all filtered runs"


def choose_study(factor: str, filters: core.Filters, runs) -> core.Filters:
    """The filters narrowed to a study that varies `factor` (unless the sidebar chose one)."""
    if filters.studies:
        return filters
    studies = factors.studies_varying(runs, factor)
    label = runs_data.LABELS[factor]
    study = st.selectbox(f"Study (studies that vary the {label})", [*studies, ALL],
                         key=f"{factor}_study", bind="query-params",
                         help="Set the study in the sidebar to use it on every page.")
    return filters if study == ALL else filters._replace(studies=(study,))


def choose_groups(factor: str, runs) -> tuple[str, ...]:
    keys = [k for k in runs_data.KEYS if k != factor]
    default = factors.default_groups(runs, factor)
    groups = st.multiselect("Group by (besides the factor)", keys, default=default,
                            key=f"{factor}_group", bind="query-params",
                            format_func=lambda k: runs_data.LABELS[k])
    shown = [factor, *groups]
    unsplit = [runs_data.LABELS[k] for k in runs_data.varying_keys(runs, ("seed", *shown))
               if runs_data.distinct_keys(runs, [*shown, k])[-1] == k]
    if unsplit:
        st.caption(f"The runs also differ in {', '.join(unsplit)}: each row pools those "
                   "(its interval is then over runs, not only seeds).")
    return (factor, *groups)


def ci_text(lo, hi) -> str:
    """An interval for display: "[lo, hi]", or a dash where there is none (n < 2)."""
    return "–" if lo != lo or hi != hi else f"[{lo:.4g}, {hi:.4g}]"


def factor_table(root, filters, keys, quantities, conv_fraction) -> None:
    """The table per level and group: centre, 95% interval and n of each quantity (the CSV
    holds the interval's bounds as numbers)."""
    table = factors.factor_table(root, filters, keys, conv_fraction)
    shown = table[[*keys, "runs", "diverged"]].copy()
    config = {k: st.column_config.TextColumn(runs_data.LABELS[k]) for k in keys}
    for q in quantities:
        label, kind = factors.QUANTITIES[q][1], factors.QUANTITIES[q][2]
        shown[q] = table[q]
        shown[f"{q}_ci"] = [ci_text(lo, hi) for lo, hi in zip(table[f"{q}_lo"], table[f"{q}_hi"])]
        shown[f"{q}_n"] = table[f"{q}_n"]
        centre = "geo. mean" if kind == "positive" else "mean"
        config |= {q: st.column_config.NumberColumn(f"{label} ({centre})", format="%.4g"),
                   f"{q}_ci": st.column_config.TextColumn("95% CI"),
                   f"{q}_n": st.column_config.NumberColumn("n", format="%d")}
    st.dataframe(shown, hide_index=True, column_config=config)
    cols = [*keys, "runs", "diverged"] + [f"{q}{s}" for q in quantities
                                          for s in ("", "_lo", "_hi", "_n")]
    charts.downloads(table[cols], f"{keys[0]}_table", key=f"csv_{keys[0]}_table")


def curves(root, filters, keys, metrics) -> None:
    """Per-epoch mean and 95% interval per group, one chart per chosen metric (two by
    default: each chart is drawn by the browser)."""
    chosen = st.pills("Metrics", metrics, default=metrics[:2], selection_mode="multi",
                      key=f"{keys[0]}_curves", bind="query-params") or metrics[:1]
    df = runs_data.group_curves(root, filters, keys, tuple(chosen))
    for i, metric in enumerate(chosen):
        if i % 2 == 0:
            row = st.columns(2)  # one row per pair of charts, the legend under the second
        part = df[["group", "epoch", "runs"] + [c for c in df if c.startswith(f"{metric}_")]]
        part = stats.add_interval(part, metric, runs_data.metric_kind(metric))
        with row[i % 2]:
            chart = charts.lines(part, "epoch", metric, "group", band=(f"{metric}_lo",
                                 f"{metric}_hi"), title=f"{metric}: mean and 95% CI",
                                 y_title=metric, show_legend=i % 2 == 1 or i == len(chosen) - 1,
                                 single_points="runs")
            charts.show(chart, part, f"{keys[0]}_{metric}", key=f"csv_{keys[0]}_{metric}")


def paired(root, filters, factor: str, groups: tuple[str, ...]) -> None:
    """The factor's levels against a baseline within matched configurations."""
    measures = curvature.run_measures(root, filters)
    levels = sorted(measures[factor].dropna().astype(str).unique())
    st.subheader("Paired comparison")
    if len(levels) < 2:
        st.info("One level only: nothing to compare.")
        return
    counts = measures[factor].astype(str).value_counts()
    levels = sorted(levels, key=lambda v: (-counts.get(v, 0), v))  # most runs first
    baseline = st.selectbox("Baseline level", levels, key=f"{factor}_baseline",
                            bind="query-params")
    match = [g for g in groups if g != factor]
    st.caption("Each level against the baseline within configurations equal in "
               f"{', '.join(runs_data.LABELS[k] for k in match) or 'everything'}: a difference "
               "(b - a) or, for positive quantities, a ratio (b / a) with its 95% interval; "
               "seeds present in both are paired (paired t-test), otherwise Welch's test.")
    quantities = {q: kind for q, (_, kind) in curvature.MEASURES.items()}
    table = factors.paired_table(measures, factor, baseline, match, quantities)
    if table.empty:
        st.info("No configuration has runs at both the baseline and another level.")
        return
    charts.table(table, f"paired_{factor}", key=f"csv_paired_{factor}", column_config={
        c: st.column_config.NumberColumn(format="%.4g") for c in ("estimate", "lo", "hi")}
        | {"p_value": st.column_config.NumberColumn(format="%.2g")})


TABLE, CURVES, PAIRED = "Table", "Curves over epochs", "Paired comparison"


class View(NamedTuple):
    """What a page's own view is drawn from: the store, the filters narrowed to the shown
    study, those runs and the group keys (the factor first)."""
    root: str
    filters: core.Filters
    runs: object
    keys: tuple[str, ...]


def show(factor: str, quantities: list[str], curve_metrics: list[str], *, conv: bool = False,
         first: dict[str, Callable] | None = None, last: dict[str, Callable] | None = None
         ) -> None:
    """Draw a factor page: the study and the grouping, then one view at a time (only the open
    one is drawn, so the browser draws its charts only): the page's own `first` views, the
    table per level and group, curves over epochs, the paired comparison, the page's `last`
    views ({label: function(View)})."""
    root, filters, _ = core.context()
    runs = runs_data.runs(root, filters)
    if runs.empty:
        st.info("No runs match the filters.")
        st.stop()
    filters = choose_study(factor, filters, runs)
    runs = runs_data.runs(root, filters)
    keys = choose_groups(factor, runs)
    st.caption(f"{len(runs)} runs in {runs[factor].nunique()} levels of the "
               f"{runs_data.LABELS[factor]}; n per row below.")
    own = {**(first or {}), **(last or {})}
    views = [*(first or {}), TABLE, CURVES, PAIRED, *(last or {})]
    view = st.segmented_control("View", views, default=views[0], key=f"{factor}_view",
                                bind="query-params") or views[0]
    if view in own:
        own[view](View(root, filters, runs, keys))
    elif view == TABLE:
        fraction = 0.9
        if conv:
            fraction = st.slider("Convergence: first epoch whose val accuracy reaches this "
                                 "fraction of the run's best", 0.5, 1.0, 0.9, 0.05,
                                 key=f"{factor}_conv", persist_state="session")
        factor_table(root, filters, keys, quantities, fraction)
    elif view == CURVES:
        curves(root, filters, keys, curve_metrics)
    else:
        paired(root, filters, factor, keys)
