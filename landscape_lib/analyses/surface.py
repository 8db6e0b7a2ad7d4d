"""Loss and accuracy along a line (1-D interpolation) and over a plane (2-D surface) of weights.

Every evaluated point is a weight vector ``w = base + sum_k c_k D_k`` (one ``addmm`` for many
points); the mean cross-entropy and the accuracy over ``batches`` are computed there, in eval
mode (dropout off). The model is left exactly as it was found: weights, buffers and mode.

Two engines give the same numbers (tests check 1e-5 in fp32):
- ``"vmap"`` (the fast path, chosen by ``method="auto"``): many points at once. Their weights
  are stacked (chunk, P) and one ``torch.vmap(torch.func.functional_call)`` evaluates the whole
  chunk per batch, removing the per-point overhead that dominates small models. Under vmap a
  conv with batched weights becomes one grouped conv over the chunk.
- ``"loop"``: one point after another, its weights copied into the model. Used where vmap does
  not apply: BatchNorm recomputation (train-mode statistics per point) and models with an op
  that has no vmap batching rule (``"auto"`` tries vmap on one sample first and falls back,
  e.g. for scaled-dot-product attention on the CPU).
Both accumulate on the device and synchronise once per chunk of points, and both can run under
bf16 autocast (``precision="bf16"``) and ``torch.compile``. ``channels_last`` (model and 4-D
inputs in channels-last layout, faster convs on tensor-core GPUs) applies to the loop engine
only: under vmap the batched convs choose their own layout, and some ops (adaptive pooling)
lose their batching rule on channels-last inputs.
``bench/bench_surface.py`` times both engines against the reference loop.

BatchNorm (``bn``, recorded in the result):
- ``"fixed"`` (default): every point uses the centre model's running statistics (model.eval()).
  Cheap, but far from the centre the stored statistics no longer match the moved weights.
- ``"recompute"``: at every point the running statistics are reset and recomputed as a plain
  average (``momentum=None``) over ``bn_batches`` (train batches; default ``batches``) in train
  mode, then the point is evaluated in eval mode. The model's own statistics are restored after.

``surface_2d_loop`` is the straightforward reference (copy weights, evaluate batch by batch,
next point).
"""
from __future__ import annotations

import contextlib
import math
import os
import warnings
from typing import Callable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..errors import ConfigError
from .directions import to_flat, unflatten
from .hessian_ops import eval_mode as _eval

BN_MODES = ("fixed", "recompute")
PRECISIONS = ("fp32", "bf16")
METHODS = ("auto", "vmap", "loop")
MAX_AUTO_CHUNK = 4096          # points per vmap call when memory allows
# Work per vmap chunk chosen automatically: once the device is saturated bigger chunks are no
# faster, only riskier (the estimate is rough); on the CPU they also thrash the caches.
AUTO_CHUNK_BYTES = {"cuda": 8 << 30, "cpu": 1 << 30}
ACTIVATION_FACTOR = 2          # live activations ~ 2 x the largest (input + output) of a module

RowCallback = Callable[[int, np.ndarray, np.ndarray], None]


def _check_choice(option: str, value, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ConfigError(f"{option}={value!r} is not allowed; choose from: {', '.join(allowed)}")


# ----------------------------------------------------------------------------- model helpers

def _bn_layers(model: nn.Module) -> list[nn.Module]:
    """BatchNorm layers that keep running statistics (the only ones "recompute" can change)."""
    return [m for m in model.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@contextlib.contextmanager
def _preserved(model: nn.Module, channels_last: bool = False):
    """Restore the model's parameters, buffers, BN momenta, train flags and layout on exit."""
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in _bn_layers(model)]
    if channels_last:
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if channels_last:
            model.to(memory_format=torch.contiguous_format)
        with torch.no_grad():
            for p, v in zip(model.parameters(), params):
                p.copy_(v)
            for b, v in zip(model.buffers(), buffers):
                b.copy_(v)
        for m, flag in flags:
            m.training = flag
        for m, momentum in momenta:
            m.momentum = momentum


def _to_device(batches, device: torch.device) -> list[tuple[Tensor, Tensor]]:
    """The batches as a list of (x, y) on the model's device (held for the whole grid)."""
    out = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True))
           for x, y in batches]
    if not out:
        raise ConfigError("no batches to evaluate the loss on")
    return out


