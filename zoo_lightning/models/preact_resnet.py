"""Pre-activation ResNets: "Identity Mappings in Deep Residual Networks" (He et al., 2016) and the
CIFAR Wide ResNets built from the same block, "Wide Residual Networks" (Zagoruyko & Komodakis, 2016).

Each block runs BN-ReLU before its convolutions, so the shortcut path stays a clean identity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from zoo_lightning.models.registry import register_model
from zoo_lightning.models.resnet import _stem, conv1x1, conv3x3, drop_path_rates

__all__ = ["PreActBlock", "PreActResNet", "WideResNet"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 twice; a 1x1 projection of the pre-activated input where the shape changes."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, dropout: float = 0.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = conv1x1(inplanes, planes, stride) if stride != 1 or inplanes != planes else None
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return stochastic_depth(out, self.drop_path, "row", self.training) + identity


class PreActResNet(nn.Module):
    """Stages of pre-activation blocks, each after the first halving the resolution.

    Args:
        layers: blocks per stage.
        planes: channels per stage.
        num_classes: classifier outputs.
        stem: ``"cifar"`` (3x3/1 conv, normalized by the first block) or ``"imagenet"`` (7x7/2 conv,
            BN-ReLU, max-pool).
        stem_width: channels of the stem convolution.
        dropout: between the two convolutions of each block (WRN uses 0.3 on CIFAR).
        drop_path: stochastic depth rate of the last block, rising linearly from 0 at the first.
    """

    def __init__(
        self,
        layers: Sequence[int],
        planes: Sequence[int],
        num_classes: int = 10,
        stem: str = "cifar",
        stem_width: int = 64,
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.conv1, self.maxpool = _stem(stem, stem_width)
        if stem == "imagenet":  # He et al.'s pre-activation ImageNet nets normalize before the max-pool
            self.maxpool = nn.Sequential(nn.BatchNorm2d(stem_width), nn.ReLU(inplace=True), self.maxpool)
        inplanes, stages = stem_width, []
        rates = iter(drop_path_rates(drop_path, sum(layers)))
        for i, (width, blocks) in enumerate(zip(planes, layers)):
            for j in range(blocks):
                stages.append(
                    PreActBlock(
                        inplanes, width, stride=2 if i > 0 and j == 0 else 1, dropout=dropout, drop_path=next(rates)
                    )
                )
                inplanes = width
        self.features = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(inplanes)  # the last blocks' output is not yet normalized
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inplanes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(self.maxpool(self.conv1(x)))
        return self.fc(torch.flatten(self.avgpool(self.relu(self.bn(x))), 1))


class WideResNet(PreActResNet):
    """WRN-d-k: three stages of (d-4)/6 pre-activation blocks at 16k, 32k and 64k channels.

    Args:
        depth: 6n+4 (16, 22, 28, 40).
        widen_factor: k.
        num_classes: classifier outputs.
        stem: ``"cifar"`` or ``"imagenet"``.
        dropout: between the convolutions of each block.
        drop_path: stochastic depth rate of the last block, rising linearly from 0 at the first.
    """

    def __init__(
        self,
        depth: int,
        widen_factor: int,
        num_classes: int = 10,
        stem: str = "cifar",
        dropout: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4 (16, 22, 28, 40), got {depth}.")
        n = (depth - 4) // 6
        widths = [16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        super().__init__((n, n, n), widths, num_classes, stem, stem_width=16, dropout=dropout, drop_path=drop_path)


@register_model
def preact_resnet18(**kwargs: Any) -> PreActResNet:
    """Pre-activation ResNet-18 from "Identity Mappings in Deep Residual Networks" (He et al., 2016)."""
    return PreActResNet((2, 2, 2, 2), (64, 128, 256, 512), **kwargs)


@register_model
def wrn28_10(**kwargs: Any) -> WideResNet:
    """WRN-28-10 from "Wide Residual Networks" (Zagoruyko & Komodakis, 2016)."""
    return WideResNet(28, 10, **kwargs)


@register_model
def wrn16_8(**kwargs: Any) -> WideResNet:
    """WRN-16-8 from "Wide Residual Networks" (Zagoruyko & Komodakis, 2016)."""
    return WideResNet(16, 8, **kwargs)
