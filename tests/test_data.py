"""Data sources and the device-resident batch loader, checked against independent numpy code."""
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
from landscape_lib.data import (DATASETS, DataSplits, DeviceData, augment_batch, crop_flip,
                                crop_pad, data_root, load_dataset)
from landscape_lib.data import sources
from landscape_lib.errors import ConfigError, DatasetUnavailable, UnknownNameError

# torchvision 0.29 flags its PNG/JPEG writers as deprecated; they are what builds the test trees.
pytestmark = pytest.mark.filterwarnings("ignore:The image decoding:DeprecationWarning")


def np_crop(image: np.ndarray, pad: int, dy: int, dx: int, flip: bool) -> np.ndarray:
    """Reference crop of one (C, H, W) image: zero-pad, slice, optionally mirror."""
    _, h, w = image.shape
    padded = np.pad(image, ((0, 0), (pad, pad), (pad, pad)))
    out = padded[:, dy:dy + h, dx:dx + w]
    return out[:, :, ::-1] if flip else out


def np_normalize(x_uint8: np.ndarray, mean, std) -> np.ndarray:
    mean = np.asarray(mean).reshape(1, -1, 1, 1)
    std = np.asarray(std).reshape(1, -1, 1, 1)
    return (x_uint8.astype(np.float64) / 255.0 - mean) / std


def unique_label_splits(n_train=10, n_test=7, channels=2, size=6, seed=0) -> DataSplits:
    """Random images whose label is their row index, so any batch can be traced to its rows."""
    rng = np.random.default_rng(seed)
    x_tr = torch.from_numpy(rng.integers(0, 256, (n_train, channels, size, size), dtype=np.uint8))
    x_te = torch.from_numpy(rng.integers(0, 256, (n_test, channels, size, size), dtype=np.uint8))
    flat = x_tr.numpy().astype(np.float64) / 255
    mean = tuple(flat.mean(axis=(0, 2, 3)))
    std = tuple(flat.std(axis=(0, 2, 3)))
    n = max(n_train, n_test)
    return DataSplits("toy", x_tr, torch.arange(n_train), x_te, torch.arange(n_test), n,
                      [str(i) for i in range(n)], mean, std, False, "test")


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


# ---------------------------------------------------------------- augmentation


def test_crop_flip_matches_numpy_pad_and_slice():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 5, 7)).astype(np.float32)
    pad = 2
    shifts = np.array([[0, 0], [4, 4], [1, 3], [2, 2], [4, 0], [3, 1]])
    flip = np.array([False, True, False, True, True, False])
    out = crop_flip(torch.from_numpy(x), torch.from_numpy(shifts), torch.from_numpy(flip), pad)
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i].numpy(),
                                      np_crop(x[i], pad, shifts[i, 0], shifts[i, 1], flip[i]))


def test_flip_reverses_width():
    image = np.arange(2 * 3 * 4, dtype=np.float32).reshape(1, 2, 3, 4)
    flipped = crop_flip(torch.from_numpy(image), torch.zeros(1, 2, dtype=torch.long),
                        torch.tensor([True]), pad=0)
    np.testing.assert_array_equal(flipped.numpy(), image[:, :, :, ::-1])
    # With no padding the random augmentation may only flip: each output is x or its mirror.
    batch = torch.from_numpy(image).repeat(64, 1, 1, 1)
    out = augment_batch(batch, torch.Generator().manual_seed(0), pad=0).numpy()
    is_flipped = [np.array_equal(o, image[0, :, :, ::-1]) for o in out]
    is_same = [np.array_equal(o, image[0]) for o in out]
    assert all(f or s for f, s in zip(is_flipped, is_same))
    assert 10 < sum(is_flipped) < 54


def test_augment_batch_draws_valid_crops_reproducibly():
    pad = 2
    image = (np.arange(3 * 6 * 6, dtype=np.float32).reshape(3, 6, 6) + 1)  # all distinct, > 0
    batch = torch.from_numpy(image).repeat(300, 1, 1, 1)
    out = augment_batch(batch, torch.Generator().manual_seed(5), pad)
    candidates = {(dy, dx, f): np_crop(image, pad, dy, dx, f)
                  for dy in range(2 * pad + 1) for dx in range(2 * pad + 1) for f in (False, True)}
    used = []
    for sample in out.numpy():
        match = [key for key, ref in candidates.items() if np.array_equal(sample, ref)]
        assert len(match) == 1
        used.append(match[0])
    assert len(set(used)) > 30  # 50 crops possible; a uniform draw of 300 hits most
    assert 0.35 < np.mean([key[2] for key in used]) < 0.65

    again = augment_batch(batch, torch.Generator().manual_seed(5), pad)
    other = augment_batch(batch, torch.Generator().manual_seed(6), pad)
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_crop_pad_is_an_eighth_of_the_side():
    assert (crop_pad(32), crop_pad(28), crop_pad(8), crop_pad(4)) == (4, 3, 1, 1)


