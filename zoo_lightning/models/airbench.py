"""Airbench: the CIFAR-10 speedrun networks of "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (Jordan, 2024).

A 2x2 patch convolution (meant to be set by patch whitening, see
:class:`~zoo_lightning.callbacks.PatchWhitening`) and GELU, then three groups of
conv - max-pool - BatchNorm - GELU - conv - BatchNorm - GELU, a global max-pool and a bias-free
linear layer whose logits are scaled by 1/9. BatchNorm keeps its weight frozen at 1 and updates its
running statistics fast (PyTorch momentum 0.4); every conv starts as the identity on its first
``in_channels`` filters (dirac init). ``airbench95`` widens the groups to 128, 384, 384; ``airbench96`` doubles the widths and adds a third conv to
each group, with a residual connection over the last two.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo_lightning.models.registry import register_model

__all__ = ["Airbench", "airbench94", "airbench95", "airbench96"]


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm whose weight stays 1: only the bias learns (eps 1e-12, momentum 0.4)."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 3, padding="same", bias=False)
    with torch.no_grad():  # the first in_channels filters pass their input through unchanged
        nn.init.dirac_(conv.weight[:in_channels])
    return conv


class ConvGroup(nn.Module):
    """conv - max-pool 2 - BN - GELU - conv - BN - GELU; with ``residual``, one more conv - BN - GELU
    added to the group's output."""

    def __init__(self, in_channels: int, channels: int, residual: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv(in_channels, channels)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(channels)
        self.conv2 = _conv(channels, channels)
        self.norm2 = FrozenScaleBatchNorm(channels)
        self.act = nn.GELU()
        self.conv3 = _conv(channels, channels) if residual else None
        self.norm3 = FrozenScaleBatchNorm(channels) if residual else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        if self.conv3 is None or self.norm3 is None:  # both set with residual, neither without
            return self.act(self.norm2(self.conv2(x)))
        y = self.act(self.norm2(self.conv2(x)))
        return x + self.act(self.norm3(self.conv3(y)))


class Airbench(nn.Module):
    """The airbench network.

    Args:
        num_classes: outputs of the linear layer.
        widths: channels of the three groups.
        residual: the third conv per group with a residual over the last two (airbench96).
        whiten_width: filters of the 2x2 patch convolution (2 x 3 x 2 x 2 = 24 for patch whitening).
        scale: multiplies the logits.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (64, 256, 256),
        residual: bool = False,
        whiten_width: int = 24,
        scale: float = 1 / 9,
    ) -> None:
        super().__init__()
        self.whiten = nn.Conv2d(3, whiten_width, 2, padding=0, bias=True)
        self.act = nn.GELU()
        channels = [whiten_width, *widths]
        self.layers = nn.Sequential(*[ConvGroup(c_in, c_out, residual) for c_in, c_out in zip(channels, channels[1:])])
        self.pool = nn.AdaptiveMaxPool2d(1)  # MaxPool2d(3) of the 3x3 map at 32 px; any size elsewhere
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        x = self.layers(self.act(self.whiten(x)))
        return self.fc(torch.flatten(self.pool(x), 1)) * self.scale


@register_model
def airbench94(num_classes: int = 10, stem: str = "cifar", **kwargs: Any) -> Airbench:
    """airbench94 from "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (Jordan, 2024)."""
    return Airbench(num_classes, **kwargs)


@register_model
def airbench95(num_classes: int = 10, stem: str = "cifar", **kwargs: Any) -> Airbench:
    """airbench95 (widths 128, 384, 384) from "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (Jordan, 2024)."""
    return Airbench(num_classes, **{"widths": (128, 384, 384), **kwargs})


@register_model
def airbench96(num_classes: int = 10, stem: str = "cifar", **kwargs: Any) -> Airbench:
    """airbench96 (doubled widths, residual third convs) from "94% on CIFAR-10 in 3.29 Seconds on a Single GPU" (Jordan, 2024)."""
    return Airbench(num_classes, **{"widths": (128, 512, 512), "residual": True, **kwargs})
