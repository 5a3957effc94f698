"""Test-time augmentation: a network's logits averaged over a few views of each image.

``--model.tta`` (:data:`~zoo_lightning.options.TTAMode`) chooses the views; the classifier decides when
they apply (validate, test and predict, never the per-epoch validation inside ``fit``), and
``--model.tta_confidence`` gives them only to the images the network is unsure of. Here only the views
and their weights, for any function from images to logits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from zoo_lightning.options import TTAMode

__all__ = ["tta_logits", "unsure_tta_logits", "translate"]


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
    return _views_mean(logits, images, mode, logits(images))


def unsure_tta_logits(
    logits: Callable[[Tensor], Tensor], images: Tensor, mode: TTAMode, below_confidence: float
) -> tuple[Tensor, Tensor]:
    """The views of ``mode`` for the images whose own view's top softmax probability is under
    ``below_confidence``, that view alone for the rest: the logits, and which images took the views.

    A confident prediction rarely changes under a flip or a one-pixel shift, so the extra forward passes
    go where they can change the answer; each image's own view is computed once either way.
    """
    plain = logits(images)
    unsure = plain.float().softmax(dim=1).amax(dim=1) < below_confidence
    if not unsure.any():
        return plain, unsure
    mixed = plain.clone()
    mixed[unsure] = _views_mean(logits, images[unsure], mode, plain[unsure]).to(mixed.dtype)
    return mixed, unsure


def _views_mean(logits: Callable[[Tensor], Tensor], x: Tensor, mode: TTAMode, own: Tensor) -> Tensor:
    """The weighted mean of ``mode``'s views of ``x``, given ``own``, the logits of ``x`` itself."""

    def pair(v: Tensor, first: Tensor | None = None) -> Tensor:
        return ((logits(v) if first is None else first) + logits(v.flip(3))) / 2

    if mode == "flip":
        return pair(x, own)
    if mode == "flip_translate":
        others = [logits(v) for v in (x.flip(3), translate(x, 1), translate(x.flip(3), -1))]
        return torch.stack([own, *others]).mean(dim=0)
    return 0.5 * pair(x, own) + 0.25 * pair(translate(x, -1, "reflect")) + 0.25 * pair(translate(x, 1, "reflect"))
