"""Curvature: Hessian spectra per run and epoch, densities, per-layer curvature, and the per-run
sharpness measures (with surface statistics averaged over direction seeds) next to the runs'
final metrics."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from landscape_lib.store.schema import WHOLE_MODEL

from .core import TTL, Filters, by_version, query, with_runs
from .runs import KEYS
from .statuses import DONE

# The whole-model columns of hessian_summary the pages show (NULL where an analysis predates
# a column: the pages say "not measured").
SUMMARY_COLUMNS = ["top_eig", "top_eig_residual", "top_eig_converged", "lam_min",
                   "lam_min_residual", "lam_min_converged", "lowest_ritz", "lam_min_lanczos",
                   "lam_min_consistent",
                   "convexity_ratio", "trace", "trace_se", "neg_share", "neg_share_se", "neg_eps",
                   "near_zero_share", "n_params", "n_products"]


def latest(table: str, where: str = "true") -> str:
    """SQL of the analysis_id chosen per (run, epoch) in `table` for runs in list param ?:
    the most recent finished analysis (rows without an `analyses` row count as finished)."""
    return f"""
        SELECT t.analysis_id, t.run_id, t.epoch FROM {table} t
        LEFT JOIN analyses a ON a.analysis_id = t.analysis_id
        WHERE list_contains(?, t.run_id) AND (a.status IS NULL OR a.status = '{DONE}')
              AND {where}
        QUALIFY row_number() OVER (PARTITION BY t.run_id, t.epoch
                                   ORDER BY a.started_at DESC NULLS LAST, t.analysis_id DESC) = 1"""


@by_version("runs", "hessian_summary")
def runs_with_hessian(root: str, f: Filters) -> list[str]:
    """Filtered runs with a whole-model Hessian result, newest first."""
    head, params = with_runs(f)
    return query(root, f"""
        {head}
        SELECT r.run_id FROM r WHERE r.run_id IN
            (SELECT run_id FROM hessian_summary WHERE layer = ?)
        ORDER BY r.created_at DESC NULLS LAST, r.run_id""",
                 params + [WHOLE_MODEL])["run_id"].tolist()


@by_version("hessian_summary", "analyses")
def hessian_summary(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Whole-model Hessian summaries of the runs at every analysed epoch (one analysis each)."""
    cols = ", ".join(f"h.{c}" for c in SUMMARY_COLUMNS)
    return query(root, f"""
        WITH pick AS ({latest('hessian_summary', 't.layer = ?')})
        SELECT h.run_id, h.epoch, {cols}, h.analysis_id
        FROM hessian_summary h JOIN pick USING (analysis_id)
        WHERE h.layer = ? ORDER BY h.run_id, h.epoch""",
                 [list(run_ids), WHOLE_MODEL, WHOLE_MODEL])


