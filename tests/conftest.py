"""Shared test helpers. Nothing heavy is imported at module level: `pytest -m gpu` runs on a
machine without the dashboard's packages and collects only the GPU test modules (below)."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from landscape_lib.locations import CACHE_ENV, DEVICE_ENV, REPO_ROOT as REPO

# Tests never touch the user's store, data folder or cache, and run on the CPU unless they ask.
os.environ.setdefault(DEVICE_ENV, "cpu")
os.environ[CACHE_ENV] = tempfile.mkdtemp(prefix="landscape-test-cache-")  # per test process
atexit.register(shutil.rmtree, os.environ[CACHE_ENV], ignore_errors=True)
# One intra-op thread per test process (set before torch is imported): with -n 2 on a shared
# 2-core machine, torch's default threads oversubscribe the cores (a ResNet step took 8 s with
# 2 threads while other jobs ran, 0.12 s with 1).
os.environ["OMP_NUM_THREADS"] = "1"  # also where the caller's environment set another

GPU_MODULES = "test_gpu"  # modules holding the tests marked gpu start with this


def pytest_ignore_collect(collection_path, config):
    """Under `-m gpu` collect only the GPU modules: the others need packages (streamlit,
    playwright) a GPU machine may lack, and hold no gpu test."""
    if (config.option.markexpr or "").strip() == "gpu" and collection_path.suffix == ".py":
        return not collection_path.name.startswith(GPU_MODULES)
    return None


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch
    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU; run `python -m pytest -m gpu` on one")
        for item in gpu_items:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs a page as `__main__` and leaves it there; a process started
    later by spawn or forkserver would then re-run that page in the child (multiprocessing
    re-imports `__main__` from its file). Each test gets the worker's own back."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


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


def trained_store(tmp_path_factory, **overrides):
    """(store, run id): a fresh store holding one finished `tiny_config(**overrides)` run."""
    from landscape_lib.store import Store
    from landscape_lib.train.engine import train_run
    store = Store(tmp_path_factory.mktemp("store") / "store").ensure()
    cfg = tiny_config(**overrides)
    assert train_run(cfg, store, progress=False) == "finished"
    return store, cfg.run_id()

def cli(*args, env=None, timeout=300):
    """Run `python -m landscape_lib ...` (this checkout's) in a subprocess; CompletedProcess."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
    return subprocess.run([sys.executable, "-m", "landscape_lib", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, env=full_env, timeout=timeout)