def _prepare_input(x: Tensor, channels_last: bool) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.dim() == 4 else x


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _recompute_bn(model: nn.Module, bn_data, precision: str, channels_last: bool) -> None:
    """Reset BN running statistics and re-estimate them as a plain average over ``bn_data``."""
    layers = _bn_layers(model)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    with _autocast(bn_data[0][0].device, precision):
        for x, _ in bn_data:
            model(_prepare_input(x, channels_last))
    for m in layers:
        m.eval()


# ----------------------------------------------------------------------------- memory

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
        with torch.no_grad(), _eval(model):
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
    _check_choice("precision", precision, PRECISIONS)
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


def _plan_chunk(model, data, bn_data, n_points: int, method: str, precision: str,
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


# ----------------------------------------------------------------------------- engines

def _loop_chunk(model, fwd, params, base, D, coords, data, bn_data, precision, channels_last):
    """Evaluate the points ``coords`` one after another; returns (loss sums, correct) tensors."""
    losses, correct = [], []
    for c in coords:
        w = D.T @ c if base is None else torch.addmv(base, D.T, c)
        for p, t in zip(params, torch.split(w, [p.numel() for p in params])):
            p.copy_(t.view_as(p))
        if bn_data is not None:
            _recompute_bn(model, bn_data, precision, channels_last)
        loss_sum = torch.zeros((), device=w.device, dtype=_sum_dtype(w))
        hits = torch.zeros((), device=w.device, dtype=torch.long)
        with _autocast(w.device, precision):
            for x, y in data:
                logits = _widen(fwd(_prepare_input(x, channels_last)))
                loss_sum += F.cross_entropy(logits, y, reduction="sum")
                hits += (logits.argmax(-1) == y).sum()
        losses.append(loss_sum)
        correct.append(hits)
    return torch.stack(losses), torch.stack(correct)


def _widen(logits: Tensor) -> Tensor:
    """Logits from bf16 autocast back to fp32 for the loss (fp32/fp64 stay as they are)."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _sum_dtype(w: Tensor) -> torch.dtype:
    return torch.promote_types(w.dtype, torch.float32)


def _make_vmap_fn(model: nn.Module):
    """f(W (chunk, P), x, y) -> (loss sums (chunk,), correct (chunk,)) via vmap."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    sizes = [p.numel() for p in model.parameters()]
    buffers = dict(model.named_buffers())

    def point_stats(w: Tensor, x: Tensor, y: Tensor):
        params = {n: t.view(s) for n, t, s in zip(names, torch.split(w, sizes), shapes)}
        logits = _widen(functional_call(model, (params, buffers), (x,)))
        return F.cross_entropy(logits, y, reduction="sum"), (logits.argmax(-1) == y).sum()

    return torch.vmap(point_stats, in_dims=(0, None, None))


def _vmap_chunk(fn, chunk, base, D, coords, data, precision, pad):
    """Evaluate ``coords`` together; with ``pad`` a short last chunk is padded to ``chunk``
    points so that a compiled function sees one shape."""
    n = coords.shape[0]
    if pad and n < chunk:
        coords = torch.cat([coords, coords[-1:].expand(chunk - n, -1)])
    W = coords @ D if base is None else torch.addmm(base.unsqueeze(0), coords, D)
    loss_sum = torch.zeros(W.shape[0], device=W.device, dtype=_sum_dtype(W))
    hits = torch.zeros(W.shape[0], device=W.device, dtype=torch.long)
    with _autocast(W.device, precision):
        for x, y in data:
            l, h = fn(W, x, y)
            loss_sum += l
            hits += h
    return loss_sum[:n], hits[:n]


# Layers for which stacking many points under vmap pays (measured on an H100: an MLP surface
# 238x faster than the loop). Convolutions become grouped convs and attention kernels lack
# batching rules on CUDA, so nets with those use the loop engine (with big batches) instead.
VMAP_FRIENDLY = (nn.Linear, nn.Flatten, nn.Identity, nn.Dropout, nn.ReLU, nn.GELU, nn.Tanh,
                 nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Sequential, nn.ModuleList)


def _choose_method(method: str, recompute: bool, model: nn.Module | None = None) -> str:
    if recompute:
        if method == "vmap":
            raise ConfigError("method='vmap' cannot recompute BatchNorm statistics; "
                              "use method='loop' or 'auto', or bn='fixed'")
        return "loop"
    if method != "auto":
        return method
    leaves = [m for m in model.modules() if not list(m.children())] if model is not None else []
    return "vmap" if all(isinstance(m, VMAP_FRIENDLY) for m in leaves) else "loop"


def evaluate_points(model: nn.Module, base, directions: Tensor, coords, batches, *,
                    bn: str = "fixed", bn_batches=None, precision: str = "fp32",
                    method: str = "auto", points_per_chunk: int | None = None,
                    channels_last: bool = False, compile: bool = False,
                    progress: bool = False, desc: str = "points"
                    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict]]:
    """Evaluate the points ``base + coords @ directions`` chunk by chunk.

    ``base`` (P,) or None, ``directions`` (k, P) flat tensors on the model's device, ``coords``
    (n, k). Yields ``(first point index, loss (c,), acc (c,), info)`` per chunk, in order, with
    ``info = dict(method, points_per_chunk, bn, precision)``. The memory check runs (and may raise
    ConfigError) before the first point is evaluated.
    """
    _check_choice("bn", bn, BN_MODES)
    _check_choice("precision", precision, PRECISIONS)
    _check_choice("method", method, METHODS)
    device = directions.device
    data = _to_device(batches, device)
    recompute = bn == "recompute" and bool(_bn_layers(model))
    bn_data = _to_device(bn_batches if bn_batches is not None else data, device) \
        if recompute else None
    coords = torch.as_tensor(np.asarray(coords, dtype=np.float64)).to(device, directions.dtype)
    n_points, n_samples = coords.shape[0], sum(len(y) for _, y in data)
    engine = _choose_method(method, recompute, model)
    chunk = _plan_chunk(model, data, bn_data or [], n_points, engine, precision, points_per_chunk)
    if engine == "vmap" and method == "auto" and not _vmappable(model, data, base, directions):
        engine = "loop"  # an op without a batching rule: fall back to the plain loop
        chunk = _plan_chunk(model, data, [], n_points, engine, precision, points_per_chunk)
    info = dict(method=engine, points_per_chunk=chunk, bn=bn, precision=precision)

    with _preserved(model, channels_last=channels_last and engine == "loop"), \
            torch.inference_mode():
        model.eval()
        if engine == "vmap":
            fn = _make_vmap_fn(model)
            fn = torch.compile(fn) if compile else fn
        else:
            params = list(model.parameters())
            fwd = torch.compile(model) if compile else model
        bar = tqdm(total=n_points, desc=desc, disable=not progress)
        for start in range(0, n_points, chunk):
            part = coords[start:start + chunk]
            if engine == "vmap":
                loss_sum, hits = _vmap_chunk(fn, chunk, base, directions, part, data,
                                             precision, pad=compile)
            else:
                loss_sum, hits = _loop_chunk(model, fwd, params, base, directions, part, data,
                                             bn_data, precision, channels_last)
            bar.update(len(part))
            yield (start, (loss_sum.double() / n_samples).cpu().numpy(),
                   (hits.double() / n_samples).cpu().numpy(), info)
        bar.close()


