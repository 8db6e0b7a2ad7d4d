"""A grid of 8 small CIFAR runs on the Ray backend (fractional GPUs) against one GPU.

Variants, each on a fresh store, each through the real CLI in a subprocess (so that
CUDA_VISIBLE_DEVICES applies before CUDA starts):
  A  local backend, -j 1, GPU 0 only          (the default on one GPU)
  B  Ray backend, GPU 0 only                  (fractional GPUs: several runs share it)
  C  Ray backend, both GPUs                   (fractional GPUs)
  D  local backend, -j 2, both GPUs           (one worker process per GPU)
Printed per variant: wall time, speed-up over A, mean and peak GPU utilisation and peak memory
per GPU (`gpu_sampler.py`: NVML, else nvidia-smi, every 0.5 s), runs finished, and the largest
relative difference of the final training loss from A (bf16 autocast and cuDNN autotuning are
not bit-reproducible on a GPU, so small differences are expected). `--json` gets the figures
after each variant (a time-out keeps what was measured); `--logs` each variant's output and
GPU samples.

Data: `--data-folder`, a folder holding the CIFAR-10 JPEG copy's train/ and test/ (decoded once,
before the timed variants, into `--data-root`); without it the `synthetic` data set at CIFAR's
shapes (same tensor shapes and work per step, not CIFAR's pixels). About 4 min on 2 H200s with
the defaults; if it nears the limit, run `--variants AC` and `--variants BD` apart.

    python bench/bench_ray_grid.py --data-folder /tmp/cifar --json out/raygrid.json

On a machine without Ray and the other pinned packages (e.g. a GPU image with only torch), the
official wheels can be installed into a folder put on PYTHONPATH: ray 2.60.0, duckdb 2.0.0,
pytorch-optimizer 4.1.0 and Ray's own needs the image lacks (jsonschema, referencing,
rpds-py, jsonschema-specifications), `pip install --no-deps --target DIR`. Where the Ray wheel
(79 MB) is too large to carry, `bench/make_ray_bundle.sh` packs that folder minus the parts
of Ray the library never loads (Java jars, rllib/serve/tune/train/data/llm/air, the dashboard's
web UI, console scripts) into one `.tar.xz` of about 45 MB, unpacked with `tar -xJf` into a
folder on PYTHONPATH (Ray's CLI is then `python -m ray.scripts.scripts`).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from gpu_sampler import GpuSampler

GRID = """
[defaults]
dataset = "{dataset}"
dataset_options = {options}
arch = "{arch}"
arch_options = {arch_options}
optimizer = "sgd-momentum"
lr = 0.05
batch_size = {batch_size}
epochs = {epochs}
augment = true

