"""LookaheadAveraging: the weights pulled back to a running average every few steps (hlb-cifar10, airbench)."""

from __future__ import annotations

import itertools
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import STEP_OUTPUT

from zoo_lightning.options import NonNegativeFloat, NonNegativeInt, PositiveInt, UnitInterval

__all__ = ["LookaheadAveraging"]


class LookaheadAveraging(L.Callback):
    """From ``start_epoch``, every ``every_n_steps`` steps, the average moves toward the weights with
    decay ``decay ** every_n_steps * (step / total_steps) ** exponent`` and is copied back into the
    model, which trains on from there; at every epoch end the model holds the average.

    The average covers the module's parameters and buffers (BatchNorm statistics included); its
    first update takes the weights as they are. It is part of the callback's state, so a checkpoint
    carries it and a resumed run ends with the weights of an uninterrupted one. A checkpoint's
    ``state_dict`` holds the model as it was when saved: at an epoch end, after the copy, the average.

    Args:
        start_epoch: the first epoch that averages.
        every_n_steps: optimizer steps between two updates.
        decay: per-step decay; the update uses its ``every_n_steps``-th power.
        exponent: how the decay grows over the run (0 keeps it constant).
    """

    def __init__(
        self,
        start_epoch: NonNegativeInt = 3,
        every_n_steps: PositiveInt = 5,
        decay: UnitInterval = 0.95,
        exponent: NonNegativeFloat = 3.0,
    ) -> None:
        super().__init__()
        self.start_epoch, self.every_n_steps, self.decay, self.exponent = start_epoch, every_n_steps, decay, exponent
        self.average: dict[str, torch.Tensor] | None = None  # parameter or buffer name -> its running average
        self.latest_update_step = 0  # the global step of the latest update; 0 before the first

    def decay_at(self, step: int, total_steps: int) -> float:
        return self.decay**self.every_n_steps * (step / max(total_steps, 1)) ** self.exponent

    @staticmethod
    def _tensors(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
        return dict(itertools.chain(pl_module.named_parameters(), pl_module.named_buffers()))

    @torch.no_grad()
    def update(self, pl_module: L.LightningModule, decay: float) -> None:
        """Moves the average toward the module's weights (``current + decay * (average - current)``) and copies it
        back into the module; the first update takes the weights as they are."""
        current = self._tensors(pl_module)
        if self.average is None:
            self.average = {name: tensor.detach().clone() for name, tensor in current.items()}
            return
        for name, tensor in current.items():
            average = self.average[name]
            if average.is_floating_point():
                average.copy_(tensor + decay * (average - tensor))
            else:  # a count such as BatchNorm's num_batches_tracked is not averaged
                average.copy_(tensor)
            tensor.copy_(average)

    @torch.no_grad()
    def copy_to(self, pl_module: L.LightningModule) -> None:
        """Puts the average, once there is one, into the module's parameters and buffers."""
        if self.average is not None:
            for name, tensor in self._tensors(pl_module).items():
                tensor.copy_(self.average[name])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.average is not None:  # restored from a checkpoint, perhaps onto another device
            self.average = {name: self.average[name].to(t.device) for name, t in self._tensors(pl_module).items()}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if trainer.current_epoch < self.start_epoch or step % self.every_n_steps or step <= self.latest_update_step:
            return
        total = trainer.estimated_stepping_batches
        if math.isinf(total):  # a run without an end: the decay follows the run's length
            raise ValueError(
                "LookaheadAveraging's decay follows the run's length: give --trainer.max_epochs or --trainer.max_steps."
            )
        self.update(pl_module, self.decay_at(step, int(total)))
        self.latest_update_step = step

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.copy_to(pl_module)

    def state_dict(self) -> dict[str, Any]:
        return {"latest_update_step": self.latest_update_step, "average": self.average}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.latest_update_step = state_dict.get("latest_update_step", 0)
        self.average = state_dict.get("average")
