"""The Initializers, Optimizers and Architectures pages: one factor's values side by side.

Each row averages the filtered runs with that value (mean and std over them; with one
configuration per value, that is over seeds). The sidebar narrows the runs to one data set /
model / optimizer...; "Also split by" keeps other settings apart instead of averaging them.
"""
from __future__ import annotations

import streamlit as st

from dashboard import charts, data

def _split_choices(runs, factor: str) -> list[str]:
    """Config columns other than the factor that vary among the filtered runs."""
    return [c for c in data.CONFIG_COLUMNS if c != factor and runs[c].astype(str).nunique() > 1]


def show(factor: str, quantities: list[str], curve_metrics: list[str], *, conv: bool = False
         ) -> tuple:
    """Draw the factor table and its mean +/- std curves; return (root, filters, split)."""
    root, filters, _ = data.context()
    runs = data.runs(root, filters)
    if runs.empty:
        st.info("No run matches the filters in the sidebar.")
        st.stop()
    varying = _split_choices(runs, factor)
    split = tuple(st.multiselect("Also split by", varying, key=f"{factor}_split",
                                 persist_state="session",
                                 format_func=lambda c: data.FACTORS.get(c, c)))
    unsplit = [data.FACTORS.get(c, c) for c in varying if c not in split]
    if unsplit:
        st.caption(f"The filtered runs also differ in {', '.join(unsplit)}; each row averages "
                   "over those. Narrow them in the sidebar or split them here.")
    fraction = 0.9
    if conv:
        fraction = st.slider("Convergence: first epoch whose val accuracy reaches this fraction "
                             "of the run's best", 0.5, 1.0, 0.9, 0.05, key=f"{factor}_conv",
                             persist_state="session")
    table = data.factor_table(root, filters, factor, split, fraction)
    keys = [factor, *[s for s in split if s != factor]]
    cols = keys + ["runs", "diverged"] + [f"{q}_{s}" for q in quantities for s in ("mean", "std")]
    shown = table[cols]
    labels = {q: data.FACTOR_QUANTITIES[q][1] for q in quantities}
    config = {f"{q}_mean": st.column_config.NumberColumn(f"{labels[q]} mean", format="%.4g")
              for q in quantities}
    config |= {f"{q}_std": st.column_config.NumberColumn("± std", format="%.2g")
               for q in quantities}
    charts.table(shown, f"{factor}_table", key=f"csv_{factor}_table", column_config=config)

    curves = data.factor_curves(root, filters, factor, tuple(curve_metrics), split)
    cols = st.columns(2)
    for i, metric in enumerate(curve_metrics):
        df = curves[["group", "epoch", "runs", f"{metric}_mean", f"{metric}_std"]].copy()
        df["lo"] = df[f"{metric}_mean"] - df[f"{metric}_std"].fillna(0)
        df["hi"] = df[f"{metric}_mean"] + df[f"{metric}_std"].fillna(0)
        with cols[i % 2]:
            chart = charts.lines(df, "epoch", f"{metric}_mean", "group", band=("lo", "hi"),
                                 title=f"{metric} (mean ± std)", y_title=metric)
            charts.altair(chart, df, f"{factor}_{metric}", key=f"csv_{factor}_{metric}")
    return root, filters, split
