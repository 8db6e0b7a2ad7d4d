"""Data sets as uint8 image tensors: the `DATASETS` registry, `DataSplits` and `load_dataset`.

Every source returns a `DataSplits`: whole train and test splits as uint8 tensors (N, C, H, W)
on the CPU plus the per-channel mean/std of the train split. Nothing here normalises or augments;
`landscape_lib.data.device.DeviceData` does that per batch on the accelerator.

Sources (each module registers its own): `builtin` (`digits`, scikit-learn's bundled 8x8 digits,
the offline default; `synthetic`, generated from a seed), `torchvision_sets` (`mnist`,
`fashion-mnist`, `cifar10`, `cifar100`, downloaded only when missing) and `folder` (an
ImageFolder tree with train/ and test/, decoded once and cached).
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

import torch

from ..locations import data_root
from ..registry import Registry

# A source is called as loader(root, progress, **options): its keyword-only parameters are the
# data set's options.
DATASETS = Registry("dataset", exclude=("root", "progress"))
dataset_options = DATASETS.options  # the options a data set accepts, with their defaults


@dataclass
class DataSplits:
    """A data set's train and test splits as uint8 (N, C, H, W) tensors on the CPU."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    classes: list[str]
    mean: tuple[float, ...]  # per channel, train split, pixel values scaled to [0, 1]
    std: tuple[float, ...]
    augment_default: bool
    source: str

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def first_train(self, n: int) -> "DataSplits":
        """The same splits with only the first `n` training examples (0 = all)."""
        if not n:
            return self
        return dataclasses.replace(self, x_train=self.x_train[:n], y_train=self.y_train[:n])


def load_dataset(name: str, *, root: str | os.PathLike | None = None, progress: bool = False,
                 **options) -> DataSplits:
    """Load data set `name` with its `options`; `root` as in `data_root`.

    `progress` shows a tqdm bar for slow steps (image decoding); nothing is printed otherwise.
    """
    loader = DATASETS.get(name)  # UnknownNameError lists the registered names
    DATASETS.check_options(name, options)
    return loader(data_root(root), progress, **options)


def channel_stats(x: torch.Tensor, chunk: int = 4096
                  ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and (population) std of uint8 images (N, C, H, W), in [0, 1] units.

    Sums run in float64 over chunks so that CIFAR-sized sets need no full float copy.
    """
    channels = x.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    total_sq = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, x.shape[0], chunk):
        part = x[start:start + chunk].to(torch.float64) / 255.0
        total += part.sum(dim=(0, 2, 3))
        total_sq += part.square().sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def make_splits(name: str, x_train, y_train, x_test, y_test, *, classes: list[str],
                augment_default: bool, source: str, stats=None) -> DataSplits:
    """Assemble a `DataSplits`, computing mean/std from the train split unless given."""
    mean, std = stats if stats is not None else channel_stats(x_train)
    return DataSplits(name=name, x_train=x_train.contiguous(), y_train=y_train.long(),
                      x_test=x_test.contiguous(), y_test=y_test.long(),
                      num_classes=len(classes), classes=list(classes), mean=tuple(mean),
                      std=tuple(std), augment_default=augment_default, source=source)
