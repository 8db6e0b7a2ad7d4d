"""Writes tests/data/real_surfaces.npz: loss grids written by the library, for the tests of the
grid analyses on real surfaces (tests/test_gaussfit_real.py).

1. Every surface of a quick-grid store (runs/quick.toml, 8 epochs, 11 x 11, bn fixed): the
   grids exactly as the `surface` analysis stored them.
2. Two 21 x 21 surfaces of that store's default-init MLP and its ResNet-18 (width 8, BN, fixed
   statistics), the issue's two failure cases of the old fit: `surface_2d` on their last
   checkpoints along seed-0 filter-normalised random directions (the analysis' defaults).

    make quick STORE=/tmp/quick        # or: python -m landscape_lib train-all runs/quick.toml
    OMP_NUM_THREADS=1 python tests/data/real_surfaces.py /tmp/quick
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

from landscape_lib.analyses.context import AnalysisContext, run_config
from landscape_lib.analyses.surface.directions import get_weights, random_directions
from landscape_lib.analyses.surface.grids import surface_2d
from landscape_lib.store import Store, queries

OUT = Path(__file__).with_name("real_surfaces.npz")


def stored_surfaces(store: Store, runs):
    points = queries.table_rows(store, "surface_points").sort_values(
        ["run_id", "analysis_id", "j", "i"])
    for (run_id, _), part in points.groupby(["run_id", "analysis_id"], sort=False):
        nx, ny = part.i.max() + 1, part.j.max() + 1
        r = runs.loc[run_id]
        yield (f"{r.model_label} {r.init} {r.optimizer} ({nx}x{ny})", part.x.to_numpy()[:nx],
               part.y.to_numpy()[::nx], part.loss.to_numpy().reshape(ny, nx))


def fresh_21(store: Store, runs, label: str):
    row = runs[(runs.model_label == label) & (runs.init == "default")].sort_index().iloc[0]
    cfg = run_config(row)
    ctx = AnalysisContext(store, row.name, cfg, cfg.epochs, torch.device("cpu"))
    d1, d2 = random_directions(ctx.model, 0, 2, normalization="filter", ignore_1d=True)
    xs = np.linspace(-1, 1, 21)
    res = surface_2d(ctx.model, get_weights(ctx.model), d1, d2, xs, xs,
                     ctx.batches("train", 1024, seed=0), bn="fixed")
    return f"{label} {cfg.init} {cfg.optimizer} (21x21, bn fixed)", xs, xs, res["loss"]


def main(store_dir: str) -> None:
    store = Store(store_dir)
    runs = queries.table_rows(store, "runs").set_index("run_id")
    surfaces = list(stored_surfaces(store, runs))
    surfaces += [fresh_21(store, runs, label) for label in ("mlp hidden=64x64", "resnet18 width=8")]
    np.savez(OUT, **{f"s{k}": s[3] for k, s in enumerate(surfaces)},
             labels=json.dumps([s[0] for s in surfaces]),
             axes=json.dumps([[list(map(float, s[1])), list(map(float, s[2]))] for s in surfaces]))
    print(f"{len(surfaces)} surfaces -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