# ---------------------------------------------------------------- DeviceData


def test_train_batches_without_augmentation_are_normalized_rows():
    splits = unique_label_splits(n_train=10)
    data = DeviceData(splits, "cpu")
    expected = np_normalize(splits.x_train.numpy(), splits.mean, splits.std)
    seen = []
    for x, y in data.train_batches(3, torch.Generator().manual_seed(0), augment=False,
                                   drop_last=False):
        assert x.dtype == torch.float32
        np.testing.assert_allclose(x.numpy(), expected[y.numpy()], atol=1e-5)
        seen += y.tolist()
    assert sorted(seen) == list(range(10))  # one epoch: every example exactly once
    assert data.steps_per_epoch(3) == 3 and data.steps_per_epoch(3, drop_last=False) == 4
    dropped = [y for _, y in data.train_batches(3, torch.Generator().manual_seed(0),
                                                augment=False)]
    assert len(dropped) == 3 and len(set(torch.cat(dropped).tolist())) == 9
    with pytest.raises(ConfigError, match="batch_size"):
        data.steps_per_epoch(11)


def test_train_order_follows_the_generator():
    data = DeviceData(unique_label_splits(n_train=10), "cpu")

    def epoch(gen):
        return torch.cat([y for _, y in data.train_batches(5, gen, augment=True)]).tolist()

    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    first = epoch(g1)
    assert first == epoch(g2)
    second = epoch(g1)
    assert second != first and second == epoch(g2)  # each epoch draws a new, seeded order


def test_augmented_batches_are_black_padded_crops_of_their_rows():
    splits = unique_label_splits(n_train=12, size=8)
    data = DeviceData(splits, "cpu")
    assert data.pad == 1
    mean = np.asarray(splits.mean).reshape(-1, 1, 1)
    std = np.asarray(splits.std).reshape(-1, 1, 1)
    for x, y in data.train_batches(4, torch.Generator().manual_seed(2), augment=True):
        for sample, row in zip(x.numpy(), y.tolist()):
            pixels = np.rint((sample * std + mean) * 255)  # undo the normalisation
            source = splits.x_train[row].numpy().astype(np.float64)
            assert any(np.array_equal(pixels, np_crop(source, 1, dy, dx, f))
                       for dy in range(3) for dx in range(3) for f in (False, True))


def test_eval_batches_cover_every_example_once_in_order():
    splits = unique_label_splits(n_train=10, n_test=7)
    data = DeviceData(splits, "cpu")
    for split, x_ref in (("train", splits.x_train), ("test", splits.x_test)):
        batches = list(data.eval_batches(split, 3))
        assert len(batches) == -(-len(x_ref) // 3)
        x = torch.cat([b[0] for b in batches]).numpy()
        y = torch.cat([b[1] for b in batches]).tolist()
        assert y == list(range(len(x_ref)))
        np.testing.assert_allclose(x, np_normalize(x_ref.numpy(), splits.mean, splits.std),
                                   atol=1e-5)
    with pytest.raises(ConfigError):
        list(data.eval_batches("valid", 3))


def test_subset_is_a_fixed_normalized_sample():
    splits = unique_label_splits(n_train=10, n_test=7)
    data = DeviceData(splits, "cpu")
    x, y = data.subset("test", 4, seed=3)
    x2, y2 = data.subset("test", 4, seed=3)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert len(set(y.tolist())) == 4
    np.testing.assert_allclose(x.numpy(), np_normalize(splits.x_test.numpy()[y.numpy()],
                                                       splits.mean, splits.std), atol=1e-5)
    _, everything = data.subset("train", 100, seed=0)
    assert sorted(everything.tolist()) == list(range(10))
    assert data.num_examples("train") == 10 and data.num_examples("test") == 7


def test_properties_and_channels_last():
    splits = unique_label_splits(channels=3, size=6)
    plain, cl = DeviceData(splits, "cpu"), DeviceData(splits, "cpu", channels_last=True)
    assert (plain.in_channels, plain.image_size, plain.num_classes) == (3, 6, 10)
    x_plain, _ = next(plain.eval_batches("train", 4))
    x_cl, _ = next(cl.eval_batches("train", 4))
    assert x_cl.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x_plain, x_cl)


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

    real_decode = sources._decode_one
    monkeypatch.setattr(sources, "_decode_one", no_decode)
    cached = load_dataset("folder", root=root, path=str(tree))
    assert torch.equal(cached.x_train, d.x_train) and cached.std == d.std

    # A changed file (new mtime) invalidates the cache.
    monkeypatch.setattr(sources, "_decode_one", real_decode)
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
