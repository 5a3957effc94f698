"""Learning-rate schedules stepped once per optimizer step.

The classifier passes ``total_steps`` (the Trainer's estimate of all optimizer steps of the run) to
any scheduler whose constructor takes it and was not given one, so configs need not know the data
size; torch's ``OneCycleLR`` works the same way.
"""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from zoo_lightning.options import Fraction, NonNegativeFloat, OpenUnitInterval, PositiveInt

__all__ = ["WarmupCosineLR", "TriangularLR"]


def _run_steps(total_steps: int | None, scheduler: str) -> int:
    # Kept by hand: the classifier fills total_steps in from the Trainer after parsing, where no type is checked.
    if total_steps is None or total_steps < 1:
        raise ValueError(f"{scheduler} needs total_steps >= 1 (the optimizer steps of the run), got {total_steps}.")
    return total_steps


class WarmupCosineLR(LambdaLR):
    """Linear warm-up from ``warmup_start_factor`` to the base LR, then cosine decay to ``min_lr_ratio``.

    Args:
        optimizer: the wrapped optimizer.
        total_steps: optimizer steps of the whole run (filled in by the classifier when left out).
        warmup_fraction: share of ``total_steps`` spent warming up.
        warmup_start_factor: LR multiplier at step 0.
        min_lr_ratio: LR multiplier reached at the last step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: PositiveInt | None = None,
        warmup_fraction: Fraction = 0.05,
        warmup_start_factor: NonNegativeFloat = 0.1,
        min_lr_ratio: NonNegativeFloat = 0.0,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = _run_steps(total_steps, "WarmupCosineLR")
        self.warmup_steps = int(round(warmup_fraction * self.total_steps))
        self.warmup_start_factor = warmup_start_factor
        self.min_lr_ratio = min_lr_ratio
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, step: int) -> float:
        if step < self.warmup_steps:
            return self.warmup_start_factor + (1.0 - self.warmup_start_factor) * step / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1.0 - self.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class TriangularLR(LambdaLR):
    """Linear from ``start_factor`` up to the base LR at ``peak_fraction`` of the steps, then linear down
    to ``end_factor`` at the last step (airbench: 0.2, 0.23, 0.07).

    Args:
        optimizer: the wrapped optimizer.
        total_steps: optimizer steps of the whole run (filled in by the classifier when left out).
        start_factor: LR multiplier at step 0.
        peak_fraction: share of ``total_steps`` at which the multiplier is 1.
        end_factor: LR multiplier at the last step.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        total_steps: PositiveInt | None = None,
        start_factor: NonNegativeFloat = 0.2,
        peak_fraction: OpenUnitInterval = 0.23,
        end_factor: NonNegativeFloat = 0.07,
        last_epoch: int = -1,
    ) -> None:
        self.total_steps = _run_steps(total_steps, "TriangularLR")
        self.peak_step = peak_fraction * self.total_steps
        self.start_factor, self.end_factor = start_factor, end_factor
        super().__init__(optimizer, self.factor, last_epoch=last_epoch)

    def factor(self, step: int) -> float:
        if step <= self.peak_step:
            return self.start_factor + (1.0 - self.start_factor) * step / self.peak_step
        progress = min(1.0, (step - self.peak_step) / (self.total_steps - self.peak_step))
        return 1.0 + (self.end_factor - 1.0) * progress
