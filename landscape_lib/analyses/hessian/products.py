"""Forward-over-reverse Hessian-vector products of one batch, eager, as CUDA graphs or compiled.

``ForwardProducts(model, loss_fn, names, params, batches, weights, ...)(V)`` returns
sum_i w_i H_i V over the batches (or micro-batches of them, ``split_pieces``) for the columns
of V (P, m): ``jvp`` of the functional ``grad`` of a ``functional_call`` (one forward pass
carrying the tangents, then its backward), with the columns batched by ``vmap`` ``chunk`` at a
time (the primal pass is shared among them). Memory grows with the columns per call times the
samples per call, so ``chunk`` columns over micro-batches of 1/``chunk`` of a batch need about
the memory of one column over the whole batch: a call of ``width`` columns goes over each
batch in ``ceil(split * width / chunk)`` parts (``split`` for a full chunk, the whole batch
for one column when ``split <= chunk``), never more samples x columns than a full chunk.
Options, each a candidate of ``bench/bench_hvp.py``:

- ``graph``: each width's product over all pieces captured once as a **CUDA graph** and
  replayed (static input and output buffers, one memory pool for all captures: they replay one
  at a time, each output is copied out), which removes the per-kernel launch and Python
  overhead that bounds forward mode on mid-sized nets. Widths 1 to ``chunk`` (no padded
  columns), so at most ``chunk`` captures; a width's first ``WARMUPS`` calls run eagerly (the
  warm-ups a capture needs, on its static input and a side stream, each answering its call),
  the next is captured and replayed, so a width used only once or twice (a per-layer step's
  ragged last chunk) costs no capture.
- ``compile``: ``torch.compile`` of the product (a ``torch.compile`` mode, e.g.
  ``"max-autotune-no-cudagraphs"``), every call ``chunk`` columns wide (zero columns pad a
  narrower one: H 0 = 0), so one width is compiled (and, with ``graph``, captured). The
  compiled function is kept for the process by the model's structure (``compiled_product``):
  parameters and buffers enter it as inputs and the model it traces is a private copy, so
  another checkpoint of the same architecture (a grid's next run) reuses it with no
  recompilation.
- ``autocast``: ``"bf16"`` runs the model under ``torch.autocast`` (loss, tangents and results
  stay in the parameters' dtype): not exact, measured against float32 in the bench.
- ``channels_last``: inputs and 4-d parameters in channels-last memory format (convolutions).

The model is not modified (parameters enter through ``functional_call``); the caller puts it
in eval mode and picks the attention kernel (``operator``).
"""
from __future__ import annotations

import contextlib
import copy
import types

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vmap

from ...errors import ConfigError
from . import precompiled

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
WARMUPS = 2  # eager calls of a width before its CUDA graph is captured (graph mode)
_COMPILED: dict[tuple, object] = {}  # compiled products of the process, by structure
BACKEND = "inductor"  # torch.compile backend of mode "compile" (tests: "aot_eager", faster)


def _channels_last(t: Tensor) -> Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else t


def split_pieces(batches, weights, split: int) -> list[tuple[Tensor, Tensor, float]]:
    """``(x, y, w)`` micro-batches: each batch in ``split`` nearly equal parts, each weighted by
    its share of the samples (the eval-mode loss is a per-sample mean, so the weighted sum of
    the parts' Hessians is the batch's Hessian exactly)."""
    out = []
    for (x, y), w in zip(batches, weights):
        n = len(x)
        parts = max(1, min(int(split), n))
        xs = torch.tensor_split(x, parts)
        ys = torch.tensor_split(y, parts) if y is not None else [None] * parts
        out += [(xi, yi, w * len(xi) / n) for xi, yi in zip(xs, ys)]
    return out


def _value(v):
    """An attribute as a hashable key: plain values themselves, tensors their shape and dtype,
    containers their items, anything else (a function, a hook) its repr, which names the
    object: another one gives another key (a compilation too many, never a wrong reuse)."""
    if isinstance(v, (bool, int, float, str, type(None))):
        return v
    if isinstance(v, Tensor):
        return ("tensor", tuple(v.shape), str(v.dtype))
    if isinstance(v, dict):
        return tuple((str(k), _value(x)) for k, x in v.items())
    if isinstance(v, (tuple, list)):
        return tuple(_value(x) for x in v)
    if isinstance(v, (set, frozenset)):
        return tuple(sorted(repr(x) for x in v))
    return repr(v)


