"""The store's tables and their columns: the one place the schema is written down.

Every table is a set of Parquet files `tables/<table>/<run_id>/<part>.parquet`; the writer casts each
file to these columns and the reader exposes one DuckDB view per table over the glob, so files
written at different times always line up. Bump SCHEMA_VERSION when a column changes meaning.
"""
from __future__ import annotations

# 2: epochs.train_loss is the eval-mode loss on a fixed training sample at every epoch (the
#    running average moved to train_loss_running); wavelet energies partition the grid's energy
#    (share, mode); persistence marks its essential class; gauss_fit has status, reason and its
#    box; interpolation says how BN statistics were treated (bn, bn_var_clamped).
SCHEMA_VERSION = 2

# Values of `runs.status`: a run is written "running" and ends in one of the others. Finished
# and diverged runs are done (a divergence is a result); the others resume when run again.
RUN_STATUSES = ("running", "finished", "diverged", "failed", "interrupted")
RUNNING, FINISHED, DIVERGED, FAILED, INTERRUPTED = RUN_STATUSES
DONE_STATUSES = (FINISHED, DIVERGED)
# Values of `analyses.status`; only "done" results are read back.
ANALYSIS_STATUSES = ("running", "done", "failed")
ANALYSIS_RUNNING, ANALYSIS_DONE, ANALYSIS_FAILED = ANALYSIS_STATUSES
# `hessian_summary.layer` of the whole-network row (the other rows name one module each).
WHOLE_MODEL = "<all>"
# The run id under which stand-alone studies (analyses of no run) are stored.
STUDY = "study"

_PROVENANCE = {"analysis_id": "VARCHAR", "run_id": "VARCHAR", "epoch": "INTEGER"}

