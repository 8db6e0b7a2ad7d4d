"""The Hessian of a model's mean loss as a linear operator (curvlinops style).

``HessianOperator`` never forms the matrix: ``op @ v`` is a Hessian-vector product (HVP), so any
estimator written against ``@`` and ``.shape`` (``lanczos``, ``spectrum``) works on it and, in
tests, on a dense symmetric tensor alike.

The model is evaluated in **eval mode** for every product (BatchNorm uses its running statistics,
dropout is off), so the operator is the Hessian of a fixed, deterministic function of the
parameters; the model's train/eval mode is restored after each product.

Ways to compute an HVP (``mode``):
- ``"forward"``: forward-over-reverse with ``torch.func`` (``jvp`` of ``grad`` of a
  ``functional_call``, ``products.ForwardProducts``): one forward pass carrying a tangent, then
  its backward; ``chunk_size`` columns at once through ``vmap`` (memory grows with it).
- ``"graph"``: the same product captured as CUDA graphs and replayed (CUDA only).
- ``"compile"``: the same product through ``torch.compile`` (a minute or two of compilation,
  once per model structure in a process), on CUDA also captured as CUDA graphs, which takes
  the compiled code's ~1,000 kernel launches per call off the CPU (H200, per column: ViT
  patch 4 23.8 -> 22.5 ms, ResNet-18 35.6 -> 33.0).
- ``"reverse"``: double-backward autograd, the graph rebuilt for every call of ``@``.
- ``"cached"``: double-backward through a gradient graph built once per batch at construction
  and kept (PyHessian's trick): each product is a single backward pass, but the graphs of all
  batches stay in memory and the parameters must not change afterwards.
- ``"auto"`` (default): on the CPU ``"cached"``. On CUDA the first product times the candidates
  of ``auto`` (CUDA graphs of one column, or of 4 columns per ``vmap`` over micro-batches,
  channels-last for convolutions, the cached graph), each the same way, drops those over
  ``auto.AUTO_MAX_GIB`` of GPU memory (trying smaller micro-batches) or that fail, and keeps
  the fastest per column: ``op.mode``, ``op.chunk_size``, ``op.split``, ``op.channels_last``
  (``op.label`` names it); every timing in ``op.trials`` and the trial products in
  ``op.trial_products`` (also counted in ``op.n_products``); the choice is remembered for the
  process (``auto``). ``bench/bench_hvp.py`` measures every mode (H200, ResNet-18 on 512
  CIFAR images, TF32: graph 68, graph channels-last 57, cached 110 ms per product).
  Pick a mode by hand when the trials' memory is too much.
Should an operation lack a forward-mode derivative, the forward modes fall back to double
backward (``"reverse"``; ``op.mode`` tells); under ``"auto"`` such a candidate is dropped.
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn

from ...errors import ConfigError, check_choice
from ...params import eval_mode, flatten, vector_to_params
from . import auto
from .products import ForwardProducts

HVP_MODES = ("auto", "forward", "graph", "compile", "reverse", "cached")
FORWARD_MODES = ("forward", "graph", "compile")
COMPILE_MODE = "default"  # torch.compile mode of mode "compile" (max-autotune: far longer)


def scipy_operator(op) -> LinearOperator:
    """A float64 ``scipy.sparse.linalg.LinearOperator`` for anything with ``@`` and ``.shape``.

    Vectors travel to the operator's device and dtype for each product and come back as float64
    NumPy arrays, so SciPy's solvers (ARPACK's ``eigsh``) can drive a GPU operator.
    """
    device = getattr(op, "device", torch.device("cpu"))
    dtype = getattr(op, "dtype", torch.float64)

    def matmat(x: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.ascontiguousarray(x), device=device, dtype=dtype)
        return (op @ x).detach().to("cpu", torch.float64).numpy()

    def matvec(x: np.ndarray) -> np.ndarray:
        return matmat(np.ravel(x))

    n = int(op.shape[0])
    return LinearOperator((n, n), matvec=matvec, rmatvec=matvec, matmat=matmat,
                          dtype=np.float64)


def _math_attention():
    """Force the math SDPA kernel: fused attention kernels have no double/forward-mode backward."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # pragma: no cover - very old torch
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.MATH])


