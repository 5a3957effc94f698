"""Training objectives: what the classifier minimizes, chosen with ``class_path`` under ``model.objective``.

An objective maps the backbone's outputs (a logits tensor, or GoogLeNet's named tuple in training),
the targets and the input images to a dict of named loss terms whose ``"loss"`` entry is minimized;
the other entries are logged beside it. ``CrossEntropy`` is the default; ``AuxiliaryLoss`` adds
GoogLeNet's auxiliary heads (Szegedy et al., 2015); ``Distillation`` trains a student on a frozen
teacher's softened predictions (Hinton et al., 2015).

Targets may be class indices or soft (N, C) probabilities (MixUp/CutMix) in every objective.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

if TYPE_CHECKING:
    import lightning as L

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

    Hooks with defaults, called by the classifier: :meth:`attach` checks the objective against the
    classifier it serves, :meth:`on_train_start` runs once before training, :meth:`eval_metrics` adds
    validation/test metrics, :meth:`unlabeled` scores a batch of unlabeled images.
    """

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def attach(self, num_classes: int) -> None:
        """Called by the classifier once it knows its number of classes."""

    def on_train_start(self, module: L.LightningModule) -> None:
        """Called once when training starts, with the classifier (and through it the Trainer)."""

    def eval_metrics(self, logits: Tensor, targets: Tensor, images: Tensor) -> dict[str, Any]:
        """Extra metrics (torchmetrics objects, updated here) to log each validation/test epoch."""
        return {}

    def unlabeled(self, outputs: Any, images: Tensor) -> dict[str, Tensor]:
        """Loss terms for images without labels (a second training stream); most objectives have none."""
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

    Evaluation never reaches it: backbones return plain logits in eval mode, and the classifier scores
    validation and test with the main head alone.

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


