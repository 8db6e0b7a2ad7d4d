"""Loss and accuracy at many points of weight space: ``evaluate_points`` and its two engines.

Every evaluated point is a weight vector ``w = base + sum_k c_k D_k`` (one ``addmm`` for many
points); the mean cross-entropy and the accuracy over ``batches`` are computed there, in eval
mode (dropout off). The model is left exactly as it was found: weights, buffers and mode.

Two engines give the same numbers (tests check 1e-5 in fp32); the loop may replay CUDA graphs:
- ``"vmap"`` (the fast path, chosen by ``method="auto"``): many points at once. Their weights
  are stacked (chunk, P) and one ``torch.vmap(torch.func.functional_call)`` evaluates the whole
  chunk per batch, removing the per-point overhead that dominates small models. Under vmap a
  conv with batched weights becomes one grouped conv over the chunk.
- ``"loop"``: one point after another, its weights copied into the model. Used where vmap does
  not apply: BatchNorm recomputation (train-mode statistics per point) and models with an op
  that has no vmap batching rule (``"auto"`` tries vmap on one sample first and falls back,
  e.g. for scaled-dot-product attention on the CPU).
- ``"graph"``: the loop on CUDA with each point captured once as a CUDA graph and replayed
  (``graphed.GraphedPoint``): the same kernels without a few hundred Python calls per point, so
  one thread per GPU scales (``devices``). ``"auto"`` takes it for the loop's nets on CUDA with
  ``bn="fixed"``; it falls back to the eager loop, with a warning, if capture fails.
Both accumulate on the device and synchronise once per chunk of points, and both can run under
bf16 autocast (``precision="bf16"``) and ``torch.compile``. ``channels_last`` (model and 4-D
inputs in channels-last layout, faster convs on tensor-core GPUs) applies to the loop engine
only: under vmap the batched convs choose their own layout, and some ops (adaptive pooling)
lose their batching rule on channels-last inputs.
``bench/bench_surface.py`` times both engines against the reference loop
(``grids.surface_2d_loop``).

BatchNorm (``bn``, recorded in the result; see ``batchnorm``):
- ``"fixed"`` (default): every point uses the model's running statistics (model.eval()).
  Cheap, but far from the centre the stored statistics no longer match the moved weights.
- ``"interpolate"``: the statistics are points too, ``coords @ bn_directions`` (one flat
  statistics vector per direction, in `batchnorm.stat_buffers` order), like the weights;
  negative variances are clamped at 0 and counted (``info["bn_var_clamped"]`` per point).
- ``"recompute"``: at every point the running statistics are reset and recomputed as a plain
  average (``momentum=None``) over ``bn_batches`` (train batches; default ``batches``) in train
  mode, then the point is evaluated in eval mode.
The last two take the loop engine. The model's own statistics are restored after.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ...errors import ConfigError, check_choice
from ...params import eval_mode
from .batchnorm import BN_MODES, bn_layers, stat_buffers, write_statistics
from .graphed import GraphedPoint
from .memory import PRECISIONS, plan_chunk

METHODS = ("auto", "vmap", "loop", "graph")

RowCallback = Callable[[int, np.ndarray, np.ndarray], None]


@contextlib.contextmanager
def preserved(model: nn.Module, channels_last: bool = False):
    """Restore the model's parameters, buffers, BN momenta, train flags and layout on exit."""
    params = [p.detach().clone() for p in model.parameters()]
    buffers = [b.detach().clone() for b in model.buffers()]
    flags = [(m, m.training) for m in model.modules()]
    momenta = [(m, m.momentum) for m in bn_layers(model)]
    convert = channels_last and not all(p.is_contiguous(memory_format=torch.channels_last)
                                        for p in model.parameters() if p.dim() == 4)
    if convert:  # a model already in channels-last layout keeps its parameter tensors
        model.to(memory_format=torch.channels_last)
    try:
        yield
    finally:
        if convert:
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
    layers = bn_layers(model)
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches
        m.train()
    with _autocast(bn_data[0][0].device, precision):
        for x, _ in bn_data:
            model(_prepare_input(x, channels_last))
    for m in layers:
        m.eval()


def _write_point(params, base, D, c) -> None:
    """The point's weights ``base + D^T c`` into the parameters, in place."""
    w = D.T @ c if base is None else torch.addmv(base, D.T, c)
    for p, t in zip(params, torch.split(w, [p.numel() for p in params])):
        p.copy_(t.view_as(p))


