"""StepLearningRateMonitor: Lightning's learning-rate logging, idle when a run has no logger."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor

__all__ = ["StepLearningRateMonitor"]


class StepLearningRateMonitor(LearningRateMonitor):
    """Logs every parameter group's learning rate each step; with ``--trainer.logger false`` it does
    nothing instead of stopping the run (Lightning's own refuses a Trainer without a logger)."""

    def __init__(
        self,
        logging_interval: Literal["step", "epoch"] | None = "step",
        log_momentum: bool = False,
        log_weight_decay: bool = False,
    ) -> None:
        super().__init__(
            logging_interval=logging_interval, log_momentum=log_momentum, log_weight_decay=log_weight_decay
        )

    def on_train_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_start(trainer, *args, **kwargs)

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_batch_start(trainer, *args, **kwargs)

    def on_train_epoch_start(self, trainer: L.Trainer, *args: Any, **kwargs: Any) -> None:
        if trainer.loggers:
            super().on_train_epoch_start(trainer, *args, **kwargs)
