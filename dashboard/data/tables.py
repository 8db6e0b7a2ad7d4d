"""Whole tables and run picks straight from a store (no Streamlit cache): for the sample and
scaled stores (dashboard.sample_store) and the README screenshots (bench/screenshots.py)."""
from __future__ import annotations

import pandas as pd

from landscape_lib.store import TABLES, Store
from landscape_lib.store.schema import DONE_STATUSES

from .statuses import FINISHED


def table(root, name: str) -> pd.DataFrame:
    """Every row of a store table, ordered by its columns."""
    if name not in TABLES:
        raise KeyError(name)
    return Store(root).query(f"SELECT * FROM {name} ORDER BY ALL")


def done_runs(root) -> pd.DataFrame:
    """Runs that ended (finished or diverged), by run id."""
    return Store(root).query("SELECT * FROM runs WHERE list_contains(?, status) ORDER BY run_id",
                             [list(DONE_STATUSES)])


def runs_with_surfaces(root, n: int) -> list[str]:
    """n finished runs with a surface, of different models where possible."""
    df = Store(root).query("SELECT DISTINCT r.run_id, r.model_label FROM runs r JOIN "
                           "surface_points t USING (run_id) WHERE r.status = ? "
                           "ORDER BY r.run_id", [FINISHED])
    picked = df.drop_duplicates("model_label")["run_id"].tolist()
    return (picked + [r for r in df["run_id"] if r not in picked])[:n]


def seed_groups(root, n_configs: int) -> list[str]:
    """Every seed of the first n_configs configurations that have several finished seeds."""
    df = Store(root).query("SELECT run_id, concat_ws('|', dataset, model_label, init, optimizer, "
                           "lr) AS config FROM runs WHERE status = ? ORDER BY run_id",
                           [FINISHED])
    configs = [c for c, g in df.groupby("config", sort=False) if len(g) > 1][:n_configs]
    return df[df["config"].isin(configs)]["run_id"].tolist()


def largest_study(root) -> str:
    return Store(root).query("SELECT study FROM runs GROUP BY study ORDER BY count(*) DESC, "
                             "study LIMIT 1")["study"][0]
