"""Optimizers described as data, chosen by name (docs/studies.md, sections A and E).

Implementations come from `torch.optim` and the `pytorch_optimizer` package; this module only
says which class a name means, with which defaults, and how one training step is driven:

- `sgd`, `sgd-momentum`, `adagrad`, `rmsprop`, `adam`, `adamw`, `adafactor`: torch.optim.
- `lion`, `sophia` (SophiaH, Hutchinson Hessian diagonal), `lamb`: pytorch_optimizer.
- `sam-<base>`: SAM (Foret et al. 2020, pytorch_optimizer.SAM) around any registered base
  except `sophia`, resolved on demand (`sam-adam`, `sam-sgd-momentum`, ...).

Common settings. `create_optimizer` takes `lr`, `weight_decay` and `momentum` for every
optimizer. `momentum` goes where the spec's `momentum_arg` says: SGD-momentum's `momentum`,
the first beta of Adam-family optimizers that take `betas` (Adam, AdamW, Lion, Sophia, LAMB),
or nowhere (plain SGD, AdaGrad, RMSProp, Adafactor). The L-Momentum initializer assumes this
mapping: its alpha is momentum**2, the same number the optimizer receives.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import pytorch_optimizer
import torch
from pytorch_optimizer.optimizer.utils.model import disable_running_stats, enable_running_stats

from .errors import ConfigError, UnknownNameError
from .registry import Entry, Registry, signature_options

# Listed options: the spec's own defaults (e.g. SAM's rho), not every constructor argument.
OPTIMIZERS = Registry("optimizer", options=lambda entry: entry.obj.defaults)

SAM_PREFIX = "sam-"
SAM_RHO = 0.05  # Foret et al. 2020's default neighbourhood radius


def constructor_defaults(factory: Callable) -> dict[str, Any]:
    """Keyword arguments `factory` names (not `params`, not **kwargs), with their defaults."""
    return signature_options(factory, exclude=("params", "base_optimizer"))


@dataclass(frozen=True)
class OptimizerSpec:
    """One optimizer: its class and how to build and step it.

    name: registry name. factory: optimizer class (or callable) taking (params, **kwargs).
    defaults: keyword arguments applied before the caller's. needs_closure: `step` must get
    the closure because it re-evaluates the loss (SAM's second pass). create_graph: the
    closure's backward must keep the graph (Sophia's Hutchinson Hessian-vector products).
    momentum_arg: where the common `momentum` setting goes, "momentum", "betas" (first
    beta) or None. accepted: keyword arguments the factory takes, with their defaults
    (read from its signature unless given).
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    defaults: dict = field(default_factory=dict)
    needs_closure: bool = False
    create_graph: bool = False
    description: str = ""
    momentum_arg: str | None = None
    accepted: dict = field(default=None, repr=False)

    def __post_init__(self):
        if self.accepted is None:  # frozen: set once, here
            object.__setattr__(self, "accepted", constructor_defaults(self.factory))


def _register(spec: OptimizerSpec) -> None:
    OPTIMIZERS.register(spec.name, spec)


_register(OptimizerSpec(
    "sgd", torch.optim.SGD,
    description="Plain SGD: w <- w - lr * g."))
_register(OptimizerSpec(
    "sgd-momentum", torch.optim.SGD, momentum_arg="momentum",
    description="SGD with heavy-ball momentum (momentum 0.9 by default)."))
_register(OptimizerSpec(
    "adagrad", torch.optim.Adagrad,
    description="AdaGrad: step divided by the root of the summed squared gradients."))
_register(OptimizerSpec(
    "rmsprop", torch.optim.RMSprop,
    description="RMSProp: step divided by the root of an EMA of squared gradients."))
_register(OptimizerSpec(
    "adam", torch.optim.Adam, momentum_arg="betas",
    description="Adam: bias-corrected EMAs of the gradient and its square."))
_register(OptimizerSpec(
    "adamw", torch.optim.AdamW, momentum_arg="betas",
    description="AdamW: Adam with decoupled weight decay."))
_register(OptimizerSpec(
    "lion", pytorch_optimizer.Lion, momentum_arg="betas",
    description="Lion: sign of an interpolation of momentum and gradient."))
_register(OptimizerSpec(
    "sophia", pytorch_optimizer.SophiaH, momentum_arg="betas", create_graph=True,
    description="Sophia (SophiaH): momentum divided by an EMA of a Hutchinson estimate of the "
                "Hessian diagonal, clipped element-wise."))
_register(OptimizerSpec(
    "adafactor", torch.optim.Adafactor,
    description="Adafactor: second moment factored into row and column statistics."))
_register(OptimizerSpec(
    "lamb", pytorch_optimizer.Lamb, momentum_arg="betas",
    description="LAMB: Adam update rescaled per layer by a trust ratio."))


@functools.lru_cache(maxsize=None)
def _sam_spec(base_name: str) -> OptimizerSpec:
    base = OPTIMIZERS.get(base_name)
    return OptimizerSpec(
        SAM_PREFIX + base_name,
        functools.partial(pytorch_optimizer.SAM, base_optimizer=base.factory),
        defaults={**base.defaults, "rho": SAM_RHO},
        needs_closure=True,
        create_graph=base.create_graph,
        description=f"SAM (Foret et al. 2020, rho 0.05) around {base_name}: the {base_name} "
                    "step uses the gradient at the (first-order) worst point within radius rho.",
        momentum_arg=base.momentum_arg,
        accepted={**base.accepted, **constructor_defaults(pytorch_optimizer.SAM)},
    )