def _add_loss(fwd, data, precision, channels_last, loss_sum: Tensor, hits: Tensor) -> None:
    """Add the loss sum and the hit count over ``data`` at the current weights."""
    with _autocast(loss_sum.device, precision):
        for x, y in data:
            logits = _widen(fwd(_prepare_input(x, channels_last)))
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            hits += (logits.argmax(-1) == y).sum()


def _loop_chunk(model, fwd, params, base, D, coords, data, bn_data, precision, channels_last,
                stats=None, graphed=None):
    """Evaluate the points ``coords`` one after another (``graphed``: by replaying the captured
    point); returns (loss sums, correct, clamped variances) tensors. ``stats``: (BN buffers,
    their flat directions) for bn="interpolate"."""
    if graphed is not None:
        losses, correct = zip(*(graphed(c) for c in coords))
        return torch.stack(losses), torch.stack(correct), None
    losses, correct, clamped = [], [], []
    for c in coords:
        _write_point(params, base, D, c)
        if stats is not None:
            clamped.append(write_statistics(stats[0], c @ stats[1]))
        if bn_data is not None:
            _recompute_bn(model, bn_data, precision, channels_last)
        loss_sum = torch.zeros((), device=c.device, dtype=_sum_dtype(c))
        hits = torch.zeros((), device=c.device, dtype=torch.long)
        _add_loss(fwd, data, precision, channels_last, loss_sum, hits)
        losses.append(loss_sum)
        correct.append(hits)
    return torch.stack(losses), torch.stack(correct), (torch.stack(clamped) if clamped else None)


def _capture(fwd, params, base, D, data, precision, channels_last, cache):
    """The loop's point as a CUDA graph (``graphed.GraphedPoint``), kept in ``cache`` for the
    next call, which replays it if every tensor it reads still lies where it did (a graph reads
    addresses); None, with a warning, if it cannot be captured."""
    tensors = [*params, D, *(t for batch in data for t in batch)] + ([base] if base is not None
                                                                      else [])
    key = (precision, channels_last, id(fwd),
           tuple((t.data_ptr(), tuple(t.shape), tuple(t.stride()), t.dtype) for t in tensors))
    if cache is not None and cache.get("key") == key:
        return cache["graph"]
    try:
        graphed = GraphedPoint(
            lambda c, loss, hits: (_write_point(params, base, D, c),
                                   _add_loss(fwd, data, precision, channels_last, loss, hits)),
            D.shape[0], D.device, D.dtype, _sum_dtype(D))
    except RuntimeError as exc:
        warnings.warn(f"the surface's point could not be captured as a CUDA graph ({exc}); "
                      "evaluating eagerly", RuntimeWarning, stacklevel=3)
        return None
    if cache is not None:
        cache.update(key=key, graph=graphed)
    return graphed


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
                 nn.Sigmoid, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.PReLU, nn.Sequential,
                 nn.ModuleList)


def _choose_method(method: str, moving_bn: bool, model: nn.Module | None = None) -> str:
    if moving_bn:  # BN statistics that change from point to point (recompute, interpolate)
        if method in ("vmap", "graph"):
            raise ConfigError(f"method='{method}' cannot recompute or interpolate BatchNorm "
                              "statistics; use method='loop' or 'auto', or bn='fixed'")
        return "loop"
    if method != "auto":
        return "loop" if method == "graph" else method
    leaves = [m for m in model.modules() if not list(m.children())] if model is not None else []
    return "vmap" if all(isinstance(m, VMAP_FRIENDLY) for m in leaves) else "loop"


