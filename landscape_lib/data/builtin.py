"""Data sets that need no download: scikit-learn's digits and seeded synthetic images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError
from .base import DATASETS, DataSplits, make_splits

DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@DATASETS.register("digits", augment_default=False, download=False)
def load_digits(root: Path, progress: bool) -> DataSplits:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes); no download.

    The stratified 80/20 train/test split is fixed (seed 0), so every run sees the same split.
    """
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    # Pixel values are 0..16; scale to the uint8 range the other sources use.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=bunch.target)
    return make_splits("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                       torch.from_numpy(x_te), torch.from_numpy(y_te),
                       classes=[str(c) for c in range(10)], augment_default=False,
                       source="sklearn digits")


def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent CPU generator per (seed, stream), so train/test do not depend on sizes."""
    state = np.random.SeedSequence([seed, stream]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def _class_patterns(num_classes: int, channels: int, size: int, gen: torch.Generator):
    """One smooth pattern per class and channel: two random gratings, scaled to [0.15, 0.85]."""
    coords = torch.arange(size, dtype=torch.float64) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    shape = (num_classes, channels, 2, 1, 1)
    freq = 0.5 + 1.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    angle = torch.pi * torch.rand(shape, generator=gen, dtype=torch.float64)
    phase = 2 * torch.pi * torch.rand(shape, generator=gen, dtype=torch.float64)
    wave = torch.sin(2 * torch.pi * freq * (xx * angle.cos() + yy * angle.sin()) + phase)
    return 0.5 + 0.35 * wave.mean(dim=2)  # (classes, channels, size, size)


def _synthetic_samples(patterns, n: int, noise: float, gen: torch.Generator):
    """Balanced labels; each image = its class pattern with random contrast, plus noise."""
    num_classes = patterns.shape[0]
    y = torch.arange(n) % num_classes
    y = y[torch.randperm(n, generator=gen)]
    contrast = 0.7 + 0.6 * torch.rand((n, 1, 1, 1), generator=gen, dtype=torch.float64)
    base = 0.5 + (patterns[y] - 0.5) * contrast
    images = base + noise * torch.randn(base.shape, generator=gen, dtype=torch.float64)
    return (images.clamp(0, 1) * 255).round().to(torch.uint8), y


@DATASETS.register("synthetic", augment_default=False, download=False)
def load_synthetic(root: Path, progress: bool, *, seed: int = 0, n_train: int = 512,
                   n_test: int = 256, channels: int = 1, size: int = 8, num_classes: int = 4,
                   noise: float = 0.5) -> DataSplits:
    """Images generated from `seed`: one smooth pattern per class plus Gaussian noise.

    Identical options give identical data; at the default noise 0.5 a logistic regression
    reaches about 85% test accuracy (chance 25%): learnable, not trivial.
    """
    for key, value, low in (("n_train", n_train, 1), ("n_test", n_test, 1),
                            ("channels", channels, 1), ("size", size, 2),
                            ("num_classes", num_classes, 2)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"synthetic option {key}={value!r} must be an integer >= {low}")
    if not isinstance(noise, (int, float)) or noise < 0:
        raise ConfigError(f"synthetic option noise={noise!r} must be a number >= 0")
    patterns = _class_patterns(num_classes, channels, size, _generator(seed, 0))
    x_tr, y_tr = _synthetic_samples(patterns, n_train, float(noise), _generator(seed, 1))
    x_te, y_te = _synthetic_samples(patterns, n_test, float(noise), _generator(seed, 2))
    return make_splits("synthetic", x_tr, y_tr, x_te, y_te,
                       classes=[f"class{c}" for c in range(num_classes)], augment_default=False,
                       source=f"synthetic seed={seed}")