def structure(module) -> tuple:
    """What decides a module tree's computation besides its parameters and buffers (inputs of
    the compiled product): every submodule's type and other attributes (strides, eps, heads,
    training, hooks, ...)."""
    if not isinstance(module, nn.Module):
        return (module,)  # a plain loss function: itself
    tensors = ("_parameters", "_buffers", "_modules")
    return tuple((name, type(m).__module__, type(m).__qualname__,
                  tuple(sorted((k, _value(v)) for k, v in vars(m).items() if k not in tensors)))
                 for name, m in module.named_modules())


def product_function(model: nn.Module, loss_fn, names: list[str], rest: list[str]):
    """``f(primals, others, x, y, V)`` = H V of the loss of one piece: ``primals`` the tensors
    of ``names`` (differentiated), ``others`` those of ``rest`` (the model's other parameters
    and its buffers), all entering ``functional_call``: nothing is read from the model's own
    tensors."""

    def product(primals, others, x: Tensor, y: Tensor, V: Tensor) -> Tensor:
        dtype, sizes = V.dtype, [p.numel() for p in primals]

        def loss(*ps):
            state = dict(zip(names, ps))
            state.update(zip(rest, others))
            out = functional_call(model, state, (x,))
            return loss_fn(out.to(dtype), y)

        g = grad(loss, argnums=tuple(range(len(primals))))

        def one(v: Tensor) -> Tensor:
            tangents = tuple(t.view_as(p) for t, p in zip(torch.split(v, sizes), primals))
            return torch.cat([t.reshape(-1).to(dtype) for t in jvp(g, primals, tangents)[1]])

        if V.shape[1] == 1:
            return one(V[:, 0])[:, None]
        return vmap(one, in_dims=1, out_dims=1)(V)

    return product


def compiled_product(model: nn.Module, loss_fn, names: list[str], rest: list[str],
                     mode: str, autocast=None):
    """The process' compiled ``product_function`` for this structure: model and loss settings
    (``structure``), tensor names, compile mode, autocast and TF32 flags. The first call of a
    structure traces a private copy of the model; a later model of the same structure (another
    checkpoint) gets the same compiled function, its tensors being inputs (dynamo then guards
    only their shapes, dtypes and strides). Each input signature's compilation is saved for
    later processes and loaded there (``precompiled.SavedProduct``; ``torch.compile`` where
    that fails). Each structure's function has a code object of its own: dynamo keeps its
    compilations per code object, at most ``recompile_limit`` (8) of them, which a grid's
    architectures would otherwise share."""
    flags = (mode, BACKEND, autocast, torch.backends.cuda.matmul.allow_tf32,
             torch.backends.cudnn.allow_tf32)
    key = (structure(model), structure(loss_fn), tuple(names), tuple(rest), *flags)
    if key not in _COMPILED:
        template = copy.deepcopy(model)
        loss = copy.deepcopy(loss_fn) if isinstance(loss_fn, nn.Module) else loss_fn
        fn = product_function(template, loss, names, rest)
        code = fn.__code__.replace(co_name=f"hessian_product_{len(_COMPILED)}")
        fn = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__,
                                fn.__closure__)
        inductor = BACKEND == "inductor"
        fallback = torch.compile(fn, backend=BACKEND, dynamic=False,
                                 mode=mode if inductor else None)
        options = {}
        if inductor and mode not in (None, "default"):  # a mode's options, given as options
            from torch._inductor import list_mode_options
            options = list_mode_options(mode, dynamic=False)
        stable = (f"{type(model).__module__}.{type(model).__qualname__}", tuple(names),
                  tuple(rest), *flags)
        _COMPILED[key] = precompiled.SavedProduct(
            fn, fallback, stable, key[:2], {"model": template, "loss": loss},
            {"backend": BACKEND, "options": {**options, "guard_filter_fn": precompiled.keep_guard}})
    return _COMPILED[key]


