"""What one run asks the cluster for: CPUs and a whole GPU or a share of one.

Small models leave most of a GPU idle, so several of them share one: the share comes from the
model's parameter count (`GPU_SHARE`, a data table) unless the user sets it for the whole grid
(`--gpus-per-run`). Ray books the share; it does not partition GPU memory, so a share is a
promise that the runs placed together on one GPU fit in its memory.

Counting parameters builds the model on PyTorch's `meta` device (no memory, no computation)
through the library's own builder, with the data set's shapes loaded once per data set.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from types import SimpleNamespace

from ..config import RunConfig
from ..errors import ConfigError

# (parameters below, share of one GPU); the first matching row wins. A ResNet-18 (11.2M) takes
# half a GPU, the quick grid's MLPs, small CNNs and ViTs (< 2M) a quarter.
GPU_SHARE: tuple[tuple[float, float], ...] = (
    (2e6, 0.25),
    (3e7, 0.5),
    (math.inf, 1.0),
)


@dataclass(frozen=True)
class RunResources:
    """Ray's `num_cpus` / `num_gpus` for one run's task."""
    num_cpus: float = 1.0
    num_gpus: float = 0.0

    def options(self) -> dict:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    @property
    def threads(self) -> int:
        """PyTorch's intra-op threads in the task: its CPUs (at least one)."""
        return max(1, int(self.num_cpus))


def gpu_share(n_params: int) -> float:
    for limit, share in GPU_SHARE:
        if n_params < limit:
            return share
    return 1.0


def check_amount(name: str, value: float | None, *, allow_zero: bool) -> None:
    """Ray books whole numbers of GPUs or CPUs, or one fraction below 1."""
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name} {value!r} must be a {'' if allow_zero else 'positive '}"
                          "number" + (" (0 or more)" if allow_zero else ""))
    if value > 1 and value != int(value):
        raise ConfigError(f"{name} {value!r}: above 1 only whole numbers can be booked")


class ParamCounter:
    """Parameter count per run config, with each data set's shapes loaded once."""

    def __init__(self, data_root=None):
        self.data_root = data_root
        self._shapes: dict[str, SimpleNamespace] = {}

    def shapes(self, cfg: RunConfig) -> SimpleNamespace:
        from ..data import load_dataset
        key = json.dumps([cfg.dataset, cfg.dataset_options], sort_keys=True, default=str)
        if key not in self._shapes:
            splits = load_dataset(cfg.dataset, root=self.data_root, **cfg.dataset_options)
            self._shapes[key] = SimpleNamespace(in_channels=splits.in_channels,
                                                image_size=splits.image_size,
                                                num_classes=splits.num_classes)
        return self._shapes[key]

    def __call__(self, cfg: RunConfig) -> int:
        import torch

        from ..train.build import build_model
        shapes = self.shapes(cfg)  # real data, outside the meta-device context
        with torch.device("meta"):
            model = build_model(cfg, shapes)
        return sum(p.numel() for p in model.parameters())


def plan_resources(configs: list[RunConfig], *, cluster_gpus: float, device: str | None = None,
                   gpus_per_run: float | None = None, cpus_per_run: float = 1.0,
                   counter: ParamCounter | None = None) -> dict[str, RunResources]:
    """run_id -> resources. No GPU is booked on a cluster without GPUs or with device=cpu."""
    check_amount("--gpus-per-run", gpus_per_run, allow_zero=True)
    check_amount("--cpus-per-run", cpus_per_run, allow_zero=False)
    use_gpus = cluster_gpus > 0 and (device or "auto") != "cpu"
    counter = counter or ParamCounter()
    out = {}
    for cfg in configs:
        if not use_gpus:
            gpus = 0.0
        elif gpus_per_run is not None:
            gpus = float(gpus_per_run)
        else:
            gpus = gpu_share(counter(cfg))
        out[cfg.run_id()] = RunResources(num_cpus=float(cpus_per_run), num_gpus=gpus)
    return out