[[study]]
name = "ray-gpu"
seed = [{seeds}]
"""

TRAIN = [sys.executable, "-m", "landscape_lib", "train-all"]
VARIANTS = {
    "A": ("local -j 1, GPU 0", [*TRAIN, "-j", "1"], "0"),
    "B": ("ray, GPU 0 (fractional)", [*TRAIN, "--backend", "ray"], "0"),
    "C": ("ray, 2 GPUs (fractional)", [*TRAIN, "--backend", "ray"], "0,1"),
    "D": ("local -j 2, 2 GPUs", [*TRAIN, "-j", "2"], "0,1"),
}


def toml_table(d: dict) -> str:
    return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in d.items()) + " }"


def grid_text(args) -> str:
    if args.data_folder:
        dataset, options = "folder", {"path": str(Path(args.data_folder).resolve())}
    else:
        dataset, options = "synthetic", {"n_train": args.n_train, "n_test": args.n_train // 5,
                                         "channels": 3, "size": 32, "num_classes": 10}
    arch_options = {"width": args.width} if args.arch.startswith("resnet") else {}
    return GRID.format(dataset=dataset, options=toml_table(options), arch=args.arch,
                       arch_options=toml_table(arch_options), epochs=args.epochs,
                       batch_size=args.batch_size,
                       seeds=", ".join(str(s) for s in range(args.runs)))


def run_variant(key: str, grid: Path, out: Path, logs: Path, data_root: str) -> dict:
    label, argv, gpus = VARIANTS[key]
    store = out / f"store-{key}"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus, "PYTHONUNBUFFERED": "1",
           # Ray's memory monitor reads MemTotal, which grows on demand on some VMs: off
           "RAY_memory_monitor_refresh_ms": "0"}
    cmd = [*argv, str(grid), "--store", str(store), "--data-root", data_root]
    sampler = GpuSampler()
    t0 = time.perf_counter()
    with sampler, open(logs / f"log-{key}.txt", "w") as log:
        proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    sampler.save(logs / f"gpu-{key}.csv")
    return {"label": label, "wall_s": wall, "rc": proc.returncode, **sampler.summary(),
            **final_losses(store)}


def final_losses(store_root: Path) -> dict:
    from landscape_lib.store import Store
    store = Store(store_root)
    losses, done = {}, 0
    for part in sorted((store.tables_dir / "runs").glob("*/all.parquet")):
        row = store.read("runs", part.parent.name)
        done += row["status"].iloc[0] == "finished"
        losses[part.parent.name] = float(row["final_train_loss"].iloc[0])
    return {"finished": done, "final_train_loss": losses}


def max_rel_diff(r: dict, base: dict | None) -> float:
    if not base:
        return float("nan")
    ref = base["final_train_loss"]
    return max((abs(v - ref[k]) / abs(ref[k]) for k, v in r["final_train_loss"].items()
                if k in ref), default=float("nan"))


def save(path: str | None, configs, n_params: int, results: dict) -> None:
    if path:
        Path(path).write_text(json.dumps({"runs": len(configs), "params": n_params,
                                          "grid": configs[0].to_dict(), "variants": results},
                                         indent=2, default=str))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-folder", help="CIFAR-10 JPEG copy (train/ and test/)")
    ap.add_argument("--data-root", default=None, help="decoded-data cache (default: --out/data)")
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--runs", type=int, default=8)
    ap.add_argument("--variants", default="ABCD")
    ap.add_argument("--n-train", type=int, default=50000,
                    help="training images of the synthetic data (without --data-folder)")
    ap.add_argument("--out", default="/tmp/bench-ray-grid", help="stores and the grid file")
    ap.add_argument("--logs", help="each variant's output and GPU samples (default: --out)")
    ap.add_argument("--json", help="write the figures here (after each variant)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    logs = Path(args.logs or out)
    for folder in (out, logs):
        folder.mkdir(parents=True, exist_ok=True)
    data_root = args.data_root or str(out / "data")
    grid = out / "grid.toml"
    grid.write_text(grid_text(args))
    from landscape_lib.grid import load_grid
    from landscape_lib.scale.resources import ParamCounter, gpu_share
    configs = load_grid(grid)
    t0 = time.perf_counter()
    n_params = ParamCounter(data_root)(configs[0])  # decodes / generates the data once
    print(f"{len(configs)} runs of {args.arch} width {args.width} ({n_params:,} params, "
          f"{gpu_share(n_params)} GPU each on Ray), {args.epochs} epochs, {configs[0].dataset} "
          f"data; data ready in {time.perf_counter() - t0:.1f} s", flush=True)
    results = {}
    for key in args.variants:
        results[key] = r = run_variant(key, grid, out, logs, data_root)
        save(args.json, configs, n_params, results)  # partial results survive a time-out
        print(f"  {key} {r['label']:<26} {r['wall_s']:7.1f} s  rc {r['rc']}  finished "
              f"{r['finished']}/{len(configs)}  util mean {r['util_mean']} peak "
              f"{r['util_peak']} ({r['source']})  mem peak MiB {r['mem_peak_mib']}", flush=True)
    base = results.get("A")
    print(f"\n{'variant':<30} {'wall s':>7} {'vs A':>6}  util mean % per GPU   max rel "
          "diff of final train loss vs A")
    for key, r in results.items():
        r["speedup_vs_A"] = base["wall_s"] / r["wall_s"] if base else None
        r["max_rel_loss_diff_vs_A"] = max_rel_diff(r, base)
        speed = r["speedup_vs_A"] or float("nan")
        print(f"{key} {r['label']:<28} {r['wall_s']:7.1f} {speed:5.2f}x  "
              f"{str(r['util_mean']):<20} {r['max_rel_loss_diff_vs_A']:.1e}")
    save(args.json, configs, n_params, results)
    print(f"\nlogs and GPU samples in {logs}")


if __name__ == "__main__":
    main()
