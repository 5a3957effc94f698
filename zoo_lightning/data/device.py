"""A batch once it is on the device: the pipeline's float images, normalized and (in training) augmented,
in the network's precision. What every DataModule's ``on_after_batch_transfer`` does."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.data.pipeline import DevicePipeline

__all__ = ["prepare_batch"]


def prepare_batch(batch: Any, pipeline: DevicePipeline, trainer: L.Trainer | None) -> Any:
    """``batch`` (images, images and targets, or a :class:`TwoStreamBatch`) through ``pipeline``.

    uint8 images are augmented while ``trainer`` trains (seeded by its epoch and rank) and only
    normalized otherwise; images that are float already (the model summary's example input, a
    caller's own) pass as they are. Floating tensors then take the network's dtype under
    ``--trainer.precision 16-true`` / ``bf16-true`` / ``64-true``: Lightning casts a batch before the
    transfer, while ours is still uint8. Soft (MixUp/CutMix) targets follow the images.
    """
    if isinstance(batch, TwoStreamBatch):
        # The unlabeled images get the same augmentation, with no targets to mix.
        return TwoStreamBatch(
            prepare_batch(batch.labeled, pipeline, trainer), _prepare(batch.unlabeled, None, pipeline, trainer)[0]
        )
    images, *rest = batch if isinstance(batch, (tuple, list)) else (batch,)
    if images.dtype != torch.uint8:
        return _to_precision(batch, trainer)
    images, targets = _prepare(images, rest[0] if rest else None, pipeline, trainer)
    return (images, targets, *rest[1:]) if rest else images


def _prepare(
    images: Tensor, targets: Tensor | None, pipeline: DevicePipeline, trainer: L.Trainer | None
) -> tuple[Tensor, Tensor | None]:
    if trainer is not None and trainer.training:
        images, targets = pipeline(
            images, targets, training=True, epoch=trainer.current_epoch, rank=trainer.global_rank
        )
    else:
        images, targets = pipeline(images, targets)
    return _to_precision((images, targets), trainer)


def _to_precision(batch: Any, trainer: L.Trainer | None) -> Any:
    return batch if trainer is None else trainer.precision_plugin.convert_input(batch)
