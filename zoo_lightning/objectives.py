"""Training objectives: what the classifier minimizes, chosen with ``class_path`` under ``model.objective``.

An objective maps the backbone's outputs (a logits tensor, or GoogLeNet's named tuple in training),
the targets and the input images to a dict of named loss terms whose ``"loss"`` entry is minimized;
the other entries are logged beside it.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Objective", "CrossEntropy", "main_logits", "hard_targets"]


def main_logits(outputs: Any) -> Tensor:
    """The main classifier's logits, whether the backbone returned a tensor or a tuple with aux heads."""
    return outputs if isinstance(outputs, Tensor) else outputs[0]


class Objective(nn.Module):
    """Base class: ``forward(outputs, targets, images) -> {"loss": ..., <term>: ...}``."""

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError


class CrossEntropy(Objective):
    """Cross-entropy on the main logits; ``targets`` may be class indices or soft (N, C) probabilities.

    Args:
        label_smoothing: mass spread uniformly over the classes (Szegedy et al., 2016).
    """

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}.")
        self.label_smoothing = label_smoothing

    def cross_entropy(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        return {"loss": self.cross_entropy(main_logits(outputs), targets)}


def hard_targets(targets: Tensor) -> Tensor:
    """Class indices from index or soft (N, C) targets, for the accuracy metrics."""
    return targets.argmax(dim=1) if targets.is_floating_point() else targets

