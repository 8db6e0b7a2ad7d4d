"""PyHessian (Yao et al. 2020) on our batches: power iteration and Hutchinson's trace, kept as an
independent cross-check of the operator here and as the `engine = "pyhessian"` option.

PyHessian's `hessian` object is used as it is, through a subclass that counts its
Hessian-vector products: one per `dataloader_hv_product` (several batches), and with one batch,
one per backward pass through its retained gradient graph (an identity node at the graph's
root counts them; values pass through unchanged).
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ...params import eval_mode, flatten


@contextlib.contextmanager
def _saved_grads(params: Sequence[Tensor]):
    """Clear .grad for the block (PyHessian accumulates into it) and restore it after."""
    saved = [p.grad for p in params]
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, g in zip(params, saved):
            p.grad = g


@contextlib.contextmanager
def _pyhessian_context(model: nn.Module, dtype: torch.dtype):
    """Eval mode, PyHessian's vectors in the model's dtype (it draws them with the default
    dtype) and its create_graph warning silenced (`_saved_grads` breaks the cycle)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with eval_mode(model), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph")
            yield
    finally:
        torch.set_default_dtype(old)


class _CountingIdentity(torch.autograd.Function):
    """y = x; each backward pass through it adds one to `counter.n_products`."""

    @staticmethod
    def forward(ctx, x, counter):
        ctx.counter = counter
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        ctx.counter.n_products += 1
        return grad, None


def _counting_hessian(model: nn.Module, criterion: Callable, batches: list, cuda: bool):
    """A PyHessian `hessian` whose `n_products` counts its Hessian-vector products."""
    from pyhessian import hessian

    class CountingHessian(hessian):
        def __init__(self):
            self.n_products = 0
            if len(batches) == 1:  # one batch: PyHessian keeps its gradient graph
                super().__init__(model, criterion, data=batches[0], cuda=cuda)
                live = [i for i, g in enumerate(self.gradsH)
                        if isinstance(g, Tensor) and g.requires_grad]
                if live:  # every product runs a backward from these roots
                    self.gradsH[live[0]] = _CountingIdentity.apply(self.gradsH[live[0]], self)
            else:
                super().__init__(model, criterion, dataloader=batches, cuda=cuda)

        def dataloader_hv_product(self, v):
            self.n_products += 1
            return super().dataloader_hv_product(v)

    return CountingHessian()


@dataclass
class PyHessianSpectrum:
    eigenvalues: np.ndarray       # (top_n,) descending, float64
    eigenvectors: Tensor          # (P, top_n) on the model's device
    trace: float | None           # Hutchinson estimate (None when not asked for)
    trace_std_err: float | None
    n_products: int


def pyhessian_spectrum(model: nn.Module, criterion: Callable, batches: Sequence, top_n: int = 5,
                       tol: float = 1e-3, *, max_iter: int = 100,
                       trace_samples: int = 0) -> PyHessianSpectrum:
    """Top eigenpairs (and, with `trace_samples`, the trace) of the mean loss by PyHessian.

    PyHessian's ``tol`` is the relative change of the eigenvalue between two power iterations
    (not a residual bound) and power iteration finds the largest-|lambda| eigenvalues, which are
    the top ones unless a negative eigenvalue is larger in magnitude. The model's .grad and
    train/eval mode are left as they were.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    device, dtype = params[0].device, params[0].dtype
    trace = std_err = None
    with _saved_grads(params), _pyhessian_context(model, dtype):
        hess = _counting_hessian(model, criterion, list(batches), cuda=device.type == "cuda")
        vals, vecs = hess.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
        if trace_samples:
            values = np.asarray(hess.trace(maxIter=trace_samples, tol=0.0), dtype=np.float64)
            trace = float(values.mean())
            std_err = float(values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1
                            else np.nan)
        n_products = hess.n_products
        del hess  # drop the retained graph while the grads are still cleared
    vecs = torch.stack([flatten(v) for v in vecs], dim=1).detach()
    order = np.argsort(vals)[::-1]
    return PyHessianSpectrum(np.asarray(vals, dtype=np.float64)[order], vecs[:, order.copy()],
                             trace, std_err, n_products)


def pyhessian_engine(model: nn.Module, criterion: Callable, batches: Sequence, top_n: int = 5,
                     tol: float = 1e-3, *, max_iter: int = 100) -> tuple[np.ndarray, Tensor, int]:
    """Top eigenpairs by PyHessian (power iteration with deflation), as an independent check.

    Returns ``(eigvals descending, eigvecs (P, top_n) on the model's device, n_products)``;
    see ``pyhessian_spectrum``.
    """
    res = pyhessian_spectrum(model, criterion, batches, top_n, tol, max_iter=max_iter)
    return res.eigenvalues, res.eigenvectors, res.n_products
