"""Fully connected network on flattened images."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError, check_choice
from .base import MODELS

ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    # docs/studies.md E (the chapter's MLP): one learned negative slope per layer, 0.25 at
    # start (PyTorch's default; the initializers touch Linear/Conv weights only).
    "prelu": nn.PReLU,
}


class MLP(nn.Sequential):
    """Flatten -> [Linear -> activation] per hidden width -> Linear to the classes."""

    def __init__(self, in_features: int, num_classes: int, hidden=(256, 256),
                 activation: str = "relu"):
        check_choice("activation", activation, ACTIVATIONS)
        hidden = list(hidden)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ConfigError(f"hidden={hidden} must be a list of positive integers")
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), ACTIVATIONS[activation]()]
            width = int(h)
        layers.append(nn.Linear(width, num_classes))
        super().__init__(*layers)


@MODELS.register("mlp")
def mlp(*, in_channels: int, image_size: int, num_classes: int, hidden=(256, 256),
        activation: str = "relu") -> MLP:
    """Multilayer perceptron on the flattened image (hidden widths, activation)."""
    return MLP(in_channels * image_size * image_size, num_classes, hidden, activation)
