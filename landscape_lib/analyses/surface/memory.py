"""How much memory a surface evaluation needs, and how many points fit in one chunk.

``estimate_surface_memory`` is on the safe side; ``plan_chunk`` picks the points per chunk (or
checks a given number) and raises ConfigError before anything is evaluated when even one point
does not fit.
"""
from __future__ import annotations

import math
import os
from typing import Iterator

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ...errors import ConfigError, check_choice
from ...params import eval_mode

PRECISIONS = ("fp32", "bf16")
MAX_AUTO_CHUNK = 4096          # points per vmap call when memory allows
# Work per vmap chunk chosen automatically: once the device is saturated bigger chunks are no
# faster, only riskier (the estimate is rough); on the CPU they also thrash the caches.
AUTO_CHUNK_BYTES = {"cuda": 8 << 30, "cpu": 1 << 30}
ACTIVATION_FACTOR = 2          # live activations ~ 2 x the largest (input + output) of a module


def available_memory(device: torch.device) -> int:
    """Bytes that can still be allocated on ``device``.

    CUDA: free device memory plus what PyTorch's caching allocator holds but does not use.
    CPU: ``MemAvailable`` from /proc/meminfo, else available pages from ``os.sysconf``.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def _tensors(obj) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def activation_numel_per_sample(model: nn.Module, example: Tensor) -> int:
    """Largest (input + output) element count of any module for one sample.

    Shapes are found on the ``meta`` device (no computation, no memory); a model that cannot run
    there is probed with one real sample instead.
    """
    sizes = [0]

    def hook(_module, inputs, output):
        sizes.append(sum(t.numel() for t in _tensors((inputs, output))))

    sample = example[:1]
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad(), eval_mode(model):
            try:
                meta = {n: torch.empty_like(t, device="meta")
                        for n, t in [*model.named_parameters(), *model.named_buffers()]}
                functional_call(model, meta, (sample.to("meta"),))
            except Exception:  # an op without a meta kernel: measure one real sample
                sizes[:] = [0]
                model(sample.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
    return max(sizes)


def estimate_surface_memory(model: nn.Module, batch_size: int, points_per_chunk: int,
                            example: Tensor | int, *, precision: str = "fp32",
                            method: str = "vmap") -> int:
    """Bytes a surface evaluation needs at its peak (an estimate, on the safe side).

    Weights: the centre, two directions and a saved copy of the model (loop), or the stacked
    (points_per_chunk, P) weights of a vmap chunk plus their bf16 casts.
    Activations: ``ACTIVATION_FACTOR x`` the largest per-sample (input + output) of any module
    times batch size times points evaluated together. ``example`` is an input batch (its
    shapes are probed with ``activation_numel_per_sample``) or that per-sample count itself.
    """
    check_choice("precision", precision, PRECISIONS)
    per_sample = example if isinstance(example, int) \
        else activation_numel_per_sample(model, example)
    params = list(model.parameters())
    n_params = sum(p.numel() for p in params)
    pbytes = params[0].element_size()
    abytes = 2 if precision == "bf16" else 4
    points = points_per_chunk if method == "vmap" else 1
    weights = (4 + (points if method == "vmap" else 0)) * n_params * pbytes
    if precision == "bf16":
        weights += points * max(p.numel() for p in params) * 2
    acts = ACTIVATION_FACTOR * points * batch_size * per_sample * abytes
    return int(weights + acts)


def _check_memory(needed: int, device: torch.device, detail: str) -> None:
    free = available_memory(device)
    if needed > free:
        raise ConfigError(f"grid too large for memory: needs {needed / 2**30:.2f} GiB, "
                          f"{free / 2**30:.2f} GiB free on {device} ({detail}); "
                          "lower points_per_chunk or the batch size")


def plan_chunk(model, data, bn_data, n_points: int, method: str, precision: str,
                points_per_chunk: int | None) -> int:
    """Points per chunk; raises ConfigError before any evaluation if it cannot fit in memory."""
    device = data[0][0].device
    batch = max(len(x) for x, _ in [*data, *bn_data])
    example = activation_numel_per_sample(model, data[0][0])  # probed once

    def need(c: int) -> int:
        return estimate_surface_memory(model, batch, c, example, precision=precision,
                                       method=method)

    if points_per_chunk is not None:
        if int(points_per_chunk) < 1:
            raise ConfigError(f"points_per_chunk={points_per_chunk!r} must be a positive integer")
        chunk = min(int(points_per_chunk), n_points)
        _check_memory(need(chunk), device, f"points_per_chunk={chunk}, batch size {batch}")
        return chunk
    if method == "loop":
        _check_memory(need(1), device, f"one point, batch size {batch}")
        return min(n_points, 64)  # only sets how often results are synchronised
    free = available_memory(device)
    budget = min(free // 2, AUTO_CHUNK_BYTES.get(device.type, AUTO_CHUNK_BYTES["cpu"]))
    chunk = 1 << int(math.log2(max(1, min(n_points, MAX_AUTO_CHUNK))))
    while chunk > 1 and need(chunk) > budget:
        chunk //= 2
    if chunk == 1:
        _check_memory(need(1), device, f"points_per_chunk=1, batch size {batch}")
    return chunk
