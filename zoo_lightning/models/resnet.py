"""ResNet and its variants: "Deep Residual Learning for Image Recognition" (He et al., 2016).

One family file: the ImageNet-style ResNet-18..152 (torchvision's layout and parameter counts with
the ImageNet stem), the CIFAR ResNets of the paper's section 4.2 (ResNet-20..110: three stages of
16/32/64 channels, parameter-free option-A shortcuts), and, as block options rather than copies,
squeeze-and-excitation (SE-ResNet), grouped convolutions (ResNeXt), wider bottlenecks (WRN-50-2) and
modulated deformable 3x3 convolutions in chosen stages (DCNv2, "Deformable ConvNets v2", Zhu et al., 2019).
Every ResNet takes stochastic depth (``drop_path``) and dropout before the classifier as options.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import DeformConv2d, stochastic_depth

from zoo_lightning.models.layers import ModulatedDeformConv2d, SqueezeExcite
from zoo_lightning.models.registry import register_model

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "CifarResNet"]

SE_REDUCTION = 16  # the SENet paper's r


def conv3x3(
    in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, deformable: bool = False
) -> nn.Conv2d | ModulatedDeformConv2d:
    if deformable:
        return ModulatedDeformConv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)
    return nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)


def drop_path_rates(drop_path: float, blocks: int) -> list[float]:
    """Stochastic depth (Huang et al., 2016): rates rising linearly from 0 at the first block to ``drop_path``
    at the last, as timm spaces them."""
    if not 0.0 <= drop_path < 1.0:
        raise ValueError(f"drop_path must be in [0, 1) (the stochastic-depth rate of the last block), got {drop_path}.")
    return [drop_path * i / max(1, blocks - 1) for i in range(blocks)]


def checked_deform_stages(deform_stages: Sequence[int], stages: int) -> set[int]:
    """The stage numbers (1 = ``layer1``) whose 3x3 convolutions are deformable, checked against the network's."""
    # A relation between two options (the network's stage count comes from its builder): no type can say it.
    wrong = [s for s in deform_stages if not 1 <= s <= stages]
    if wrong:
        raise ValueError(
            f"deform_stages {list(deform_stages)} names stages outside 1..{stages}, the stages of this "
            f"network (layer1..layer{stages}); e.g. deform_stages: [{stages - 1}, {stages}]."
        )
    return set(deform_stages)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or projection) shortcut."""

    expansion = 1

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        se: bool = False,
        drop_path: float = 0.0,
        deformable: bool = False,
    ) -> None:
        super().__init__()
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock supports only groups=1 and base_width=64 (use Bottleneck for ResNeXt/WRN).")
        self.conv1 = conv3x3(inplanes, planes, stride, deformable=deformable)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, deformable=deformable)
        self.bn2 = nn.BatchNorm2d(planes)
        self.se = SqueezeExcite(planes, planes // SE_REDUCTION) if se else nn.Identity()
        self.downsample = downsample
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(stochastic_depth(out, self.drop_path, "row", self.training) + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (stride here, as torchvision's "ResNet v1.5"), 1x1 expand by ``expansion``."""

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        se: bool = False,
        drop_path: float = 0.0,
        deformable: bool = False,
    ) -> None:
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = conv3x3(width, width, stride, groups, deformable)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        out_channels = planes * self.expansion
        self.se = SqueezeExcite(out_channels, out_channels // SE_REDUCTION) if se else nn.Identity()
        self.downsample = downsample
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.se(self.bn3(self.conv3(out)))
        return self.relu(stochastic_depth(out, self.drop_path, "row", self.training) + identity)


Block = type[BasicBlock] | type[Bottleneck]


def _stem(stem: str, width: int) -> tuple[nn.Conv2d, nn.Module]:
    """(conv1, maxpool): 7x7/2 + 3x3/2 max-pool for ImageNet, a 3x3/1 conv and no pooling for CIFAR."""
    if stem == "imagenet":
        return nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False), nn.MaxPool2d(3, stride=2, padding=1)
    return conv3x3(3, width), nn.Identity()


def _init_weights(model: nn.Module, zero_init_residual: bool) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, DeformConv2d)):  # a deformable conv's offsets stay at zero (its own init)
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:  # each residual branch starts as identity (Goyal et al., 2017)
        for m in model.modules():
            last_bn = getattr(m, "bn3", None) if isinstance(m, Bottleneck) else getattr(m, "bn2", None)
            if isinstance(m, (BasicBlock, Bottleneck)) and last_bn is not None:
                nn.init.zeros_(last_bn.weight)


