"""What an analysis gets: the run's config, a model at a checkpoint, data on the device, and a
writer that files every row under the analysis's id (its provenance)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

import pandas as pd
import torch
from torch import nn

from ..config import RunConfig
from ..errors import ConfigError, StoreError
from ..store import Store
from ..train import checkpoints as ck

ProgressFn = Callable[[float, str], None]


@dataclass
class AnalysisContext:
    store: Store
    run_id: str | None
    cfg: RunConfig | None
    epoch: int | None
    device: torch.device
    analysis_id: str = ""
    data_root: str | None = None
    report: ProgressFn = field(default=lambda fraction, message: None)
    # Set by an analysis that can say more than its `engine` parameter (e.g. the HVP mode the
    # operator ended up with); stored in the provenance row's `engine` column.
    engine: str | None = None

    # ------------------------------------------------------------------ inputs
    def checkpoint_epochs(self) -> list[int]:
        return checkpoint_epochs(self.store, self.run_id)

    def new_model(self) -> nn.Module:
        from ..models import create_model
        data = self.data
        return create_model(self.cfg.arch, in_channels=data.in_channels,
                            image_size=data.image_size, num_classes=data.num_classes,
                            **self.cfg.arch_options)

    def model_at(self, epoch: int) -> nn.Module:
        model = self.new_model()
        path = ck.checkpoint_path(self.store.artifacts_dir / self.run_id, epoch)
        if not path.exists():
            raise ConfigError(f"run {self.run_id} has no checkpoint file for epoch {epoch}")
        model.load_state_dict(ck.load_checkpoint(path))
        return model.to(self.device).eval()

    @cached_property
    def model(self) -> nn.Module:
        return self.model_at(self.epoch)

    @cached_property
    def data(self):
        from ..data import DeviceData, load_dataset
        splits = load_dataset(self.cfg.dataset, root=self.data_root, **self.cfg.dataset_options
                              ).first_train(self.cfg.train_subset)
        return DeviceData(splits, self.device)

    def batches(self, split: str, samples: int, *, seed: int = 0, batch_size: int = 512):
        """A fixed, seeded sample of `samples` examples of `split`, in device batches."""
        if split not in ("train", "test"):
            raise ConfigError(f"split must be 'train' or 'test', not '{split}'")
        n = min(int(samples), self.data.num_examples(split))
        x, y = self.data.subset(split, n, seed)
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]

    def trajectory(self) -> tuple[list[int], torch.Tensor, str]:
        """The per-epoch weight vectors (full or sketched) as an (E, D) matrix."""
        df = self.store.query("SELECT epoch, kind, path FROM checkpoints WHERE run_id = ? "
                              "AND kind IN ('full', 'sketch') ORDER BY epoch", [self.run_id])
        if df.empty:
            raise ConfigError(f"run {self.run_id} kept no trajectory (trajectory = off)")
        vecs = [torch.load(self.store.root / p, weights_only=True) for p in df["path"]]
        return df["epoch"].tolist(), torch.stack(vecs).float(), df["kind"].iloc[0]

    # ------------------------------------------------------------------ outputs
    def write(self, table: str, rows) -> None:
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        df = df.assign(analysis_id=self.analysis_id, run_id=self.run_id or "study",
                       epoch=self.epoch)
        self.store.write(table, self.run_id or "study", df, part=self.analysis_id)

    def read(self, table: str) -> pd.DataFrame | None:
        return self.store.read(table, self.run_id or "study", part=self.analysis_id)

    def artifact(self, name: str) -> Path:
        d = self.store.artifacts_dir / (self.run_id or "study") / "analyses"
        d.mkdir(parents=True, exist_ok=True)
        return d / f"{self.analysis_id}-{name}"


def checkpoint_epochs(store: Store, run_id: str) -> list[int]:
    df = store.query("SELECT epoch FROM checkpoints WHERE run_id = ? AND kind = 'checkpoint' "
                     "ORDER BY epoch", [run_id])
    return [int(e) for e in df["epoch"]]


def find_run(store: Store, run: str) -> pd.Series:
    """The `runs` row of a run id or a unique prefix of one."""
    df = store.query("SELECT * FROM runs WHERE starts_with(run_id, ?) ORDER BY run_id", [run])
    exact = df[df["run_id"] == run]
    if len(exact):
        return exact.iloc[0]
    if df.empty:
        raise StoreError(f"no run '{run}' in the store at {store.root} "
                         "(see `python -m landscape_lib runs`)")
    if len(df) > 1:
        raise StoreError(f"'{run}' matches {len(df)} runs; give more of the id: "
                         + ", ".join(df["run_id"].head(5)))
    return df.iloc[0]


def run_config(row: pd.Series) -> RunConfig:
    return RunConfig.from_dict(json.loads(row["config_json"]))
