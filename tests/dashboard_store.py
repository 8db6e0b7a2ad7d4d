"""A synthetic but realistic run store for the dashboard's tests, benchmark and screenshots.

Everything is written through `landscape_lib.store.Store.write`, so the files are exactly what the
real writers produce. Every table of the schema gets rows: runs over a grid of data sets x
architectures x initializers x optimizers x seeds (statuses done / diverged / running / failed),
per-epoch metrics, per-layer matrix statistics, checkpoints, and for the first runs every analysis
(Hessian, surfaces, interpolation, trajectory, wavelets, persistence, Gaussian fit, optimizer
paths, attention JSD and attention-Hessian sweeps).

    python -m tests.dashboard_store ROOT --runs 40 --epochs 20     # or make_store(root, 40, 20, 0)
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from landscape_lib.store import Store

# (dataset, arch, arch_options, model_label, layer names)
MODELS = [
    ("fashion_mnist", "mlp", {"hidden": [256, 128]}, "mlp hidden=256x128",
     ["fc1.weight", "fc2.weight", "head.weight"]),
    ("cifar10", "cnn", {}, "cnn", ["conv1.weight", "conv2.weight", "fc.weight"]),
    ("cifar10", "vit", {"patch": 4}, "vit p4",
     ["patch_embed.weight", "blocks.0.attn.qkv.weight", "head.weight"]),
    ("cifar10", "vit", {"patch": 4, "attention": "local"}, "vit p4 local",
     ["patch_embed.weight", "blocks.0.attn.qkv.weight", "head.weight"]),
    ("cifar100", "resnet18", {}, "resnet18",
     ["conv1.weight", "layer1.0.conv1.weight", "fc.weight"]),
]
INITS = ["kaiming", "xavier", "lecun", "orthogonal", "l-momentum"]
OPTIMIZERS = ["sgd", "momentum", "adam", "lion", "sam-adam"]
N_SEEDS = 3
T0 = datetime(2026, 1, 5, 9, 0, 0)


def _configs():
    """Configurations in an order that mixes every factor early (so few runs cover them all)."""
    grid = list(itertools.product(range(len(MODELS)), range(len(INITS)), range(len(OPTIMIZERS))))
    order = np.random.default_rng(12345).permutation(len(grid))
    for idx in itertools.cycle(order):
        yield grid[idx]


def _status(i: int) -> str:
    if i % 11 == 5:
        return "diverged"
    if i % 13 == 7:
        return "running"
    if i % 29 == 17:
        return "failed"
    return "done"


def _epochs(rng, run_id, n_epochs, status, quality, diverged_at, lr, layers):
    """Per-epoch metrics and per-layer statistics of one run."""
    done = n_epochs if status in ("done", "diverged") else max(1, n_epochs // 2)
    ep = np.arange(done + 1)
    rate = 0.15 + 0.25 * quality
    noise = rng.normal(0, 0.01, size=(4, ep.size))
    train_loss = 2.3 * np.exp(-rate * ep) + 0.1 * (1 - quality) + np.abs(noise[0])
    val_loss = train_loss + 0.05 + 0.004 * ep * (1 - quality) + np.abs(noise[1])
    train_acc = np.clip(0.1 + (0.85 + 0.13 * quality) * (1 - np.exp(-rate * ep)) + noise[2], 0, 1)
    val_acc = np.clip(train_acc - 0.03 - 0.05 * (1 - quality) + noise[3], 0, 1)
    grad_norm = 3.0 * np.exp(-0.1 * ep) + 0.2 + rng.gamma(2, 0.05, ep.size)
    weight_norm = 20 + 2.5 * np.log1p(ep) + rng.normal(0, 0.05, ep.size)
    param_change = np.r_[0.0, np.abs(np.diff(weight_norm)) + 0.05]
    epoch_time = rng.normal(12.0, 0.5, ep.size).clip(8) * np.r_[0.0, np.ones(done)]
    cond = 5 + 40 * (1 - quality) + 3 * np.log1p(ep)
    frame = pd.DataFrame({
        "run_id": run_id, "epoch": ep, "train_loss": train_loss, "train_acc": train_acc,
        "val_loss": val_loss, "val_acc": val_acc, "grad_norm": grad_norm,
        "weight_norm": weight_norm, "param_change": param_change,
        "loss_improvement": np.r_[0.0, -np.diff(train_loss)], "lr": lr,
        "epoch_time": epoch_time, "wall_time": np.cumsum(epoch_time),
        "images_per_s": np.where(ep > 0, 60000 / np.maximum(epoch_time, 1e-9), np.nan),
        "peak_mem_mb": 300 + 120 * quality + rng.normal(0, 2, ep.size),
        "mem_kind": "cuda", "avg_cond": cond,
        "avg_spectral_norm": 1.5 + 0.3 * np.log1p(ep),
        "avg_eff_rank_ratio": 0.9 - 0.2 * ep / max(n_epochs, 1) * (1 - quality),
        "diverged": False})
    if diverged_at is not None:  # a run that blew up: NaN losses from there on
        bad = frame["epoch"] >= diverged_at
        for col in ("train_loss", "val_loss", "grad_norm", "avg_cond"):
            frame.loc[bad, col] = np.nan
        frame.loc[bad, ["train_acc", "val_acc"]] = 0.1
        frame.loc[bad, "diverged"] = True
        frame = frame[frame["epoch"] <= diverged_at]
    layer_rows = []
    for li, name in enumerate(layers):
        for e in frame["epoch"]:
            c = float(cond[e] * (0.6 + 0.4 * li))
            layer_rows.append({"run_id": run_id, "epoch": int(e), "layer": name,
                               "layer_index": li, "rows": 64 * (li + 1), "cols": 128,
                               "cond": c, "spectral_norm": 1.2 + 0.1 * li + 0.02 * e,
                               "eff_rank_ratio": 0.9 - 0.05 * li, "frob_norm": 8 + li})
    return frame.reset_index(drop=True), pd.DataFrame(layer_rows)


def make_store(root, n_runs: int = 40, n_epochs: int = 20, seed: int = 0,
               n_analysed: int | None = None) -> Store:
    """Write a synthetic store of `n_runs` runs of `n_epochs` epochs at `root`; return it.

    The first `n_analysed` runs (default min(n_runs, 12)) get every analysis."""
    rng = np.random.default_rng(seed)
    store = Store(root).ensure()
    n_analysed = min(n_runs, 12) if n_analysed is None else n_analysed
    configs = _configs()
    cfg = next(configs)
    for i in range(n_runs):
        if i and i % N_SEEDS == 0:
            cfg = next(configs)
        m, ii, oi = cfg
        dataset, arch, options, label, layers = MODELS[m]
        init, opt, run_seed = INITS[ii], OPTIMIZERS[oi], i % N_SEEDS
        status = _status(i)
        run_id = f"r{i:05d}-{dataset[:5]}-{arch}-{init}-{opt}-s{run_seed}".replace("_", "")
        quality = float(np.clip(0.3 + 0.12 * oi + 0.08 * ii - 0.1 * m + rng.normal(0, .03),
                                0, 1))
        diverged_at = max(1, n_epochs // 3) if status == "diverged" else None
        lr = {"sgd": 0.1, "momentum": 0.05, "lion": 1e-4}.get(opt, 3e-4)
        ep, layer_rows = _epochs(rng, run_id, n_epochs, status, quality, diverged_at, lr, layers)
        last = ep.iloc[-1]
        created = T0 + timedelta(minutes=7 * i)
        finished = created + timedelta(seconds=float(last["wall_time"]))
        config = {"dataset": dataset, "arch": arch, "arch_options": options, "init": init,
                  "optimizer": opt, "lr": lr, "weight_decay": 5e-4, "batch_size": 256,
                  "epochs": n_epochs, "seed": run_seed}
        store.write("runs", run_id, [{
            "run_id": run_id, "study": ["inits", "optimizers", "archs"][i % 3], "status": status,
            "dataset": dataset, "arch": arch, "arch_options": json.dumps(options, sort_keys=True),
            "model_label": label, "init": init, "optimizer": opt, "lr": lr, "weight_decay": 5e-4,
            "batch_size": 256, "epochs": n_epochs, "seed": run_seed,
            "tags": "paper-a" if arch == "vit" else ("chapter-e" if i % 2 else ""),
            "config_json": json.dumps(config, sort_keys=True),
            "env_json": json.dumps({"torch": "2.11.0", "python": "3.12"}),
            "n_params": 100_000 * (m + 1), "device": "cuda:0",
            "epochs_done": int(last["epoch"]), "diverged_epoch": diverged_at,
            "error": "CUDA error: out of memory" if status == "failed" else None,
            "created_at": created, "updated_at": finished,
            "finished_at": None if status == "running" else finished,
            "pid": 1000 + i, "host": "gpu-01",
            "final_train_loss": last["train_loss"], "final_train_acc": last["train_acc"],
            "final_val_loss": last["val_loss"], "final_val_acc": last["val_acc"],
            "best_val_acc": float(ep["val_acc"].max()),
            "generalization_gap": last["val_loss"] - last["train_loss"],
            "total_time": float(last["wall_time"]), "schema_version": 1}])
        store.write("epochs", run_id, ep)
        store.write("layers", run_id, layer_rows)
        ckpt_epochs = sorted({0, int(last["epoch"]) // 2, int(last["epoch"])})
        store.write("checkpoints", run_id,
                    [{"run_id": run_id, "epoch": e, "kind": "checkpoint", "n_values": 100_000,
                      "path": f"artifacts/{run_id}/epoch{e:04d}.pt"} for e in ckpt_epochs]
                    + [{"run_id": run_id, "epoch": int(e), "kind": "trajectory",
                        "n_values": 100_000, "path": f"artifacts/{run_id}/traj.npy"}
                       for e in ep["epoch"]])
        if i < n_analysed:
            _analyses(store, rng, run_id, int(last["epoch"]), quality, arch == "vit", created)
    if n_analysed:
        _studies(store, T0)
    return store


def _analysis_row(aid, run_id, epoch, kind, params, started):
    return {"analysis_id": aid, "run_id": run_id, "epoch": epoch, "kind": kind, "status": "done",
            "params_json": json.dumps(params, sort_keys=True), "split": "train",
            "n_samples": params.get("samples", 512), "device": "cuda:0", "engine": "torch",
            "lib_version": "0.1.0", "started_at": started, "seconds": 3.5, "error": None}


def _analyses(store, rng, run_id, last_epoch, quality, is_vit, started):
    """Write one run's analyses in one part per table (the real writers use one part per
    analysis; readers see the same rows either way). Names follow the analyses registry."""
    rows, aid = [], lambda kind, e: f"{run_id}-{kind}-e{e}"
    sharp = 5 + 80 * (1 - quality)
    eig_rows, summ_rows, dens_rows = [], [], []
    for e in sorted({0, last_epoch // 2, last_epoch}):
        a = aid("hessian", e)
        rows.append(_analysis_row(a, run_id, e, "hessian", {"samples": 256, "top_k": 5}, started))
        top = sharp * (1 + 0.3 * e / max(last_epoch, 1))
        eigs = top * np.array([1, .6, .4, .3, .2])
        eig_rows += [{"analysis_id": a, "run_id": run_id, "epoch": e, "which": "top", "k": k + 1,
                      "eigenvalue": float(v)} for k, v in enumerate(eigs)]
        eig_rows.append({"analysis_id": a, "run_id": run_id, "epoch": e, "which": "bottom",
                         "k": 1, "eigenvalue": -0.05 * top})
        for layer in ("<all>", "fc1.weight", "fc2.weight"):  # "<all>": the whole model
            share = 1.0 if layer == "<all>" else (0.7 if layer == "fc1.weight" else 0.3)
            summ_rows.append({"analysis_id": a, "run_id": run_id, "epoch": e, "layer": layer,
                              "n_params": 5000, "top_eig": top * share, "lam_min": -0.05 * top,
                              "convexity_ratio": 0.05, "trace": 12 * top * share,
                              "trace_se": 0.4 * top * share, "neg_share": 0.08 + 0.1 * (e == 0),
                              "n_products": 600})
        xs = np.linspace(-0.1 * top, 1.1 * top, 80)
        dens = np.exp(-xs ** 2 / (2 * (0.02 * top) ** 2)) + 0.05 * np.exp(
            -(xs - top) ** 2 / (2 * (0.05 * top) ** 2))
        dens /= np.trapezoid(dens, xs)
        dens_rows += [{"analysis_id": a, "run_id": run_id, "epoch": e, "x": float(x),
                       "density": float(d)} for x, d in zip(xs, dens)]
    store.write("hessian_eigs", run_id, eig_rows)
    store.write("hessian_summary", run_id, summ_rows)
    store.write("hessian_density", run_id, dens_rows)

    # A 21 x 21 surface around the final point: a tilted bowl whose width shrinks with sharpness.
    e, s_id, n = last_epoch, aid("surface", last_epoch), 21
    rows.append(_analysis_row(s_id, run_id, e, "surface",
                              {"directions": "random", "grid": n, "span": 1.0}, started))
    xs = np.linspace(-1, 1, n)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    cx, cy = sharp / 20, sharp / 35
    Z = 0.2 + cx * X ** 2 + cy * Y ** 2 + 0.05 * np.sin(3 * X) * np.cos(2 * Y)
    store.write("surface_points", run_id, pd.DataFrame({
        "analysis_id": s_id, "run_id": run_id, "epoch": e, "i": np.repeat(np.arange(n), n),
        "j": np.tile(np.arange(n), n), "x": X.ravel(), "y": Y.ravel(), "loss": Z.ravel(),
        "acc": np.clip(0.95 - 0.3 * (Z.ravel() - 0.2), 0, 1)}))
    store.write("surface_summary", run_id, [{
        "analysis_id": s_id, "run_id": run_id, "epoch": e, "directions": "random", "dir_seed": 0,
        "center_loss": 0.2, "curvature_x": 2 * cx, "curvature_y": 2 * cy,
        "basin_width": 2 / math.sqrt(cx + cy), "explained_variance": None}])

    a = aid("interpolation", e)  # from epoch_b (the first checkpoint) to this epoch
    rows.append(_analysis_row(a, run_id, e, "interpolation", {"from_epoch": "first"}, started))
    alpha = np.linspace(-0.25, 1.25, 31)
    store.write("interpolation", run_id, pd.DataFrame({
        "analysis_id": a, "run_id": run_id, "epoch": e, "epoch_b": 0, "alpha": alpha,
        "loss": 2.3 * (1 - alpha) ** 2 + 0.2 + 0.3 * np.sin(np.pi * alpha) ** 2,
        "acc": np.clip(0.1 + 0.85 * alpha, 0, 1)}))

    traj = []
    a = aid("trajectory", e)
    rows.append(_analysis_row(a, run_id, e, "trajectory", {"seed": 0}, started))
    for method in ("pca", "tsne"):
        t = np.arange(e + 1)
        traj += [{"analysis_id": a, "run_id": run_id, "epoch": e, "method": method,
                  "point_epoch": int(k), "x": float(np.log1p(k) * np.cos(k / 4)),
                  "y": float(np.log1p(k) * np.sin(k / 4)),
                  "explained_variance": 0.8 if method == "pca" else None} for k in t]
    store.write("trajectory", run_id, traj)

    # The surface analysis also writes its grid's wavelets, persistence and Gaussian fit.
    store.write("wavelets", run_id, [
        {"analysis_id": s_id, "run_id": run_id, "epoch": e, "source_id": s_id, "level": lvl,
         "kind": kind, "energy": float(sharp * (0.5 ** lvl if kind != "approx" else 40))}
        for lvl in (1, 2, 3) for kind in ("horizontal", "vertical", "diagonal")
        + (("approx",) if lvl == 3 else ())])

    births = np.sort(rng.uniform(0.2, 0.5, 6))
    store.write("persistence", run_id, [
        {"analysis_id": s_id, "run_id": run_id, "epoch": e, "source_id": s_id, "dim": d,
         "birth": float(b), "death": float(b + l), "lifetime": float(l)}
        for d, b, l in [(0, births[0], float(Z.max() - births[0]))]
        + [(k % 2, b, float(rng.uniform(0.01, 0.2))) for k, b in enumerate(births[1:])]])

    store.write("gauss_fit", run_id, [{
        "analysis_id": s_id, "run_id": run_id, "epoch": e, "source_id": s_id, "A": -0.8,
        "x0": 0.0, "y0": 0.0, "s1": 1 / math.sqrt(2 * cx), "s2": 1 / math.sqrt(2 * cy),
        "offset": 1.0, "r2": 0.97}])
    p_id = aid("paths", e)  # paths on the Gaussian fitted to this epoch's surface
    rows.append(_analysis_row(p_id, run_id, e, "paths", {"steps": 40}, started))
    store.write("optimizer_paths", run_id, _paths(p_id, run_id, e, "gaussian-fit"))

    if is_vit:
        a = aid("attention", e)
        rows.append(_analysis_row(a, run_id, e, "attention", {"samples": 256}, started))
        layer, head = np.indices((7, 4))
        store.write("attention_jsd", run_id, pd.DataFrame({
            "analysis_id": a, "run_id": run_id, "epoch": e, "layer": layer.ravel(),
            "head": head.ravel(), "jsd": 0.05 + 0.3 * np.abs(np.sin(layer.ravel() + head.ravel()))
            * quality}))
    store.write("analyses", run_id, rows)


def _paths(aid, run_id, epoch, surface):
    """Three optimizers spiralling into a minimum (synthetic optimizer paths)."""
    steps, frames = np.arange(40), []
    for k, opt in enumerate(("sgd", "momentum", "adam")):
        decay = 0.9 - 0.1 * k
        frames.append(pd.DataFrame({
            "analysis_id": aid, "run_id": run_id, "epoch": epoch, "surface": surface,
            "optimizer": opt, "step": steps, "x": 1.5 * decay ** steps * np.cos(steps / 6),
            "y": 0.8 * decay ** steps, "z": 1.0 - 0.8 * (1 - decay ** steps),
            "diverged": False}))
    return pd.concat(frames, ignore_index=True)


def _studies(store, started):
    """Stand-alone studies (no run; the store key is "study"): attention-Hessian sweep and
    optimizer paths on an analytic test surface."""
    rows, ah = [], []
    a = "attention-hessian-synthetic"
    rows.append(_analysis_row(a, "study", None, "attention-hessian", {"d": 4}, started))
    for s, kind, pre_ln, part, rb, cb in itertools.product(
            np.logspace(-1, 1, 5), ("softmax", "linear"), (False, True),
            ("full", "gauss_newton", "functional"), ("query", "key", "value"),
            ("query", "key", "value")):
        power = {"query": 3, "key": 3, "value": 1}[rb] + {"query": 3, "key": 3, "value": 1}[cb]
        power = 2 if (pre_ln or kind == "linear") else power
        ah.append({"analysis_id": a, "run_id": "study", "epoch": None, "scale": float(s),
                   "attention": kind, "pre_ln": pre_ln, "part": part, "row_block": rb,
                   "col_block": cb, "frobenius": float(s ** power * (1 + 0.1 * len(part)))})
    store.write("attention_hessian", "study", ah, part=a)
    edges = np.linspace(-1, 1, 21)
    store.write("attention_hessian_hist", "study", [
        {"analysis_id": a, "run_id": "study", "epoch": None, "attention": kind, "part": part,
         "block": f"{rb}-{cb}", "bin_left": lo, "bin_right": hi,
         "count": int(100 * np.exp(-(lo / (0.2 if kind == "softmax" else 0.5)) ** 2))}
        for kind in ("softmax", "linear") for part in ("gauss_newton", "functional")
        for rb in ("query", "value") for cb in ("query", "value")
        for lo, hi in zip(edges[:-1], edges[1:])], part=a)
    p = "paths-analytic-synthetic"
    rows.append(_analysis_row(p, "study", None, "paths-analytic", {"steps": 40}, started))
    store.write("optimizer_paths", "study", _paths(p, "study", None, "himmelblau"), part=p)
    store.write("analyses", "study", rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make_store(Path(args.root), args.runs, args.epochs, args.seed)


if __name__ == "__main__":
    main()