class ResNet(nn.Module):
    """The ResNet of the paper's ImageNet experiments; also ResNeXt, WRN-50-2 and SE-ResNet by options.

    Args:
        block: ``BasicBlock`` or ``Bottleneck``.
        layers: blocks per stage.
        num_classes: classifier outputs.
        stem: ``"imagenet"`` (7x7/2 conv + max-pool) or ``"cifar"`` (3x3/1 conv, no max-pool).
        planes: base width of each stage (the block multiplies it by ``expansion``); the first stage
            keeps the resolution, every later one halves it.
        groups: grouped 3x3 convolutions (ResNeXt cardinality).
        width_per_group: bottleneck width per group (64 plain, 128 for WRN-50-2).
        se: squeeze-and-excitation on every block's residual branch (SE-ResNet).
        zero_init_residual: start every residual branch at zero.
        drop_path: stochastic depth: the probability that the last block's residual branch is skipped
            for an image in training, rising linearly from 0 at the first block.
        dropout: before the classifier, in training.
        deform_stages: stages (1 = ``layer1``) whose 3x3 convolutions are modulated deformable ones
            (:class:`~zoo_lightning.models.layers.ModulatedDeformConv2d`); DCNv2's choice is (2, 3, 4),
            every stage after the full-resolution first one.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        num_classes: int = 10,
        stem: str = "cifar",
        planes: Sequence[int] = (64, 128, 256, 512),
        groups: int = 1,
        width_per_group: int = 64,
        se: bool = False,
        zero_init_residual: bool = False,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        deform_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if len(planes) != len(layers):
            raise ValueError(f"planes {tuple(planes)} and layers {tuple(layers)} must have one entry per stage.")
        deformable = checked_deform_stages(deform_stages, len(layers))
        self.inplanes = 64
        self.groups, self.base_width, self.se = groups, width_per_group, se
        self._drop_paths = iter(drop_path_rates(drop_path, sum(layers)))  # one rate per block, in order
        self.conv1, self.maxpool = _stem(stem, self.inplanes)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.stages = len(layers)
        for i, (width, blocks) in enumerate(zip(planes, layers)):  # layer1, layer2, ... as torchvision names them
            setattr(
                self,
                f"layer{i + 1}",
                self._make_layer(block, width, blocks, stride=1 if i == 0 else 2, deformable=i + 1 in deformable),
            )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(planes[-1] * block.expansion, num_classes)
        _init_weights(self, zero_init_residual)

    def _make_layer(
        self, block: Block, planes: int, blocks: int, stride: int = 1, deformable: bool = False
    ) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * block.expansion, stride), nn.BatchNorm2d(planes * block.expansion)
            )

        def make(inplanes: int, stride: int = 1, downsample: nn.Module | None = None) -> nn.Module:
            return block(
                inplanes,
                planes,
                stride,
                downsample,
                groups=self.groups,
                base_width=self.base_width,
                se=self.se,
                drop_path=next(self._drop_paths),
                deformable=deformable,
            )

        layers = [make(self.inplanes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [make(self.inplanes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(1, self.stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


class ShortcutA(nn.Module):
    """The paper's parameter-free option-A shortcut: subsample by 2, zero-pad the new channels."""

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        pad = self.extra_channels // 2
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, pad, self.extra_channels - pad))


class CifarResNet(nn.Module):
    """The 6n+2-layer CIFAR ResNet: three stages of ``n`` basic blocks at 16, 32 and 64 channels.

    Args:
        depth: 6n+2 (20, 32, 44, 56, 110).
        num_classes: classifier outputs.
        stem: ``"cifar"`` (the paper's 3x3 conv) or ``"imagenet"`` (7x7/2 conv + max-pool, for
            large inputs such as 224x224).
        se: squeeze-and-excitation in every block.
        drop_path: stochastic depth rate of the last block, rising linearly from 0 at the first.
        dropout: before the classifier, in training.
        deform_stages: stages (1 = ``layer1``) whose 3x3 convolutions are modulated deformable ones;
            the ``dcn_`` builders take (2, 3), every stage after the full-resolution first one, as DCNv2
            does in the ImageNet ResNet.
    """

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        stem: str = "cifar",
        se: bool = False,
        drop_path: float = 0.0,
        dropout: float = 0.0,
        deform_stages: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}.")
        deformable = checked_deform_stages(deform_stages, 3)
        n = (depth - 2) // 6
        self._drop_paths = iter(drop_path_rates(drop_path, 3 * n))
        self.conv1, self.maxpool = _stem(stem, 16)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        self.inplanes = 16
        self.layer1 = self._make_layer(16, n, 1, se, 1 in deformable)
        self.layer2 = self._make_layer(32, n, 2, se, 2 in deformable)
        self.layer3 = self._make_layer(64, n, 2, se, 3 in deformable)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)
        _init_weights(self, zero_init_residual=False)

    def _make_layer(self, planes: int, blocks: int, stride: int, se: bool, deformable: bool) -> nn.Sequential:
        shortcut = ShortcutA(planes - self.inplanes) if stride != 1 or self.inplanes != planes else None

        def make(inplanes: int, stride: int = 1, shortcut: nn.Module | None = None) -> BasicBlock:
            drop_path = next(self._drop_paths)
            return BasicBlock(inplanes, planes, stride, shortcut, se=se, drop_path=drop_path, deformable=deformable)

        layers = [make(self.inplanes, stride, shortcut)]
        self.inplanes = planes
        layers += [make(planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))


