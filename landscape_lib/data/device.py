"""A device-resident batch loader in the style of airbench (Keller Jordan's CIFAR-10 trainer).

The whole data set sits on the device as uint8; each batch is gathered by index, augmented as a
whole (random crop from a zero-padded copy + random horizontal flip) and normalised there. No
DataLoader, no per-sample Python, no `.item()`: every random choice comes from the caller's
torch.Generator, which must live on the same device as the data.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn.functional as F

from ..errors import ConfigError, check_choice
from .base import DataSplits

SPLITS = ("train", "test")


def crop_flip(x: torch.Tensor, shifts: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop each image of `x` (B, C, H, W) from its zero-padded copy, then mirror some.

    `shifts` (B, 2) holds each crop's top-left corner (dy, dx) in the padded image, each in
    [0, 2 * pad]; `flip` (B,) bool mirrors the crop left-right. One gather does both.
    """
    b, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)).permute(0, 2, 3, 1)  # (B, H+2p, W+2p, C)
    cols = torch.arange(w, device=x.device)
    rows = shifts[:, :1] + torch.arange(h, device=x.device)                     # (B, H)
    cols = shifts[:, 1:] + torch.where(flip[:, None], w - 1 - cols, cols)       # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None]
    out = padded[batch, rows[:, :, None], cols[:, None, :]]                     # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int) -> torch.Tensor:
    """Random crop (zero padding `pad`) and random horizontal flip of a float batch."""
    b = x.shape[0]
    shifts = torch.randint(0, 2 * pad + 1, (b, 2), generator=generator, device=x.device)
    flip = torch.rand(b, generator=generator, device=x.device) < 0.5
    return crop_flip(x, shifts, flip, pad)


def crop_pad(image_size: int) -> int:
    """Padding of the random crop: an eighth of the side (4 for 32x32), at least 1."""
    return max(1, image_size // 8)


class DeviceData:
    """Both splits of a `DataSplits` held on `device`, served as normalised float32 batches."""

    def __init__(self, splits: DataSplits, device: torch.device | str, *,
                 channels_last: bool = False):
        self.name = splits.name
        self.device = torch.device(device)
        self.channels_last = channels_last
        self._num_classes = splits.num_classes
        self.augment_default = splits.augment_default  # random crop + flip unless told otherwise
        self._x = {"train": splits.x_train.to(self.device), "test": splits.x_test.to(self.device)}
        self._y = {"train": splits.y_train.to(self.device), "test": splits.y_test.to(self.device)}
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(splits.mean, dtype=torch.float32, device=self.device).view(shape)
        self.std = torch.tensor(splits.std, dtype=torch.float32, device=self.device).view(shape)
        self.pad = crop_pad(self.image_size)

    # ------------------------------------------------------------------ shapes

    @property
    def in_channels(self) -> int:
        return int(self._x["train"].shape[1])

    @property
    def image_size(self) -> int:
        return int(self._x["train"].shape[-1])

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def num_examples(self, split: str) -> int:
        return int(self._x[self._check_split(split)].shape[0])

    # ------------------------------------------------------------------ batches

    def _check_split(self, split: str) -> str:
        return check_choice("split", split, SPLITS)

    def _scale(self, x_uint8: torch.Tensor) -> torch.Tensor:
        return x_uint8.to(torch.float32) / 255.0

    def _normalize(self, x01: torch.Tensor) -> torch.Tensor:
        x = (x01 - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def steps_per_epoch(self, batch_size: int, drop_last: bool = True) -> int:
        """Number of batches `train_batches` yields per epoch."""
        n = self.num_examples("train")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        if drop_last and batch_size > n:
            raise ConfigError(f"batch_size {batch_size} exceeds the {n} training examples of "
                              f"'{self.name}'; use batch_size <= {n}")
        return n // batch_size if drop_last else -(-n // batch_size)

    def train_batches(self, batch_size: int, generator: torch.Generator, *, augment: bool,
                      drop_last: bool = True) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of (x float32, y) batches in a random order drawn from `generator`.

        Augmentation runs on [0, 1] pixels before normalising, so the crop's padding is black,
        as with torchvision's RandomCrop(padding=...).
        """
        steps = self.steps_per_epoch(batch_size, drop_last)
        x_all, y_all = self._x["train"], self._y["train"]
        order = torch.randperm(x_all.shape[0], generator=generator, device=self.device)
        for step in range(steps):
            idx = order[step * batch_size:(step + 1) * batch_size]
            x = self._scale(x_all[idx])
            if augment:
                x = augment_batch(x, generator, self.pad)
            yield self._normalize(x), y_all[idx]

    def eval_batches(self, split: str, batch_size: int, indices: torch.Tensor | None = None
                     ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Every example of `split` once, in stored order, without augmentation; or only
        those at `indices` (in that order), each batch gathered from the stored uint8 images
        (nothing normalised is held between batches)."""
        x_all, y_all = self._x[self._check_split(split)], self._y[split]
        n = x_all.shape[0] if indices is None else len(indices)
        for start in range(0, n, batch_size):
            part = slice(start, start + batch_size) if indices is None \
                else indices[start:start + batch_size]
            yield self._normalize(self._scale(x_all[part])), y_all[part]

    def sample_indices(self, split: str, n: int, seed: int = 0) -> torch.Tensor:
        """Indices (on the device) of a fixed sample of `n` examples of `split` (all, shuffled,
        when n >= size): the first n of a permutation drawn from `seed` on a CPU generator, so
        the same on every device, and a larger n extends a smaller one."""
        gen = torch.Generator().manual_seed(seed)
        size = self.num_examples(split)
        return torch.randperm(size, generator=gen)[:max(0, n)].to(self.device)

    def subset(self, split: str, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """A fixed normalised sample of `n` examples of `split` (`sample_indices`), for
        analyses."""
        idx = self.sample_indices(split, n, seed)
        return self._normalize(self._scale(self._x[split][idx])), self._y[split][idx]
