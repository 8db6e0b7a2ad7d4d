"""Saved weights of a run: checkpoints, the per-epoch trajectory, and the resume state.

Where they go is the store's (`Store.checkpoint_path`, `trajectory_path`, `resume_path`).
Every file is written to a temporary name and renamed, so a killed process leaves the previous
version intact; its sha256 is stored with its `checkpoints` row and checked when it is loaded.
Every load is `weights_only` (tensors and plain containers; no pickled code).
"""
from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from ..errors import StoreError

# Trajectory vectors are kept in full up to this size per run (all epochs together).
FULL_TRAJECTORY_BYTES = 256 * 2**20


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


def load_checkpoint(path: Path, device="cpu", sha256: str | None = None):
    """A saved file's tensors; with `sha256`, the file must have that digest (else StoreError:
    it was changed or damaged after it was written). Stores written before checksums were
    kept give None: those files are loaded unchecked."""
    data = Path(path).read_bytes()
    check_digest(path, hashlib.sha256(data).hexdigest(), sha256)
    return torch.load(io.BytesIO(data), map_location=device, weights_only=True)


def check_digest(path: Path, found: str, stored: str | None) -> None:
    if stored and found != stored:
        raise StoreError(f"{path} fails its checksum (stored {stored[:12]}..., file "
                         f"{found[:12]}...): it was changed or damaged; re-train the run or "
                         "restore the file")
