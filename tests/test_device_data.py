"""The device-resident batch loader and its augmentation, checked against independent numpy
code."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape_lib.data import DataSplits, DeviceData, augment_batch, crop_flip, crop_pad
from landscape_lib.errors import ConfigError


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
