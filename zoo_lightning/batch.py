"""The batch with two training streams: labeled images with targets, and unlabeled images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor

__all__ = ["TwoStreamBatch", "labeled_part"]


class TwoStreamBatch(NamedTuple):
    """``labeled`` is ``(images, targets)``; ``unlabeled`` a batch of images with no label."""

    labeled: tuple[Tensor, Tensor]
    unlabeled: Tensor


def labeled_part(batch: TwoStreamBatch | Sequence[Tensor]) -> Sequence[Tensor]:
    """The ``(images, targets, ...)`` part of a batch, whether it has one stream or two."""
    return batch.labeled if isinstance(batch, TwoStreamBatch) else batch
