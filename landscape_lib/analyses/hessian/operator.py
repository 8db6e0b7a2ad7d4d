"""The Hessian of a model's mean loss as a linear operator (curvlinops style).

``HessianOperator`` never forms the matrix: ``op @ v`` is a Hessian-vector product (HVP), so any
estimator written against ``@`` and ``.shape`` (``lanczos``, ``spectrum``) works on it and, in
tests, on a dense symmetric tensor alike.

The model is evaluated in **eval mode** for every product (BatchNorm uses its running statistics,
dropout is off), so the operator is the Hessian of a fixed, deterministic function of the
parameters; the model's train/eval mode is restored after each product.

Three ways to compute an HVP, and a choice between them (``mode``):
- ``"forward"``: forward-over-reverse with ``torch.func`` (``jvp`` of ``grad`` of a
  ``functional_call``): one forward pass carrying a tangent, then its backward. Columns of
  ``op @ V`` go one at a time, or ``chunk_size`` at once through ``vmap`` (memory grows with it).
- ``"reverse"``: double-backward autograd, the graph rebuilt for every call of ``@``.
- ``"cached"``: double-backward through a gradient graph built once per batch at construction
  and kept (PyHessian's trick): each product is a single backward pass, but the graphs of all
  batches stay in memory and the parameters must not change afterwards.
- ``"auto"`` (default): on the CPU ``"cached"``; on CUDA the first product is computed both in
  ``"forward"`` and ``"cached"`` mode (each twice, the second call timed) and the faster is kept
  (``op.mode``; the timings in ``op.mode_seconds``; the 3 extra products count in
  ``op.n_products``). Neither wins everywhere (``bench/bench_hvp.py``, H100, TF32, ms per
  product):
  - CIFAR ResNet-18, 512 images of 32x32: forward 82, cached 118, reverse 124 (float32 without
    TF32: 218, 356, 376). Most of the double backward's time is in the convolutions'
    double-backward kernels, which forward mode never calls.
  - the quick grid's small models on 256 digits (8x8): forward 3 to 4 times slower than cached
    (ResNet-18 width 8: 81 vs 22; ViT dim 32: 70 vs 28; CNN 15 vs 4), as kernel launches,
    not arithmetic, bound them and forward mode launches more.
  - CPU (small CNN, 64 images): cached 12.7, reverse 15.6, forward 49.
  ``chunk_size=4`` brings forward mode to 64 ms per product on the ResNet-18 for multi-column
  products (trace, density) at 2.8x the memory (29 GiB there), hence not the default.
  Pick ``"forward"`` or ``"reverse"`` by hand when the batches' graphs do not fit in memory.
  Should an operation lack a forward-mode derivative, ``"forward"`` falls back to double
  backward: ``"cached"`` under ``"auto"``, ``"reverse"`` otherwise (``op.mode`` tells).
"""
from __future__ import annotations

import contextlib
import time
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.sparse.linalg import LinearOperator
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from ...errors import ConfigError, check_choice
from ...params import eval_mode, flatten, vector_to_params
from ...train.environment import sync

