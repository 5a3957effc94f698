"""Building blocks shared by several families."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import DeformConv2d

__all__ = ["ConvBNAct", "ModulatedDeformConv2d", "SqueezeExcite", "make_divisible"]


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds channels to a multiple of ``divisor`` without dropping more than 10% (MobileNet's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class ConvBNAct(nn.Sequential):
    """Conv (no bias) -> BatchNorm -> activation, 'same' padding for odd kernels."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        activation: type[nn.Module] | None = nn.ReLU,
        bn_eps: float = 1e-5,
        bn_momentum: float = 0.1,
    ) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False
            ),
            nn.BatchNorm2d(out_channels, eps=bn_eps, momentum=bn_momentum),
        ]
        if activation is not None:
            layers.append(activation(inplace=True))
        super().__init__(*layers)


class SqueezeExcite(nn.Module):
    """Channel gating of "Squeeze-and-Excitation Networks" (Hu et al., 2018): pool, bottleneck, sigmoid."""

    def __init__(self, channels: int, squeeze_channels: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.activation = activation(inplace=True)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(nn.functional.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(scale)


class ModulatedDeformConv2d(DeformConv2d):
    """The modulated deformable convolution of "Deformable ConvNets v2" (Zhu et al., 2019), predicting its own
    offsets and mask.

    A convolution (``offset_weight``, ``offset_bias``: the same kernel, stride and padding) computes, at every
    output position, a 2-D offset for each of the k*k kernel taps and a modulation scalar for each;
    torchvision's ``deform_conv2d`` then samples the input bilinearly at the shifted taps, scales each sample by
    its modulation and applies ``weight``. The offset convolution starts at zero and the modulation is
    ``2 * sigmoid``, so that at initialization the taps sit on the plain grid with weight 1 and the layer
    computes exactly the ``nn.Conv2d`` with the same ``weight``: a plain network's weights load into it and it
    starts as that network. (The paper's modulation is ``sigmoid``, which starts at 0.5 and would halve every
    output that the plain network's BatchNorm statistics were measured on.)
    The offset convolution's weights are parameters of this module, not an ``nn.Conv2d``, so that a family's
    loop over its ``nn.Conv2d`` layers to initialize them does not reach it.

    Args:
        in_channels, out_channels, kernel_size, stride, padding, groups, bias: as ``nn.Conv2d``'s (one group of
            offsets for all input channels).
    """

    # Pretrained weights of the plain network lack these; they keep their zero start (zoo_lightning.pretrained).
    initialized_when_missing = ("offset_weight", "offset_bias")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int = 1,
        groups: int = 1,
        bias: bool = False,
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        taps = self.kernel_size[0] * self.kernel_size[1]
        self.offset_weight = nn.Parameter(torch.zeros(3 * taps, in_channels, *self.kernel_size))
        self.offset_bias = nn.Parameter(torch.zeros(3 * taps))

    def forward(self, input: Tensor) -> Tensor:  # one argument: the offsets and mask come from the input here
        taps = self.kernel_size[0] * self.kernel_size[1]
        offsets_and_mask = nn.functional.conv2d(input, self.offset_weight, self.offset_bias, self.stride, self.padding)
        offset, mask = offsets_and_mask.split((2 * taps, taps), dim=1)
        return super().forward(input, offset, 2.0 * torch.sigmoid(mask))
