"""EfficientNet-B0: "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019).

MBConv blocks (expansion, depthwise conv, squeeze-and-excitation, linear projection, stochastic
depth), laid out as torchvision's efficientnet_b0 so the parameter count matches with the ImageNet
stem. The CIFAR stem keeps stride 1 in the stem and the 24-channel stage.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from zoo_lightning.models.layers import ConvBNAct, SqueezeExcite
from zoo_lightning.models.registry import register_model

__all__ = ["EfficientNet", "MBConv"]

BN_EPS = 1e-5  # torchvision's (the paper's TensorFlow code uses 1e-3), so its ImageNet weights give its outputs


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation; a residual where shapes allow."""

    def __init__(self, inp: int, oup: int, kernel: int, stride: int, expand_ratio: int, drop_path: float) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, 1, activation=nn.SiLU, bn_eps=BN_EPS))
        layers += [
            ConvBNAct(hidden, hidden, kernel, stride=stride, groups=hidden, activation=nn.SiLU, bn_eps=BN_EPS),
            SqueezeExcite(hidden, max(1, inp // 4), activation=nn.SiLU),
            ConvBNAct(hidden, oup, 1, activation=None, bn_eps=BN_EPS),
        ]
        self.block = nn.Sequential(*layers)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = stochastic_depth(out, self.drop_path, "row", self.training) + x
        return out


class EfficientNet(nn.Module):
    """The B0 network: a 3x3 stem, seven MBConv stages, a 1x1 conv to 1280 channels.

    Args:
        num_classes: classifier outputs.
        stem: ``"imagenet"`` or ``"cifar"`` (stride 1 in the stem and the 24-channel stage).
        dropout: before the classifier.
        drop_path: stochastic-depth rate of the last block, rising linearly from 0 at the first.
    """

    # expansion, kernel, stride, input channels, output channels, repeats
    STAGES = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]

    def __init__(self, num_classes: int = 10, stem: str = "cifar", dropout: float = 0.2, drop_path: float = 0.2) -> None:
        super().__init__()
        cifar = stem == "cifar"
        layers: list[nn.Module] = [ConvBNAct(3, 32, 3, stride=1 if cifar else 2, activation=nn.SiLU, bn_eps=BN_EPS)]
        total = sum(stage[-1] for stage in self.STAGES)
        index = 0
        for i, (expand, kernel, stride, inp, oup, repeats) in enumerate(self.STAGES):
            stage = []
            for j in range(repeats):
                first_stride = 1 if cifar and i == 1 else stride
                stage.append(MBConv(inp if j == 0 else oup, oup, kernel, first_stride if j == 0 else 1, expand,
                                    drop_path * index / total))
                index += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvBNAct(320, 1280, 1, activation=nn.SiLU, bn_eps=BN_EPS))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(1280, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features**0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model
def efficientnet_b0(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B0 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return EfficientNet(**kwargs)
