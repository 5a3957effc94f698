"""Training objectives: what the classifier minimizes, chosen with ``class_path`` under ``model.objective``.

An objective maps the backbone's outputs (a logits tensor, or GoogLeNet's named tuple in training),
the targets and the input images to a dict of named loss terms whose ``"loss"`` entry is minimized;
the other entries are logged beside it. ``CrossEntropy`` is the default; ``AuxiliaryLoss`` adds
GoogLeNet's auxiliary heads (Szegedy et al., 2015); ``Distillation`` trains a student on a frozen
teacher's softened predictions (Hinton et al., 2015).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

__all__ = ["Objective", "CrossEntropy", "AuxiliaryLoss", "Distillation", "main_logits", "hard_targets",
           "distillation_kl", "load_teacher"]


def main_logits(outputs: Any) -> Tensor:
    """The main classifier's logits, whether the backbone returned a tensor or a tuple with aux heads."""
    return outputs if isinstance(outputs, Tensor) else outputs[0]


def hard_targets(targets: Tensor) -> Tensor:
    """Class indices from index or soft (N, C) targets, for the accuracy metrics."""
    return targets.argmax(dim=1) if targets.is_floating_point() else targets


def _check_label_smoothing(value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {value}.")


class Objective(nn.Module):
    """Base class: ``forward(outputs, targets, images) -> {"loss": ..., <term>: ...}``.

    Hooks with defaults: :meth:`attach` checks the objective against the classifier it serves,
    :meth:`eval_metrics` adds validation/test metrics, :meth:`unlabeled` scores unlabeled images.
    """

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def attach(self, num_classes: int) -> None:
        """Called by the classifier once it knows its number of classes."""

    def eval_metrics(self, logits: Tensor, targets: Tensor, images: Tensor) -> dict[str, Any]:
        """Extra metrics (torchmetrics objects, updated here) to log each validation/test epoch."""
        return {}

    def unlabeled(self, outputs: Any, images: Tensor) -> dict[str, Tensor]:
        raise ValueError(f"{type(self).__name__} cannot learn from unlabeled images; use the Distillation objective.")


class CrossEntropy(Objective):
    """Cross-entropy on the main logits; ``targets`` may be class indices or soft (N, C) probabilities.

    Args:
        label_smoothing: mass spread uniformly over the classes (Szegedy et al., 2016).
    """

    def __init__(self, label_smoothing: float = 0.1) -> None:
        super().__init__()
        _check_label_smoothing(label_smoothing)
        self.label_smoothing = label_smoothing

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        return {"loss": F.cross_entropy(main_logits(outputs), targets, label_smoothing=self.label_smoothing)}


class AuxiliaryLoss(Objective):
    """Main cross-entropy plus ``weight`` times the cross-entropy of each auxiliary head (training only).

    Args:
        weight: scale of every auxiliary head's loss (0.3 in Szegedy et al., 2015).
        label_smoothing: applied to the main and auxiliary terms alike.
    """

    def __init__(self, weight: float = 0.3, label_smoothing: float = 0.1) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        _check_label_smoothing(label_smoothing)
        self.weight, self.label_smoothing = weight, label_smoothing

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        if isinstance(outputs, Tensor):
            raise ValueError(
                "AuxiliaryLoss needs a backbone that returns auxiliary outputs in training (e.g. googlenet with "
                "backbone_kwargs {aux_logits: true}); this one returned a single tensor. Use CrossEntropy instead."
            )
        main, *aux = [o for o in outputs if o is not None]
        ce = F.cross_entropy(main, targets, label_smoothing=self.label_smoothing)
        aux_ce = sum(F.cross_entropy(a, targets, label_smoothing=self.label_smoothing) for a in aux)
        return {"loss": ce + self.weight * aux_ce, "ce": ce, "aux": aux_ce}


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    The T^2 factor keeps the soft targets' gradient at the same scale whatever T (Hinton et al., 2015).
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def load_teacher(teacher: str, weights: str | None = None, **kwargs: Any) -> tuple[nn.Module, int]:
    """A frozen, eval-mode backbone and its class count, from a checkpoint of this project or a registry name.

    Args:
        teacher: path to a ``.ckpt`` written by ``fit`` (its backbone is rebuilt from the saved
            hyper-parameters), or a registered model name.
        weights: with a registry name, a state-dict file (``torch.save(model.state_dict())``).
        **kwargs: with a registry name, ``create_model`` arguments (num_classes, stem, ...).
    """
    from zoo_lightning.models import create_model, list_models

    path = Path(teacher)
    if path.suffix == ".ckpt" or path.exists() or teacher not in list_models():
        if not path.is_file():
            raise FileNotFoundError(
                f"Teacher checkpoint {teacher!r} does not exist. Train the teacher first "
                "(python -m zoo_lightning fit --config ...) and pass its checkpoints/best.ckpt, "
                "or give a registered model name with teacher_weights."
            )
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            hparams = checkpoint["hyper_parameters"]
            state = {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
            model = create_model(hparams["backbone"], num_classes=hparams["num_classes"], stem=hparams.get("stem", "cifar"),
                                 **(hparams.get("backbone_kwargs") or {}))
            model.load_state_dict(state)
        except Exception as error:  # truncated file, foreign checkpoint, mismatched weights
            raise ValueError(f"Cannot load the teacher from {teacher!r}: {type(error).__name__}: {error}") from None
        num_classes = hparams["num_classes"]
    else:
        num_classes = kwargs.pop("num_classes", 10)
        model = create_model(teacher, num_classes=num_classes, **kwargs)
        if weights is not None:
            try:
                model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
            except Exception as error:
                raise ValueError(f"Cannot load teacher weights {weights!r}: {type(error).__name__}: {error}") from None
    model.eval().requires_grad_(False)
    return model, num_classes


class Distillation(Objective):
    """Knowledge distillation: (1 - alpha) * CE(student, y) + alpha * T^2 * KL(teacher_T || student_T).

    The teacher is frozen and always in eval mode. It is kept outside the module tree on purpose:
    ``.train()`` never reaches its BatchNorm, the optimizer never sees its parameters, and the
    student's checkpoint never stores it. It follows the student to its device on first use.

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
        temperature: float = 4.0,
        alpha: float = 0.9,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        _check_label_smoothing(label_smoothing)
        self.temperature, self.alpha, self.label_smoothing = temperature, alpha, label_smoothing
        model, self.teacher_classes = load_teacher(teacher, teacher_weights, **(teacher_kwargs or {}))
        self._teacher = [model]  # a list hides it from nn.Module registration
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

    @torch.no_grad()
    def teacher_logits(self, images: Tensor) -> Tensor:
        teacher = self.teacher
        first = next(teacher.parameters())
        if first.device != images.device:
            teacher.to(images.device)
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

    def eval_metrics(self, logits: Tensor, targets: Tensor, images: Tensor) -> dict[str, Any]:
        teacher = self.teacher_logits(images)
        self.agreement.update((logits.argmax(1) == teacher.argmax(1)).float())
        self.teacher_top1.update(teacher, targets)
        return {"agreement": self.agreement, "teacher_top1": self.teacher_top1}
