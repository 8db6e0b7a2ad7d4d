import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Tests never touch the user's store or data folder.
os.environ.setdefault("LANDSCAPE_DEVICE", "cpu")


@pytest.fixture
def store(tmp_path):
    from landscape_lib.store import Store
    return Store(tmp_path / "store").ensure()


def tiny_config(**overrides):
    """A run that trains in about a second on the CPU: synthetic 8x8 data, a small MLP."""
    from landscape_lib.config import RunConfig
    base = dict(dataset="synthetic", dataset_options={"n_train": 128, "n_test": 64},
                arch="mlp", arch_options={"hidden": [16]}, optimizer="sgd", lr=0.1, epochs=3,
                batch_size=64, seed=0)
    base.update(overrides)
    return RunConfig.from_dict(base)


def cli(*args, env=None, timeout=300):
    """Run `python -m landscape_lib ...` in a subprocess; returns CompletedProcess."""
    import subprocess
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "landscape_lib", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
