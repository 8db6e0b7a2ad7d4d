"""Torchvision data sets (MNIST, Fashion-MNIST, CIFAR-10/100): downloaded into
`<data root>/<name>` only when missing; offline, the error names the folder to fill."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetUnavailable
from ..locations import DATA_ENV
from .base import DATASETS, DataSplits, make_splits

def _unavailable_message(name: str, folder: Path, err: Exception) -> str:
    reason = " ".join(f"{type(err).__name__}: {err}".split())  # keep it to one line
    return (f"data set '{name}' is not in {folder} and could not be downloaded ({reason}); "
            f"put the torchvision files in {folder}, move the data root with --data-root or "
            f"{DATA_ENV}, or read an ImageFolder copy with the 'folder' source (path=<folder "
            f"with train/ and test/>)")


def _open_torchvision(name: str, class_name: str, folder: Path, train: bool):
    """The torchvision data set object; downloads only when the files are missing."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, class_name)
    try:
        return cls(root=str(folder), train=train, download=False)
    except RuntimeError:
        pass  # "Dataset not found": fall through to the download
    try:
        return cls(root=str(folder), train=train, download=True)
    except Exception as err:  # offline: URLError, RuntimeError from every mirror, OSError...
        raise DatasetUnavailable(_unavailable_message(name, folder, err)) from err


def _torchvision_arrays(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (N, C, H, W) images and int64 labels from a torchvision data set's arrays."""
    x = torch.as_tensor(np.asarray(ds.data))
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)  # MNIST: N,H,W; CIFAR: N,H,W,C
    y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.int64)
    return x.to(torch.uint8).contiguous(), y


def _torchvision_loader(name: str, class_name: str, augment_default: bool, doc: str):
    def load(root: Path, progress: bool) -> DataSplits:
        folder = root / name
        train = _open_torchvision(name, class_name, folder, train=True)
        test = _open_torchvision(name, class_name, folder, train=False)
        x_tr, y_tr = _torchvision_arrays(train)
        x_te, y_te = _torchvision_arrays(test)
        return make_splits(name, x_tr, y_tr, x_te, y_te, classes=list(train.classes),
                           augment_default=augment_default, source=str(folder))

    load.__doc__ = doc
    load.__name__ = f"load_{name.replace('-', '_')}"
    return load


for _name, _cls, _augment, _doc in (
        ("cifar10", "CIFAR10", True, "CIFAR-10: 32x32 RGB, 10 classes (torchvision download)."),
        ("cifar100", "CIFAR100", True, "CIFAR-100: 32x32 RGB, 100 classes (torchvision download)."),
        ("fashion-mnist", "FashionMNIST", False,
         "Fashion-MNIST: 28x28 grayscale, 10 classes (torchvision download)."),
        ("mnist", "MNIST", False,
         "MNIST: 28x28 grayscale digits, 10 classes (torchvision download)."),
):
    DATASETS.register(_name, _torchvision_loader(_name, _cls, _augment, _doc),
                      augment_default=_augment, download=True)
