"""Small convolutional baseline (the CNN beside the ViTs in docs/studies.md B and E)."""
from __future__ import annotations

from torch import nn

from ..errors import ConfigError
from .base import MODELS


def conv_stage(c_in: int, c_out: int, batch_norm: bool) -> list[nn.Module]:
    """3x3 conv -> (BN) -> ReLU; the conv has a bias only when there is no BN to absorb it."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(c_out))
    return layers + [nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Conv stages (2x2 max-pool between stages), global average pool, linear classifier.

    Pooling only *between* stages keeps an 8x8 digit image usable with three stages (8->4->2).
    """

    def __init__(self, in_channels: int, num_classes: int, widths=(32, 64, 128),
                 batch_norm: bool = True):
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1:
            raise ConfigError(f"widths={widths} must be a non-empty list of positive integers")
        layers: list[nn.Module] = []
        c_in = in_channels
        for i, width in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: odd sizes never reach 0
            layers += conv_stage(c_in, width, batch_norm)
            c_in = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


@MODELS.register("cnn")
def cnn(*, in_channels: int, image_size: int, num_classes: int, widths=(32, 64, 128),
        batch_norm: bool = True) -> SmallCNN:
    """Small CNN: conv-BN-ReLU stages of the given widths, global pool, linear head."""
    return SmallCNN(in_channels, num_classes, widths, batch_norm)
