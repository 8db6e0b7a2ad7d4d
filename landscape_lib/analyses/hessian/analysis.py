"""The Hessian analysis: every curvature estimate of a model's loss, each with its error bound,
and the products and seconds of each part (``HessianResult.costs``, the ``analysis_costs`` rows).

``analyse(op, model, settings)`` runs the parts on any operator with ``@`` (a
``HessianOperator``, a ``ShardedOperator`` over several processes, a dense tensor when
``per_layer`` is off), in this order, each reusing what the previous ones found:

1. ``density``: SLQ nodes -> broadened density, the negative and near-zero shares with their
   standard errors over the probes (``shares``, once lambda_max is known), the lowest Ritz
   node and its vector, and the top-k Ritz pairs of the best-settled probe;
2. ``top``: top-k eigenpairs. Each SLQ probe is a full-reorthogonalised Lanczos run, 60 steps
   by default where a top-k Lanczos needs about 15, so its top Ritz pairs usually meet the
   stopping rule already: their residuals are measured with the full operator (k products)
   and kept when each is within ``tol`` of its value and no other probe shows an eigenvalue
   they miss (``SLQResult.misses``, with the measured residuals). They are also kept, flagged
   not converged, when the recurrence had settled them tenfold inside ``tol`` but the
   measurement is outside it: that is the products' rounding (TF32's ~1e-3 at a trained
   ResNet-18), which a Lanczos over the same products cannot go below. Otherwise a Lanczos
   started from their sum plus a seeded Gaussian (for what their Krylov space may lack) runs
   to the rule on each Ritz value's own residual (``lanczos.extreme_eigenpairs``), then
   measured the same way. Either way the stored values are Rayleigh quotients with measured
   residuals;
3. ``trace``: Hutchinson with the top-k part counted exactly; the same products give every
   layer's trace (``spectrum.deflated_trace``). The probes need the top eigenpairs only after
   their products, so they ride along in the density's calls up to ``RIDE_WIDTH`` columns
   (``spectrum.TraceProbes``; the rest here): their products count in this part, their
   seconds in the density's;
4. ``bottom``: lambda_min by Lanczos on the compression to the top eigenvectors' complement,
   started from the lowest SLQ Ritz vector, stopping on its own residual with the floor
   ``neg_eps * lambda_max``, its residual measured with the full operator. The lowest SLQ node
   is a Ritz value too (so >= lambda_min): the stored lambda_min is the lower of the two, with
   its measured residual (``extremes.lowest_of_both``); ``lam_min_lanczos`` keeps the Lanczos
   value and ``lam_min_consistent`` says whether the two agree within their residuals;
5. ``per-layer``: every layer's top eigenvalue, all layers' Lanczos in lockstep
   (``layers.block_top_eigenvalues``), each started from its block of the Rayleigh-Ritz
   approximation of the Hessian on the best SLQ probe's Krylov space (all its Ritz pairs,
   ``layers.lowrank_block_starts``, no products), or the separate way (``layer_method``).

``hessian_analysis(model, loss_fn, batches, settings)`` builds the operator (``hvp_mode``), sets
TF32 for the analysis and runs ``analyse``; every default is in ``settings.HessianSettings``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from ...errors import ConfigError, check_choice
from ...params import eval_mode
from ...train.environment import sync
from .extremes import lowest_of_both, top_from_density
from .lanczos import Eigen, device_dtype, extreme_eigenpairs, seeded_generator, verify
from .layers import (block_top_eigenvalues, lowrank_block_starts, module_blocks,
                     per_layer_spectrum)
from .operator import FORWARD_MODES, HVP_MODES, HessianOperator
from .pyhessian_adapter import pyhessian_spectrum
from .settings import ENGINES, LAYER_METHODS, HessianSettings
from .shares import Shares, spectral_shares
from .spectrum import SLQResult, TraceProbes, broadened_density, slq

TRACE_BLOCK = 8  # Hutchinson probes per multi-column product
RIDE_WIDTH = 4   # the SLQ's calls carry trace probes up to this many columns (TraceProbes)
PARTS = ("density", "top", "trace", "bottom", "per-layer")
_POSITIVE = ("top_k", "trace_samples", "density_vectors", "density_steps", "layer_steps",
             "bottom_max_steps")
_NON_NEGATIVE = ("samples", "bottom_k", "hvp_chunk", "neg_eps", "tol", "bottom_tol",
                 "layer_tol")


def settings(**overrides) -> HessianSettings:
    """``HessianSettings`` with overrides, checked: an unknown name or a bad value raises
    ConfigError naming what is allowed."""
    known = [f.name for f in dataclasses.fields(HessianSettings)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise ConfigError(f"unknown Hessian setting(s) {', '.join(unknown)}; known: "
                          + ", ".join(known))
    s = HessianSettings(**overrides)
    check_choice("layer_method", s.layer_method, LAYER_METHODS)
    check_choice("engine", s.engine, ENGINES)
    check_choice("hvp_mode", s.hvp_mode, HVP_MODES)
    for name in _POSITIVE:
        if getattr(s, name) < 1:
            raise ConfigError(f"{name}={getattr(s, name)!r} must be at least 1")
    for name in _NON_NEGATIVE:
        if not getattr(s, name) >= 0:
            raise ConfigError(f"{name}={getattr(s, name)!r} must be >= 0")
    return s


@dataclass
class HessianResult:
    """Everything the analysis measured (eigenvalues as float64 NumPy arrays)."""
    settings: HessianSettings
    top: Eigen                       # values descending, residuals, converged, vectors
    bottom: Eigen | None             # values ascending (most negative first)
    trace: float
    trace_se: float
    slq: SLQResult
    shares: Shares
    density_grid: np.ndarray
    density: np.ndarray              # integrates to 1 on density_grid
    lam_min_consistent: bool | None  # bottom Lanczos <= lowest SLQ node + both residuals
    lam_min_lanczos: float | None    # the bottom Lanczos' own value (lam_min is the lower one)
    per_layer: pd.DataFrame | None
    costs: pd.DataFrame              # part, n_products, seconds
    param_names: list[str]
    n_params: int
    n_samples: int
    engine: str
    hvp_mode: str
    device: str
    seconds: float
    hvp_trials: dict = dataclasses.field(default_factory=dict)  # "auto": label -> ms or reason
    host_vectors: Callable[[], Tensor] | None = None  # top_eigenvectors, copied (host_copy)

    @property
    def top_eigenvalues(self) -> np.ndarray:
        return self.top.values

    @property
    def top_eigenvectors(self) -> Tensor:
        """(top_k, P) on the CPU, unit norm, parameter order."""
        if self.host_vectors is not None:
            return self.host_vectors()
        return self.top.vectors.T.detach().cpu()

    @property
    def bottom_eigenvalues(self) -> np.ndarray:
        return self.bottom.values if self.bottom is not None else np.array([])

    @property
    def n_products(self) -> int:
        return int(self.costs["n_products"].sum())

    @property
    def eig_ratio(self) -> float:
        """|lambda_min / lambda_max| (the convexity ratio), NaN without the bottom."""
        lam_max = float(self.top.values[0])
        if self.bottom is None or not lam_max:
            return float("nan")
        return abs(float(self.bottom.values[0]) / lam_max)

    def summary(self) -> dict:
        """The whole-network ``hessian_summary`` columns."""
        b = self.bottom
        sh = self.shares
        return {"n_params": self.n_params, "top_eig": float(self.top.values[0]),
                "top_eig_residual": float(self.top.residuals[0]),
                "top_eig_converged": bool(self.top.converged[0]),
                "lam_min": float(b.values[0]) if b else None,
                "lam_min_residual": float(b.residuals[0]) if b else None,
                "lam_min_converged": bool(b.converged[0]) if b else None,
                "lowest_ritz": self.slq.lowest_node, "lam_min_lanczos": self.lam_min_lanczos,
                "lam_min_consistent": self.lam_min_consistent,
                "convexity_ratio": self.eig_ratio if b else None,
                "trace": self.trace, "trace_se": self.trace_se,
                "neg_share": sh.neg_share, "neg_share_se": sh.neg_share_se, "neg_eps": sh.eps,
                "near_zero_share": sh.near_zero_share, "n_products": self.n_products}


_COPIER: ThreadPoolExecutor | None = None  # host_copy's thread


def host_copy(vectors: Tensor) -> Callable[[], Tensor]:
    """``vectors.T`` (k, P) on the host, as a function returning it. On CUDA the copy starts
    now, on a side stream in a thread, once the work queued so far is done: it overlaps the
    products of the analysis' bottom and per-layer parts (ResNet-18's top 5: 223 MB, 0.2 s
    when copied after the analysis); the function waits for it."""
    if vectors.device.type != "cuda":
        host = vectors.T.detach().cpu()
        return lambda: host
    global _COPIER
    if _COPIER is None:
        _COPIER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hessian-host-copy")
    ready = torch.cuda.Event()
    ready.record(torch.cuda.current_stream(vectors.device))

    def copy() -> Tensor:
        stream = torch.cuda.Stream(vectors.device)
        stream.wait_event(ready)
        with torch.cuda.stream(stream):
            return vectors.T.detach().contiguous().cpu()
    return _COPIER.submit(copy).result


class _Clock:
    """Products (from the operator's counter, plus ``extra``) and seconds per part."""

    def __init__(self, op, report: Callable[[float, str], None] | None):
        self.op, self.rows, self.report = op, [], report or (lambda f, m: None)
        self.device = device_dtype(op)[0]
        self.counts = hasattr(op, "n_products")  # a dense tensor counts nothing

    @contextlib.contextmanager
    def part(self, name: str):
        self.report(PARTS.index(name) / len(PARTS), name)
        sync(self.device)
        t0, p0 = time.perf_counter(), int(getattr(self.op, "n_products", 0))
        extra = {"products": 0}
        yield extra
        sync(self.device)
        self.rows.append({"part": name, "seconds": time.perf_counter() - t0,
                          "n_products": int(getattr(self.op, "n_products", 0)) - p0
                          + int(extra["products"])})


def _pyhessian_top(op, s, source, part) -> Eigen:
    """Top eigenpairs from PyHessian, their residuals measured with ``op`` (k products)."""
    res = pyhessian_spectrum(*source, s.top_k, s.tol, max_iter=100)
    part["products"] += res.n_products
    values, residuals, conv = verify(op, res.eigenvectors, s.tol)
    order = np.argsort(values)[::-1]
    return Eigen(values[order], res.eigenvectors[:, torch.as_tensor(order.copy())],
                 residuals[order], conv[order], res.n_products + s.top_k, 0)


def _per_layer(op, model, s, blocks, start, layer_traces, make_op, progress) -> pd.DataFrame:
    if s.layer_method == "separate":
        return per_layer_spectrum(model, None, None, 1, s.trace_samples, tol=s.layer_tol,
                                  seed=s.seed, make_op=make_op, progress=progress)
    tops = block_top_eigenvalues(op, blocks, start, steps=s.layer_steps, tol=s.layer_tol,
                                 progress=progress)
    return pd.DataFrame({
        "layer": blocks.names, "module": blocks.modules, "n_params": blocks.sizes,
        "top_eig": tops.values, "top_eig_residual": tops.residuals,
        "top_eig_converged": tops.converged, "trace": layer_traces[0],
        "trace_se": layer_traces[1], "n_products": tops.steps})


def analyse(op, model: nn.Module | None = None, s: HessianSettings | None = None, *,
            make_op: Callable | None = None, pyhessian: tuple | None = None,
            report: Callable[[float, str], None] | None = None,
            progress: bool = False) -> HessianResult:
    """Run the parts (module docstring) on ``op``.

    ``model`` (whose parameters ``op.param_names`` names) is needed for the per-layer table;
    ``make_op(params)`` builds a layer's own operator for ``layer_method = "separate"``;
    ``pyhessian = (model, loss_fn, batches)`` takes the top eigenpairs and the trace from
    PyHessian (``engine = "pyhessian"``); ``report(fraction, part)`` is told each part.
    """
    s = s or HessianSettings()
    t0 = time.perf_counter()
    clock = _Clock(op, report)
    blocks = None
    if s.per_layer:
        if model is None or (s.layer_method == "separate" and make_op is None):
            raise ConfigError("per_layer needs the model (and make_op for the separate way)")
        if s.layer_method == "shared":
            blocks = module_blocks(model, op.param_names, device_dtype(op)[0])
    layer_start = None
    probes = TraceProbes(op, s.trace_samples, s.seed + 7, block=TRACE_BLOCK, blocks=blocks,
                         progress=progress)
    with clock.part("density") as part:
        q = slq(probes.riding(RIDE_WIDTH), s.density_vectors, s.density_steps, s.seed,
                top_k=s.top_k, tol=s.tol, keep_ritz=blocks is not None, progress=progress)
        part["products"] -= probes.riders * clock.counts  # counted in the trace part
        grid, density = broadened_density(q.nodes, q.weights)
        if blocks is not None:  # the per-layer Lanczos' start; then the P x steps Ritz vectors go
            layer_start = lowrank_block_starts(blocks, q.ritz_vectors, q.ritz_values,
                                               seeded_generator(device_dtype(op)[0], s.seed + 3))
            q.ritz_vectors = None
    with clock.part("top") as part:
        top = (_pyhessian_top(op, s, pyhessian, part) if pyhessian else
               top_from_density(op, q, s, progress))
    lam_max = float(top.values[0])
    shares = spectral_shares(q.nodes, q.weights, lam_max, s.neg_eps)
    with clock.part("trace") as part:
        trace, trace_se, layer_traces = probes.finish(top.vectors, top.values)
        part["products"] += probes.riders * clock.counts
        if pyhessian:  # the stored whole-network trace is PyHessian's (a cross-check)
            ph = pyhessian_spectrum(*pyhessian, 1, 1.0, max_iter=1,
                                    trace_samples=s.trace_samples)
            trace, trace_se = ph.trace, ph.trace_std_err
            part["products"] += ph.n_products
    # after the trace: each part ends with a device-wide sync, which would wait for the copy
    host_vectors = host_copy(top.vectors)
    bottom, consistent, lanczos_min = None, None, None
    if s.bottom_k:
        room = op.shape[0] - top.vectors.shape[1] > s.bottom_k  # deflation leaves enough
        with clock.part("bottom"):
            bottom = extreme_eigenpairs(
                op, s.bottom_k, "SA", s.bottom_tol, floor=s.neg_eps * abs(lam_max),
                deflate=top.vectors if room else None, start=q.lowest,
                max_steps=s.bottom_max_steps, seed=s.seed + 1, progress=progress)
            lanczos_min = float(bottom.values[0])
            bottom, consistent = lowest_of_both(op, bottom, q, s.bottom_tol,
                                                s.neg_eps * abs(lam_max))
    layers = None
    if s.per_layer:
        with clock.part("per-layer") as part:
            layers = _per_layer(op, model, s, blocks, layer_start, layer_traces, make_op,
                                progress)
            if s.layer_method == "separate":
                part["products"] += int(layers["n_products"].sum())
    return HessianResult(
        s, top, bottom, trace, trace_se, q, shares, grid, density, consistent, lanczos_min, layers,
        pd.DataFrame(clock.rows), list(getattr(op, "param_names", [])), op.shape[0],
        int(getattr(op, "n_samples", 0)), s.engine, _hvp_label(op),
        str(device_dtype(op)[0]), time.perf_counter() - t0,
        dict(getattr(getattr(op, "local", op), "trials", {}) or {}), host_vectors)


def _hvp_label(op) -> str:
    """The operator's product mode (e.g. ``graph x4 /4 chlast``; a sharded one's local one)."""
    local = getattr(op, "local", op)
    return str(getattr(local, "label", getattr(op, "mode", "")))


@contextlib.contextmanager
def tf32(on: bool):
    """TF32 matmuls and cuDNN convolutions on (or off) for the block, and cuDNN's autotuner
    (``cudnn.benchmark``: the fastest convolution algorithms for the analysis' fixed shapes,
    timed once per shape; float32-exact like the default ones), restored after. Always on:
    PyTorch keeps the first plan of a shape for the process whatever the flag, so a first
    analysis without it would tie every later one to the heuristics' plans (H200, ResNet-18:
    15.3-15.4 s per analysis against 12.9-13.1 s). The autotuning costs about 2 s once (a
    later process' first analysis 29.1 s, 27.4 s timing only the heuristics' first plan)."""
    cudnn = torch.backends.cudnn
    before = (torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark)
    torch.backends.cuda.matmul.allow_tf32 = cudnn.allow_tf32 = on
    cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, cudnn.allow_tf32, cudnn.benchmark = before


def make_operator(model: nn.Module, loss_fn: Callable, batches: Sequence, s: HessianSettings,
                  params=None, like: HessianOperator | None = None) -> HessianOperator:
    """The operator of the settings' ``hvp_mode`` / ``hvp_chunk``, or of the mode another
    operator settled on (``like``: its mode, columns, micro-batches and memory format; for a
    compiled one the same product uncompiled, as CUDA graphs on CUDA: each parameter subset
    would be a compilation of its own)."""
    if like is None:
        return HessianOperator(model, loss_fn, batches, params=params, mode=s.hvp_mode,
                               chunk_size=s.hvp_chunk or None)
    forward = like.mode in FORWARD_MODES
    mode = like.mode
    if mode == "compile":
        mode = "graph" if like.device.type == "cuda" else "forward"
    return HessianOperator(model, loss_fn, batches, params=params, mode=mode,
                           chunk_size=like.chunk_size, split=like.split if forward else 1,
                           channels_last=bool(like.channels_last) and forward)


def check_finite_loss(model: nn.Module, loss_fn: Callable, batches: Sequence, *,
                      reduce: Callable | None = None, total: int | None = None) -> None:
    """A ConfigError when the loss of a batch is NaN or infinite at the model's weights (a
    diverged checkpoint's weights can be finite and still overflow it): every product would be
    too, and the analysis would store NaN after all its work. One eval-mode forward per batch.
    Processes holding shards of ``total`` batches pass ``reduce`` (``dist.all_reduce``), which
    sums their counts, so that all of them raise alike."""
    with torch.no_grad(), eval_mode(model):
        losses = torch.stack([loss_fn(model(x), y).detach().float() for x, y in batches])
    bad = (~torch.isfinite(losses)).sum().double().reshape(1)
    if reduce is not None:
        reduce(bad)
    if int(bad.item()):
        raise ConfigError(
            f"the loss is NaN or infinite on {int(bad.item())} of {total or len(losses)} "
            "batch(es) of the analysed sample (a diverged checkpoint?): its Hessian is not "
            "defined; analyse an earlier epoch")


def hessian_analysis(model: nn.Module, loss_fn: Callable, batches: Sequence,
                     s: HessianSettings | None = None, *, report=None, progress: bool = False,
                     **overrides) -> HessianResult:
    """Curvature of the mean loss over ``batches`` at the model's current parameters.

    The model is evaluated in eval mode (BatchNorm running stats). ``s`` (default
    ``HessianSettings()``) with ``overrides`` applied; nothing is stored: the caller writes the
    result (``runners.curvature``).
    """
    s = settings(**{**dataclasses.asdict(s or HessianSettings()), **overrides})
    check_finite_loss(model, loss_fn, batches)
    with tf32(s.tf32):
        op = make_operator(model, loss_fn, batches, s)

        def layer_op(own):  # a layer's own operator, in the mode the whole one settled on
            return make_operator(model, loss_fn, batches, s, own, like=op)

        return analyse(op, model, s, make_op=layer_op, report=report, progress=progress,
                       pyhessian=(model, loss_fn, batches) if s.engine == "pyhessian" else None)
