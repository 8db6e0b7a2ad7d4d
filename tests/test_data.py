"""Data sources (registry, options, digits, synthetic, torchvision, ImageFolder), checked
against independent code."""
from __future__ import annotations

import os
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets
from torchvision.io import write_jpeg, write_png

import landscape_lib
from landscape_lib.data import DATASETS, load_dataset
from landscape_lib.data import folder as folder_source
from landscape_lib.errors import ConfigError, DatasetUnavailable, UnknownNameError
from landscape_lib.locations import data_root

# torchvision 0.29 flags its PNG/JPEG writers as deprecated; they are what builds the test trees.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


# ---------------------------------------------------------------- registry, root, options


def test_registry_lists_every_source():
    assert {"digits", "synthetic", "cifar10", "cifar100", "mnist", "fashion-mnist",
            "folder"} <= set(DATASETS.names())
    assert DATASETS.entry("cifar10").meta["augment_default"] is True
    assert DATASETS.entry("digits").meta["augment_default"] is False
    with pytest.raises(UnknownNameError):
        load_dataset("imagenet")


def test_data_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("LANDSCAPE_DATA", raising=False)
    repo = Path(landscape_lib.__file__).resolve().parent.parent
    assert data_root() == repo / "runs" / "data"
    monkeypatch.setenv("LANDSCAPE_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "explicit") == tmp_path / "explicit"


def test_unknown_option_lists_accepted_ones():
    with pytest.raises(ConfigError) as err:
        load_dataset("synthetic", colour=3)
    message = str(err.value)
    assert "colour" in message and "n_train" in message and "noise" in message
    with pytest.raises(ConfigError, match="none"):
        load_dataset("digits", n_train=5)
    with pytest.raises(ConfigError, match="n_train"):
        load_dataset("synthetic", n_train=0)


# ---------------------------------------------------------------- digits


def test_digits_matches_sklearn_and_is_stable():
    from sklearn.datasets import load_digits as sk_digits

    d = load_dataset("digits")
    assert d.x_train.dtype == torch.uint8 and d.y_train.dtype == torch.int64
    assert tuple(d.x_train.shape) == (1437, 1, 8, 8) and tuple(d.x_test.shape) == (360, 1, 8, 8)
    assert d.classes == [str(i) for i in range(10)] and d.num_classes == 10
    assert d.augment_default is False

    # Train + test together are exactly sklearn's images scaled 0..16 -> 0..255, with labels.
    bunch = sk_digits()
    scaled = np.rint(bunch.images * 255 / 16).astype(np.uint8)
    expected = Counter((img.tobytes(), int(t)) for img, t in zip(scaled, bunch.target))
    got = Counter((img.numpy().tobytes(), int(t)) for img, t in
                  zip(torch.cat([d.x_train, d.x_test])[:, 0], torch.cat([d.y_train, d.y_test])))
    assert got == expected

    # Stratified: each class holds about 20% of its examples in the test split.
    per_class = np.bincount(bunch.target)
    in_test = np.bincount(d.y_test.numpy(), minlength=10)
    assert np.all(np.abs(in_test - 0.2 * per_class) <= 1)

    # Mean/std: per channel over the train split in [0, 1] units.
    flat = d.x_train.numpy().astype(np.float64) / 255
    assert d.mean == pytest.approx((flat.mean(),), abs=1e-12)
    assert d.std == pytest.approx((flat.std(),), abs=1e-12)

    again = load_dataset("digits")
    assert torch.equal(again.x_train, d.x_train) and torch.equal(again.y_test, d.y_test)


# ---------------------------------------------------------------- synthetic


def test_synthetic_reproducible_and_seed_dependent():
    a = load_dataset("synthetic", seed=3)
    b = load_dataset("synthetic", seed=3)
    c = load_dataset("synthetic", seed=4)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert tuple(a.x_train.shape) == (512, 1, 8, 8) and tuple(a.x_test.shape) == (256, 1, 8, 8)
    assert np.bincount(a.y_train.numpy()).tolist() == [128] * 4  # balanced
    # The test split does not move when only the train size changes.
    smaller = load_dataset("synthetic", seed=3, n_train=100)
    assert torch.equal(smaller.x_test, a.x_test)
    shaped = load_dataset("synthetic", channels=3, size=12, num_classes=5, n_train=50, n_test=20)
    assert tuple(shaped.x_train.shape) == (50, 3, 12, 12) and shaped.num_classes == 5


def test_synthetic_is_learnable():
    from sklearn.linear_model import LogisticRegression

    s = load_dataset("synthetic", seed=1)
    clf = LogisticRegression(max_iter=2000).fit(s.x_train.flatten(1).numpy() / 255,
                                                s.y_train.numpy())
    accuracy = clf.score(s.x_test.flatten(1).numpy() / 255, s.y_test.numpy())
    assert accuracy > 0.6  # chance is 0.25


# ---------------------------------------------------------------- torchvision sources


class OfflineCIFAR10:
    """Stands in for torchvision's CIFAR10 when the files are missing and the network is down."""

    calls: list[bool] = []

    def __init__(self, root, train=True, download=False, **_):
        OfflineCIFAR10.calls.append(download)
        if download:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        raise RuntimeError("Dataset not found or corrupted. You can use download=True to "
                           "download it")


def test_cifar10_offline_raises_one_line_naming_the_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", OfflineCIFAR10)
    OfflineCIFAR10.calls = []
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset("cifar10", root=tmp_path)
    message = str(err.value)
    assert OfflineCIFAR10.calls == [False, True]  # looked on disk first, then tried to download
    assert "\n" not in message and "cifar10" in message
    assert str(tmp_path / "cifar10") in message
    assert "--data-root" in message and "LANDSCAPE_DATA" in message and "folder" in message


def test_torchvision_arrays_become_nchw_uint8(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    arrays = {True: rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8),
              False: rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)}

    class PresentCIFAR10:
        classes = [f"c{i}" for i in range(10)]

        def __init__(self, root, train=True, download=False, **_):
            assert not download  # files present: never download
            assert root == str(tmp_path / "cifar10")
            self.data = arrays[train]
            self.targets = list(range(len(self.data)))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", PresentCIFAR10)
    d = load_dataset("cifar10", root=tmp_path)
    np.testing.assert_array_equal(d.x_train.numpy(), arrays[True].transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(d.x_test.numpy(), arrays[False].transpose(0, 3, 1, 2))
    assert d.y_test.tolist() == [0, 1, 2] and d.num_classes == 10 and d.augment_default
    flat = arrays[True].astype(np.float64) / 255
    assert d.mean == pytest.approx(tuple(flat.mean(axis=(0, 1, 2))), abs=1e-12)
    assert d.std == pytest.approx(tuple(flat.std(axis=(0, 1, 2))), abs=1e-12)


# ---------------------------------------------------------------- folder source


def write_tree(base, images: dict[tuple[str, str, str], np.ndarray]) -> None:
    """Write {(split, class, file name): (C, H, W) uint8 array} as PNG/JPEG files."""
    for (split, cls, name), array in images.items():
        folder = base / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        writer = write_jpeg if name.endswith(".jpg") else write_png
        writer(torch.from_numpy(array), str(folder / name))


def test_folder_source_labels_pixels_and_cache(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    images = {key: rng.integers(0, 256, (3, 6, 6), dtype=np.uint8) for key in [
        ("train", "zebra", "b.png"), ("train", "zebra", "a.png"), ("train", "ant", "x.png"),
        ("test", "ant", "t.png"), ("test", "zebra", "u.png")]}
    jpeg = np.full((3, 6, 6), 120, dtype=np.uint8)
    images[("test", "zebra", "v.jpg")] = jpeg
    tree = tmp_path / "tree"
    write_tree(tree, images)
    (tree / "train" / "zebra" / "notes.txt").write_text("not an image")
    root = tmp_path / "root"

    d = load_dataset("folder", root=root, path=str(tree))
    assert d.classes == ["ant", "zebra"] and d.num_classes == 2 and d.augment_default
    # Classes in sorted order, files sorted by name within a class.
    order = [("train", "ant", "x.png"), ("train", "zebra", "a.png"), ("train", "zebra", "b.png")]
    np.testing.assert_array_equal(d.x_train.numpy(), np.stack([images[k] for k in order]))
    assert d.y_train.tolist() == [0, 1, 1] and d.y_test.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(d.x_test[:2].numpy(),
                                  np.stack([images[("test", "ant", "t.png")],
                                            images[("test", "zebra", "u.png")]]))
    assert np.abs(d.x_test[2].numpy().astype(int) - 120).max() <= 3  # JPEG is lossy
    flat = d.x_train.numpy().astype(np.float64) / 255
    assert d.mean == pytest.approx(tuple(flat.mean(axis=(0, 2, 3))), abs=1e-12)
    caches = list((root / "cache").glob("*.pt"))
    assert len(caches) == 1

    # Second load: served from the cache, nothing is decoded.
    def no_decode(path, mode):
        raise AssertionError(f"decoded {path} although the cache is valid")

    real_decode = folder_source._decode_one
    monkeypatch.setattr(folder_source, "_decode_one", no_decode)
    cached = load_dataset("folder", root=root, path=str(tree))
    assert torch.equal(cached.x_train, d.x_train) and cached.std == d.std

    # A changed file (new mtime) invalidates the cache.
    monkeypatch.setattr(folder_source, "_decode_one", real_decode)
    changed = tree / "train" / "ant" / "x.png"
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))
    load_dataset("folder", root=root, path=str(tree))
    assert len(list((root / "cache").glob("*.pt"))) == 2


def test_folder_grayscale_channels_follow_the_files(tmp_path):
    rng = np.random.default_rng(1)
    images = {(split, cls, "0.png"): rng.integers(0, 256, (1, 5, 5), dtype=np.uint8)
              for split in ("train", "test") for cls in ("a", "b")}
    write_tree(tmp_path / "gray", images)
    d = load_dataset("folder", root=tmp_path / "root", path=str(tmp_path / "gray"))
    assert tuple(d.x_train.shape) == (2, 1, 5, 5)
    np.testing.assert_array_equal(d.x_train[1].numpy(), images[("train", "b", "0.png")])


def test_folder_missing_paths_are_reported(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetUnavailable, match="nowhere"):
        load_dataset("folder", root=tmp_path, path=str(missing))
    (tmp_path / "half" / "train" / "a").mkdir(parents=True)
    with pytest.raises(DatasetUnavailable, match="test/"):
        load_dataset("folder", root=tmp_path, path=str(tmp_path / "half"))
    with pytest.raises(ConfigError, match="path="):
        load_dataset("folder", root=tmp_path)
