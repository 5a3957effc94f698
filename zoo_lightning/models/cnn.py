"""A small plain CNN: the quick baseline and smoke-test backbone."""

from __future__ import annotations

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
    """A 3x3 conv-BN-ReLU stem, then stages of two such layers, each stage halving the resolution.

    Args:
        num_classes: classifier outputs.
        stem: ``"cifar"`` starts at full resolution; ``"imagenet"`` adds a 4x4 stride-4 patchify
            conv so 224x224 inputs cost about what 56x56 would.
        widths: channels of the stem and of each later stage.
        dropout: before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 10,
        stem: str = "cifar",
        widths: tuple[int, int, int] = (32, 64, 128),
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        first = widths[0]
        if stem == "imagenet":
            self.stem: nn.Module = nn.Sequential(
                nn.Conv2d(3, first, 4, stride=4, bias=False), nn.BatchNorm2d(first), nn.ReLU(inplace=True)
            )
        else:
            self.stem = _conv_bn_relu(3, first)
        # Full resolution gets one conv only: it costs the most per channel.
        stages, in_channels = [nn.MaxPool2d(2)], first
        for width in widths[1:]:
            stages += [_conv_bn_relu(in_channels, width), _conv_bn_relu(width, width), nn.MaxPool2d(2)]
            in_channels = width
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(dropout), nn.Linear(in_channels, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.avgpool(self.features(self.stem(x))))


@register_model
def cnn(**kwargs: Any) -> SimpleCNN:
    """A small plain CNN (VGG-style conv-BN-ReLU stages with max-pooling), the fast baseline."""
    return SimpleCNN(**kwargs)
