"""Helpers shared by the GPU benchmarks: device choice, TF32 switch, timing barriers."""
from __future__ import annotations

import torch

from landscape_lib.train.environment import resolve_device

__all__ = ["resolve_device", "set_tf32", "sync"]


def set_tf32(on: bool) -> None:
    """TF32 for matmuls and cuDNN convolutions (both off = true float32)."""
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def sync(device: torch.device) -> None:
    """Wait for queued GPU work, so wall-clock timings cover it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
