"""A realistic store of N runs x E epochs, written by the library's own writer (`Store.write`).

Row counts per run follow a real grid run: the templates (bench/store_templates/) are the rows
`train-all bench/store_probe.toml` wrote for one ResNet-18 and one ViT run on digits (hessian
top-5 + per-layer + density, two 21x21 surface seeds with wavelets, persistence and Gaussian
fit, interpolation, trajectory, attention for the ViT), scaled to E epochs where a table grows
with epochs (epochs, layers, checkpoints, trajectory). Values are smooth curves plus noise, so
the Parquet files compress like real ones. The last 10 runs (a quarter of a small store) are
still `running` (partial epochs, no analyses); 1 run in 97 diverged.

    python bench/gen_store.py OUT --runs 10000 --epochs 100 --jobs 2   # resumable
    python bench/gen_store.py OUT --templates-from STORE   # templates from another probe store

Run i is generated from its index alone; worker w of J takes runs w, w + J, ...
"""
from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import time
from pathlib import Path

import numpy as np
import pandas as pd

from landscape_lib.store import TABLES, Store, queries

TEMPLATES = Path(__file__).resolve().parent / "store_templates"

INITS = ["default", "lecun", "xavier", "kaiming", "orthogonal", "scaled-orthogonal",
         "l-momentum", "emergence"]
OPTIMIZERS = ["sgd", "sgd-momentum", "adagrad", "rmsprop", "adam", "adamw", "lion", "sophia",
              "adafactor", "lamb", "sam-adam"]
LRS = [3e-4, 1e-3, 3e-3]
WDS = [0.0, 0.01, 0.05]
SEEDS = [0, 1, 2]
RUNNING = 10  # runs still training (the last ones): partial epochs, no analyses


def _hid(*parts) -> str:
    return hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:12]


def save_templates(probe: Path) -> None:
    """{arch}.{table}.parquet from a store written by `train-all bench/store_probe.toml`."""
    store = Store(probe)
    TEMPLATES.mkdir(exist_ok=True)
    for arch in ("resnet18", "vit"):
        for table in TABLES:
            df = queries.table_rows(store, table)
            df = df[df["run_id"].str.startswith(arch)]
            if len(df):
                df.to_parquet(TEMPLATES / f"{arch}.{table}.parquet")


def read_templates() -> dict:
    """{arch: {table: DataFrame}}; columns the schema no longer has are dropped."""
    out = {"resnet18": {}, "vit": {}}
    for f in TEMPLATES.glob("*.parquet"):
        arch, table, _ = f.name.split(".")
        df = pd.read_parquet(f)
        out[arch][table] = df[[c for c in df.columns if c in TABLES[table]]]
    return out


def _curve(rng, n, start, end, noise):
    t = np.linspace(0, 1, n)
    return start + (end - start) * (1 - np.exp(-5 * t)) + rng.normal(0, noise, n)