def _resnet(block: Block, layers: Sequence[int], **kwargs: Any) -> ResNet:
    return ResNet(block, layers, **kwargs)


def _cifar_resnet(depth: int, **kwargs: Any) -> CifarResNet:
    return CifarResNet(depth, **kwargs)


@register_model
def resnet18(**kwargs: Any) -> ResNet:
    """ResNet-18 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), **kwargs)


@register_model
def resnet34(**kwargs: Any) -> ResNet:
    """ResNet-34 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _resnet(BasicBlock, (3, 4, 6, 3), **kwargs)


@register_model
def resnet50(**kwargs: Any) -> ResNet:
    """ResNet-50 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), **kwargs)


@register_model
def resnet101(**kwargs: Any) -> ResNet:
    """ResNet-101 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _resnet(Bottleneck, (3, 4, 23, 3), **kwargs)


@register_model
def resnet152(**kwargs: Any) -> ResNet:
    """ResNet-152 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _resnet(Bottleneck, (3, 8, 36, 3), **kwargs)


@register_model
def resnet20(**kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-20 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _cifar_resnet(20, **kwargs)


@register_model
def resnet32(**kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-32 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _cifar_resnet(32, **kwargs)


@register_model
def resnet44(**kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-44 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _cifar_resnet(44, **kwargs)


@register_model
def resnet56(**kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-56 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _cifar_resnet(56, **kwargs)


@register_model
def resnet110(**kwargs: Any) -> CifarResNet:
    """CIFAR ResNet-110 from "Deep Residual Learning for Image Recognition" (He et al., 2016)."""
    return _cifar_resnet(110, **kwargs)


@register_model
def seresnet18(**kwargs: Any) -> ResNet:
    """SE-ResNet-18 from "Squeeze-and-Excitation Networks" (Hu et al., 2018)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), **{"se": True, **kwargs})


@register_model
def seresnet34(**kwargs: Any) -> ResNet:
    """SE-ResNet-34 from "Squeeze-and-Excitation Networks" (Hu et al., 2018)."""
    return _resnet(BasicBlock, (3, 4, 6, 3), **{"se": True, **kwargs})


@register_model
def seresnet50(**kwargs: Any) -> ResNet:
    """SE-ResNet-50 from "Squeeze-and-Excitation Networks" (Hu et al., 2018)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), **{"se": True, **kwargs})


@register_model
def resnext50_32x4d(**kwargs: Any) -> ResNet:
    """ResNeXt-50 32x4d from "Aggregated Residual Transformations for Deep Neural Networks" (Xie et al., 2017)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), **{"groups": 32, "width_per_group": 4, **kwargs})


@register_model
def resnext29_32x4d(**kwargs: Any) -> ResNet:
    """CIFAR ResNeXt-29 32x4d (three stages) from "Aggregated Residual Transformations for Deep Neural Networks" (Xie et al., 2017)."""
    return _resnet(Bottleneck, (3, 3, 3), **{"planes": (64, 128, 256), "groups": 32, "width_per_group": 4, **kwargs})


@register_model
def wide_resnet50_2(**kwargs: Any) -> ResNet:
    """WRN-50-2 (bottlenecks twice as wide) from "Wide Residual Networks" (Zagoruyko & Komodakis, 2016)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), **{"width_per_group": 128, **kwargs})


# DCNv2 makes every 3x3 convolution of conv3-conv5 deformable: every stage after the first, full-resolution one.
# The CIFAR ResNets' three stages follow the same rule: (2, 3), at 16x16 and 8x8 for 32x32 inputs.
DCN_STAGES = {3: (2, 3), 4: (2, 3, 4)}


@register_model
def dcn_resnet18(**kwargs: Any) -> ResNet:
    """DCN ResNet-18 from "Deformable ConvNets v2: More Deformable, Better Results" (Zhu et al., 2019)."""
    return _resnet(BasicBlock, (2, 2, 2, 2), **{"deform_stages": DCN_STAGES[4], **kwargs})


@register_model
def dcn_resnet50(**kwargs: Any) -> ResNet:
    """DCN ResNet-50 from "Deformable ConvNets v2: More Deformable, Better Results" (Zhu et al., 2019)."""
    return _resnet(Bottleneck, (3, 4, 6, 3), **{"deform_stages": DCN_STAGES[4], **kwargs})


@register_model
def dcn_resnet20(**kwargs: Any) -> CifarResNet:
    """DCN CIFAR ResNet-20 from "Deformable ConvNets v2: More Deformable, Better Results" (Zhu et al., 2019)."""
    return _cifar_resnet(20, **{"deform_stages": DCN_STAGES[3], **kwargs})


@register_model
def dcn_resnet56(**kwargs: Any) -> CifarResNet:
    """DCN CIFAR ResNet-56 from "Deformable ConvNets v2: More Deformable, Better Results" (Zhu et al., 2019)."""
    return _cifar_resnet(56, **{"deform_stages": DCN_STAGES[3], **kwargs})