HVP_MODES = ("auto", "forward", "reverse", "cached")


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
    product measures which is faster (see the module docstring)."""
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
        chunk_size: forward mode only: columns of ``op @ V`` per ``vmap`` call (default 1, a
            plain loop; more trades memory for fewer kernel launches).

    ``op @ v`` takes a 1-D vector (P,) or a matrix (P, m) of column vectors and returns the same
    shape on ``op.device``; ``op.n_products`` counts Hessian-vector products (columns).
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor],
                 batches: Sequence[tuple[Tensor, Tensor]], params=None, mode: str = "auto",
                 chunk_size: int = 1):
        check_choice("mode", mode, HVP_MODES)
        batches = list(batches)
        if not batches:
            raise ConfigError("batches is empty; give at least one (x, y) batch")
        self.model, self.loss_fn, self.batches = model, loss_fn, batches
        self.param_names, self.params = _select_params(model, params)
        sizes = torch.tensor([len(x) for x, _ in batches], dtype=torch.float64)
        self.weights = (sizes / sizes.sum()).tolist()  # batch means -> mean over all samples
        self.n_samples = int(sizes.sum())
        n = sum(p.numel() for p in self.params)
        self.shape = (n, n)
        self.dtype = self.params[0].dtype
        self.device = self.params[0].device
        if int(chunk_size) < 1:
            raise ConfigError(f"chunk_size={chunk_size!r} must be at least 1")
        self.chunk_size = int(chunk_size)
        self.mode = _resolve_mode(mode, self.device)
        self._fallback = "cached" if mode == "auto" else "reverse"
        self.n_products = 0
        self.mode_seconds: dict[str, float] = {}  # filled when "auto" measures the modes
        self._graphs: list[tuple[Tensor, ...]] | None = None
        if self.mode == "cached":
            self._graphs = self._build_graphs()

    def __repr__(self) -> str:
        return (f"HessianOperator(P={self.shape[0]}, samples={self.n_samples}, mode={self.mode}, "
                f"device={self.device}, dtype={self.dtype})")

    # ----------------------------------------------------------------------------- products
    def __matmul__(self, v) -> Tensor:
        v = torch.as_tensor(v)
        if v.ndim not in (1, 2) or v.shape[0] != self.shape[0]:
            raise ConfigError(f"expected a vector or matrix with {self.shape[0]} rows, "
                              f"got shape {tuple(v.shape)}")
        V = v.reshape(self.shape[0], -1).to(self.device, self.dtype)
        with eval_mode(self.model), _math_attention():
            out = self._products(V)
        self.n_products += V.shape[1]
        return out[:, 0] if v.ndim == 1 else out

    def matvec(self, v: Tensor) -> Tensor:
        return self @ v

    def to_scipy(self) -> LinearOperator:
        """Float64 SciPy LinearOperator moving vectors to and from ``self.device``."""
        return scipy_operator(self)

    def _products(self, V: Tensor) -> Tensor:
        if self.mode == "auto":
            return self._choose_mode(V)
        if self.mode == "forward":
            try:
                return self._forward(V)
            except (RuntimeError, NotImplementedError):
                # An op without a forward-mode (or batching) rule: use double backward instead.
                self.mode = self._fallback
                if self.mode == "cached":
                    self._graphs = self._build_graphs()
        graphs = self._graphs if self.mode == "cached" else None
        return self._double_backward(V, graphs)

    def _choose_mode(self, V: Tensor) -> Tensor:
        """Answer the first column in forward and cached mode, keep the faster mode."""
        first, answer = V[:, :1], None
        for mode in ("forward", "cached"):
            try:
                if mode == "cached":
                    self._graphs = self._build_graphs()
                out, self.mode_seconds[mode] = self._timed(mode, first)
            except (RuntimeError, NotImplementedError):  # no forward rule, or out of memory
                if mode == "cached":
                    self._graphs = None
                continue
            answer = out if answer is None else answer
        if not self.mode_seconds:
            raise RuntimeError("neither forward nor cached Hessian-vector products ran")
        self.mode = min(self.mode_seconds, key=self.mode_seconds.get)
        if self.mode != "cached":
            self._graphs = None  # free the graph memory
        self.n_products += 2 * len(self.mode_seconds) - 1  # trial products beyond the answer
        if V.shape[1] == 1:
            return answer
        return torch.cat([answer, self._products(V[:, 1:])], dim=1)

    def _timed(self, mode: str, V: Tensor) -> tuple[Tensor, float]:
        """Run one mode twice on V (the first call warms it up); seconds of the second."""
        run = self._forward if mode == "forward" else (
            lambda W: self._double_backward(W, self._graphs))
        run(V)
        sync(self.device)
        t0 = time.perf_counter()
        out = run(V)
        sync(self.device)
        return out, time.perf_counter() - t0

    def _forward(self, V: Tensor) -> Tensor:
        """Forward-over-reverse: jvp of the functional gradient, per column or vmapped."""
        primals = tuple(p.detach() for p in self.params)
        out = torch.zeros_like(V)
        # Outer autograd is not needed (torch.func transforms ignore it); no_grad keeps the
        # untouched parameters from recording a graph during per-layer products.
        with torch.no_grad():
            for (x, y), w in zip(self.batches, self.weights):
                def loss(*ps, x=x, y=y):
                    return self.loss_fn(functional_call(
                        self.model, dict(zip(self.param_names, ps)), (x,)), y)

                grad_fn = grad(loss, argnums=tuple(range(len(primals))))

                def hvp(v: Tensor) -> Tensor:
                    tangents = tuple(vector_to_params(v, primals))
                    return flatten(jvp(grad_fn, primals, tangents)[1])

                if self.chunk_size == 1:
                    for c in range(V.shape[1]):
                        out[:, c].add_(hvp(V[:, c]), alpha=w)
                else:
                    batched = vmap(hvp, in_dims=1, out_dims=1, chunk_size=self.chunk_size)
                    out.add_(batched(V), alpha=w)
        return out

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
