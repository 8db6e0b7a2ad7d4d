"""Where things live by default: the checkout, the store, the data sets, the grid file, the cache.

Each default can be moved by an environment variable or an explicit path (the CLI's --store,
--data-root); the repository root is the folder holding `landscape_lib/` (an editable install
keeps it the checkout).
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
STORE_ENV = "LANDSCAPE_STORE"    # moves the store (the CLI's --store is an explicit path)
DATA_ENV = "LANDSCAPE_DATA"      # moves the data root (the CLI's --data-root is explicit)
DEVICE_ENV = "LANDSCAPE_DEVICE"  # auto (default), cpu, cuda, cuda:1 ...
CACHE_ENV = "LANDSCAPE_CACHE"    # moves the cache of measured choices (see cache_root)
DEFAULT_GRID = REPO_ROOT / "runs" / "grid.toml"


def _resolve(explicit: str | os.PathLike | None, env: str, default: Path) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    value = os.environ.get(env)
    return Path(value).expanduser() if value else default


def store_root(explicit: str | os.PathLike | None = None) -> Path:
    """The store root: `explicit`, else $LANDSCAPE_STORE, else `<repo>/runs/store`."""
    return _resolve(explicit, STORE_ENV, REPO_ROOT / "runs" / "store")


def data_root(explicit: str | os.PathLike | None = None) -> Path:
    """Where data sets live: `explicit`, else $LANDSCAPE_DATA, else `<repo>/runs/data`."""
    return _resolve(explicit, DATA_ENV, REPO_ROOT / "runs" / "data")


def cache_root(explicit: str | os.PathLike | None = None) -> Path:
    """What the library measured about this machine and keeps between processes (the Hessian
    product mode ``"auto"`` chose per GPU and model: ``analyses.hessian.auto``): `explicit`,
    else $LANDSCAPE_CACHE, else `$XDG_CACHE_HOME/landscape` (`~/.cache/landscape`). Deleting
    it only costs the measurements again."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    default = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "landscape"
    return _resolve(explicit, CACHE_ENV, default)
