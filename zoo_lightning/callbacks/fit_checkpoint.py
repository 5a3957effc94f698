"""FitCheckpoint: a ModelCheckpoint whose state belongs to the fit that writes the checkpoints."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["FitCheckpoint"]


class FitCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint (the same options), whose saved state is restored only when fitting.

    ``validate``, ``test`` and ``predict`` load a checkpoint and write none; Lightning restores every
    callback's state for them all the same, and the writer's folder of the fit, which differs from an
    evaluation's, made it warn that its best-k bookkeeping "won't be reloaded": nothing to restore there.
    """

    fitting = False

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.fitting = stage == "fit"
        super().setup(trainer, pl_module, stage)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.fitting:
            super().load_state_dict(state_dict)