class ForwardProducts:
    """Forward-over-reverse products over weighted pieces (see the module docstring)."""

    def __init__(self, model: nn.Module, loss_fn, names: list[str], params: list[Tensor],
                 batches, weights, *, split: int = 1, chunk: int = 1, graph: bool = False,
                 compile: str | None = None, autocast: str | None = None,
                 channels_last: bool = False):
        if autocast is not None and autocast not in AUTOCAST:
            raise ConfigError(f"autocast={autocast!r} is not allowed; choose from: "
                              f"{', '.join(AUTOCAST)}")
        device = params[0].device
        if graph and device.type != "cuda":
            raise ConfigError("CUDA graphs (mode 'graph') need a CUDA device")
        prep = _channels_last if channels_last else (lambda t: t)
        self.primals = tuple(prep(p.detach()) for p in params)
        chosen = set(names)
        rest = [(n, t) for n, t in model.named_parameters() if n not in chosen]
        rest += list(model.named_buffers())
        self.others = tuple(prep(t.detach()) for _, t in rest)
        self.batches = [(prep(x), y) for x, y in batches]
        self.weights, self.split = list(weights), int(split)
        self._pieces: dict[int, list] = {}
        self.chunk, self.device = int(chunk), device
        self.autocast = AUTOCAST.get(autocast) if autocast else None
        self.columns = 0  # column-products over all pieces actually computed (warm-ups too)
        self.compiled = bool(compile)
        rest_names = [n for n, _ in rest]
        self._product = (compiled_product(model, loss_fn, names, rest_names, compile, autocast)
                         if compile else product_function(model, loss_fn, names, rest_names))
        self._graphs: dict | None = {} if graph else None
        self._warm: dict[int, list] = {}  # width -> [eager calls before its capture, input]
        self._pool = torch.cuda.graph_pool_handle() if graph else None

    def _context(self):
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())  # torch.func ignores outer autograd anyway
        if self.autocast is not None:
            stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast))
        return stack

    def pieces(self, width: int) -> list[tuple[Tensor, Tensor, float]]:
        """The micro-batches of a call of ``width`` columns (module docstring)."""
        if width not in self._pieces:
            parts = -(-self.split * width // self.chunk)
            self._pieces[width] = split_pieces(self.batches, self.weights, parts)
        return self._pieces[width]

    def _all(self, V: Tensor) -> Tensor:
        """sum_i w_i H_i V over the pieces."""
        out = torch.zeros_like(V)
        with self._context():
            for x, y, w in self.pieces(V.shape[1]):
                out.add_(self._product(self.primals, self.others, x, y, V), alpha=w)
        return out

    def _run(self, V: Tensor) -> Tensor:
        out = self._all(V)
        self.columns += V.shape[1]
        return out

    def _graphed(self, V: Tensor) -> Tensor:
        key = V.shape[1]
        warm = self._warm.setdefault(key, [0, V.clone()])  # eager calls so far, static input
        static_in = warm[1]
        static_in.copy_(V)
        if warm[0] < WARMUPS:
            # A width's first WARMUPS calls run eagerly on a side stream, each on the static
            # input the capture will use (as the warm-ups before a capture must: allocator,
            # cuDNN plans), and answer their call; a width used fewer times (a ragged last
            # chunk) is never captured. The answer is written into a tensor of the caller's
            # stream, so nothing allocated on the side stream leaves it.
            out = torch.empty_like(V)
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                out.copy_(self._run(static_in))
            torch.cuda.current_stream().wait_stream(stream)
            warm[0] += 1
            return out
        if key not in self._graphs:
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self._pool):
                static_out = self._all(static_in)
            self._graphs[key] = (g, static_out)
        g, static_out = self._graphs[key]
        g.replay()
        self.columns += V.shape[1]
        return static_out.clone()

    def __call__(self, V: Tensor) -> Tensor:
        """sum_i w_i H_i V, (P, m), in chunks of at most ``self.chunk`` columns."""
        m = V.shape[1]
        pad = self.compiled  # fixed shapes: a compiled width only (H 0 = 0)
        width = 1 if m == 1 and not pad else self.chunk
        out = torch.empty_like(V)
        for start in range(0, m, width):
            cols = V[:, start:start + width]
            n = cols.shape[1]
            if pad and n < width:
                cols = torch.cat([cols, cols.new_zeros(cols.shape[0], width - n)], 1)
            cols = cols.contiguous()
            hv = self._graphed(cols) if self._graphs is not None else self._run(cols)
            out[:, start:start + n] = hv[:, :n]
        return out
