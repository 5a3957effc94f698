"""NonFiniteLossStop: a NaN or infinite loss ends training at once, with what to try next."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.types import STEP_OUTPUT

from zoo_lightning.options import PositiveInt

__all__ = ["NonFiniteLossError", "NonFiniteLossStop"]


class NonFiniteLossError(ValueError):
    """Training produced a NaN or infinite loss."""


class NonFiniteLossStop(L.Callback):
    """Stops training at the first NaN/inf loss, naming the step and the likely causes.

    Reading the loss on the host waits for the device, so on a GPU the check runs every
    ``every_n_steps`` steps; on the CPU it costs nothing and runs every step. Checkpoints already
    written stay as they were, so the last good one remains usable with ``--ckpt_path``.
    """

    def __init__(self, every_n_steps: PositiveInt = 50) -> None:
        super().__init__()
        self.every_n_steps = every_n_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: STEP_OUTPUT, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        if loss is None or (loss.device.type != "cpu" and trainer.global_step % self.every_n_steps):
            return
        if not torch.isfinite(loss.detach()).all():
            raise NonFiniteLossError(
                f"Non-finite loss ({loss.item()}) at step {trainer.global_step}, epoch {trainer.current_epoch}. "
                f"Likely cause: {_likely_cause(str(trainer.precision))}. "
                "The checkpoints written so far are intact: resume from one with --ckpt_path."
            )


def _likely_cause(precision: str) -> str:
    lr = "a learning rate too high for this batch size (try --model.optimizer.init_args.lr 10x lower)"
    if precision.startswith("16"):
        return f"{lr}, or fp16 overflow under --trainer.precision {precision} (try bf16-mixed or 32-true)"
    if precision.endswith("-true") and not precision.startswith(("32", "64")):
        return f"{lr}, or too little range under --trainer.precision {precision} (try bf16-mixed or 32-true)"
    return lr
