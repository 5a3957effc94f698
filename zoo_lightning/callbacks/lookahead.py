"""LookaheadAveraging: the weights pulled back to a running average every few steps (hlb-cifar10, airbench)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import WeightAveraging

__all__ = ["LookaheadAveraging"]


class LookaheadAveraging(WeightAveraging):
    """From ``start_epoch``, every ``every_n_steps`` steps, the average moves toward the weights with
    decay ``decay ** every_n_steps * (step / total_steps) ** exponent`` and is copied back into the
    model, which trains on from there; at every epoch end the model holds the average.

    Built on Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging`, which keeps the
    average in checkpoints (so a resumed run ends with the weights of an uninterrupted one); since
    the model holds the average whenever it is evaluated, validation swaps nothing.

    Args:
        start_epoch: the first epoch that averages.
        every_n_steps: optimizer steps between two updates.
        decay: per-step decay; the update uses its ``every_n_steps``-th power.
        exponent: how the decay grows over the run (0 keeps it constant).
    """

    def __init__(self, start_epoch: int = 3, every_n_steps: int = 5, decay: float = 0.95, exponent: float = 3.0) -> None:
        super().__init__(avg_fn=self._lerp, use_buffers=True)
        if every_n_steps < 1 or not 0.0 <= decay <= 1.0:
            raise ValueError(f"every_n_steps must be >= 1 and decay in [0, 1], got {every_n_steps} and {decay}.")
        self.start_epoch, self.every_n_steps, self.decay, self.exponent = start_epoch, every_n_steps, decay, exponent
        self.current_decay = 0.0

    def _lerp(self, average: torch.Tensor, current: torch.Tensor, count: Any) -> torch.Tensor:
        return current + self.current_decay * (average - current)

    def decay_at(self, step: int, total_steps: int) -> float:
        return self.decay ** self.every_n_steps * (step / max(total_steps, 1)) ** self.exponent

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return False  # updates happen in on_train_batch_end, which knows the epoch

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if trainer.current_epoch < self.start_epoch or step % self.every_n_steps or step <= self._latest_update_step:
            return
        self.current_decay = self.decay_at(step, int(trainer.estimated_stepping_batches))
        self._average_model.update_parameters(pl_module)
        self._latest_update_step = step
        self._copy_average_to_current(pl_module)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch >= self.start_epoch and self._latest_update_step > 0:
            self._copy_average_to_current(pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass  # the model already holds the average at the end of an epoch

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass
