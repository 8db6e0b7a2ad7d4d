"""Stores the library writes itself, for the dashboard's tests, benchmark and screenshots.

    build(root)                       tiny real runs (digits and a folder data set), trained by
                                      landscape_lib.pipeline.run_grid, analysed by run_analysis
    cached(folder)                    build() once into folder/store, shared by test workers
    scale(src, dst, runs, epochs)     a large store for speed tests: the runs of `src` cloned
                                      with new ids, seeds and longer per-epoch series

    python -m dashboard.sample_store ROOT [--scale-from SRC --runs 1000 --epochs 200]

Nothing here types a value the library would not write: statuses, names, options and every
analysis row come from the library's own writers (scale() clones such rows).
"""
from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

from landscape_lib.store import TABLES, Store

from .data import tables

TINY = {"dataset": "digits", "epochs": 3, "batch_size": 128, "arch": "mlp",
        "arch_options": {"hidden": [16]}, "optimizer": "adam", "lr": 3e-3}
VIT = {"arch": "vit", "arch_options": {"patch_size": 4, "dim": 16, "depth": 2, "heads": 2}}
HESSIAN = {"samples": 64, "top_k": 3, "tol": 1e-2, "trace_samples": 4, "layer_steps": 2,
           "density_vectors": 1, "density_steps": 12, "per_layer": False}
SURFACE = {"samples": 64, "grid": 7, "span": 1.0}
FOLDER = "tinyshapes"  # the folder data set's name, as its runs are labelled


def configs(folder: Path) -> list:
    """The sample grid: four small studies of the kinds the quick grid has, two seeds each."""
    from landscape_lib.config import RunConfig
    out = []
    for seed in (0, 1):
        for hidden in ([16], [32]):
            for opt, lr in (("sgd", 0.1), ("adam", 3e-3), ("sam-adam", 3e-3)):
                out.append({"study": "optimizers", "optimizer": opt, "lr": lr, "seed": seed,
                            "arch_options": {"hidden": hidden}})
        for init in ("kaiming", "xavier", "orthogonal"):
            out.append({"study": "initializers", "init": init, "seed": seed})
        out.append({"study": "architectures", "seed": seed, "arch_options": {"hidden": [24]}})
        out.append({"study": "architectures", "seed": seed, **VIT})
    out.append({"study": "folder", "dataset": "folder", "dataset_options": {"path": str(folder)},
                "epochs": 2, "batch_size": 16})
    out.append({"study": "stress", "optimizer": "sgd", "lr": 1e6, "epochs": 2})
    return [RunConfig.from_dict({**TINY, **c}) for c in out]


def write_folder(base: Path, size: int = 8, per_class: int = 12) -> Path:
    """A two-class ImageFolder of small grayscale PNGs (bright top half vs bright left half)."""
    from PIL import Image
    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", per_class // 2)):
        for k, name in enumerate(("top", "left")):
            folder = base / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = rng.integers(0, 60, (size, size))
                if k == 0:
                    img[: size // 2] += 180
                else:
                    img[:, : size // 2] += 180
                Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i}.png")
    return base


def build(root, *, data_root=None) -> Store:
    """Train the sample grid into `root` and run its analyses (about a minute on 2 cores)."""
    from landscape_lib.analyses.provenance import run_analysis
    from landscape_lib.errors import LandscapeError
    from landscape_lib.pipeline import run_grid

    root = Path(root)
    store = Store(root).ensure()
    folder = write_folder(root.parent / FOLDER)
    cfgs = configs(folder)
    run_grid(cfgs, store, data_root=data_root, device="cpu", progress=False)
    done = tables.done_runs(root)

    def analyse(run, kind, epoch="last", **params):
        try:
            run_analysis(store, run, kind, epoch, params, device="cpu", data_root=data_root)
        except LandscapeError:
            pass  # e.g. a diverged run's NaN weights: the library says why; nothing stored

    for run, study in zip(done["run_id"], done["study"]):  # per-layer too in two studies
        analyse(run, "hessian", **HESSIAN | {"per_layer": study in ("initializers",
                                                                      "architectures")})
    opt = done[done["study"] == "optimizers"]["run_id"].tolist()
    for run in opt:
        analyse(run, "surface", **SURFACE)
    for run in opt[:2]:  # a second direction seed: statistics averaged over seeds
        analyse(run, "surface", seed=1, **SURFACE)
        analyse(run, "hessian", "first", **HESSIAN)  # a second analysed epoch
        analyse(run, "interpolation", samples=64, points=9)
        analyse(run, "trajectory")
    analyse(opt[0], "paths", steps=20)
    for run in done[done["arch"] == "vit"]["run_id"]:
        analyse(run, "attention", samples=32)
    analyse(None, "attention-hessian", None, n=2, scales=[0.1, 1.0, 10.0])
    analyse(None, "paths-analytic", None, steps=20, surfaces=["himmelblau"])
    return store


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def cached(folder) -> Path:
    """folder/store, built once (under a lock, so parallel test workers share one build)."""
    folder = Path(folder)
    root, marker = folder / "store", folder / "store.built"
    with _locked(folder / "store.lock"):
        if not marker.exists():
            build(root, data_root=folder / "data")
            marker.write_text("ok")
    return root


# ----------------------------------------------------------------------------- scale
def _curve(first: float, last: float, n_epochs: int, rng, noise: float) -> np.ndarray:
    """A curve from the template's first to its last value over n_epochs + 1 points."""
    t = np.arange(n_epochs + 1)
    shape = np.exp(-4.0 * t / max(n_epochs, 1))
    return last + (first - last) * shape + rng.normal(0, noise, t.size) * abs(first - last)


def _grow_epochs(ep: pd.DataFrame, run_id: str, n_epochs: int, rng) -> pd.DataFrame:
    """The template run's epoch rows stretched to n_epochs (each column from its first to its
    last value, with a little noise)."""
    first, last = ep.iloc[0], ep.iloc[-1]
    out = {"run_id": run_id, "epoch": np.arange(n_epochs + 1)}
    for col, kind in TABLES["epochs"].items():
        if col in ("run_id", "epoch"):
            continue
        if kind == "DOUBLE" and pd.notna(first[col]) and pd.notna(last[col]):
            values = _curve(float(first[col]), float(last[col]), n_epochs, rng, 0.01)
            out[col] = values.clip(0, 1) if col.endswith("_acc") else values
        else:
            out[col] = last[col]
    return pd.DataFrame(out)


def scale(src, dst, n_runs: int, n_epochs: int, analysed: int = 50, seed: int = 0) -> Store:
    """Clone the runs of store `src` into `n_runs` runs of `n_epochs` epochs in `dst`; the
    first `analysed` clones also get their template's analysis rows."""
    rng = np.random.default_rng(seed)
    out = Store(dst).ensure()
    runs = tables.done_runs(src)
    others = {t: tables.table(src, t) for t in TABLES if t not in ("runs", "epochs")}
    epochs = tables.table(src, "epochs")
    for i in range(n_runs):
        t = runs.iloc[i % len(runs)]
        run_id = f"{t['run_id']}-g{i:05d}"
        ep = _grow_epochs(epochs[epochs["run_id"] == t["run_id"]], run_id, n_epochs, rng)
        cfg = json.loads(t["config_json"])
        cfg.update(seed=int(i // len(runs)), epochs=n_epochs)
        last = ep.iloc[-1]
        row = t.to_dict() | {
            "run_id": run_id, "seed": cfg["seed"], "epochs": n_epochs, "epochs_done": n_epochs,
            "study": f"{t['study']}-{i // (10 * len(runs))}", "config_json": json.dumps(cfg),
            "final_train_loss": last["train_loss"], "final_val_loss": last["val_loss"],
            "final_val_acc": last["val_acc"], "final_train_acc": last["train_acc"],
            "generalization_gap": last["val_loss"] - last["train_loss"]}
        out.write("runs", run_id, [row])
        out.write("epochs", run_id, ep)
        for name, df in others.items():
            mine = df[df["run_id"] == t["run_id"]]
            if name == "layers":
                mine = pd.concat([mine[mine["epoch"] == mine["epoch"].max()].assign(epoch=e)
                                  for e in range(0, n_epochs + 1, max(1, n_epochs // 20))])
            elif i >= analysed and name != "checkpoints":
                continue
            if len(mine):
                mine = mine.assign(run_id=run_id)
                if "analysis_id" in mine:
                    mine = mine.assign(analysis_id=mine["analysis_id"] + f"-g{i:05d}")
                out.write(name, run_id, mine)
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--scale-from", help="a store to clone (default: build the sample)")
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=200)
    args = parser.parse_args(argv)
    if args.scale_from:
        scale(args.scale_from, args.root, args.runs, args.epochs)
    else:
        build(args.root, data_root=os.environ.get("LANDSCAPE_DATA"))


if __name__ == "__main__":
    main()