def _vmappable(model, data, base, directions) -> bool:
    """Whether the model runs well under vmap (tried on two points and one sample).

    False if it fails, or if PyTorch warns that an op has no batching rule: vmap then runs that
    op point by point in Python, slower than the loop engine.
    """
    x, y = data[0]
    coords = directions.new_zeros(2, directions.shape[0])
    W = coords @ directions if base is None else base.unsqueeze(0) + coords @ directions
    try:
        with torch.inference_mode(), _eval(model), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            _make_vmap_fn(model)(W, x[:1], y[:1])
    except (RuntimeError, NotImplementedError, ValueError):
        return False
    return not any("batching rule" in str(w.message) for w in seen)


# ----------------------------------------------------------------------------- public API

def interpolate_1d(model: nn.Module, w1, w2, alphas, batches, *, bn: str = "fixed",
                   bn_batches=None, precision: str = "fp32", method: str = "auto",
                   points_per_chunk: int | None = None, channels_last: bool = False,
                   compile: bool = False, progress: bool = False) -> pd.DataFrame:
    """Loss and accuracy along ``w(a) = (1 - a) w1 + a w2`` (``a`` may leave [0, 1]).

    ``w1``, ``w2``: weight vectors (lists in ``model.parameters()`` order, or flat). With
    ``bn="fixed"`` every point uses the model's current BatchNorm statistics.
    Returns a DataFrame with columns alpha, loss, acc.
    """
    alphas = np.asarray(alphas, dtype=np.float64).reshape(-1)
    D = torch.stack([to_flat(w1, model), to_flat(w2, model)])
    coords = np.stack([1.0 - alphas, alphas], axis=1)
    loss, acc = np.empty(len(alphas)), np.empty(len(alphas))
    for start, l, a, _ in evaluate_points(
            model, None, D, coords, batches, bn=bn, bn_batches=bn_batches, precision=precision,
            method=method, points_per_chunk=points_per_chunk, channels_last=channels_last,
            compile=compile, progress=progress, desc="interpolation"):
        loss[start:start + len(l)], acc[start:start + len(a)] = l, a
    return pd.DataFrame({"alpha": alphas, "loss": loss, "acc": acc})


