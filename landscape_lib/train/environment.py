"""What a run was computed with: versions, device, host and git commit (saved with each run)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata

import torch

from ..locations import DEVICE_ENV, REPO_ROOT

PACKAGES = ("torch", "torchvision", "numpy", "duckdb", "pytorch-optimizer", "pyhessian")


def package_versions(names) -> dict[str, str | None]:
    """Installed version of each distribution (None when it is not installed)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def resolve_device(preference: str | None = None) -> torch.device:
    """`auto` (default): the first CUDA GPU when there is one, else the CPU."""
    pref = preference or os.environ.get(DEVICE_ENV, "auto")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def resolve_devices(preference: str | None = None) -> list[torch.device]:
    """The devices one analysis may spread its work over: every visible GPU for `auto` (with
    a GPU) or `cuda`, else the one device `preference` names (`cuda:1`, `cpu`)."""
    device = resolve_device(preference)
    if device.type == "cuda" and device.index is None:
        return [torch.device("cuda", i) for i in range(torch.cuda.device_count())]
    return [device]


def set_tf32(on: bool) -> None:
    """TF32 for matmuls and cuDNN convolutions (both off = true float32)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op on the CPU), so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def environment(device: torch.device) -> dict:
    return {
        "python": platform.python_version(), "packages": package_versions(PACKAGES),
        "device": str(device),
        "device_name": device_name(device), "host": socket.gethostname(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "git_commit": git_commit(),
    }
