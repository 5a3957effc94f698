"""MobileNetV2: "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Sandler et al., 2018).

torchvision's layout and parameter count with the ImageNet stem. The CIFAR stem drops two of the five
stride-2 steps (the first conv and the 24-channel stage), leaving a 4x4 map of a 32x32 image.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo_lightning.models.layers import ConvBNAct, make_divisible
from zoo_lightning.models.registry import register_model

__all__ = ["MobileNetV2", "InvertedResidual"]


class InvertedResidual(nn.Module):
    """1x1 expansion, 3x3 depthwise conv, linear 1x1 projection; a residual when shapes allow."""

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(inp * expand_ratio))
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, 1, activation=nn.ReLU6))
        layers += [
            ConvBNAct(hidden, hidden, 3, stride=stride, groups=hidden, activation=nn.ReLU6),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """Inverted-residual stages between a 3x3 stem and a 1x1 conv to 1280 channels.

    Args:
        num_classes: classifier outputs.
        stem: ``"imagenet"`` or ``"cifar"`` (stride 1 in the stem and the 24-channel stage).
        width_mult: channel multiplier.
        dropout: before the classifier.
    """

    # expansion t, channels c, repeats n, stride s of the first repeat
    SETTINGS = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]

    def __init__(
        self, num_classes: int = 10, stem: str = "cifar", width_mult: float = 1.0, dropout: float = 0.2
    ) -> None:
        super().__init__()
        cifar = stem == "cifar"
        inp = make_divisible(32 * width_mult)
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        features: list[nn.Module] = [ConvBNAct(3, inp, 3, stride=1 if cifar else 2, activation=nn.ReLU6)]
        for i, (t, c, n, s) in enumerate(self.SETTINGS):
            oup = make_divisible(c * width_mult)
            stride = 1 if cifar and i == 1 else s
            for j in range(n):
                features.append(InvertedResidual(inp, oup, stride if j == 0 else 1, t))
                inp = oup
        features.append(ConvBNAct(inp, self.last_channel, 1, activation=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(self.last_channel, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


@register_model
def mobilenet_v2(**kwargs: Any) -> MobileNetV2:
    """MobileNetV2 from "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (Sandler et al., 2018)."""
    return MobileNetV2(**kwargs)
