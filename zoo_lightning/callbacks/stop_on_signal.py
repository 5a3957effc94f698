"""StopOnSignal: Ctrl-C stops the Trainer at the next batch boundary, never inside whatever code it interrupted."""

from __future__ import annotations

import signal
from typing import Any

import lightning as L

from zoo_lightning.signals import StopSignals

__all__ = ["StopOnSignal"]


class StopOnSignal(L.Callback):
    """While the Trainer runs, the command's :class:`~zoo_lightning.signals.StopSignals` only records Ctrl-C;
    this callback raises KeyboardInterrupt at the next batch boundary, from a plain Python frame, where
    Lightning turns it into an orderly stop (the run's last.ckpt at the step reached)."""

    def __init__(self, stop: StopSignals) -> None:
        super().__init__()
        self.stop = stop

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.stop.deferred = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.stop.deferred = False

    def check(self, *args: Any, **kwargs: Any) -> None:
        if self.stop.received == signal.SIGINT:
            raise KeyboardInterrupt

    on_train_batch_start = on_train_batch_end = check
    on_validation_batch_start = on_validation_batch_end = check
    on_test_batch_start = on_test_batch_end = check
    on_predict_batch_start = on_predict_batch_end = check
    on_validation_epoch_end = on_train_epoch_end = check
