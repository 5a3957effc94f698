"""EfficientNet B0-B7: "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019).

MBConv blocks (expansion, depthwise conv, squeeze-and-excitation, linear projection, stochastic
depth) in B0's seven stages, scaled by the paper's compound scaling: ``width_mult`` multiplies every
stage's channels (rounded to multiples of 8), ``depth_mult`` every stage's block count (rounded up),
and ``resolution`` is the side the network resizes its input to. B1-B7 are B0 with the published
multipliers and dropout, laid out as torchvision's ``efficientnet_bN`` so that the parameter counts
match with the ImageNet stem. The CIFAR stem keeps stride 1 in the stem and the 24-channel stage.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.ops import stochastic_depth

from zoo_lightning.models.layers import ConvBNAct, SqueezeExcite, make_divisible
from zoo_lightning.models.registry import register_model

__all__ = ["EfficientNet", "MBConv"]

BN_EPS = 1e-5  # torchvision's (the paper's TensorFlow code uses 1e-3), so its ImageNet weights give its outputs


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation; a residual where shapes allow."""

    def __init__(
        self,
        inp: int,
        oup: int,
        kernel: int,
        stride: int,
        expand_ratio: int,
        drop_path: float,
        bn_eps: float = BN_EPS,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        hidden = inp * expand_ratio
        self.use_res_connect = stride == 1 and inp == oup
        conv_bn_act = functools.partial(ConvBNAct, bn_eps=bn_eps, bn_momentum=bn_momentum)
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(conv_bn_act(inp, hidden, 1, activation=nn.SiLU))
        layers += [
            conv_bn_act(hidden, hidden, kernel, stride=stride, groups=hidden, activation=nn.SiLU),
            SqueezeExcite(hidden, max(1, inp // 4), activation=nn.SiLU),
            conv_bn_act(hidden, oup, 1, activation=None),
        ]
        self.block = nn.Sequential(*layers)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        if self.use_res_connect:
            out = stochastic_depth(out, self.drop_path, "row", self.training) + x
        return out


class EfficientNet(nn.Module):
    """B0's 3x3 stem, seven MBConv stages and 1x1 head conv, scaled in width, depth and resolution.

    Args:
        num_classes: classifier outputs.
        stem: ``"imagenet"`` or ``"cifar"`` (stride 1 in the stem and the 24-channel stage).
        width_mult: channels of every layer, times B0's, rounded to a multiple of 8 (the paper's beta^phi).
        depth_mult: blocks of every stage, times B0's, rounded up (the paper's alpha^phi).
        resolution: the side the network resizes its input to (bilinear) before the stem, so that a
            search can vary it beside the multipliers (the paper's gamma^phi); None takes the input
            at the size the data gives it.
        dropout: before the classifier.
        drop_path: stochastic-depth rate of the last block, rising linearly from 0 at the first.
        bn_eps, bn_momentum: BatchNorm's; B5-B7 use 1e-3 and 0.01, as torchvision's.
    """

    # expansion, kernel, stride, input channels, output channels, repeats: B0 (the paper's Table 1)
    STAGES = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ]

    def __init__(
        self,
        num_classes: int = 10,
        stem: str = "cifar",
        width_mult: float = 1.0,
        depth_mult: float = 1.0,
        resolution: int | None = None,
        dropout: float = 0.2,
        drop_path: float = 0.2,
        bn_eps: float = BN_EPS,
        bn_momentum: float = 0.1,
    ) -> None:
        super().__init__()
        if width_mult <= 0 or depth_mult <= 0:
            raise ValueError(f"width_mult and depth_mult must be > 0 (B0 is 1.0), got {width_mult} and {depth_mult}.")
        if resolution is not None and resolution < 8:
            raise ValueError(f"resolution must be >= 8 pixels, or null for the input's own size; got {resolution}.")
        self.resolution = resolution
        cifar = stem == "cifar"
        conv_bn_act = functools.partial(ConvBNAct, bn_eps=bn_eps, bn_momentum=bn_momentum)
        stages = [
            (
                expand,
                kernel,
                stride,
                make_divisible(inp * width_mult),
                make_divisible(oup * width_mult),
                math.ceil(repeats * depth_mult),
            )
            for expand, kernel, stride, inp, oup, repeats in self.STAGES
        ]
        layers: list[nn.Module] = [conv_bn_act(3, stages[0][3], 3, stride=1 if cifar else 2, activation=nn.SiLU)]
        total = sum(stage[-1] for stage in stages)
        index = 0
        for i, (expand, kernel, stride, inp, oup, repeats) in enumerate(stages):
            stage = []
            for j in range(repeats):
                first_stride = 1 if cifar and i == 1 else stride
                stage.append(
                    MBConv(
                        inp if j == 0 else oup,
                        oup,
                        kernel,
                        first_stride if j == 0 else 1,
                        expand,
                        drop_path * index / total,
                        bn_eps=bn_eps,
                        bn_momentum=bn_momentum,
                    )
                )
                index += 1
            layers.append(nn.Sequential(*stage))
        head_channels = 4 * stages[-1][4]
        layers.append(conv_bn_act(stages[-1][4], head_channels, 1, activation=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout, inplace=True), nn.Linear(head_channels, num_classes))
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
        if self.resolution is not None and x.shape[-2:] != (self.resolution, self.resolution):
            x = nn.functional.interpolate(
                x,
                size=(self.resolution, self.resolution),
                mode="bilinear",
                align_corners=False,
                antialias=self.resolution < x.shape[-1],
            )
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _efficientnet(
    width_mult: float, depth_mult: float, dropout: float, bn: dict[str, float] | None = None, /, **kwargs: Any
) -> EfficientNet:
    """The published multipliers and dropout (and BatchNorm settings), each overridden by the caller's kwargs
    (positional-only, so that ``kwargs`` may name them too)."""
    published = {"width_mult": width_mult, "depth_mult": depth_mult, "dropout": dropout, **(bn or {})}
    return EfficientNet(**{**published, **kwargs})


# The paper's resolutions (B0 224 ... B7 600) are for ImageNet; for any other data `resolution` is left to the
# user (None: the data's own size), so a B7 on 32x32 CIFAR does not silently compute at 600x600.
BN_B5_B7 = {"bn_eps": 1e-3, "bn_momentum": 0.01}


@register_model
def efficientnet_b0(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B0 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.0, 1.0, 0.2, **kwargs)


@register_model
def efficientnet_b1(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B1 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.0, 1.1, 0.2, **kwargs)


@register_model
def efficientnet_b2(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B2 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.1, 1.2, 0.3, **kwargs)


@register_model
def efficientnet_b3(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B3 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.2, 1.4, 0.3, **kwargs)


@register_model
def efficientnet_b4(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B4 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.4, 1.8, 0.4, **kwargs)


@register_model
def efficientnet_b5(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B5 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.6, 2.2, 0.4, BN_B5_B7, **kwargs)


@register_model
def efficientnet_b6(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B6 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(1.8, 2.6, 0.5, BN_B5_B7, **kwargs)


@register_model
def efficientnet_b7(**kwargs: Any) -> EfficientNet:
    """EfficientNet-B7 from "EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks" (Tan & Le, 2019)."""
    return _efficientnet(2.0, 3.1, 0.5, BN_B5_B7, **kwargs)
