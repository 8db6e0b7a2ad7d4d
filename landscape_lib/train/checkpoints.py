"""Saved weights of a run: checkpoints, the per-epoch trajectory, and the resume state.

Layout under `<store>/artifacts/<run_id>/`:
  checkpoints/epoch_0004.pt   model state_dict (buffers included, e.g. batch-norm statistics)
  trajectory/epoch_0004.pt    the flattened parameters (`full`) or a count-sketch of them
  resume.pt                   model + optimizer + RNG state at the last finished epoch
Every file is written to a temporary name and renamed, so a killed process leaves the previous
version intact.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

# Trajectory vectors are kept in full up to this size per run (all epochs together).
FULL_TRAJECTORY_BYTES = 256 * 2**20


def atomic_save(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def checkpoint_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "checkpoints" / f"epoch_{epoch:04d}.pt"


def trajectory_path(run_dir: Path, epoch: int) -> Path:
    return run_dir / "trajectory" / f"epoch_{epoch:04d}.pt"


def trajectory_mode(setting: str, n_params: int, epochs: int) -> str:
    if setting != "auto":
        return setting
    return "full" if n_params * 4 * (epochs + 1) <= FULL_TRAJECTORY_BYTES else "sketch"


class CountSketch:
    """A seeded count-sketch projection R^P -> R^d (each coordinate to one bucket with a sign).

    Inner products and distances are preserved in expectation, so PCA/t-SNE of sketched
    trajectories show the same geometry as the full weights, at O(P) cost per epoch instead of
    the O(P d) of a dense Gaussian projection.
    """

    def __init__(self, n: int, dim: int, seed: int, device: torch.device):
        g = torch.Generator().manual_seed(seed)
        self.dim = dim
        self.index = torch.randint(0, dim, (n,), generator=g).to(device)
        self.sign = (torch.randint(0, 2, (n,), generator=g) * 2 - 1).float().to(device)

    def __call__(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.dim, device=flat.device, dtype=torch.float32)
        return out.index_add_(0, self.index, flat * self.sign)


def load_checkpoint(path: Path, device="cpu") -> dict:
    return torch.load(path, map_location=device, weights_only=True)
