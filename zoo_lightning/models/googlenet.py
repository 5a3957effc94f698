"""GoogLeNet (Inception v1): "Going Deeper with Convolutions" (Szegedy et al., 2015).

Laid out as torchvision's GoogLeNet (BatchNorm after every conv, and a 3x3 conv in the branch the
paper gives as 5x5, which is where torchvision's parameter count comes from). In training, with
``aux_logits=True``, it returns :class:`GoogLeNetOutputs` (logits, aux2, aux1), the two auxiliary
classifiers on inception 4d and 4a; in eval mode, a plain logits tensor. The ImageNet stem's layers
have torchvision's names, so its state dict loads as it is.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo_lightning.models.registry import register_model

__all__ = ["GoogLeNet", "GoogLeNetOutputs", "Inception", "InceptionAux"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The ImageNet stem's layers were once a Sequential named `stem`; checkpoints from then still load.
_OLD_STEM_NAMES = {"stem.0.": "conv1.", "stem.2.": "conv2.", "stem.3.": "conv3."}


def _rename_old_stem(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    for old, new in _OLD_STEM_NAMES.items():
        for key in [k for k in state_dict if k.startswith(prefix + old)]:
            state_dict[prefix + new + key[len(prefix + old) :]] = state_dict.pop(key)


class GoogLeNetOutputs(NamedTuple):
    logits: Tensor
    aux_logits2: Tensor | None
    aux_logits1: Tensor | None


class BasicConv2d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, **kwargs: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3; 3x3 max-pool-1x1) concatenated on channels."""

    def __init__(
        self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int, pool_proj: int
    ) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(
            BasicConv2d(in_channels, ch3x3red, kernel_size=1), BasicConv2d(ch3x3red, ch3x3, kernel_size=3, padding=1)
        )
        self.branch3 = nn.Sequential(
            BasicConv2d(in_channels, ch5x5red, kernel_size=1), BasicConv2d(ch5x5red, ch5x5, kernel_size=3, padding=1)
        )
        self.branch4 = nn.Sequential(
            nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True), BasicConv2d(in_channels, pool_proj, kernel_size=1)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier: 4x4 average pool, 1x1 conv to 128, two fully connected layers."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.7) -> None:
        super().__init__()
        self.conv = BasicConv2d(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(F.adaptive_avg_pool2d(x, (4, 4)))
        return self.fc2(self.dropout(F.relu(self.fc1(torch.flatten(x, 1)), inplace=True)))


class GoogLeNet(nn.Module):
    """Nine inception modules in three groups, with optional auxiliary classifiers.

    Args:
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (7x7/2 conv, max-pools, 1x1 and 3x3 convs: 224 -> 28) or ``"cifar"``
            (one 3x3 conv to 192 channels at full resolution, as CIFAR GoogLeNets do).
        aux_logits: build the two auxiliary classifiers (used in training only).
        dropout: before the final classifier.
        dropout_aux: inside the auxiliary classifiers.
        transform_input: turn inputs normalized with the ImageNet mean/std into the [-1, 1] scale
            that torchvision's ImageNet weights were trained on (they expect it).
    """

    def __init__(
        self,
        num_classes: int = 10,
        stem: str = "cifar",
        aux_logits: bool = True,
        dropout: float = 0.2,
        dropout_aux: float = 0.7,
        transform_input: bool = False,
    ) -> None:
        super().__init__()
        self.aux_logits, self.transform_input = aux_logits, transform_input
        self.imagenet_stem = stem == "imagenet"
        if self.imagenet_stem:  # torchvision's names: conv1, maxpool1, conv2, conv3, maxpool2
            self.conv1 = BasicConv2d(3, 64, kernel_size=7, stride=2, padding=3)
            self.maxpool1 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.conv2 = BasicConv2d(64, 64, kernel_size=1)
            self.conv3 = BasicConv2d(64, 192, kernel_size=3, padding=1)
            self.maxpool2 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.register_load_state_dict_pre_hook(_rename_old_stem)
            self.maxpool3 = nn.MaxPool2d(3, stride=2, ceil_mode=True)
            self.maxpool4 = nn.MaxPool2d(2, stride=2, ceil_mode=True)
        else:
            self.stem = BasicConv2d(3, 192, kernel_size=3, padding=1)
            self.maxpool3 = nn.MaxPool2d(3, stride=2, padding=1)  # 32 -> 16
            self.maxpool4 = nn.MaxPool2d(3, stride=2, padding=1)  # 16 -> 8
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes, dropout_aux) if aux_logits else None
        self.aux2 = InceptionAux(528, num_classes, dropout_aux) if aux_logits else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1024, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.01, a=-2, b=2)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _stem(self, x: Tensor) -> Tensor:
        if self.transform_input:  # undo the ImageNet normalization, then scale [0, 1] to [-1, 1]
            std = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
            mean = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            x = x * (std / 0.5) + (mean - 0.5) / 0.5
        if not self.imagenet_stem:
            return self.stem(x)
        return self.maxpool2(self.conv3(self.conv2(self.maxpool1(self.conv1(x)))))

    def forward(self, x: Tensor) -> GoogLeNetOutputs | Tensor:
        x = self.inception3b(self.inception3a(self._stem(x)))
        x = self.inception4a(self.maxpool3(x))
        heads = self.aux_logits and self.training
        aux1 = self.aux1(x) if heads and self.aux1 is not None else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if heads and self.aux2 is not None else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        logits = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        return GoogLeNetOutputs(logits, aux2, aux1) if heads else logits


@register_model
def googlenet(**kwargs: Any) -> GoogLeNet:
    """GoogLeNet (Inception v1) from "Going Deeper with Convolutions" (Szegedy et al., 2015)."""
    return GoogLeNet(**kwargs)