def _select_params(model: nn.Module, params) -> tuple[list[str], list[nn.Parameter]]:
    """Names and tensors of the parameters to differentiate (default: all requiring grad)."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if params is None:
        chosen = named
    else:
        by_id = {id(p): n for n, p in model.named_parameters()}
        by_name = dict(model.named_parameters())
        chosen = []
        for p in params:
            if isinstance(p, str):
                if p not in by_name:
                    raise ConfigError(f"model has no parameter '{p}'")
                chosen.append((p, by_name[p]))
            elif id(p) in by_id:
                chosen.append((by_id[id(p)], p))
            else:
                raise ConfigError("params must be parameters (or parameter names) of the model")
    if not chosen:
        raise ConfigError("no parameters to differentiate (none requires grad)")
    dtypes = {p.dtype for _, p in chosen}
    if len(dtypes) > 1:
        raise ConfigError(f"parameters must share one dtype, got {sorted(map(str, dtypes))}")
    return [n for n, _ in chosen], [p for _, p in chosen]


def _resolve_mode(mode: str, device: torch.device) -> str:
    """``"auto"`` -> ``"cached"`` on the CPU; on CUDA it stays ``"auto"`` until the first
    product times the candidates (see the module docstring)."""
    if mode != "auto":
        return mode
    return "auto" if device.type == "cuda" else "cached"


class HessianOperator:
    """Hessian of the mean loss over ``batches`` w.r.t. ``params``, as a linear operator.

    Args:
        model: the network; evaluated in eval mode (BatchNorm running stats, no dropout).
        loss_fn: ``loss_fn(model(x), y)`` -> scalar mean loss of a batch.
        batches: list of ``(x, y)`` tensors already on the model's device. The loss is the mean
            over all samples: batch means weighted by batch size.
        params: parameters (or their names) to differentiate; default all requiring grad.
            A subset (e.g. one layer's) gives that diagonal block of the Hessian.
        mode: how products are computed, one of ``HVP_MODES`` (see the module docstring).
        chunk_size: forward modes: columns of ``op @ V`` per ``vmap`` call (default 1; under
            ``"auto"`` the candidates' own, or only this one when given; ``"compile"`` with
            neither this nor ``split`` given: the shape ``"auto"`` compiles, ``auto.COMPILED``).
        autocast: forward modes only: ``"bf16"`` evaluates the model in bfloat16 (inexact).
        channels_last: forward modes only: convolutions in channels-last memory format.
        split: forward modes only: each batch in ``split`` micro-batches (exact: the weighted
            sum of their Hessians; less memory per call) for a call of ``chunk_size`` columns,
            proportionally fewer for fewer columns (``products``). Default 1 (see chunk_size).

    ``op @ v`` takes a 1-D vector (P,) or a matrix (P, m) of column vectors and returns the same
    shape on ``op.device``; ``op.n_products`` counts Hessian-vector products (columns).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 batches: Sequence[tuple[Tensor, Tensor]], params=None, mode: str = "auto",
                 chunk_size: int | None = None, *, autocast: str | None = None,
                 channels_last: bool = False, split: int | None = None):
        check_choice("mode", mode, HVP_MODES)
        batches = list(batches)
        if not batches:
            raise ConfigError("batches is empty; give at least one (x, y) batch")
        if mode == "compile" and chunk_size is None and split is None:
            chunk_size, split = auto.COMPILED.chunk, auto.COMPILED.split
        split = 1 if split is None else split
        if (autocast or channels_last or split != 1) and mode not in FORWARD_MODES:
            raise ConfigError(f"autocast, channels_last and split need a forward mode "
                              f"({', '.join(FORWARD_MODES)}), not mode={mode!r}")
        for name, value in (("chunk_size", chunk_size), ("split", split)):
            if value is not None and int(value) < 1:
                raise ConfigError(f"{name}={value!r} must be at least 1")
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.param_names, self.params = _select_params(model, params)
        sizes = torch.tensor([len(x) for x, _ in batches], dtype=torch.float64)
        self.weights = (sizes / sizes.sum()).tolist()  # batch means -> mean over all samples
        self.n_samples = int(sizes.sum())
        n = sum(p.numel() for p in self.params)
        self.shape = (n, n)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        self.autocast, self.channels_last = autocast, channels_last
        self._given_chunk = None if chunk_size is None else int(chunk_size)
        self.n_products = 0
        self.trial_products = 0                     # products spent choosing under "auto"
        self.trials: dict[str, float | str] = {}    # "auto": label -> ms per column or reason
        self._trial_calls = 0
        self._graphs: list[tuple[Tensor, ...]] | None = None   # "cached"
        self._forward: ForwardProducts | None = None            # forward modes
        self.mode, self.chunk_size = _resolve_mode(mode, self.device), self._given_chunk or 1
        self.split = int(split)
        if self.mode != "auto":
            self._setup(self.mode, self.chunk_size, self.split, channels_last)

    def __repr__(self) -> str:
        return (f"HessianOperator(P={self.shape[0]}, samples={self.n_samples}, mode={self.label}, "
                f"device={self.device}, dtype={self.dtype})")

    @property
    def label(self) -> str:
        """The mode with its columns per call, micro-batches and memory format."""
        return auto.Candidate(self.mode, self.chunk_size, self.split,
                              bool(self.channels_last)).label

    def _setup(self, mode: str, chunk: int, split: int = 1, channels_last: bool = False) -> None:
        """Build what a mode keeps: the gradient graphs (cached) or the product functions."""
        self._graphs, self._forward = None, None
        self.mode, self.chunk_size, self.split, self.channels_last = mode, chunk, split, \
            channels_last
        if mode == "cached":
            self._graphs = self._build_graphs()
        elif mode in FORWARD_MODES:
            with eval_mode(self.model):  # a compiled product traces the model as it is now
                self._forward = ForwardProducts(
                    self.model, self.loss_fn, self.param_names, self.params,
                    self.batches, self.weights, split=split, chunk=chunk,
                    graph=mode == "graph" or (mode == "compile" and self.device.type == "cuda"),
                    compile=COMPILE_MODE if mode == "compile" else None,
                    autocast=self.autocast, channels_last=channels_last)

    # ----------------------------------------------------------------------------- products
    def __matmul__(self, v) -> Tensor:
        v = torch.as_tensor(v)
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[0]:
            raise ConfigError(f"expected a vector or matrix with {self.shape[0]} rows, "
                              f"got shape {tuple(v.shape)}")
        V = v.reshape(self.shape[0], -1).to(self.device, self.dtype)
        with eval_mode(self.model), _math_attention():
            if self.mode == "auto":
                auto.choose(self)
            out = self._products(V)
        self.n_products += V.shape[1]
        return out[:, 0] if v.ndim == 1 else out

    def matvec(self, v: Tensor) -> Tensor:
        return self @ v

    def to_scipy(self) -> LinearOperator:
        """Float64 SciPy LinearOperator moving vectors to and from ``self.device``."""
        return scipy_operator(self)

    def _products(self, V: Tensor, fallback: bool = True) -> Tensor:
        if self._forward is not None:
            try:
                return self._forward_products(V)
            except torch.cuda.OutOfMemoryError:
                raise
            except (RuntimeError, NotImplementedError):
                if not fallback:
                    raise
                # An op without a forward-mode (or batching) rule: use double backward instead.
                self._setup("reverse", 1)
        return self._double_backward(V, self._graphs)

    def _forward_products(self, V: Tensor) -> Tensor:
        return self._forward(V)

    def _trial_product(self, W: Tensor) -> Tensor:
        """A product of an "auto" trial: no fall-back, counted in ``_trial_columns``."""
        out = self._products(W, fallback=False)
        self._trial_calls += 1
        return out

    def _trial_columns(self) -> int:
        """Products a trial computed: its finished calls, and a graph's capture warm-ups."""
        if self._forward is not None:
            n = self._forward.columns
        else:
            n = self._trial_calls * self.chunk_size
        self._trial_calls = 0
        return n

    def _batch_gradient(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        """Gradient of one batch's loss with its graph kept for a second differentiation."""
        loss = self.loss_fn(self.model(x), y)
        grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
        # An unused parameter has no gradient; zeros keep the shapes (its Hessian rows are 0).
        return tuple(torch.zeros_like(p) if g is None else g for g, p in zip(grads, self.params))

    def _build_graphs(self) -> list[tuple[Tensor, ...]]:
        with eval_mode(self.model), _math_attention(), torch.enable_grad():
            return [self._batch_gradient(x, y) for x, y in self.batches]

    def _double_backward(self, V: Tensor, graphs) -> Tensor:
        out = torch.zeros_like(V)
        with torch.enable_grad():
            for i, ((x, y), w) in enumerate(zip(self.batches, self.weights)):
                grads = graphs[i] if graphs is not None else self._batch_gradient(x, y)
                live = [j for j, g in enumerate(grads) if g.requires_grad]
                for c in range(V.shape[1]):
                    if not live:
                        break
                    pieces = vector_to_params(V[:, c], self.params)
                    hv = torch.autograd.grad([grads[j] for j in live], self.params,
                                             grad_outputs=[pieces[j] for j in live],
                                             retain_graph=True, allow_unused=True)
                    hv = [torch.zeros_like(p) if h is None else h for h, p in zip(hv, self.params)]
                    out[:, c].add_(flatten(hv).detach(), alpha=w)
        return out