def surface_2d(model: nn.Module, center, d1, d2, xs, ys, batches, *, bn: str = "fixed",
               bn_batches=None, precision: str = "fp32", method: str = "auto",
               points_per_chunk: int | None = None, channels_last: bool = False,
               compile: bool = False, on_row: RowCallback | None = None, start_row: int = 0,
               progress: bool = False) -> dict:
    """Mean cross-entropy and accuracy at ``center + x d1 + y d2`` for x in xs, y in ys.

    ``center``, ``d1``, ``d2``: weight vectors (lists or flat). Row ``j`` of the result is
    ``y = ys[j]``, column ``i`` is ``x = xs[i]``. ``on_row(j, loss_row, acc_row)`` is called as
    each row is finished (e.g. to append it to the store); ``start_row`` resumes an interrupted
    grid: rows before it are not evaluated and are NaN in the result. ``bn``: see the module
    docstring. ``points_per_chunk``: points per vmap call (default: the largest power of two
    whose estimated memory fits in half the free memory and in ``AUTO_CHUNK_BYTES``); one that
    does not fit in free memory -> ConfigError before anything is evaluated.

    Returns ``dict(loss (ny, nx), acc (ny, nx), xs, ys, bn, precision, method,
    points_per_chunk)``.
    """
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    nx, ny = len(xs), len(ys)
    if not 0 <= int(start_row) <= ny:
        raise ConfigError(f"start_row={start_row!r} must lie in [0, {ny}] for {ny} rows")
    start_row = int(start_row)
    loss = np.full((ny, nx), np.nan)
    acc = np.full((ny, nx), np.nan)
    gx, gy = np.meshgrid(xs, ys[start_row:])
    coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
    result = dict(xs=xs, ys=ys, bn=bn, precision=precision, method=None, points_per_chunk=None)
    if len(coords) == 0:
        return {**result, "loss": loss, "acc": acc}
    D = torch.stack([to_flat(d1, model), to_flat(d2, model)])
    base = to_flat(center, model)
    offset, done_rows = start_row * nx, start_row
    for start, l, a, info in evaluate_points(
            model, base, D, coords, batches, bn=bn, bn_batches=bn_batches, precision=precision,
            method=method, points_per_chunk=points_per_chunk, channels_last=channels_last,
            compile=compile, progress=progress, desc="surface"):
        idx = offset + start + np.arange(len(l))
        loss.flat[idx], acc.flat[idx] = l, a
        result.update(method=info["method"], points_per_chunk=info["points_per_chunk"])
        filled = idx[-1] + 1
        while done_rows < ny and filled >= (done_rows + 1) * nx:
            if on_row is not None:
                on_row(done_rows, loss[done_rows].copy(), acc[done_rows].copy())
            done_rows += 1
    return {**result, "loss": loss, "acc": acc}


def surface_2d_loop(model: nn.Module, center, d1, d2, xs, ys, batches, *, bn: str = "fixed",
                    bn_batches=None, progress: bool = False) -> dict:
    """Reference for ``surface_2d``: write each point's weights into the model, evaluate it
    batch by batch, go to the next point. fp32, no batching of points, no memory planning.

    Returns ``dict(loss (ny, nx), acc (ny, nx), xs, ys, bn)``.
    """
    _check_choice("bn", bn, BN_MODES)
    xs = np.asarray(xs, dtype=np.float64).reshape(-1)
    ys = np.asarray(ys, dtype=np.float64).reshape(-1)
    device = next(model.parameters()).device
    c, a, b = (unflatten(to_flat(v, model), model) for v in (center, d1, d2))
    params = list(model.parameters())
    loss = np.empty((len(ys), len(xs)))
    acc = np.empty((len(ys), len(xs)))
    with _preserved(model), torch.no_grad():
        model.eval()
        bar = tqdm(total=loss.size, desc="surface (loop)", disable=not progress)
        for j, y in enumerate(ys):
            for i, x in enumerate(xs):
                for p, pc, pa, pb in zip(params, c, a, b):
                    p.copy_(pc + float(x) * pa + float(y) * pb)
                if bn == "recompute":
                    for m in _bn_layers(model):
                        m.reset_running_stats()
                        m.momentum = None
                        m.train()
                    for xb, _ in (bn_batches if bn_batches is not None else batches):
                        model(xb.to(device))
                    model.eval()
                total, hits, count = 0.0, 0, 0
                for xb, yb in batches:
                    xb, yb = xb.to(device), yb.to(device)
                    out = model(xb)
                    total += F.cross_entropy(out, yb, reduction="sum")
                    hits += (out.argmax(1) == yb).sum()
                    count += len(yb)
                loss[j, i] = float(total) / count
                acc[j, i] = float(hits) / count
                bar.update()
        bar.close()
    return dict(loss=loss, acc=acc, xs=xs, ys=ys, bn=bn)


