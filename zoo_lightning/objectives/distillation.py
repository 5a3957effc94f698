"""Knowledge distillation (Hinton et al., 2015): a student learns from a frozen teacher's softened predictions."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from zoo_lightning.metric_names import TEACHER_TOP1
from zoo_lightning.objectives.base import Objective, hard_targets, main_logits
from zoo_lightning.objectives.teacher import load_teacher
from zoo_lightning.options import Fraction, PositiveFloat, UnitInterval

__all__ = ["Distillation", "distillation_kl"]


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    The T^2 factor keeps the soft targets' gradient at the same scale whatever T (Hinton et al., 2015).
    Computed in float32 whatever the autocast dtype: low-precision log-softmax at high T loses the
    small differences the soft targets are made of.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def _batch_key(images: Tensor) -> bytes:
    """A key for a batch of evaluation images: its shape, per-image sums and a strided pixel sample."""
    flat = images.detach().flatten(1).float()
    probe = torch.cat([flat.sum(1, keepdim=True), flat[:, :: max(1, flat.shape[1] // 31)]], dim=1)
    return hashlib.blake2b(repr(tuple(images.shape)).encode() + probe.cpu().numpy().tobytes(), digest_size=16).digest()


class Distillation(Objective):
    """Knowledge distillation: (1 - alpha) * CE(student, y) + alpha * T^2 * KL(teacher_T || student_T).

    The teacher is frozen and always in eval mode. It is kept outside the module tree on purpose:
    ``.train()`` never reaches its BatchNorm, the optimizer never sees its parameters, and the
    student's checkpoint never stores it (so the student loads without it). It follows the student
    to its device on first use. Each evaluation epoch logs the teacher's own top-1
    (``val/teacher_top1``, the mark the student aims at) and the student-teacher ``agreement``; the
    teacher's predictions on evaluation batches are computed once and reused.

    With a second, unlabeled training stream (a :class:`~zoo_lightning.batch.TwoStreamBatch`) the
    unlabeled images add ``alpha * T^2 * KL`` only: they have no label for the CE term.

    Args:
        teacher: a ``.ckpt`` of this project, or a registered model name (then give ``teacher_weights``).
        teacher_weights: state-dict file for a registry-name teacher.
        teacher_kwargs: ``create_model`` arguments for a registry-name teacher (num_classes, stem, ...).
        temperature: softmax temperature T (> 0).
        alpha: weight of the distillation term, in [0, 1].
        label_smoothing: of the cross-entropy term.
    """

    def __init__(
        self,
        teacher: str,
        teacher_weights: str | None = None,
        teacher_kwargs: dict[str, Any] | None = None,
        temperature: PositiveFloat = 4.0,
        alpha: UnitInterval = 0.9,
        label_smoothing: Fraction = 0.0,
    ) -> None:
        super().__init__()
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing
        model, self.teacher_classes = load_teacher(teacher, teacher_weights, **(teacher_kwargs or {}))
        self._teacher = [model]  # a list hides it from nn.Module registration
        self._eval_predictions: dict[bytes, Tensor] = {}
        self.agreement = MeanMetric()
        self.teacher_top1 = MulticlassAccuracy(self.teacher_classes, average="micro")

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def attach(self, num_classes: int) -> None:
        if num_classes != self.teacher_classes:
            raise ValueError(
                f"The teacher predicts {self.teacher_classes} classes but the student {num_classes}: "
                "distill between models trained on the same classes."
            )

    @torch.no_grad()  # not inference_mode: the KD loss keeps the teacher's output for the student's backward
    def teacher_logits(self, images: Tensor) -> Tensor:
        teacher = self.teacher
        first = next(teacher.parameters())
        if first.device != images.device:
            teacher.to(images.device)
        # The frozen teacher stays float32; under autocast its convolutions still run in low precision.
        return teacher(images.to(first.dtype) if images.is_floating_point() else images)

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        student = main_logits(outputs)
        ce = F.cross_entropy(student, targets, label_smoothing=self.label_smoothing)
        kd = distillation_kl(student, self.teacher_logits(images), self.temperature)
        return {"loss": (1 - self.alpha) * ce + self.alpha * kd, "ce": ce, "kd": kd}

    def unlabeled(self, outputs: Any, images: Tensor) -> dict[str, Tensor]:
        """Unlabeled images carry no label: only the teacher's soft targets teach there."""
        kd = distillation_kl(main_logits(outputs), self.teacher_logits(images), self.temperature)
        return {"loss": self.alpha * kd, "kd_unlabeled": kd}

    def teacher_predictions(self, images: Tensor) -> Tensor:
        """The teacher's top-1 classes on evaluation images, computed once per distinct batch."""
        key = _batch_key(images)
        predictions = self._eval_predictions.get(key)
        if predictions is None:
            predictions = self._eval_predictions[key] = self.teacher_logits(images).argmax(dim=1)
        return predictions.to(images.device)

    def eval_metrics(self, logits: Tensor, targets: Tensor, images: Tensor) -> dict[str, Metric]:
        teacher = self.teacher_predictions(images)
        self.agreement.update((logits.argmax(dim=1) == teacher).float())
        self.teacher_top1.update(teacher, hard_targets(targets))
        return {"agreement": self.agreement, TEACHER_TOP1: self.teacher_top1}