def _sam_bases() -> list[str]:
    # SAM restores the weights in place before the base step; Sophia's Hessian-vector
    # product then needs the perturbed pass's graph, whose saved weights that restore changed.
    return [name for name in OPTIMIZERS.names() if not OPTIMIZERS.get(name).create_graph]


def _resolve_sam(name: str) -> Entry | None:
    """`sam-<base>` for every registered base optimizer except sophia."""
    if not name.startswith(SAM_PREFIX):
        return None
    base_name = name[len(SAM_PREFIX):]
    bases = _sam_bases()
    if base_name not in bases:
        close = [SAM_PREFIX + b for b in difflib.get_close_matches(base_name, bases)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(f"unknown optimizer '{name}'{hint}; SAM wraps one of: "
                               f"{', '.join(bases)}")
    spec = _sam_spec(base_name)
    return Entry(spec.name, spec)


OPTIMIZERS.add_resolver(_resolve_sam)


def get_spec(name: str) -> OptimizerSpec:
    """The spec registered (or resolved, for `sam-<base>`) under `name`."""
    return OPTIMIZERS.get(name)


def known_options() -> set[str]:
    """Keyword arguments at least one optimizer takes (besides the common settings)."""
    known = set(constructor_defaults(pytorch_optimizer.SAM))
    for entry in OPTIMIZERS:
        known |= set(entry.obj.accepted)
    return known


def _momentum_setting(spec: OptimizerSpec, momentum: float) -> dict:
    if spec.momentum_arg == "momentum":
        return {"momentum": momentum}
    if spec.momentum_arg == "betas":
        betas = spec.defaults.get("betas", spec.accepted["betas"])
        return {"betas": (momentum, *betas[1:])}
    return {}


def create_optimizer(name: str, params, *, lr: float, weight_decay: float = 0.0,
                     momentum: float = 0.9, **kwargs) -> torch.optim.Optimizer:
    """Build optimizer `name` over `params`.

    Precedence: spec defaults < common settings (lr, weight_decay, momentum, see the module
    doc for where momentum goes) < explicit `kwargs` (an explicit `betas` replaces the
    momentum mapping). Only the arguments the optimizer takes are passed, so one set of
    settings serves every optimizer; a kwarg that no optimizer takes is a ConfigError.
    """
    spec = get_spec(name)
    unknown = sorted(set(kwargs) - known_options())
    if unknown:
        raise ConfigError(f"no optimizer takes option(s) {', '.join(unknown)}; "
                          f"accepted: {', '.join(sorted(known_options()))}")
    settings = {**spec.defaults, "lr": lr, "weight_decay": weight_decay,
                **_momentum_setting(spec, momentum), **kwargs}
    return spec.factory(params, **{k: v for k, v in settings.items() if k in spec.accepted})


def _detach_grads(optimizer: torch.optim.Optimizer) -> None:
    # A create_graph backward leaves grads that hold their graph, which holds the parameters:
    # a reference cycle (memory leak). Keep the values, drop the graph.
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None:
                p.grad = p.grad.detach()


@contextlib.contextmanager
def _quiet_create_graph():
    # PyTorch warns about the grad/graph reference cycle; _detach_grads breaks it after the step.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Using backward\(\) with create_graph")
        yield


@contextlib.contextmanager
def running_stats_frozen(model: torch.nn.Module | None):
    """BatchNorm running statistics of ``model`` are not updated inside (None: no-op).

    Every BN momentum is 0 inside and restored after (None included), with pytorch_optimizer's
    own helpers (used by its GSAM/WSAM steps; reference SAM code, davda54/sam's bypass_bn,
    does the same). ``num_batches_tracked`` still counts; it is read only when momentum is
    None, i.e. when statistics are re-estimated as a plain average, never while training.
    """
    if model is None:
        yield
        return
    disable_running_stats(model)
    try:
        yield
    finally:
        enable_running_stats(model)


def optimizer_step(optimizer: torch.optim.Optimizer, spec: OptimizerSpec,
                   closure: Callable[[], torch.Tensor], *,
                   model: torch.nn.Module | None = None) -> torch.Tensor:
    """One training step for any registry entry; returns the loss at the current weights.

    `closure` zeroes grads, runs forward, computes the loss, calls
    `loss.backward(create_graph=spec.create_graph)` and returns the loss. It is called once
    here (gradients at the current weights), and once more inside `step` when
    `spec.needs_closure` (SAM's perturbed pass). The first loss comes back detached, still on
    its device (no host sync). ``model``: the module the closure runs; SAM's perturbed pass
    then leaves its BatchNorm running statistics alone (as reference SAM code does), so after
    a step they are those of the first pass, at the unperturbed weights.
    """
    with _quiet_create_graph() if spec.create_graph else contextlib.nullcontext():
        loss = closure()
        if spec.needs_closure:
            with running_stats_frozen(model):
                optimizer.step(closure)
        else:
            optimizer.step()
    if spec.create_graph:
        _detach_grads(optimizer)
    return loss.detach()
