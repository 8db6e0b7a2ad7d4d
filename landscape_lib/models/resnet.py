"""CIFAR ResNet-18 (He et al. 2016, CIFAR variant: 3x3 stem, no max-pool) and a no-skip twin."""
from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .base import MODELS


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1 x)))) + shortcut(x)); with skip=False the "+ shortcut" is gone.

    The shortcut is the identity, or a 1x1 conv + BN projection when the shape changes;
    without skips there is no shortcut module at all.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, skip: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = skip
        self.shortcut = None
        if skip:
            needs_projection = stride != 1 or c_in != c_out
            self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False),
                                           nn.BatchNorm2d(c_out))
                             if needs_projection else nn.Identity())

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


class ResNet(nn.Module):
    """3x3 stem conv-BN-ReLU, four stages of BasicBlocks (widths w, 2w, 4w, 8w), pool, linear."""

    def __init__(self, in_channels: int, num_classes: int, blocks=(2, 2, 2, 2), width: int = 64,
                 skip: bool = True):
        super().__init__()
        if int(width) != width or width < 1:
            raise ConfigError(f"width={width!r} must be a positive integer")
        width = int(width)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages, c_in = [], width
        for i, n in enumerate(blocks):
            c_out, stride = width * 2 ** i, 1 if i == 0 else 2
            stage = [BasicBlock(c_in if j == 0 else c_out, c_out, stride if j == 0 else 1, skip)
                     for j in range(n)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.pool(x).flatten(1))


@MODELS.register("resnet18")
def resnet18(*, in_channels: int, image_size: int, num_classes: int, width: int = 64) -> ResNet:
    """CIFAR ResNet-18: 3x3 stem, no max-pool, BasicBlocks [2, 2, 2, 2] with BN."""
    return ResNet(in_channels, num_classes, (2, 2, 2, 2), width, skip=True)


@MODELS.register("resnet18-noskip")
def resnet18_noskip(*, in_channels: int, image_size: int, num_classes: int,
                    width: int = 64) -> ResNet:
    """ResNet-18 without any skip connection (plain 18-layer net; shortcut projections removed)."""
    return ResNet(in_channels, num_classes, (2, 2, 2, 2), width, skip=False)
