"""What an analysis gets: the run's config, a model at a checkpoint, data on the device, and a
writer that files every row under the analysis's id (its provenance).

Data and model are built as the training engine built them (`train.build`)."""
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
from ..data.device import SPLITS
from ..errors import ConfigError, StoreError, check_choice
from ..store import Store, queries
from ..store.schema import STUDY
from ..train.build import build_data, build_model
from ..store.atomic import sha256_file
from ..train.checkpoints import check_digest, load_checkpoint

ProgressFn = Callable[[float, str], None]
# The loss an analysis differentiates: "ce" = plain mean cross-entropy (what train_loss and
# val_loss report), "train" = the run's training objective (cross-entropy with its label
# smoothing). Label smoothing leaves the Hessian's Gauss-Newton part unchanged (the logit
# Hessian of cross-entropy, diag(p) - p p^T, does not depend on the targets) and changes only
# its functional part.
ANALYSIS_LOSSES = ("ce", "train")


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
    # Processes (one per GPU) an analysis may spread over (the Hessian does); not a parameter:
    # its result does not depend on it.
    gpus: int = 1
    # Where an analysis may spread its work (a surface's rows): `device` alone unless given.
    # Not an analysis parameter: the same result, so the same analysis id, on any number.
    devices: list[torch.device] = field(default_factory=list)

    def __post_init__(self):
        self.devices = [torch.device(d) for d in self.devices] or [self.device]

    # ------------------------------------------------------------------ inputs
    def new_model(self) -> nn.Module:
        return build_model(self.cfg, self.data)

    def model_at(self, epoch: int, run_id: str | None = None) -> nn.Module:
        """The model with the weights of a checkpoint of this run (or of `run_id`, a run of
        the same architecture), on the device in eval mode. A checkpoint holding NaN or
        infinite weights (a diverged run's last epochs) is refused with a ConfigError: every
        analysis of it would store NaN, after all its work."""
        run_id = run_id or self.run_id
        state = self.checkpoint(epoch, run_id)
        bad = [k for k, t in state.items()
               if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all()]
        if bad:
            finite = [e for e in queries.checkpoint_epochs(self.store, run_id) if e < epoch]
            raise ConfigError(
                f"run {run_id}'s checkpoint at epoch {epoch} has non-finite weights "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}; the run diverged): "
                "nothing to analyse there"
                + (f"; earlier checkpoints: {', '.join(map(str, finite))}" if finite else ""))
        model = self.new_model()
        model.load_state_dict(state)
        return model.to(self.device).eval()

    def checkpoint(self, epoch: int, run_id: str | None = None, *, load: bool = True):
        """The state dict of a checkpoint, checked against the digest stored with it
        (`load=False`: only checked)."""
        run_id = run_id or self.run_id
        path = self.store.checkpoint_path(run_id, epoch)
        if not path.exists():
            raise ConfigError(f"run {run_id} has no checkpoint file for epoch {epoch}")
        stored = queries.checkpoint_digest(self.store, run_id, epoch)
        if load:
            return load_checkpoint(path, sha256=stored)
        check_digest(path, sha256_file(path), stored)

    @cached_property
    def model(self) -> nn.Module:
        return self.model_at(self.epoch)

    @cached_property
    def data(self):
        return build_data(self.cfg, self.device, self.data_root)

    def batches(self, split: str, samples: int, *, seed: int = 0, batch_size: int = 512):
        """A fixed, seeded sample of `samples` examples of `split` (0: all of them), in device
        batches."""
        check_choice("split", split, SPLITS)
        total = self.data.num_examples(split)
        n = total if int(samples) == 0 else min(int(samples), total)
        x, y = self.data.subset(split, n, seed)
        return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n, batch_size)]

    def loss_fn(self, which: str = "ce") -> nn.Module:
        """The analysed loss (`ANALYSIS_LOSSES`): plain cross-entropy, or the training one."""
        check_choice("loss", which, ANALYSIS_LOSSES)
        smoothing = self.cfg.label_smoothing if which == "train" and self.cfg else 0.0
        return nn.CrossEntropyLoss(label_smoothing=smoothing)

    def trajectory(self) -> tuple[list[int], torch.Tensor, str]:
        """The per-epoch weight vectors (full or sketched) as an (E, D) matrix: a diverged
        run's path up to its last finite weights (the NaN/inf epochs left out)."""
        df = queries.trajectory_files(self.store, self.run_id)
        if df.empty:
            raise ConfigError(f"run {self.run_id} kept no trajectory (trajectory = off)")
        vecs = [load_checkpoint(self.store.root / p, sha256=None if pd.isna(d) else d)
                for p, d in zip(df["path"], df["sha256"])]
        W, epochs = torch.stack(vecs).float(), df["epoch"].tolist()
        finite = torch.isfinite(W).all(dim=1)
        if not bool(finite.all()):
            epochs, W = [e for e, ok in zip(epochs, finite.tolist()) if ok], W[finite]
            if len(epochs) < 2:
                raise ConfigError(f"run {self.run_id} diverged: fewer than 2 epochs of its "
                                  "trajectory have finite weights")
        return epochs, W, df["kind"].iloc[0]

    # ------------------------------------------------------------------ outputs
    def write(self, table: str, rows) -> None:
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        df = df.assign(analysis_id=self.analysis_id, run_id=self.run_id or STUDY,
                       epoch=self.epoch)
        self.store.write(table, self.run_id or STUDY, df, part=self.analysis_id)

    def read(self, table: str) -> pd.DataFrame | None:
        return self.store.read(table, self.run_id or STUDY, part=self.analysis_id)

    def artifact(self, name: str) -> Path:
        return self.store.analysis_artifact(self.run_id, self.analysis_id, name)


def find_run(store: Store, run: str) -> pd.Series:
    """The `runs` row of a run id or a unique prefix of one."""
    df = queries.runs_by_prefix(store, run)
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


def resolve_epoch(store: Store, run_id: str, epoch) -> int:
    """A checkpoint epoch of the run: a number it has, "first" or "last" (None = last)."""
    return pick_epoch(queries.checkpoint_epochs(store, run_id), epoch, run_id)


def pick_epoch(epochs: list[int], epoch, run_id: str) -> int:
    """`epoch` ("first", "last", None or a number) among a run's checkpoint `epochs`."""
    if not epochs:
        raise ConfigError(f"run {run_id} has no checkpoint: train it first")
    if epoch in (None, "last"):
        return epochs[-1]
    if str(epoch) == "first":
        return epochs[0]
    try:
        epoch = int(epoch)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"epoch must be a number, 'first' or 'last', not '{epoch}'") from None
    if epoch not in epochs:
        raise ConfigError(f"run {run_id} has no checkpoint at epoch {epoch}; checkpoints: "
                          + ", ".join(map(str, epochs)))
    return epoch
