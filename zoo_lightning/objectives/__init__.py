"""Training objectives: what the classifier minimizes, chosen with ``class_path`` under ``model.objective``.

``CrossEntropy`` is the default; ``AuxiliaryLoss`` adds GoogLeNet's auxiliary heads (Szegedy et al.,
2015); ``Distillation`` trains a student on a frozen teacher's softened predictions (Hinton et al.,
2015). Targets may be class indices or soft (N, C) probabilities (MixUp/CutMix) in every objective.
"""

from zoo_lightning.objectives.base import Objective, hard_targets, main_logits
from zoo_lightning.objectives.distillation import Distillation, distillation_kl
from zoo_lightning.objectives.losses import AuxiliaryLoss, CrossEntropy
from zoo_lightning.objectives.teacher import load_teacher

__all__ = [
    "Objective",
    "CrossEntropy",
    "AuxiliaryLoss",
    "Distillation",
    "main_logits",
    "hard_targets",
    "distillation_kl",
    "load_teacher",
]
