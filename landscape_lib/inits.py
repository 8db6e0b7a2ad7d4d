"""Weight initializers (docs/studies.md, section E), chosen by name.

Every entry of `INITIALIZERS` is an in-place function

    fn_(tensor, *, fan_in, fan_out, layer_index, depth, momentum, generator, **options)

that re-draws one weight tensor. The keyword context (fans, 1-based layer index, number of
layers, the optimizer's momentum and an optional `torch.Generator`) is supplied by
`init_model_`; each function names only what it uses and swallows the rest. Any other
keyword-only parameter is a user option (e.g. `gain` of `scaled-orthogonal`), listed by
`initializer_options`.

Fans are those of `torch.nn.init`: for a conv weight (out, in/groups, *kernel),
fan_in = in/groups * prod(kernel) and fan_out = out * prod(kernel), so linear and conv layers
follow the same formulas.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .params import weight_layers
from .registry import Registry

# Keywords init_model_ always passes; everything else an initializer declares is an option.
CONTEXT = ("fan_in", "fan_out", "layer_index", "depth", "momentum", "generator")

INITIALIZERS = Registry("initializer", exclude=("tensor", *CONTEXT))
initializer_options = INITIALIZERS.options  # user options of an initializer with their defaults


@INITIALIZERS.register("default")
def default_(tensor: torch.Tensor, **_) -> torch.Tensor:
    """PyTorch's own initialization, left as it is (weights and biases untouched)."""
    return tensor


@INITIALIZERS.register("lecun")
def lecun_(tensor: torch.Tensor, *, generator=None, **_) -> torch.Tensor:
    """LeCun normal: W ~ N(0, 1/n_in), i.e. std = sqrt(1/n_in)."""
    # Kaiming with the linear gain (1) is exactly LeCun normal.
    return nn.init.kaiming_normal_(tensor, mode="fan_in", nonlinearity="linear",
                                   generator=generator)


@INITIALIZERS.register("xavier")
def xavier_(tensor: torch.Tensor, *, generator=None, **_) -> torch.Tensor:
    """Xavier (Glorot) normal: W ~ N(0, 2/(n_in + n_out))."""
    return nn.init.xavier_normal_(tensor, generator=generator)


@INITIALIZERS.register("kaiming")
def kaiming_(tensor: torch.Tensor, *, generator=None, **_) -> torch.Tensor:
    """Kaiming (He) normal: W ~ N(0, 2/n_in), i.e. std = sqrt(2/n_in)."""
    return nn.init.kaiming_normal_(tensor, mode="fan_in", nonlinearity="relu",
                                   generator=generator)


@INITIALIZERS.register("orthogonal")
def orthogonal_(tensor: torch.Tensor, *, generator=None, **_) -> torch.Tensor:
    """Orthogonal: the weight, flattened to (out, rest), has orthonormal rows or columns."""
    return nn.init.orthogonal_(tensor, generator=generator)


@INITIALIZERS.register("scaled-orthogonal")
def scaled_orthogonal_(tensor: torch.Tensor, *, gain: float = 0.5, generator=None,
                       **_) -> torch.Tensor:
    """Scaled orthogonal: an orthogonal matrix times `gain` (0.5 by default), W W^T = gain^2 I."""
    return nn.init.orthogonal_(tensor, gain=gain, generator=generator)


@INITIALIZERS.register("l-momentum")
def l_momentum_(tensor: torch.Tensor, *, momentum: float, generator=None,
                **_) -> torch.Tensor:
    """L-Momentum: W ~ U(-sqrt(6/n_in), sqrt(6/n_in)), then W <- W * sqrt(alpha / Var(W)).

    alpha = momentum**2, with `momentum` the optimizer's momentum (first beta for Adam-family
    optimizers), so that the entries' variance is exactly alpha after scaling. Var(W) is the
    population variance of the drawn entries.
    """
    # Kaiming uniform with the ReLU gain sqrt(2) has bound sqrt(2) * sqrt(3/n_in) = sqrt(6/n_in).
    nn.init.kaiming_uniform_(tensor, mode="fan_in", nonlinearity="relu", generator=generator)
    with torch.no_grad():
        return tensor.mul_(torch.sqrt(momentum ** 2 / tensor.var(correction=0)))


def emergence_std(n_in: int, layer_index: int, depth: int) -> float:
    """std = sqrt(2/n_in) * nu_l, nu_l = (1/sqrt(d_in)) * (1 + ln l / ln d), d_in = n_in.

    With a single layer (d == 1, ln d = 0) the depth term is dropped: nu = 1/sqrt(d_in).
    """
    nu = 1.0 / math.sqrt(n_in)
    if depth > 1:
        nu *= 1.0 + math.log(layer_index) / math.log(depth)
    return math.sqrt(2.0 / n_in) * nu


@INITIALIZERS.register("emergence")
def emergence_(tensor: torch.Tensor, *, fan_in: int, layer_index: int, depth: int,
               generator=None, **_) -> torch.Tensor:
    """Emergence-promoting (layer-depth scaled): W ~ N(0, std^2), std = sqrt(2/n_in) * nu_l.

    nu_l = (1/sqrt(d_in)) * (1 + ln l / ln d) for layer l (1-based) of d layers, d_in = n_in;
    nu = 1/sqrt(d_in) when d == 1. Deeper layers get up to twice the first layer's scale.
    """
    std = emergence_std(fan_in, layer_index, depth)
    return nn.init.normal_(tensor, 0.0, std, generator=generator)


@torch.no_grad()
def init_model_(model: nn.Module, name: str, *, momentum: float = 0.9,
                generator: torch.Generator | None = None, **options) -> nn.Module:
    """Re-initialize every Linear/Conv weight of `model` in place with initializer `name`.

    Layers are numbered 1..depth in module order (depth = number of such layers). Their biases
    are zeroed, except with `default`, which changes nothing. Norm layers are left alone.
    `momentum` feeds `l-momentum`; `generator` (on the weights' device) makes the draw
    independent of the global RNG, otherwise seed with `torch.manual_seed`. Unknown options
    raise ConfigError.
    """
    fn = INITIALIZERS.get(name)
    INITIALIZERS.check_options(name, options)
    layers = weight_layers(model)
    for index, layer in enumerate(layers, start=1):
        fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
        fn(layer.weight, fan_in=fan_in, fan_out=fan_out, layer_index=index, depth=len(layers),
           momentum=momentum, generator=generator, **options)
        if name != "default" and layer.bias is not None:
            layer.bias.zero_()
    return model