def evaluate_points(model: nn.Module, base, directions: Tensor, coords, batches, *,
                    bn: str = "fixed", bn_batches=None, bn_directions: Tensor | None = None,
                    precision: str = "fp32",
                    method: str = "auto", points_per_chunk: int | None = None,
                    channels_last: bool = False, compile: bool = False,
                    progress: bool = False, desc: str = "points", graphs: dict | None = None
                    ) -> Iterator[tuple[int, np.ndarray, np.ndarray, dict]]:
    """Evaluate the points ``base + coords @ directions`` chunk by chunk.

    ``base`` (P,) or None, ``directions`` (k, P) flat tensors on the model's device, ``coords``
    (n, k); ``bn_directions`` (k, Nb): the flat BN statistics of each direction, needed by
    ``bn="interpolate"``. Yields ``(first point index, loss (c,), acc (c,), info)`` per chunk,
    in order, with ``info = dict(method, points_per_chunk, bn, precision)`` (plus
    ``bn_var_clamped`` (c,) under "interpolate"). The memory check runs (and may raise
    ConfigError) before the first point is evaluated.
    """
    check_choice("bn", bn, BN_MODES)
    check_choice("precision", precision, PRECISIONS)
    check_choice("method", method, METHODS)
    device = directions.device
    data = _to_device(batches, device)
    has_bn = bool(bn_layers(model))
    recompute = bn == "recompute" and has_bn
    bn_data = _to_device(bn_batches if bn_batches is not None else data, device) \
        if recompute else None
    stats = _interpolated_stats(model, bn_directions, directions) \
        if bn == "interpolate" and has_bn else None
    coords = torch.as_tensor(np.asarray(coords, dtype=np.float64)).to(device, directions.dtype)
    n_points, n_samples = coords.shape[0], sum(len(y) for _, y in data)
    engine = _choose_method(method, recompute or stats is not None, model)
    chunk = plan_chunk(model, data, bn_data or [], n_points, engine, precision, points_per_chunk)
    if engine == "vmap" and method == "auto" and not _vmappable(model, data, base, directions):
        engine = "loop"  # an op without a batching rule: fall back to the plain loop
        chunk = plan_chunk(model, data, [], n_points, engine, precision, points_per_chunk)
    graph = (engine == "loop" and method in ("auto", "graph") and device.type == "cuda"
             and not compile and not recompute and stats is None)
    if method == "graph" and not graph:
        raise ConfigError("method='graph' needs a CUDA device, fixed BatchNorm statistics "
                          "and compile=False")
    info = dict(method=engine, points_per_chunk=chunk, bn=bn, precision=precision)

    with preserved(model, channels_last=channels_last and engine == "loop"), \
            torch.inference_mode():
        model.eval()
        if engine == "vmap":
            fn = _make_vmap_fn(model)
            fn = torch.compile(fn) if compile else fn
        else:
            params = list(model.parameters())
            fwd = torch.compile(model) if compile else model
            graphed = None if not graph else _capture(
                fwd, params, base, directions, data, precision, channels_last, graphs)
            info["method"] = "graph" if graphed is not None else engine
        bar = tqdm(total=n_points, desc=desc, disable=not progress)
        for start in range(0, n_points, chunk):
            part = coords[start:start + chunk]
            if engine == "vmap":
                loss_sum, hits = _vmap_chunk(fn, chunk, base, directions, part, data,
                                             precision, pad=compile)
            else:
                loss_sum, hits, clamped = _loop_chunk(model, fwd, params, base, directions,
                                                      part, data, bn_data, precision,
                                                      channels_last, stats, graphed)
            bar.update(len(part))
            extra = {} if stats is None else {"bn_var_clamped": clamped.cpu().numpy()}
            yield (start, (loss_sum.double() / n_samples).cpu().numpy(),
                   (hits.double() / n_samples).cpu().numpy(), {**info, **extra})
        bar.close()


def _interpolated_stats(model: nn.Module, bn_directions, directions: Tensor):
    """(BN buffers, flat statistics per direction) for bn="interpolate"."""
    buffers = stat_buffers(model)
    size = sum(b.numel() for _, b in buffers)
    if bn_directions is None or tuple(bn_directions.shape) != (directions.shape[0], size):
        raise ConfigError(f"bn='interpolate' needs the BN statistics of every direction: "
                          f"bn_directions of shape ({directions.shape[0]}, {size})")
    return buffers, bn_directions.to(directions.device, directions.dtype)


def _vmappable(model, data, base, directions) -> bool:
    """Whether the model runs well under vmap (tried on two points and one sample).

    False if it fails, or if PyTorch warns that an op has no batching rule: vmap then runs that
    op point by point in Python, slower than the loop engine.
    """
    x, y = data[0]
    coords = directions.new_zeros(2, directions.shape[0])
    W = coords @ directions if base is None else base.unsqueeze(0) + coords @ directions
    try:
        with torch.inference_mode(), eval_mode(model), warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            _make_vmap_fn(model)(W, x[:1], y[:1])
    except (RuntimeError, NotImplementedError, ValueError):
        return False
    return not any("batching rule" in str(w.message) for w in seen)