# ----------------------------------------------------------------------------- summaries

def _second_derivative(coord: np.ndarray, values: np.ndarray, i: int) -> float:
    """Three-point second difference at ``i`` (exact for quadratics, any spacing)."""
    if i <= 0 or i >= len(coord) - 1:
        return float("nan")
    h1, h2 = coord[i] - coord[i - 1], coord[i + 1] - coord[i]
    return float(2 * (h2 * values[i - 1] - (h1 + h2) * values[i] + h1 * values[i + 1])
                 / (h1 * h2 * (h1 + h2)))


def _reach(coord: np.ndarray, values: np.ndarray, i0: int, step: int, level: float
           ) -> tuple[float, bool]:
    """Distance from ``coord[i0]`` walking by ``step`` until ``values`` exceed ``level``.

    The crossing is interpolated linearly between the last point inside and the first outside
    (a non-finite loss counts as outside, crossing at that point). Returns (distance, censored):
    censored when the loss never exceeds ``level`` before the grid's edge.
    """
    i = i0
    while 0 <= i + step < len(coord):
        nxt = i + step
        if not np.isfinite(values[nxt]) or values[nxt] > level:
            if not np.isfinite(values[nxt]):
                return abs(coord[nxt] - coord[i0]), False
            t = (level - values[i]) / (values[nxt] - values[i])
            cross = coord[i] + t * (coord[nxt] - coord[i])
            return abs(cross - coord[i0]), False
        i = nxt
    return abs(coord[i] - coord[i0]), True


def surface_summary(xs, ys, loss, *, threshold: float = 0.1) -> dict:
    """Scalar summaries of a surface ``loss`` (ny, nx) around its centre.

    The centre is the grid point nearest to (0, 0).
    - ``center_loss``: the loss there.
    - ``curvature_x``/``curvature_y``: three-point second differences at the centre along each
      axis (NaN if the centre is on the grid's edge).
    - ``basin_width``: mean over the four half-axes (+x, -x, +y, -y) of the distance from the
      centre at which the loss first exceeds ``center_loss + threshold`` (linear interpolation
      between grid points). ``basin_width_censored`` counts half-axes where it never does (the
      distance to the edge is used, so the width is a lower bound).

    ``threshold`` is an absolute rise of the loss (nats of cross-entropy; default 0.1). A rise
    relative to the surface's own range would cancel the curvature (for ``a x^2`` the width
    would be the same for every ``a``), and one relative to the centre loss would mix the loss
    level into the width, so an absolute rise keeps widths comparable between runs.
    """
    xs = np.asarray(xs, dtype=np.float64)
    ys = np.asarray(ys, dtype=np.float64)
    loss = np.asarray(loss, dtype=np.float64)
    if loss.shape != (len(ys), len(xs)):
        raise ConfigError(f"loss must have shape (len(ys), len(xs)) = {(len(ys), len(xs))}, "
                          f"got {loss.shape}")
    i0, j0 = int(np.argmin(np.abs(xs))), int(np.argmin(np.abs(ys)))
    center = float(loss[j0, i0])
    level = center + threshold
    row, col = loss[j0, :], loss[:, i0]
    reaches = [_reach(xs, row, i0, +1, level), _reach(xs, row, i0, -1, level),
               _reach(ys, col, j0, +1, level), _reach(ys, col, j0, -1, level)]
    return dict(center_loss=center,
                curvature_x=_second_derivative(xs, row, i0),
                curvature_y=_second_derivative(ys, col, j0),
                basin_width=float(np.mean([d for d, _ in reaches])),
                basin_width_censored=int(sum(c for _, c in reaches)),
                threshold=float(threshold))
