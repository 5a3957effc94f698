"""AlexNet: "ImageNet Classification with Deep Convolutional Neural Networks" (Krizhevsky et al., 2012).

The ImageNet variant is torchvision's single-tower one (64-192-384-256-256 channels, from
"One weird trick", Krizhevsky 2014). The CIFAR variant keeps the five conv layers and three
fully connected ones but starts with a 3x3/1 conv and uses 1024-wide hidden layers, sized for 32x32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from zoo_lightning.models.registry import register_model

__all__ = ["AlexNet"]


class AlexNet(nn.Module):
    """Five convolutions with three max-pools, then three fully connected layers with dropout.

    Args:
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (11x11/4 first conv, 6x6 pooling, 4096-wide head) or ``"cifar"``
            (3x3/1 first conv, 2x2 pooling, 1024-wide head).
        dropout: before the first two fully connected layers.
    """

    def __init__(self, num_classes: int = 10, stem: str = "cifar", dropout: float = 0.5) -> None:
        super().__init__()
        imagenet = stem == "imagenet"
        first = nn.Conv2d(3, 64, 11, stride=4, padding=2) if imagenet else nn.Conv2d(3, 64, 3, padding=1)
        pool = (lambda: nn.MaxPool2d(3, 2)) if imagenet else (lambda: nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(
            first,
            nn.ReLU(inplace=True),
            pool(),
            nn.Conv2d(64, 192, 5 if imagenet else 3, padding=2 if imagenet else 1),
            nn.ReLU(inplace=True),
            pool(),
            nn.Conv2d(192, 384, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            pool(),
        )
        grid, hidden = (6, 4096) if imagenet else (2, 1024)
        self.avgpool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(256 * grid * grid, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model
def alexnet(**kwargs: Any) -> AlexNet:
    """AlexNet from "ImageNet Classification with Deep Convolutional Neural Networks" (Krizhevsky et al., 2012)."""
    return AlexNet(**kwargs)
