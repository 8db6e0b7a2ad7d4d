"""Forward-over-reverse Hessian-vector products of one batch, eager, as CUDA graphs or compiled.

``ForwardProducts(model, loss_fn, names, params, ...)(i, x, y, V)`` returns H_i V for the mean
loss of batch i and the columns of V (P, m): ``jvp`` of the functional ``grad`` of a
``functional_call`` (one forward pass carrying the tangents, then its backward), with the
columns batched by ``vmap`` ``chunk`` at a time (the primal pass is shared, memory grows with
``chunk``). Options, each a candidate of ``bench/bench_hvp.py``:

- ``graph``: each (batch, width) product captured once as a **CUDA graph** and replayed (static
  input and output buffers, one memory pool for all captures: they replay one at a time and
  every output is copied out at once), which removes the per-kernel launch and Python overhead
  that bounds forward mode on mid-sized nets. Widths are 1 and ``chunk`` (a multi-column
  product's last chunk is padded with zero columns, H 0 = 0), so at most two captures per batch.
- ``compile``: ``torch.compile`` of the product (a ``torch.compile`` mode, e.g.
  ``"max-autotune-no-cudagraphs"``): minutes of compilation, for benchmarks and long runs.
- ``autocast``: ``"bf16"`` runs the model under ``torch.autocast`` (loss, tangents and results
  stay in the parameters' dtype): not exact, measured against float32 in the bench.
- ``channels_last``: inputs and 4-d parameters in channels-last memory format (convolutions).

The model is not modified (parameters enter through ``functional_call``); the caller puts it
in eval mode and picks the attention kernel (``operator``).
"""
from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from ...errors import ConfigError

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t


class ForwardProducts:
    """Per-batch forward-over-reverse products (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn, names: list[str], params: list[Tensor], *,
                 chunk: int = 1, graph: bool = False, compile: str | None = None,
                 autocast: str | None = None, channels_last: bool = False):
        if autocast is not None and autocast not in AUTOCAST:
            raise ConfigError(f"autocast={autocast!r} is not allowed; choose from: "
                              f"{', '.join(AUTOCAST)}")
        device = params[0].device
        if graph and device.type != "cuda":
            raise ConfigError("CUDA graphs (mode 'graph') need a CUDA device")
        self.model, self.loss_fn, self.names = model, loss_fn, names
        prep = _channels_last if channels_last else (lambda t: t)
        self.primals = tuple(prep(p.detach()) for p in params)
        self.sizes = [p.numel() for p in params]
        self.prep_input = prep
        self.chunk, self.device = int(chunk), device
        self.autocast = AUTOCAST.get(autocast) if autocast else None
        self.columns = 0  # column-products actually computed (warm-ups included)
        self.compiled = bool(compile)
        fn = self._product
        self._fn = torch.compile(fn, mode=compile, dynamic=False) if compile else fn
        self._graphs: dict | None = {} if graph else None
        self._pool = torch.cuda.graph_pool_handle() if graph else None

    def _context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())  # torch.func ignores outer autograd anyway
        if self.autocast is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast))
        return stack

    def _product(self, x: Tensor, y: Tensor, V: Tensor) -> Tensor:
        """H_batch V for the columns of V (vmapped when there are several)."""
        names, primals, sizes, dtype = self.names, self.primals, self.sizes, V.dtype

        def loss(*ps):
            out = functional_call(self.model, dict(zip(names, ps)), (x,))
            return self.loss_fn(out.to(dtype), y)

        g = grad(loss, argnums=tuple(range(len(primals))))

        def one(v: Tensor) -> Tensor:
            tangents = tuple(t.view_as(p) for t, p in zip(torch.split(v, sizes), primals))
            return torch.cat([t.reshape(-1).to(dtype) for t in jvp(g, primals, tangents)[1]])

        if V.shape[1] == 1:
            return one(V[:, 0])[:, None]
        return vmap(one, in_dims=1, out_dims=1)(V)

    def _run(self, x, y, V):
        with self._context():
            out = self._fn(x, y, V)
        self.columns += V.shape[1]
        return out

    def _graphed(self, i: int, x: Tensor, y: Tensor, V: Tensor) -> Tensor:
        key = (i, V.shape[1])
        if key not in self._graphs:
            static_in = V.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):  # warm-up outside the capture (allocator, cuDNN plans)
                    self._run(x, y, static_in)
            torch.cuda.current_stream().wait_stream(stream)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self._pool), self._context():
                static_out = self._fn(x, y, static_in)
            self._graphs[key] = (g, static_in, static_out)
        g, static_in, static_out = self._graphs[key]
        static_in.copy_(V)
        g.replay()
        self.columns += V.shape[1]
        return static_out.clone()

    def __call__(self, i: int, x: Tensor, y: Tensor, V: Tensor) -> Tensor:
        """H_i V, (P, m), in chunks of ``self.chunk`` columns."""
        x = self.prep_input(x)
        m = V.shape[1]
        width = 1 if m == 1 else self.chunk
        pad = self._graphs is not None or self.compiled  # fixed shapes
        out = torch.empty_like(V)
        for start in range(0, m, width):
            cols = V[:, start:start + width]
            n = cols.shape[1]
            if pad and n < width:  # a captured / compiled width: H 0 = 0
                cols = torch.cat([cols, cols.new_zeros(cols.shape[0], width - n)], 1)
            cols = cols.contiguous()
            hv = self._graphed(i, x, y, cols) if self._graphs is not None else self._run(x, y, cols)
            out[:, start:start + n] = hv[:, :n]
        return out
