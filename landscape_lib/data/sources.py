"""Data sets as uint8 image tensors: the `DATASETS` registry and `load_dataset`.

Every source returns a `DataSplits`: whole train and test splits as uint8 tensors (N, C, H, W)
on the CPU plus the per-channel mean/std of the train split. Nothing here normalises or augments;
`landscape_lib.data.device.DeviceData` does that per batch on the accelerator.

Sources: `digits` (scikit-learn's bundled 8x8 digits, the offline default), `synthetic`
(generated from a seed), `mnist`, `fashion-mnist`, `cifar10`, `cifar100` (torchvision, downloaded
only when missing) and `folder` (an ImageFolder tree with train/ and test/, decoded once and
cached).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..errors import ConfigError, DatasetUnavailable
from ..registry import Registry

DATASETS = Registry("dataset")

# Environment variable that moves the data root (the CLI's --data-root sets the explicit path).
DATA_ENV = "LANDSCAPE_DATA"
REPO_ROOT = Path(__file__).resolve().parents[2]


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


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where data sets live: `explicit`, else $LANDSCAPE_DATA, else `<repo>/runs/data`."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / "runs" / "data"


def dataset_options(name: str) -> dict[str, object]:
    """The options a data set accepts, with their defaults."""
    params = inspect.signature(DATASETS.get(name)).parameters.values()
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


def load_dataset(name: str, *, root: str | os.PathLike | None = None, progress: bool = False,
                 **options) -> DataSplits:
    """Load data set `name` with its `options`; `root` as in `data_root`.

    `progress` shows a tqdm bar for slow steps (image decoding); nothing is printed otherwise.
    """
    loader = DATASETS.get(name)  # UnknownNameError lists the registered names
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        allowed = ", ".join(accepted) if accepted else "none"
        raise ConfigError(f"dataset '{name}' does not accept option(s) {', '.join(unknown)}; "
                          f"accepted: {allowed}")
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


# ---------------------------------------------------------------- digits (embedded default)

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


# ---------------------------------------------------------------- synthetic


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


# ---------------------------------------------------------------- torchvision data sets


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


# ---------------------------------------------------------------- ImageFolder tree

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}
CACHE_VERSION = 1  # bump when the cached layout changes, so old caches are not read


def _list_split(base: Path, split: str, classes: list[str]) -> list[tuple[str, int, str]]:
    """("split/class/file", label, "mtime_ns:size") of one split; files sorted by name.

    One os.scandir pass per class folder lists and stats the files, so the cache key of the
    60,000 CIFAR files costs about a second.
    """
    files = []
    for label, cls in enumerate(classes):
        class_dir = base / split / cls
        if not class_dir.is_dir():
            continue
        with os.scandir(class_dir) as entries:
            found = [(e.name, e.stat()) for e in entries
                     if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file()]
        files += [(f"{split}/{cls}/{name}", label, f"{st.st_mtime_ns}:{st.st_size}")
                  for name, st in sorted(found)]
    return files


def _cache_key(base: Path, files: dict[str, list[tuple[str, int, str]]], channels) -> str:
    """Hash of the tree's path, its file list and every file's mtime and size."""
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{base}|channels={channels}\n".encode())
    for items in files.values():
        digest.update("".join(f"{rel}|{label}|{stamp}\n" for rel, label, stamp in items).encode())
    return digest.hexdigest()[:24]


@contextlib.contextmanager
def _quiet_codec():
    """Hide torchvision 0.29's deprecation notice for its image codecs (torchcodec replaces
    them); they are the installed decoder. Entered once in the main thread, since
    warnings.catch_warnings is not thread-safe."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The image decoding",
                                category=DeprecationWarning)
        yield


def _decode_one(path: Path, mode) -> torch.Tensor:
    from torchvision.io import decode_image

    try:
        return decode_image(str(path), mode=mode)
    except RuntimeError as err:  # a broken or unsupported file: name it
        reason = " ".join(str(err).split())
        raise DatasetUnavailable(f"folder data set: cannot decode {path} ({reason})") from err


def _decode_all(paths: list[Path], channels: int, progress: bool, desc: str) -> torch.Tensor:
    """Decode image files into one uint8 (N, C, H, W) tensor, in parallel threads."""
    from torchvision.io import ImageReadMode

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    workers = min(32, (os.cpu_count() or 1) + 4)
    with _quiet_codec(), ThreadPoolExecutor(max_workers=workers) as pool:
        images = list(tqdm(pool.map(lambda p: _decode_one(p, mode), paths),
                           total=len(paths), desc=desc, disable=not progress))
    shapes = {tuple(im.shape) for im in images}
    if len(shapes) > 1:
        raise ConfigError(f"images under {paths[0].parents[2]} differ in size "
                          f"({', '.join(sorted(str(s) for s in shapes)[:3])}); the folder source "
                          f"needs one image size")
    return torch.stack(images)


