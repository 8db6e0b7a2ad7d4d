"""What a run was computed with: versions, device, host and git commit (saved with each run)."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("torch", "torchvision", "numpy", "duckdb", "pytorch-optimizer", "pyhessian")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def resolve_device(preference: str | None = None) -> torch.device:
    """`auto` (default): the first CUDA GPU when there is one, else the CPU."""
    pref = preference or os.environ.get("LANDSCAPE_DEVICE", "auto")
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(pref)


def environment(device: torch.device) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "python": platform.python_version(), "packages": versions, "device": str(device),
        "device_name": device_name(device), "host": socket.gethostname(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
        "threads": torch.get_num_threads(), "git_commit": git_commit(),
    }