TABLES: dict[str, dict[str, str]] = {
    # One row per run: identity, config, environment, status and final metrics.
    "runs": {
        "run_id": "VARCHAR", "study": "VARCHAR", "status": "VARCHAR",
        "dataset": "VARCHAR", "arch": "VARCHAR", "arch_options": "VARCHAR", "model_label": "VARCHAR",
        "init": "VARCHAR", "optimizer": "VARCHAR", "lr": "DOUBLE", "weight_decay": "DOUBLE",
        "batch_size": "INTEGER", "epochs": "INTEGER", "seed": "INTEGER", "tags": "VARCHAR",
        "config_json": "VARCHAR", "env_json": "VARCHAR", "n_params": "BIGINT", "device": "VARCHAR",
        "epochs_done": "INTEGER", "diverged_epoch": "INTEGER", "error": "VARCHAR",
        "created_at": "TIMESTAMP", "updated_at": "TIMESTAMP", "finished_at": "TIMESTAMP",
        "pid": "INTEGER", "host": "VARCHAR",
        "final_train_loss": "DOUBLE", "final_train_acc": "DOUBLE",
        "final_val_loss": "DOUBLE", "final_val_acc": "DOUBLE", "best_val_acc": "DOUBLE",
        "generalization_gap": "DOUBLE", "total_time": "DOUBLE", "schema_version": "INTEGER",
    },
    # One row per run and epoch (epoch 0 = at initialisation, before any step). train_* are the
    # eval-mode loss and accuracy on a fixed training sample at every epoch; *_running the
    # running average of the training objective over the epoch's steps (train.engine's doc).
    "epochs": {
        "run_id": "VARCHAR", "epoch": "INTEGER",
        "train_loss": "DOUBLE", "train_acc": "DOUBLE", "val_loss": "DOUBLE", "val_acc": "DOUBLE",
        "train_loss_running": "DOUBLE", "train_acc_running": "DOUBLE", "grad_norm": "DOUBLE", "weight_norm": "DOUBLE", "param_change": "DOUBLE",
        "loss_improvement": "DOUBLE", "lr": "DOUBLE", "epoch_time": "DOUBLE", "wall_time": "DOUBLE",
        "images_per_s": "DOUBLE", "peak_mem_mb": "DOUBLE", "mem_kind": "VARCHAR",
        "avg_cond": "DOUBLE", "avg_spectral_norm": "DOUBLE", "avg_eff_rank_ratio": "DOUBLE",
        "diverged": "BOOLEAN",
    },
    # Per weight matrix (conv kernels reshaped to out x in*k*k) and epoch.
    "layers": {
        "run_id": "VARCHAR", "epoch": "INTEGER", "layer": "VARCHAR", "layer_index": "INTEGER",
        "rows": "INTEGER", "cols": "INTEGER", "cond": "DOUBLE", "spectral_norm": "DOUBLE",
        "eff_rank_ratio": "DOUBLE", "frob_norm": "DOUBLE",
    },
    # Saved weights: full checkpoints and per-epoch trajectory vectors.
    "checkpoints": {
        "run_id": "VARCHAR", "epoch": "INTEGER", "kind": "VARCHAR", "path": "VARCHAR",
        "n_values": "BIGINT", "sha256": "VARCHAR",  # the file's digest, checked on load
    },
    # Provenance of every analysis result (one row per analysis_id).
    "analyses": {
        **_PROVENANCE, "kind": "VARCHAR", "status": "VARCHAR", "params_json": "VARCHAR",
        "split": "VARCHAR", "n_samples": "INTEGER", "device": "VARCHAR", "engine": "VARCHAR",
        "lib_version": "VARCHAR", "started_at": "TIMESTAMP", "seconds": "DOUBLE", "error": "VARCHAR",
    },
    "hessian_eigs": {**_PROVENANCE, "which": "VARCHAR", "k": "INTEGER", "eigenvalue": "DOUBLE"},
    "hessian_summary": {
        **_PROVENANCE, "layer": "VARCHAR", "n_params": "BIGINT", "top_eig": "DOUBLE",
        "lam_min": "DOUBLE", "convexity_ratio": "DOUBLE", "trace": "DOUBLE", "trace_se": "DOUBLE",
        "neg_share": "DOUBLE", "n_products": "INTEGER",
        "top_eig_residual": "DOUBLE", "top_eig_converged": "BOOLEAN",
        "lam_min_residual": "DOUBLE", "lam_min_converged": "BOOLEAN", "lowest_ritz": "DOUBLE",
        "lam_min_consistent": "BOOLEAN", "neg_share_se": "DOUBLE", "neg_eps": "DOUBLE",
        "near_zero_share": "DOUBLE", "lam_min_lanczos": "DOUBLE",
    },
    "hessian_density": {**_PROVENANCE, "x": "DOUBLE", "density": "DOUBLE"},
    # What each part of an analysis cost (e.g. top, trace, density, bottom, per-layer).
    "analysis_costs": {**_PROVENANCE, "part": "VARCHAR", "n_products": "INTEGER",
                       "seconds": "DOUBLE"},
    "surface_points": {
        **_PROVENANCE, "i": "INTEGER", "j": "INTEGER", "x": "DOUBLE", "y": "DOUBLE",
        "loss": "DOUBLE", "acc": "DOUBLE",
    },
    "surface_summary": {
        **_PROVENANCE, "directions": "VARCHAR", "dir_seed": "INTEGER", "center_loss": "DOUBLE",
        "curvature_x": "DOUBLE", "curvature_y": "DOUBLE", "basin_width": "DOUBLE",
        "explained_variance": "DOUBLE",
    },
    "interpolation": {
        **_PROVENANCE, "epoch_b": "INTEGER", "alpha": "DOUBLE", "loss": "DOUBLE", "acc": "DOUBLE",
        "bn": "VARCHAR", "bn_var_clamped": "INTEGER",
    },
    "trajectory": {
        **_PROVENANCE, "method": "VARCHAR", "point_epoch": "INTEGER", "x": "DOUBLE", "y": "DOUBLE",
        "explained_variance": "DOUBLE",
    },
    "wavelets": {
        **_PROVENANCE, "source_id": "VARCHAR", "level": "INTEGER", "kind": "VARCHAR",
        "energy": "DOUBLE", "share": "DOUBLE", "mode": "VARCHAR",
    },
    "persistence": {
        **_PROVENANCE, "source_id": "VARCHAR", "dim": "INTEGER", "birth": "DOUBLE",
        "death": "DOUBLE", "lifetime": "DOUBLE", "essential": "BOOLEAN",
    },
    "gauss_fit": {
        **_PROVENANCE, "source_id": "VARCHAR", "A": "DOUBLE", "x0": "DOUBLE", "y0": "DOUBLE",
        "s1": "DOUBLE", "s2": "DOUBLE", "offset": "DOUBLE", "r2": "DOUBLE",
        "status": "VARCHAR", "reason": "VARCHAR", "x_min": "DOUBLE", "x_max": "DOUBLE",
        "y_min": "DOUBLE", "y_max": "DOUBLE",
    },
    "optimizer_paths": {
        **_PROVENANCE, "surface": "VARCHAR", "optimizer": "VARCHAR", "step": "INTEGER",
        "x": "DOUBLE", "y": "DOUBLE", "z": "DOUBLE", "diverged": "BOOLEAN",
    },
    "attention_jsd": {**_PROVENANCE, "layer": "INTEGER", "head": "INTEGER", "jsd": "DOUBLE"},
    "attention_hessian": {
        **_PROVENANCE, "scale": "DOUBLE", "attention": "VARCHAR", "pre_ln": "BOOLEAN",
        "part": "VARCHAR", "row_block": "VARCHAR", "col_block": "VARCHAR", "frobenius": "DOUBLE",
    },
    "attention_hessian_hist": {
        **_PROVENANCE, "attention": "VARCHAR", "part": "VARCHAR", "block": "VARCHAR",
        "bin_left": "DOUBLE", "bin_right": "DOUBLE", "count": "BIGINT",
    },
}


# The identity of a row: the writer refuses a part holding two rows with the same key (each row
# is stored exactly once, whatever a crash and a resume did). Tables not listed have none.
KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id",), "epochs": ("run_id", "epoch"), "layers": ("run_id", "epoch", "layer"),
    "checkpoints": ("run_id", "epoch", "kind"), "analyses": ("analysis_id",),
    "hessian_eigs": ("analysis_id", "which", "k"), "hessian_summary": ("analysis_id", "layer"),
    "surface_points": ("analysis_id", "i", "j"),
}


def columns(table: str) -> dict[str, str]:
    from ..errors import StoreError
    if table not in TABLES:
        raise StoreError(f"unknown table '{table}'; tables: {', '.join(TABLES)}")
    return TABLES[table]