def _check_tree(base: Path) -> list[str]:
    """Class names (sorted train/ subfolders); DatasetUnavailable when the layout is wrong."""
    layout = "train/<class>/<image> and test/<class>/<image>"
    if not base.is_dir():
        raise DatasetUnavailable(f"folder data set: {base} does not exist; point path= at a "
                                 f"folder holding {layout}")
    for split in ("train", "test"):
        if not (base / split).is_dir():
            raise DatasetUnavailable(f"folder data set: {base} has no {split}/ subfolder; it "
                                     f"must hold {layout}")
    classes = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    extra = sorted(p.name for p in (base / "test").iterdir()
                   if p.is_dir() and p.name not in classes)
    if not classes:
        raise DatasetUnavailable(f"folder data set: {base / 'train'} has no class subfolders")
    if extra:
        raise DatasetUnavailable(f"folder data set: test/ has classes missing from train/: "
                                 f"{', '.join(extra)}")
    return classes


def _first_image_channels(path: Path) -> int:
    from torchvision.io import ImageReadMode

    with _quiet_codec():
        channels = _decode_one(path, ImageReadMode.UNCHANGED).shape[0]
    return 1 if channels in (1, 2) else 3  # gray(+alpha) -> 1; RGB(A) -> 3


@DATASETS.register("folder", augment_default=True, download=False)
def load_folder(root: Path, progress: bool, *, path: str | None = None,
                channels: int | None = None) -> DataSplits:
    """An ImageFolder tree `path` with train/<class>/ and test/<class>/ (e.g. the CIFAR-10 JPEGs).

    Classes are the sorted train/ subfolder names. Images are decoded once and cached as a .pt
    under `<root>/cache/`, keyed by path, file list and mtimes. `channels` (1 or 3) defaults to
    that of the first training image.
    """
    if path is None:
        raise ConfigError("dataset 'folder' needs path=<folder with train/<class>/ and "
                          "test/<class>/ images>")
    if channels not in (None, 1, 3):
        raise ConfigError(f"folder option channels={channels!r} must be 1 or 3 (or unset)")
    base = Path(path).expanduser().resolve()
    classes = _check_tree(base)
    files = {split: _list_split(base, split, classes) for split in ("train", "test")}
    for split, items in files.items():
        if not items:
            raise DatasetUnavailable(f"folder data set: {base / split} holds no images "
                                     f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    # Keyed on the requested channels, so a cache hit decodes nothing (not even one image).
    cache = root / "cache" / f"folder-{_cache_key(base, files, channels)}.pt"

    global _LAST_DECODED
    data = _LAST_DECODED[1] if _LAST_DECODED[0] == cache else _read_cache(cache)
    if data is None:
        channels = channels or _first_image_channels(base / files["train"][0][0])
        data = {}
        for split, items in files.items():
            paths = [base / rel for rel, _, _ in items]
            data[f"x_{split}"] = _decode_all(paths, channels, progress, f"decoding {split}")
            data[f"y_{split}"] = torch.tensor([label for _, label, _ in items], dtype=torch.int64)
        data["mean"], data["std"] = channel_stats(data["x_train"])
        _write_cache(cache, data)
    _LAST_DECODED = (cache, data)
    return make_splits("folder", data["x_train"], data["y_train"], data["x_test"],
                       data["y_test"], classes=classes, augment_default=True, source=str(base),
                       stats=(data["mean"], data["std"]))


# The last decoded folder, kept in memory under its content key: a worker that trains run
# after run on the same images (and the CLI's up-front availability check) reads the cache
# file once. A changed file list or mtime gives another key, so it is never stale.
_LAST_DECODED: tuple[Path | None, dict | None] = (None, None)


def _read_cache(cache: Path) -> dict | None:
    if not cache.is_file():
        return None
    try:
        return torch.load(cache, weights_only=True)
    except Exception:  # a truncated or foreign file: decode again and overwrite it
        return None


def _write_cache(cache: Path, data: dict) -> None:
    """Write atomically, so a crash or a parallel run never leaves a half-written cache."""
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
        torch.save(data, tmp)
        os.replace(tmp, cache)
    except OSError:
        pass  # a read-only data root only costs the decode next time
