"""Shared by the Hessian benches: study A's runs of ``runs/grid.toml``, trained into a store.

``study_a(arch, epochs, data_folder, quick)`` is study A's config of ``arch`` (``vit-p4``: the
ViT with patch 4; ``resnet18``) with Adam and seed 0, for ``epochs`` epochs, on the CIFAR-10
JPEG copy (``data_folder``) or, for ``quick`` CPU smoke runs, on small synthetic data with a
small model. ``trained(store, cfg, data_root, device)`` trains it unless the store holds it
finished already (train_run resumes or skips), and returns its run id.
"""
from __future__ import annotations

import time
from pathlib import Path

from landscape_lib.config import RunConfig
from landscape_lib.grid import load_grid
from landscape_lib.models import model_label
from landscape_lib.store import Store
from landscape_lib.store.queries import table_rows
from landscape_lib.train.engine import train_run

GRID = Path(__file__).resolve().parents[1] / "runs" / "grid.toml"
STUDY = "A-vit-sam"
ARCHS = {"vit-p4": ("vit", {"patch_size": 4}), "resnet18": ("resnet18", {})}
QUICK_OPTIONS = {"vit": {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4},
                 "resnet18": {"width": 2}}


def study_a(arch: str, epochs: int, data_folder: str | None, quick: bool = False,
            compile: bool = False) -> RunConfig:
    name, options = ARCHS[arch]
    matches = [c for c in load_grid(GRID, studies=[STUDY])
               if c.arch == name and c.arch_options == options and c.optimizer == "adam"
               and c.seed == 0]
    if len(matches) != 1:
        raise SystemExit(f"study {STUDY} of {GRID} has {len(matches)} runs of {arch} with "
                         "adam and seed 0 (expected 1)")
    over = {"epochs": epochs, "compile": compile, "warmup_epochs": min(2, epochs - 1)}
    if data_folder:
        over.update(dataset="folder", dataset_options={"path": data_folder})
    elif quick:
        over.update(dataset="synthetic", dataset_options={"n_train": 512, "n_test": 128},
                    arch_options=QUICK_OPTIONS[name], batch_size=128)
    else:
        raise SystemExit("--data-folder is required (or --quick)")
    return matches[0].with_overrides(over)


def trained(store: Store, cfg: RunConfig, data_root=None, device=None) -> str:
    t0 = time.perf_counter()
    status = train_run(cfg, store, data_root=data_root, device=device, progress=False)
    if status != "finished":
        raise SystemExit(f"run {cfg.run_id()} {status}")
    acc = table_rows(store, "runs", [cfg.run_id()])
    print(f"{model_label(cfg.arch, cfg.arch_options)} {cfg.run_id()}: {cfg.epochs} epochs, test accuracy "
          f"{acc['final_val_acc'].iloc[0]:.3f} ({time.perf_counter() - t0:.0f} s incl. loading)",
          flush=True)
    return cfg.run_id()
