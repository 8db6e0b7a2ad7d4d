"""The dashboard tests' store: dashboard.sample_store's tiny real runs, built once per test
session and shared by the pytest-xdist workers (the build holds a file lock)."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from dashboard.sample_store import cached


def sample_root(tmp_path_factory) -> str:
    """The sample store's root; $LANDSCAPE_SAMPLE_DIR keeps it across sessions (development)."""
    if os.environ.get("LANDSCAPE_SAMPLE_DIR"):
        return str(cached(os.environ["LANDSCAPE_SAMPLE_DIR"]))
    base = tmp_path_factory.getbasetemp()
    if base.name.startswith("popen-gw"):  # an xdist worker: share the parent with the others
        base = base.parent
    return str(cached(base / "dashboard-sample"))


def copy_of(root: str, dest: Path) -> Path:
    """A private copy of the sample store (for tests that change files)."""
    shutil.copytree(root, dest / "store")
    return dest / "store"
