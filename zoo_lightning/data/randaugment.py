"""RandAugmentPipeline: RandAugment (Cubuk et al., 2020) drawn for every image, applied batch-wise on the device.

torchvision's ``v2.RandAugment`` draws one set of operations per call, so a batch passed to it whole
gets the same operations in every image. Here each image draws its own ``num_ops`` operations (and
the sign of each), and every operation runs once per step on the images that drew it, through
torchvision's batched functional ops: at most 2 x 14 calls a step whatever the batch size, no loop
over images. This is the input noise of a Noisy Student (Xie et al., 2020).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from zoo_lightning.data.pipeline import DevicePipeline
from zoo_lightning.options import NonNegativeInt, PositiveInt

__all__ = ["RandAugmentPipeline", "OPERATIONS"]


def _affine(**kwargs: Any) -> Callable[[Tensor], Tensor]:
    return lambda images: F.affine(images, interpolation=InterpolationMode.NEAREST, fill=0.0, **kwargs)


# name: (strength at the top of the magnitude scale, whether it goes both ways, the op at strength v).
# The strengths are RandAugment's as torchvision spaces them; translations are fractions of the side.
OPERATIONS: dict[str, tuple[float, bool, Callable[[Tensor, float], Tensor]]] = {
    "identity": (0.0, False, lambda x, v: x),
    "shear_x": (
        0.3,
        True,
        lambda x, v: _affine(
            angle=0.0, translate=[0, 0], scale=1.0, center=[0, 0], shear=[math.degrees(math.atan(v)), 0.0]
        )(x),
    ),
    "shear_y": (
        0.3,
        True,
        lambda x, v: _affine(
            angle=0.0, translate=[0, 0], scale=1.0, center=[0, 0], shear=[0.0, math.degrees(math.atan(v))]
        )(x),
    ),
    "translate_x": (
        150.0 / 331.0,
        True,
        lambda x, v: _affine(angle=0.0, translate=[int(v * x.shape[-1]), 0], scale=1.0, shear=[0.0, 0.0])(x),
    ),
    "translate_y": (
        150.0 / 331.0,
        True,
        lambda x, v: _affine(angle=0.0, translate=[0, int(v * x.shape[-2])], scale=1.0, shear=[0.0, 0.0])(x),
    ),
    "rotate": (30.0, True, lambda x, v: F.rotate(x, v, interpolation=InterpolationMode.NEAREST, fill=0.0)),
    "brightness": (0.9, True, lambda x, v: F.adjust_brightness(x, 1.0 + v)),
    "color": (0.9, True, lambda x, v: F.adjust_saturation(x, 1.0 + v)),
    "contrast": (0.9, True, lambda x, v: F.adjust_contrast(x, 1.0 + v)),
    "sharpness": (0.9, True, lambda x, v: F.adjust_sharpness(x, 1.0 + v)),
    "posterize": (4.0, False, lambda x, v: F.posterize(x, int(8 - round(v)))),  # 8 bits down to 4
    "solarize": (1.0, False, lambda x, v: F.solarize(x, 255.0 * (1.0 - v))),  # threshold 255 down to 0
    "autocontrast": (0.0, False, lambda x, v: F.autocontrast(x)),
    "equalize": (0.0, False, lambda x, v: F.equalize(x)),
}


class RandAugmentPipeline(DevicePipeline):
    """The crop and flip of :class:`DevicePipeline`, then RandAugment drawn per image.

    Args:
        num_ops: operations applied to every image, one after the other (RandAugment's N).
        magnitude: strength of every operation, 0..``num_magnitude_bins`` - 1 (RandAugment's M);
            signed operations (shears, translations, rotation, colour) go either way at random.
        num_magnitude_bins: steps of the magnitude scale (torchvision's 31: M = 30 is the strongest).
        **kwargs: the options of :class:`DevicePipeline` (crop_padding, flip, mix, ...).
    """

    def __init__(
        self,
        num_ops: NonNegativeInt = 2,
        magnitude: NonNegativeInt = 9,
        num_magnitude_bins: PositiveInt = 31,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if magnitude >= num_magnitude_bins:  # a relation of two options, which no type can say
            raise ValueError(
                f"magnitude must be in 0..{num_magnitude_bins - 1} (num_magnitude_bins - 1 is the "
                f"strongest), got {magnitude}."
            )
        self.num_ops, self.magnitude, self.num_magnitude_bins = num_ops, magnitude, num_magnitude_bins

    def augment(self, images: Tensor) -> Tensor:
        images = super().augment(images)
        if self.num_ops == 0 or not len(images):
            return images
        scale = self.magnitude / max(1, self.num_magnitude_bins - 1)  # one bin: only magnitude 0
        operations = list(OPERATIONS.values())
        images = images.clone()  # written into image by image group
        for _ in range(self.num_ops):
            drawn = torch.randint(0, len(operations), (len(images),), device=images.device)
            negative = torch.rand(len(images), device=images.device) < 0.5
            for index, (strength, signed, op) in enumerate(operations):
                hit = drawn == index
                groups = ((hit & ~negative, strength), (hit & negative, -strength)) if signed else ((hit, strength),)
                for mask, value in groups:
                    rows = torch.nonzero(mask).flatten()
                    if len(rows):
                        images[rows] = op(images[rows], value * scale)
        return images

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_ops={self.num_ops}, magnitude={self.magnitude}"
