"""Every SQL text the library runs against the store's tables, as named constants and functions.

Plain SQL strings with `?` parameters, run by `Store.query` over the process's StoreReader
(the dashboard runs the same texts on the same reader). Status and layer names come from
`schema`. No pandas import here: `python -m landscape_lib runs` stays fast without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import StoreError
from .schema import ANALYSIS_DONE, TABLES, WHOLE_MODEL

if TYPE_CHECKING:
    import pandas as pd

_SPREAD_COLUMNS = ("center_loss", "curvature_x", "curvature_y", "basin_width")

# Surface summaries over random-direction seeds: mean and sample std (non-finite values left
# out) per run, epoch and kind of directions. Parameter: a list of run ids.
SURFACE_SEED_SPREAD = f"""
    SELECT run_id, epoch, directions, count(DISTINCT dir_seed) AS n_seeds,
           {", ".join(f"avg({c}) FILTER (WHERE isfinite({c})) AS {c}_mean, "
                      f"stddev_samp({c}) FILTER (WHERE isfinite({c})) AS {c}_std, "
                      f"count({c}) FILTER (WHERE isfinite({c})) AS {c}_n"
                      for c in _SPREAD_COLUMNS)}
    FROM surface_summary WHERE list_contains(?, run_id)
    GROUP BY run_id, epoch, directions ORDER BY run_id, epoch, directions"""

# The columns of `python -m landscape_lib runs`, and those it filters on (each a list of values).
RUN_LIST_COLUMNS = ("run_id", "status", "study", "dataset", "model_label", "init", "optimizer",
                    "seed", "epochs_done", "epochs", "final_val_acc", "final_val_loss",
                    "generalization_gap")
RUN_FILTERS = ("status", "dataset", "arch", "init", "optimizer", "study", "seed")

# Epochs with a full checkpoint of a run. Parameter: run id.
CHECKPOINT_EPOCHS = ("SELECT epoch FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                     "ORDER BY epoch")
# Checkpoint epochs of several runs. Parameter: a list of run ids.
CHECKPOINT_EPOCHS_OF_RUNS = ("SELECT run_id, epoch FROM checkpoints WHERE kind = 'checkpoint' "
                             "AND list_contains(?, run_id) ORDER BY run_id, epoch")
# Ids of the analyses with a status. Parameter: the status.
ANALYSES_WITH_STATUS = "SELECT DISTINCT analysis_id FROM analyses WHERE status = ?"
# The stored digest of a run's checkpoint file. Parameters: run id, epoch.
CHECKPOINT_DIGEST = ("SELECT sha256 FROM checkpoints WHERE run_id = ? AND epoch = ? "
                     "AND kind = 'checkpoint'")
# The per-epoch weight vectors of a run (full or sketched). Parameter: run id.
TRAJECTORY_FILES = ("SELECT epoch, kind, path, sha256 FROM checkpoints WHERE run_id = ? "
                    "AND kind IN ('full', 'sketch') ORDER BY epoch")
# Runs whose id starts with a prefix. Parameter: the prefix.
RUNS_BY_PREFIX = "SELECT * FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id"
# Finished analyses of one kind at a run's epoch, newest first. Parameters: run id, epoch,
# kind, the done status.
DONE_ANALYSES = ("SELECT analysis_id FROM analyses WHERE run_id = ? AND epoch = ? AND kind = ? "
                 "AND status = ? ORDER BY started_at DESC")
# The Gaussian fit of the newest finished surface at a run's epoch. Parameters: run id, epoch,
# the done status.
LATEST_GAUSS_FIT = ("SELECT g.* FROM gauss_fit g JOIN analyses a USING (analysis_id) "
                    "WHERE g.run_id = ? AND g.epoch = ? AND a.status = ? "
                    "ORDER BY a.started_at DESC LIMIT 1")


# The runs a learning-rate choice is made from (`comparisons.best_lr_settings`), of one study.
# Parameter: the study name.
RUNS_FOR_LR_SELECTION = ("SELECT study, dataset, model_label, optimizer, lr, weight_decay, seed, "
                         "status, final_val_acc, best_val_acc, final_val_loss FROM runs "
                         "WHERE study = ? ORDER BY run_id")
LR_METRICS = ("final_val_acc", "best_val_acc", "final_val_loss")


def optimizers_at_best_lr(store, study: str = "E-optimizers",
                          metric: str = "final_val_acc") -> pd.DataFrame:
    """Each optimizer at its best learning rate in `study`, per data set and model: one row
    per (study, dataset, model_label, optimizer) with best_lr, weight_decay, the metric's mean
    over seeds, se, n, n_diverged, lrs_tried and at_edge (rules: `comparisons`)."""
    if metric not in LR_METRICS:
        raise StoreError(f"learning rates are chosen on one of {', '.join(LR_METRICS)}, "
                         f"not '{metric}'")
    from .comparisons import best_lr_settings  # pandas: not imported by the `runs` command
    runs = store.query(RUNS_FOR_LR_SELECTION, [study])
    return best_lr_settings(runs, metric, higher_is_better=metric != "final_val_loss")


# Per run of a study, its newest finished Hessian analysis (whole network) beside its accuracy:
# the convexity evidence of issue 10 (lambda_min with its residual against the lowest SLQ Ritz
# node, which it cannot exceed). Parameters: the whole-model layer name, the done status, the
# study name.
HESSIAN_STUDY_TABLE = """
    WITH h AS (
        SELECT s.*, row_number() OVER (PARTITION BY s.run_id
                                       ORDER BY a.started_at DESC, s.epoch DESC) AS newest
        FROM hessian_summary s JOIN analyses a USING (analysis_id)
        WHERE s.layer = ? AND a.status = ?)
    SELECT r.run_id, r.model_label, r.optimizer, r.seed, r.status, h.epoch,
           r.final_val_acc AS accuracy, h.top_eig AS lambda_max, h.lam_min,
           h.lam_min_residual, h.lam_min_converged, abs(h.lam_min / h.top_eig) AS convexity_ratio,
           h.neg_share, h.neg_share_se, h.near_zero_share, h.neg_eps, h.lowest_ritz,
           h.lam_min_lanczos,
           h.lam_min <= h.lowest_ritz AS lam_min_below_ritz, h.lam_min_consistent,
           h.n_products
    FROM runs r LEFT JOIN h ON h.run_id = r.run_id AND h.newest = 1
    WHERE r.study = ? ORDER BY r.model_label, r.optimizer, r.seed, r.run_id"""


def hessian_study_table(store, study: str) -> pd.DataFrame:
    """`HESSIAN_STUDY_TABLE` of one study (runs without a finished Hessian: NULL columns)."""
    return store.query(HESSIAN_STUDY_TABLE, [WHOLE_MODEL, ANALYSIS_DONE, study])


def surface_seed_spread(store, run_ids: list[str]) -> pd.DataFrame:
    return store.query(SURFACE_SEED_SPREAD, [list(run_ids)])


def run_list(store, filters: dict[str, list], *, arrow: bool = False):
    """`RUN_LIST_COLUMNS` of the runs matching every filter (column -> accepted values), as a
    DataFrame (or an Arrow table)."""
    unknown = set(filters) - set(RUN_FILTERS)
    if unknown:
        raise StoreError(f"runs cannot be filtered on {sorted(unknown)}")
    active = {col: values for col, values in filters.items() if values}
    where = " AND ".join(f"list_contains(?, {col})" for col in active)
    sql = (f"SELECT {', '.join(RUN_LIST_COLUMNS)} FROM runs"
           + (f" WHERE {where}" if where else "") + " ORDER BY run_id")
    return store.query(sql, list(active.values()), arrow=arrow)


def table_rows(store, table: str, run_ids: list[str] | None = None) -> pd.DataFrame:
    """Every row of `table` (only `run_ids`' when given), in a stable order."""
    if table not in TABLES:
        raise StoreError(f"unknown table '{table}'; tables: {', '.join(TABLES)}")
    sql, params = f'SELECT * FROM "{table}"', []
    if run_ids:
        sql += " WHERE list_contains(?, run_id)"
        params.append(list(run_ids))
    return store.query(sql + " ORDER BY ALL", params)


def checkpoint_epochs(store, run_id: str) -> list[int]:
    return [int(e) for e in store.query(CHECKPOINT_EPOCHS, [run_id])["epoch"]]


def checkpoint_epochs_of_runs(store, run_ids: list[str]) -> dict[str, list[int]]:
    """run id -> its checkpoint epochs, ascending (runs without any left out)."""
    out: dict[str, list[int]] = {}
    for run_id, epoch in store.query(CHECKPOINT_EPOCHS_OF_RUNS, [list(run_ids)]).itertuples(
            index=False):
        out.setdefault(run_id, []).append(int(epoch))
    return out


def done_analysis_ids(store) -> set[str]:
    return set(store.query(ANALYSES_WITH_STATUS, [ANALYSIS_DONE])["analysis_id"])


def checkpoint_digest(store, run_id: str, epoch: int) -> str | None:
    """The sha256 stored with a checkpoint (None: not stored, e.g. an older store)."""
    df = store.query(CHECKPOINT_DIGEST, [run_id, int(epoch)])
    digest = None if df.empty else df["sha256"].iloc[0]
    return digest if isinstance(digest, str) else None  # NULL reads as None or NaN


def trajectory_files(store, run_id: str) -> pd.DataFrame:
    return store.query(TRAJECTORY_FILES, [run_id])


def runs_by_prefix(store, prefix: str) -> pd.DataFrame:
    return store.query(RUNS_BY_PREFIX, [prefix])


def done_analyses(store, run_id: str, epoch: int, kind: str) -> list[str]:
    """Ids of the finished `kind` analyses of a run's epoch, newest first."""
    df = store.query(DONE_ANALYSES, [run_id, epoch, kind, ANALYSIS_DONE])
    return df["analysis_id"].tolist()


def latest_gauss_fit(store, run_id: str, epoch: int) -> dict | None:
    df = store.query(LATEST_GAUSS_FIT, [run_id, epoch, ANALYSIS_DONE])
    return None if df.empty else df.iloc[0].to_dict()
