"""Training throughput of the engine: images/s per epoch and final accuracy, per architecture.

    python bench/bench_training.py --data-folder /path/to/cifar10-jpeg --epochs 5 --compile
    python bench/bench_training.py --quick          # a CPU smoke run on synthetic data

Runs go through the real engine (`train_run`), so the figures include augmentation on the
device, the optimizer step and the per-step gradient-norm measurement; per-epoch evaluation,
layer statistics and checkpoints are timed apart (epoch_time vs images/s).
"""
from __future__ import annotations

import argparse
import tempfile

from landscape_lib.config import RunConfig
from landscape_lib.store import Store
from landscape_lib.train.engine import train_run

TARGET = {"resnet18": 50_000}  # images/s on one H100, batch 512, bf16 (issue 2)


def configs(args) -> list[RunConfig]:
    if args.data_folder:
        data = {"dataset": "folder", "dataset_options": {"path": args.data_folder}}
    else:
        data = {"dataset": "synthetic", "dataset_options": {
            "n_train": 512 if args.quick else 50_000, "n_test": 256 if args.quick else 10_000,
            "channels": 3, "size": 32, "num_classes": 10}}
    small = {"width": 8} if args.quick else {}
    vit = {"patch_size": 4, **({"dim": 32, "depth": 2, "heads": 2} if args.quick else {})}
    common = dict(epochs=args.epochs, batch_size=args.batch_size, compile=args.compile,
                  compile_mode=args.compile_mode,
                  trajectory="off", checkpoint_epochs=[], **data)
    return [
        RunConfig.from_dict({**common, "arch": "resnet18", "arch_options": small,
                             "optimizer": "sgd-momentum", "lr": 0.1, "weight_decay": 5e-4,
                             "schedule": "cosine", "label_smoothing": 0.1}),
        RunConfig.from_dict({**common, "arch": "vit", "arch_options": vit, "optimizer": "adamw",
                             "lr": 1e-3, "weight_decay": 0.05, "schedule": "cosine",
                             "warmup_epochs": 1 if args.epochs > 2 else 0}),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-folder", help="ImageFolder tree with train/ and test/")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA)")
    p.add_argument("--compile-mode", default="default",
                   help="torch.compile mode, e.g. max-autotune-no-cudagraphs")
    p.add_argument("--archs", default="resnet18,vit", help="which of resnet18, vit to run")
    p.add_argument("--device", default=None)
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke run")
    p.add_argument("--store", help="keep the runs in this store (default: a temporary one)")
    args = p.parse_args()
    if args.quick:
        args.epochs, args.batch_size = 1, 64
    store = Store(args.store or tempfile.mkdtemp(prefix="bench-train-")).ensure()
    for cfg in [c for c in configs(args) if c.arch in args.archs.split(",")]:
        status = train_run(cfg, store, device=args.device, progress=False)
        df = store.read("epochs", cfg.run_id()).sort_values("epoch")
        df = df.loc[df["epoch"] > 0, ["epoch", "images_per_s", "epoch_time", "train_loss",
                                      "val_acc", "peak_mem_mb"]]
        device = store.read("runs", cfg.run_id())["device"].iloc[0]
        print(f"\n{cfg.arch} {cfg.arch_options} batch {cfg.batch_size} compile={cfg.compile} "
              f"on {device}: {status}")
        print(df.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        best = df["images_per_s"].iloc[1:].max() if len(df) > 1 else df["images_per_s"].max()
        line = f"{cfg.arch}: best images/s (after the first epoch) {best:,.0f}; " \
               f"final val_acc {df['val_acc'].iloc[-1]:.4f}"
        if cfg.arch in TARGET:
            line += f"; ratio to the {TARGET[cfg.arch]:,} img/s target: {best / TARGET[cfg.arch]:.2f}"
        print(line)
        print(f"checkpoints: {store.checkpoint_path(cfg.run_id(), cfg.epochs).parent}")


if __name__ == "__main__":
    main()