@by_version("hessian_eigs", "analyses")
def hessian_eigs(root: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    """Top and bottom Hessian eigenvalues per run, epoch and rank k."""
    return query(root, f"""
        WITH pick AS ({latest('hessian_eigs')})
        SELECT h.run_id, h.epoch, h.which, h.k, h.eigenvalue
        FROM hessian_eigs h JOIN pick USING (analysis_id)
        ORDER BY h.run_id, h.epoch, h.which, h.k""", [list(run_ids)])


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_density(root: str, run_ids: tuple[str, ...], epochs: tuple[tuple[str, int], ...]
                    ) -> pd.DataFrame:
    """Eigenvalue densities of the runs, each at its epoch ((run_id, epoch) pairs)."""
    return query(root, f"""
        WITH pick AS ({latest('hessian_density')})
        SELECT h.run_id, h.epoch, h.x, h.density
        FROM hessian_density h JOIN pick USING (analysis_id)
        WHERE list_contains(?, h.run_id || '@' || CAST(h.epoch AS VARCHAR))
        ORDER BY h.run_id, h.x""", [list(run_ids), [f"{r}@{e}" for r, e in epochs]])


@st.cache_data(ttl=TTL, show_spinner=False)
def hessian_layers(root: str, run_ids: tuple[str, ...], epochs: tuple[tuple[str, int], ...]
                   ) -> pd.DataFrame:
    """Per-layer Hessian summaries (top eigenvalue, trace) of the runs at their epochs, in the
    order the analysis wrote them (the model's order: depth)."""
    return query(root, f"""
        WITH pick AS ({latest('hessian_summary')})
        SELECT h.run_id, h.epoch, h.layer, h.n_params, h.top_eig, h.trace, h.trace_se,
               h.top_eig_converged
        FROM hessian_summary h JOIN pick USING (analysis_id)
        WHERE h.layer <> ? AND list_contains(?, h.run_id || '@' || CAST(h.epoch AS VARCHAR))
        ORDER BY h.run_id""", [list(run_ids), WHOLE_MODEL, [f"{r}@{e}" for r, e in epochs]])


# ----------------------------------------------------------------------------- per run
MEASURES = {  # per-run measure -> (label, kind of interval)
    "final_val_acc": ("val accuracy", "fraction"),
    "final_val_loss": ("val loss", "positive"),
    "generalization_gap": ("gap (val - train loss)", "real"),
    "top_eig": ("lambda_max", "positive"),
    "trace": ("Hessian trace", "positive"),
    "surface_curvature": ("surface curvature", "positive"),
    "basin_width": ("basin width", "positive"),
}


MEASURE_TABLES = ("runs", "hessian_summary", "analyses", "surface_summary")  # run_measures reads


@by_version(*MEASURE_TABLES)
def run_measures(root: str, f: Filters, run_ids: tuple[str, ...] = ()) -> pd.DataFrame:
    """Per filtered run (or per run of `run_ids`): every config key, final metrics, sharpness at
    its last analysed epoch (lambda_max, trace of the newest finished analysis) and the surface
    statistics of its last surface epoch averaged over direction seeds (random directions when
    there are any; n_dir_seeds says over how many)."""
    head, params = with_runs(f)
    only = "WHERE list_contains(?, r.run_id)" if run_ids else ""
    keys = ", ".join(f"{expr} AS {k}" for k, (expr, _) in KEYS.items())
    return query(root, f"""
        {head},
        h AS (SELECT t.run_id, t.epoch AS hessian_epoch, t.top_eig, t.trace, t.lam_min
              FROM hessian_summary t LEFT JOIN analyses a USING (analysis_id)
              WHERE t.layer = ? AND (a.status IS NULL OR a.status = '{DONE}')
                AND t.run_id IN (SELECT run_id FROM r)
              QUALIFY row_number() OVER (PARTITION BY t.run_id ORDER BY t.epoch DESC,
                      a.started_at DESC NULLS LAST, t.analysis_id DESC) = 1),
        s AS (SELECT run_id, epoch AS surface_epoch, directions,
                     avg((curvature_x + curvature_y) / 2)
                         FILTER (WHERE isfinite(curvature_x + curvature_y)) AS surface_curvature,
                     avg(basin_width) FILTER (WHERE isfinite(basin_width)) AS basin_width,
                     count(DISTINCT dir_seed) AS n_dir_seeds
              FROM surface_summary WHERE run_id IN (SELECT run_id FROM r)
              GROUP BY run_id, epoch, directions
              QUALIFY row_number() OVER (PARTITION BY run_id
                      ORDER BY epoch DESC, (directions = 'random') DESC, directions) = 1)
        SELECT r.run_id, {keys}, r.status, r.final_val_acc, r.final_val_loss,
               r.generalization_gap, h.hessian_epoch, h.top_eig, h.trace, h.lam_min,
               s.surface_epoch, s.directions, s.surface_curvature, s.basin_width, s.n_dir_seeds
        FROM r LEFT JOIN h USING (run_id) LEFT JOIN s USING (run_id) {only}
        ORDER BY r.run_id""", params + [WHOLE_MODEL] + ([list(run_ids)] if run_ids else []))


_TYPES = (("attention", ("attn", "qkv", "attention")), ("norm", ("norm", "bn", "ln")),
          ("embedding", ("embed", "patch", "pos", "cls")), ("conv", ("conv", "downsample",
                                                                     "shortcut", "stem")))


def layer_type(name: str) -> str:
    """The kind of a module, read from its name (conv, attention, norm, embedding, linear)."""
    low = str(name).lower()
    for kind, words in _TYPES:
        if any(w in low for w in words):
            return kind
    return "linear"


def with_depth(layers: pd.DataFrame) -> pd.DataFrame:
    """Per-layer rows with `depth` (position in the model, per run: the analysis writes the
    modules in the model's order) and `type`."""
    out = layers.copy()
    out["depth"] = out.groupby("run_id").cumcount()
    out["type"] = out["layer"].map(layer_type)
    return out