class RunMaker:
    def __init__(self, templates: dict, epochs: int, n_runs: int):
        self.t, self.E, self.n = templates, epochs, n_runs
        self.t0 = pd.Timestamp("2026-01-01")
        self.running = RUNNING if n_runs >= 100 else max(1, n_runs // 4)

    def config(self, i: int) -> dict:
        arch = "resnet18" if i % 2 == 0 else "vit"
        k = i // 2
        init, opt = INITS[k % len(INITS)], OPTIMIZERS[(k // 8) % len(OPTIMIZERS)]
        lr, wd = LRS[(k // 88) % 3], WDS[(k // 264) % 3]
        seed = SEEDS[(k // 792) % 3]
        rid = f"{arch}-{init}-{opt}-lr{lr:g}-wd{wd:g}-s{seed}-{_hid(i)[:10]}"
        return dict(arch=arch, init=init, optimizer=opt, lr=lr, weight_decay=wd, seed=seed,
                    run_id=rid, study=f"study-{k % 7}")

    def write(self, store: Store, i: int) -> int:
        c = self.config(i)
        rid, arch, T = c["run_id"], c["arch"], self.t[c["arch"]]
        rng = np.random.default_rng(i)
        running = i >= self.n - self.running
        diverged = (not running) and i % 97 == 13
        E = self.E
        done = int(rng.integers(1, E)) if running else E
        if diverged:
            done = int(rng.integers(2, E))
        n = done + 1
        created = self.t0 + pd.Timedelta(minutes=3 * i)
        files = 0
        # epochs
        ep = pd.DataFrame({"run_id": rid, "epoch": np.arange(n)})
        base_acc = 0.5 + 0.45 * rng.random()
        ep["train_loss"] = np.abs(_curve(rng, n, 2.3, 0.05 + rng.random() * 0.2, 0.01))
        ep["train_acc"] = np.clip(_curve(rng, n, 0.1, base_acc + 0.04, 0.005), 0, 1)
        ep["val_loss"] = np.abs(_curve(rng, n, 2.3, 0.3 + rng.random() * 0.5, 0.02))
        ep["val_acc"] = np.clip(_curve(rng, n, 0.1, base_acc, 0.01), 0, 1)
        ep["grad_norm"] = np.abs(_curve(rng, n, 5, 0.5, 0.1))
        ep["weight_norm"] = _curve(rng, n, 30, 45, 0.05)
        ep["param_change"] = np.abs(_curve(rng, n, 3, 0.1, 0.01))
        ep.loc[0, "param_change"] = None
        ep["loss_improvement"] = -np.diff(ep["train_loss"], prepend=np.nan)
        ep["lr"] = c["lr"] * 0.5 * (1 + np.cos(np.pi * np.arange(n) / E))
        ep["epoch_time"] = 1.5 + rng.normal(0, 0.05, n)
        ep["wall_time"] = ep["epoch_time"].cumsum()
        ep["images_per_s"] = 50000 / ep["epoch_time"]
        ep["peak_mem_mb"] = 2100.0 + rng.normal(0, 1, n)
        ep["mem_kind"] = "cuda"
        ep["avg_cond"] = np.abs(_curve(rng, n, 20, 300, 3))
        ep["avg_spectral_norm"] = _curve(rng, n, 1.5, 4, 0.02)
        ep["avg_eff_rank_ratio"] = np.clip(_curve(rng, n, 0.8, 0.4, 0.005), 0, 1)
        ep["diverged"] = False
        if diverged:
            ep.loc[n - 1, ["train_loss", "val_loss"]] = np.nan
            ep.loc[n - 1, "diverged"] = True
        store.write("epochs", rid, ep)
        # layers: the template's layers at every epoch
        lt = T["layers"]
        names = lt[lt["epoch"] == 0][["layer", "layer_index", "rows", "cols"]]
        L = len(names)
        lay = pd.concat([names] * n, ignore_index=True)
        lay.insert(0, "epoch", np.repeat(np.arange(n), L))
        lay.insert(0, "run_id", rid)
        grow = np.repeat(np.linspace(1, 3, n), L)
        lay["cond"] = np.abs(np.tile(rng.lognormal(3, 1, L), n) * grow + rng.normal(0, 1, n * L))
        lay["spectral_norm"] = np.tile(rng.lognormal(0, 0.3, L), n) * grow
        lay["eff_rank_ratio"] = np.clip(np.tile(rng.random(L), n) / grow, 0, 1)
        lay["frob_norm"] = np.tile(rng.lognormal(1, 0.3, L), n) * grow
        store.write("layers", rid, lay)
        # checkpoints: full weights every epoch, checkpoints log-spaced
        ck_epochs = sorted({0, E, *[2 ** j for j in range(10) if 2 ** j < E]})
        npar = int(T["runs"]["n_params"].iloc[0])
        rows = [{"run_id": rid, "epoch": e, "kind": "checkpoint", "n_values": npar,
                 "path": f"artifacts/{rid}/checkpoints/epoch-{e:04d}.pt"}
                for e in ck_epochs if e <= done]
        rows += [{"run_id": rid, "epoch": e, "kind": "full", "n_values": npar,
                  "path": f"artifacts/{rid}/trajectory/epoch-{e:04d}.pt"} for e in range(n)]
        store.write("checkpoints", rid, rows)
        # runs
        r = T["runs"].iloc[0].to_dict()
        status = "running" if running else ("diverged" if diverged else "finished")
        r.update(run_id=rid, study=c["study"], status=status, dataset="cifar10", arch=arch,
                 init=c["init"], optimizer=c["optimizer"], lr=c["lr"],
                 weight_decay=c["weight_decay"], seed=c["seed"], epochs=E, epochs_done=done,
                 batch_size=256, created_at=created,
                 updated_at=created + pd.Timedelta(seconds=float(ep["wall_time"].iloc[-1])),
                 finished_at=None if running else
                 created + pd.Timedelta(seconds=float(ep["wall_time"].iloc[-1])),
                 diverged_epoch=done if diverged else None, pid=1000 + i % 50000,
                 final_train_loss=float(ep["train_loss"].iloc[-1]),
                 final_train_acc=float(ep["train_acc"].iloc[-1]),
                 final_val_loss=float(ep["val_loss"].iloc[-1]),
                 final_val_acc=float(ep["val_acc"].iloc[-1]),
                 best_val_acc=float(ep["val_acc"].max()),
                 generalization_gap=float(ep["val_loss"].iloc[-1] - ep["train_loss"].iloc[-1]),
                 total_time=float(ep["wall_time"].iloc[-1]),
                 config_json=json.dumps({**json.loads(r["config_json"]), "epochs": E,
                                         "init": c["init"], "optimizer": c["optimizer"],
                                         "lr": c["lr"], "seed": c["seed"]}))
        store.write("runs", rid, [r])
        files += 4
        if running:
            return files
        files += self._analyses(store, i, rid, T, rng, done, created)
        return files

    def _analyses(self, store, i, rid, T, rng, epoch, created) -> int:
        files = 0
        by_kind = {}
        a = T["analyses"]
        for kind, aid in zip(a["kind"], a["analysis_id"]):
            by_kind.setdefault(kind, []).append(aid)
        for kind, old_ids in by_kind.items():
            for j, old in enumerate(old_ids):
                aid = f"{kind}-{_hid(i, kind, j)}"
                tables = {t: df[df["analysis_id"] == old] for t, df in T.items()
                          if "analysis_id" in df.columns and t != "analyses"}
                for t, df in tables.items():
                    if not len(df):
                        continue
                    df = df.copy()
                    df["analysis_id"], df["run_id"], df["epoch"] = aid, rid, epoch
                    if t == "trajectory":  # one point per epoch and method
                        per = [g.iloc[[0]] for _, g in df.groupby("method")]
                        df = pd.concat([p.loc[p.index.repeat(epoch + 1)] for p in per],
                                       ignore_index=True)
                        df["point_epoch"] = np.tile(np.arange(epoch + 1), len(per))
                    for col, typ in TABLES[t].items():
                        if typ == "DOUBLE" and col in df and col not in ("x", "y", "alpha"):
                            v = df[col].to_numpy(float)
                            df[col] = v * rng.lognormal(0, 0.1, len(v))
                        elif typ == "DOUBLE" and col in ("x", "y") and t == "trajectory":
                            df[col] = rng.normal(0, 1, len(df))
                    store.write(t, rid, df, part=aid)
                    files += 1
                row = a[a["analysis_id"] == old].iloc[0].to_dict()
                row.update(analysis_id=aid, run_id=rid, epoch=epoch,
                           started_at=created + pd.Timedelta(hours=3, minutes=j))
                store.write("analyses", rid, [row], part=aid)
                files += 1
        return files


def _worker(args):
    root, wid, jobs, n_runs, epochs = args
    store = Store(root)
    maker = RunMaker(read_templates(), epochs, n_runs)
    t0, files = time.time(), 0
    for i in range(wid, n_runs, jobs):
        rid = maker.config(i)["run_id"]
        if (store.tables_dir / "runs" / rid / "all.parquet").exists():
            continue  # already generated (the runs part is written after the run's others)
        files += maker.write(store, i)
    return files, time.time() - t0


def generate(root, runs: int, epochs: int, jobs: int = 1) -> dict:
    Store(root).ensure()
    t0 = time.time()
    work = [(str(root), w, jobs, runs, epochs) for w in range(jobs)]
    if jobs == 1:
        res = [_worker(work[0])]
    else:
        with mp.get_context("spawn").Pool(jobs) as pool:
            res = pool.map(_worker, work)
    return {"root": str(root), "runs": runs, "epochs": epochs, "jobs": jobs,
            "files_written": sum(r[0] for r in res), "seconds": round(time.time() - t0, 1)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--runs", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--templates-from", help="a store written by train-all "
                                            "bench/store_probe.toml: new templates from it")
    a = p.parse_args(argv)
    if a.templates_from:
        save_templates(Path(a.templates_from))
    print(json.dumps(generate(a.root, a.runs, a.epochs, a.jobs)))


if __name__ == "__main__":
    main()