def distillation_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(student / T)), averaged over the batch.

    The T^2 factor keeps the soft targets' gradient at the same scale whatever T (Hinton et al., 2015).
    Computed in float32 whatever the autocast dtype: low-precision log-softmax at high T loses the
    small differences the soft targets are made of.
    """
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature**2


def _is_registry_name(name: str) -> bool:
    from zoo_lightning.models import list_models

    if Path(name).exists():
        return False
    prefix, sep, _ = name.partition(":")
    return name in list_models() or (bool(sep) and prefix in ("torchvision", "timm"))


def _missing_teacher(teacher: str) -> FileNotFoundError:
    from zoo_lightning.models import list_models

    hint = ""
    if Path(teacher).suffix not in (".ckpt", ".pt", ".pth") and "/" not in teacher:
        close = ", ".join(difflib.get_close_matches(teacher, list_models(), n=3))
        hint = " nor a registered model name" + (f" (closest: {close})" if close else "")
    return FileNotFoundError(
        f"Teacher {teacher!r} is no existing checkpoint file{hint}. Train the teacher first "
        "(python -m zoo_lightning fit --config ...) and pass its run's checkpoints/best.ckpt, "
        "or give a registered model name with teacher_weights."
    )


def _load_backbone_checkpoint(path: str) -> tuple[nn.Module, int]:
    from zoo_lightning.models import create_model

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or corrupt file, or not a torch file at all
        raise ValueError(
            f"Cannot read the teacher checkpoint {path!r} ({type(error).__name__}: {str(error).splitlines()[0]}). "
            "Is it a complete .ckpt written by `python -m zoo_lightning fit`?"
        ) from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "backbone" not in hparams or "state_dict" not in checkpoint:
        raise ValueError(
            f"{path!r} is no checkpoint of this project: it names no backbone in its hyper_parameters. Pass a "
            ".ckpt written by `python -m zoo_lightning fit`, or a registered model name with teacher_weights."
        )
    model = create_model(hparams["backbone"], num_classes=hparams["num_classes"], stem=hparams.get("stem", "cifar"),
                         **(hparams.get("backbone_kwargs") or {}))
    state = {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"The weights in {path!r} do not fit its backbone {hparams['backbone']!r}: {error}") from None
    return model, int(hparams["num_classes"])


def load_teacher(teacher: str, weights: str | None = None, **kwargs: Any) -> tuple[nn.Module, int]:
    """A frozen, eval-mode backbone and its class count, from a checkpoint of this project or a registry name.

    Args:
        teacher: path to a ``.ckpt`` written by ``fit`` (its backbone is rebuilt from the saved
            hyper-parameters), or a registered model name (``torchvision:``/``timm:`` names too).
        weights: with a registry name, a state-dict file (``torch.save(model.state_dict(), f)``).
        **kwargs: with a registry name, ``create_model`` arguments (num_classes, stem, ...).
    """
    from zoo_lightning.models import create_model

    if _is_registry_name(teacher):
        if weights is None:
            raise ValueError(
                f"Teacher {teacher!r} is a model name: give its trained weights with teacher_weights (a file of "
                "torch.save(model.state_dict())); a randomly initialized teacher has nothing to teach."
            )
        num_classes = int(kwargs.pop("num_classes", 10))
        model = create_model(teacher, num_classes=num_classes, **kwargs)
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Teacher weights {weights!r} do not exist.")
        try:
            model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
        except Exception as error:
            raise ValueError(
                f"Cannot load teacher weights {weights!r} into {teacher!r} with num_classes={num_classes} "
                f"({type(error).__name__}: {error}); check teacher_kwargs (num_classes, stem, ...)."
            ) from None
    else:
        if weights is not None or kwargs:
            raise ValueError(
                "teacher_weights and teacher_kwargs apply to a teacher given by model name; a checkpoint teacher "
                "is rebuilt from its own saved hyper-parameters and weights: leave them out."
            )
        if not Path(teacher).is_file():
            raise _missing_teacher(teacher)
        model, num_classes = _load_backbone_checkpoint(teacher)
    model.eval().requires_grad_(False)
    return model, num_classes


def _fingerprint(images: Tensor) -> bytes:
    """A key for a batch of evaluation images: its shape, per-image sums and a strided pixel sample."""
    flat = images.detach().flatten(1).float()
    probe = torch.cat([flat.sum(1, keepdim=True), flat[:, :: max(1, flat.shape[1] // 31)]], dim=1)
    return hashlib.blake2b(repr(tuple(images.shape)).encode() + probe.cpu().numpy().tobytes(), digest_size=16).digest()


class Distillation(Objective):
    """Knowledge distillation: (1 - alpha) * CE(student, y) + alpha * T^2 * KL(teacher_T || student_T).

    The teacher is frozen and always in eval mode. It is kept outside the module tree on purpose:
    ``.train()`` never reaches its BatchNorm, the optimizer never sees its parameters, and the
    student's checkpoint never stores it (so the student loads without it). It follows the student
    to its device on first use. Before training it is scored once on the validation set
    (``val/teacher_top1``); each evaluation epoch then logs the student-teacher ``agreement``, with
    the teacher's predictions on evaluation batches computed once and reused.

    With a second, unlabeled training stream (a batch ``{"labeled": (x, y), "unlabeled": x_u}``) the
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
        temperature: float = 4.0,
        alpha: float = 0.9,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        _check_label_smoothing(label_smoothing)
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
        key = _fingerprint(images)
        predictions = self._eval_predictions.get(key)
        if predictions is None:
            predictions = self._eval_predictions[key] = self.teacher_logits(images).argmax(dim=1)
        return predictions.to(images.device)

    def eval_metrics(self, logits: Tensor, targets: Tensor, images: Tensor) -> dict[str, Any]:
        teacher = self.teacher_predictions(images)
        self.agreement.update((logits.argmax(dim=1) == teacher).float())
        self.teacher_top1.update(teacher, hard_targets(targets))
        return {"agreement": self.agreement, "teacher_top1": self.teacher_top1}

    def on_train_start(self, module: L.LightningModule) -> None:
        """Scores the teacher on the validation set before the first step and logs it at that step."""
        trainer = module.trainer
        loaders = trainer.val_dataloaders
        counts = trainer.num_val_batches
        if loaders is None or not any(counts):
            return
        loaders = loaders if isinstance(loaders, (list, tuple)) else [loaders]
        accuracy = MulticlassAccuracy(self.teacher_classes, average="micro").to(module.device)
        stage = trainer.state.stage
        trainer.validating = True  # so the DataModule prepares batches for evaluation: no augmentation
        try:
            for index, (loader, count) in enumerate(zip(loaders, counts)):
                for batch in itertools.islice(loader, None if math.isinf(count) else int(count)):
                    # As Lightning's evaluation loop prepares a batch: precision, device, DataModule hooks.
                    batch = trainer.strategy.batch_to_device(trainer.precision_plugin.convert_input(batch),
                                                             dataloader_idx=index)
                    images, targets = batch[0], batch[1]
                    with trainer.precision_plugin.val_step_context():
                        accuracy.update(self.teacher_predictions(images), hard_targets(targets))
        finally:
            trainer.state.stage = stage
        value = accuracy.compute().item()  # synced over DDP ranks
        for logger in trainer.loggers:
            logger.log_metrics({"val/teacher_top1": value}, step=trainer.global_step)
        rank_zero_info(f"Teacher val top-1: {value:.2%} ({self.teacher_classes} classes, T={self.temperature}, "
                       f"alpha={self.alpha}).")
