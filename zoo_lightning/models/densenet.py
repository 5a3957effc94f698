"""DenseNet: "Densely Connected Convolutional Networks" (Huang et al., 2017).

DenseNet-121/161/169/201 follow torchvision's layout and parameter counts (bottleneck BN-ReLU-1x1,
BN-ReLU-3x3 layers, transitions halving the channels). DenseNet-BC-100 (k=12) is the paper's CIFAR
model: three dense blocks of 16 bottleneck layers, compression 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_lightning.models.registry import register_model

__all__ = ["DenseNet"]


class _DenseLayer(nn.Module):
    def __init__(self, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, bn_size * growth_rate, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(bn_size * growth_rate)
        self.conv2 = nn.Conv2d(bn_size * growth_rate, growth_rate, 3, padding=1, bias=False)
        self.drop_rate = drop_rate

    def forward(self, features: list[Tensor]) -> Tensor:
        x = self.conv1(F.relu(self.norm1(torch.cat(features, 1))))
        x = self.conv2(F.relu(self.norm2(x)))
        return F.dropout(x, p=self.drop_rate, training=self.training) if self.drop_rate else x


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_channels: int, growth_rate: int, bn_size: int, drop_rate: float) -> None:
        super().__init__()
        for i in range(num_layers):
            self[f"denselayer{i + 1}"] = _DenseLayer(in_channels + i * growth_rate, growth_rate, bn_size, drop_rate)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for layer in self.values():
            features.append(layer(features))  # each layer sees every earlier feature map
        return torch.cat(features, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(in_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2, 2)


class DenseNet(nn.Module):
    """Dense blocks joined by compressing transitions.

    Args:
        growth_rate: channels each layer adds (k).
        block_config: layers per dense block.
        num_init_features: channels of the stem.
        bn_size: bottleneck width as a multiple of k.
        compression: share of channels a transition keeps.
        drop_rate: dropout after each layer.
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (7x7/2 conv + max-pool) or ``"cifar"`` (3x3/1 conv).
    """

    def __init__(
        self,
        growth_rate: int = 32,
        block_config: Sequence[int] = (6, 12, 24, 16),
        num_init_features: int = 64,
        bn_size: int = 4,
        compression: float = 0.5,
        drop_rate: float = 0.0,
        num_classes: int = 10,
        stem: str = "cifar",
    ) -> None:
        super().__init__()
        if stem == "imagenet":
            layers = [
                ("conv0", nn.Conv2d(3, num_init_features, 7, stride=2, padding=3, bias=False)),
                ("norm0", nn.BatchNorm2d(num_init_features)),
                ("relu0", nn.ReLU(inplace=True)),
                ("pool0", nn.MaxPool2d(3, stride=2, padding=1)),
            ]
        else:  # the CIFAR DenseNets start with a plain conv, normalized by the first dense layer
            layers = [("conv0", nn.Conv2d(3, num_init_features, 3, padding=1, bias=False))]
        self.features = nn.Sequential()
        for name, module in layers:
            self.features.add_module(name, module)
        channels = num_init_features
        for i, num_layers in enumerate(block_config):
            self.features.add_module(
                f"denseblock{i + 1}", _DenseBlock(num_layers, channels, growth_rate, bn_size, drop_rate)
            )
            channels += num_layers * growth_rate
            if i != len(block_config) - 1:
                out = int(channels * compression)
                self.features.add_module(f"transition{i + 1}", _Transition(channels, out))
                channels = out
        self.features.add_module("norm5", nn.BatchNorm2d(channels))
        self.classifier = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.features(x), inplace=True)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


@register_model
def densenet121(**kwargs: Any) -> DenseNet:
    """DenseNet-121 from "Densely Connected Convolutional Networks" (Huang et al., 2017)."""
    return DenseNet(32, (6, 12, 24, 16), 64, **kwargs)


@register_model
def densenet161(**kwargs: Any) -> DenseNet:
    """DenseNet-161 from "Densely Connected Convolutional Networks" (Huang et al., 2017)."""
    return DenseNet(48, (6, 12, 36, 24), 96, **kwargs)


@register_model
def densenet169(**kwargs: Any) -> DenseNet:
    """DenseNet-169 from "Densely Connected Convolutional Networks" (Huang et al., 2017)."""
    return DenseNet(32, (6, 12, 32, 32), 64, **kwargs)


@register_model
def densenet201(**kwargs: Any) -> DenseNet:
    """DenseNet-201 from "Densely Connected Convolutional Networks" (Huang et al., 2017)."""
    return DenseNet(32, (6, 12, 48, 32), 64, **kwargs)


@register_model
def densenet_bc100(**kwargs: Any) -> DenseNet:
    """DenseNet-BC-100 (k=12) for CIFAR from "Densely Connected Convolutional Networks" (Huang et al., 2017)."""
    return DenseNet(12, (16, 16, 16), 24, **kwargs)
