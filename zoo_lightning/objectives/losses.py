"""Supervised losses: cross-entropy, and GoogLeNet's auxiliary heads (Szegedy et al., 2015)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from zoo_lightning.objectives.base import Objective, main_logits
from zoo_lightning.options import Fraction, NonNegativeFloat

__all__ = ["CrossEntropy", "AuxiliaryLoss"]


class CrossEntropy(Objective):
    """Cross-entropy on the main logits; ``targets`` may be class indices or soft (N, C) probabilities.

    Args:
        label_smoothing: mass spread uniformly over the classes (Szegedy et al., 2016).
    """

    def __init__(self, label_smoothing: Fraction = 0.1) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(main_logits(outputs), targets, label_smoothing=self.label_smoothing)}


class AuxiliaryLoss(Objective):
    """Main cross-entropy plus ``weight`` times the cross-entropy of each auxiliary head (training only).

    Evaluation never reaches it: backbones return plain logits in eval mode, and the classifier scores
    validation and test with the main head alone.

    Args:
        weight: scale of every auxiliary head's loss (0.3 in Szegedy et al., 2015).
        label_smoothing: applied to the main and auxiliary terms alike.
    """

    def __init__(self, weight: NonNegativeFloat = 0.3, label_smoothing: Fraction = 0.1) -> None:
        super().__init__()
        self.weight, self.label_smoothing = weight, label_smoothing

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        heads = [outputs] if isinstance(outputs, Tensor) else [o for o in outputs if o is not None]
        if len(heads) < 2:
            raise ValueError(
                "AuxiliaryLoss needs a backbone that returns auxiliary outputs in training (e.g. googlenet with "
                "backbone_kwargs {aux_logits: true}); this one returned its main logits only. Use CrossEntropy "
                "instead, or turn the backbone's auxiliary heads on."
            )
        main, *aux = heads
        ce = F.cross_entropy(main, targets, label_smoothing=self.label_smoothing)
        aux_ce = torch.stack([F.cross_entropy(a, targets, label_smoothing=self.label_smoothing) for a in aux]).sum()
        return {"loss": ce + self.weight * aux_ce, "ce": ce, "aux": aux_ce}
