"""VGG: "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015).

A table of layer configurations and :func:`make_layers` build VGG-11/13/16/19, with or without
BatchNorm. The ImageNet head is torchvision's (7x7 pooling, two 4096-wide layers); the CIFAR head is
the 512-wide one the CIFAR literature uses, on the 1x1 map the five max-pools leave of a 32x32 image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from zoo_lightning.models.registry import register_model

__all__ = ["VGG", "make_layers", "CONFIGS"]

# Channels of each 3x3 conv; "M" is a 2x2 max-pool.
CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def make_layers(config: Sequence[int | str], batch_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in config:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        layers.append(nn.Conv2d(in_channels, int(v), 3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(int(v)))
        layers.append(nn.ReLU(inplace=True))
        in_channels = int(v)
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """Plain stacks of 3x3 convolutions and max-pools, then a fully connected head.

    Args:
        features: the convolutional part (:func:`make_layers`).
        num_classes: classifier outputs.
        stem: ``"imagenet"``: 7x7 adaptive pooling and 4096-wide layers; ``"cifar"``: 1x1 pooling and
            512-wide layers.
        dropout: after each of the two hidden fully connected layers.
    """

    def __init__(
        self, features: nn.Sequential, num_classes: int = 10, stem: str = "cifar", dropout: float = 0.5
    ) -> None:
        super().__init__()
        self.features = features
        pool, hidden = (7, 4096) if stem == "imagenet" else (1, 512)
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = nn.Sequential(
            nn.Linear(512 * pool * pool, hidden),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(True),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:  # features of the caller's may have convolutions without one
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _vgg(config: str, batch_norm: bool, **kwargs: Any) -> VGG:
    return VGG(make_layers(CONFIGS[config], batch_norm), **kwargs)


@register_model
def vgg11(**kwargs: Any) -> VGG:
    """VGG-11 (configuration A) from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("A", False, **kwargs)


@register_model
def vgg11_bn(**kwargs: Any) -> VGG:
    """VGG-11 with BatchNorm from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("A", True, **kwargs)


@register_model
def vgg13(**kwargs: Any) -> VGG:
    """VGG-13 (configuration B) from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("B", False, **kwargs)


@register_model
def vgg13_bn(**kwargs: Any) -> VGG:
    """VGG-13 with BatchNorm from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("B", True, **kwargs)


@register_model
def vgg16(**kwargs: Any) -> VGG:
    """VGG-16 (configuration D) from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("D", False, **kwargs)


@register_model
def vgg16_bn(**kwargs: Any) -> VGG:
    """VGG-16 with BatchNorm from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("D", True, **kwargs)


@register_model
def vgg19(**kwargs: Any) -> VGG:
    """VGG-19 (configuration E) from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("E", False, **kwargs)


@register_model
def vgg19_bn(**kwargs: Any) -> VGG:
    """VGG-19 with BatchNorm from "Very Deep Convolutional Networks for Large-Scale Image Recognition" (Simonyan & Zisserman, 2015)."""
    return _vgg("E", True, **kwargs)
