"""BatchNorm running statistics along surfaces and interpolations (``bn``).

- ``"fixed"``: every point uses the model's current statistics (cheap; on an interpolation
  they are the end checkpoint's, wrong at the other end: a small ResNet-18's alpha = 0 loss was
  1.873 against 1.402 for the epoch-0 checkpoint itself).
- ``"interpolate"`` (interpolations only; the default there for nets with BN): running_mean and
  running_var move with alpha like the weights, s(a) = (1 - a) s1 + a s2, with s1, s2 the two
  checkpoints' own statistics, so each end is exactly its checkpoint. Beyond [0, 1] an
  extrapolated variance can go negative: it is clamped at 0 (BN's eps keeps the division
  finite) and the clamped channels are counted per point (``bn_var_clamped``).
- ``"recompute"``: at every point the statistics are reset and re-estimated in train mode as a
  plain average (momentum None, as ``torch.optim.swa_utils.update_bn``) over training batches,
  then the point is evaluated in eval mode: what the mode-connectivity literature does along
  curves (Garipov et al. 2018; REPAIR, Jordan et al. 2023).
``"auto"`` resolves to "interpolate" for nets with tracked BN statistics and "fixed" otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...errors import ConfigError, check_choice

BN_MODES = ("fixed", "interpolate", "recompute")
STAT_NAMES = ("running_mean", "running_var")


def bn_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers that keep running statistics (the only ones `bn` can change)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


def resolve_bn(model: nn.Module, bn: str = "auto") -> str:
    """'auto' -> 'interpolate' for nets with BN running statistics, else 'fixed'."""
    if bn == "auto":
        return "interpolate" if bn_layers(model) else "fixed"
    return check_choice("bn", bn, ("auto", *BN_MODES))


def stat_buffers(model: nn.Module) -> list[tuple[str, Tensor]]:
    """(name, buffer) of every running_mean / running_var of tracked BN layers, model order."""
    tracked = {id(m) for m in bn_layers(model)}
    return [(f"{name}.{stat}" if name else stat, getattr(m, stat))
            for name, m in model.named_modules() if id(m) in tracked for stat in STAT_NAMES]


def bn_statistics(source) -> dict[str, Tensor]:
    """The BN running statistics of a model (or of a state dict), by buffer name."""
    if isinstance(source, nn.Module):
        return {n: b.detach().clone() for n, b in stat_buffers(source)}
    return {n: t.detach().clone() for n, t in source.items() if n.endswith(STAT_NAMES)}


def flat_statistics(model: nn.Module, stats: dict[str, Tensor]) -> Tensor:
    """``stats`` concatenated in the model's buffer order (each one must be present)."""
    parts = []
    for name, buf in stat_buffers(model):
        if name not in stats:
            raise ConfigError(f"BN statistic '{name}' missing from the checkpoint's statistics")
        parts.append(stats[name].to(buf.device, buf.dtype).reshape(-1))
    return torch.cat(parts) if parts else torch.zeros(0)


def write_statistics(buffers: list[tuple[str, Tensor]], flat: Tensor) -> Tensor:
    """Copy a flat statistics vector into ``buffers`` (`stat_buffers`); negative variances are
    clamped at 0. Returns the number clamped, as a device tensor (no host sync)."""
    clamped = torch.zeros((), dtype=torch.long, device=flat.device)
    for (name, buf), part in zip(buffers, torch.split(flat, [b.numel() for _, b in buffers])):
        part = part.view_as(buf)
        if name.endswith("running_var"):
            clamped += (part < 0).sum()
            part = part.clamp_min(0.0)
        buf.copy_(part)
    return clamped
