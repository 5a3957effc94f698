"""ImagesPerSecond: training throughput from the host clock, once per epoch."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.utilities.types import STEP_OUTPUT

from zoo_lightning import metric_names as names
from zoo_lightning.batch import labeled_part

__all__ = ["ImagesPerSecond"]


class ImagesPerSecond(L.Callback):
    """Logs ``train/images_per_sec`` once per training epoch: the images of all DDP ranks per second.

    Timed with ``time.perf_counter`` from the epoch start to the end of its last batch, so the loop
    gets no device synchronization (on a GPU the last batch's queued kernels are not waited for: a
    small error, once per epoch). Validation run inside the epoch is left out of the time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.images = 0
        self.seconds = 0.0
        self._since: float | None = None

    def _pause(self) -> None:
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images, self.seconds, self._since = 0, 0.0, time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        # An unlabeled stream is extra work per step, not more training images.
        self.images += int(labeled_part(batch)[0].shape[0]) * trainer.world_size
        self._pause()
        self._since = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()  # mid-epoch validation (val_check_interval < 1) is not training time

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._since = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The time since the last batch ended is epoch bookkeeping, not throughput: drop it.
        self._since = None
        if self.images and self.seconds > 0:
            # Every rank logs its own estimate of the global rate; sync_dist averages them.
            pl_module.log(names.IMAGES_PER_SEC, self.images / self.seconds, sync_dist=True)
