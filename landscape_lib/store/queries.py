"""Queries over several tables or rows that more than one reader needs (CLI, dashboard).

Plain SQL strings with `?` parameters, so a reader with its own connection (the dashboard's
snapshots) runs the same text as `Store.query`.
"""
from __future__ import annotations

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


def surface_seed_spread(store, run_ids: list[str]) -> pd.DataFrame:
    return store.query(SURFACE_SEED_SPREAD, [list(run_ids)])
