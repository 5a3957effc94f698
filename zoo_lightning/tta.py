"""Test-time augmentation: a network's logits averaged over a few views of each image.

``--model.tta`` (:data:`~zoo_lightning.options.TTAMode`) chooses the views; the classifier decides when
they apply (validate, test and predict, never the per-epoch validation inside ``fit``). Here only the
views and their weights, for any function from images to logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from zoo_lightning.options import TTAMode

__all__ = ["tta_logits", "translate"]


def translate(images: Tensor, shift: int, mode: str = "constant") -> Tensor:
    """Shifts images by ``shift`` pixels down and right (negative: up and left); the uncovered edge is
    zeros (``mode="constant"``) or the image mirrored (``"reflect"``)."""
    n, c, h, w = images.shape
    padded = nn.functional.pad(images, (abs(shift),) * 4, mode=mode)
    start = abs(shift) - shift
    return padded[:, :, start : start + h, start : start + w]


VIEWS = {"flip": 2, "flip_translate": 4, "flip_shift": 6}  # forward passes per image of each mode


def tta_logits(logits: Callable[[Tensor], Tensor], images: Tensor, mode: TTAMode) -> Tensor:
    """``logits`` averaged over the views of ``images`` that ``mode`` names.

    ``"flip"``: the image and its mirror, alike. ``"flip_translate"``: those two and both shifted by one
    pixel (right-down and left-up, zero-filled), four views alike. ``"flip_shift"`` (airbench's level 2):
    the image-and-mirror pair weighted 0.5, and each pair shifted by one pixel up-left and down-right,
    with reflect padding, 0.25.
    """

    def pair(x: Tensor) -> Tensor:
        return (logits(x) + logits(x.flip(3))) / 2

    def flip_translate(x: Tensor) -> Tensor:
        views = [x, x.flip(3), translate(x, 1), translate(x.flip(3), -1)]
        return torch.stack([logits(v) for v in views]).mean(dim=0)

    def flip_shift(x: Tensor) -> Tensor:
        return 0.5 * pair(x) + 0.25 * pair(translate(x, -1, "reflect")) + 0.25 * pair(translate(x, 1, "reflect"))

    return {"flip": pair, "flip_translate": flip_translate, "flip_shift": flip_shift}[mode](images)
