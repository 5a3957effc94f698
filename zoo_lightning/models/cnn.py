"""A small plain CNN: the quick baseline and smoke-test backbone.

Four conv-BN-ReLU layers, each followed by a 2x2 max-pool, widths doubling from 32 to 256
(0.39M parameters, about 15M multiply-adds at 32x32). One convolution per resolution keeps a
training step cheap on a CPU; the last stage is the widest because at 4x4 it costs the least.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from zoo_lightning.models.registry import register_model

__all__ = ["SimpleCNN", "cnn"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SimpleCNN(nn.Module):
    """A conv-BN-ReLU stem, then stages of conv-BN-ReLU layers, each stage ending in a 2x2 max-pool.

    Args:
        num_classes: classifier outputs.
        stem: ``"cifar"``: a 3x3 conv at full resolution; ``"imagenet"``: a 4x4 stride-4 patchify
            conv, so 224x224 inputs cost about what 56x56 would.
        widths: channels of the stem and of each later stage.
        convs_per_stage: conv-BN-ReLU layers in each stage after the stem.
        dropout: before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 10,
        stem: str = "cifar",
        widths: Sequence[int] = (32, 64, 128, 256),
        convs_per_stage: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if len(widths) < 1 or convs_per_stage < 1:
            raise ValueError(f"cnn needs at least one width and one conv per stage, got {widths}, {convs_per_stage}.")
        first = widths[0]
        if stem == "imagenet":
            self.stem: nn.Module = nn.Sequential(
                nn.Conv2d(3, first, 4, stride=4, bias=False), nn.BatchNorm2d(first), nn.ReLU(inplace=True)
            )
        else:
            self.stem = _conv_bn_relu(3, first)
        stages: list[nn.Module] = [nn.MaxPool2d(2, ceil_mode=True)]
        in_channels = first
        for width in widths[1:]:
            for _ in range(convs_per_stage):
                stages.append(_conv_bn_relu(in_channels, width))
                in_channels = width
            # ceil_mode: a 1x1 map (a small input through the patchify stem) stays 1x1 instead of 0x0.
            stages.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(self.stem(x))))


@register_model
def cnn(**kwargs: Any) -> SimpleCNN:
    """A small plain CNN (VGG-style conv-BN-ReLU layers with max-pooling), the fast baseline."""
    return SimpleCNN(**kwargs)
