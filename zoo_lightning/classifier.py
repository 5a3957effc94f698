"""ImageClassifier: the one LightningModule, wrapping any registered backbone.

It holds the training logic: the backbone comes from the registry, the loss from an
:class:`~zoo_lightning.objectives.Objective`, optimizer and LR schedule from LightningCLI callables
(the parameter groups and the default recipe are :mod:`zoo_lightning.optimization`'s). Devices,
precision, DDP and checkpointing stay with the Trainer; the data (and so the dataset) stays with
the DataModule. For transfer learning it loads pretrained weights into the backbone (all but the
head), hands the Trainer a :class:`~zoo_lightning.callbacks.backbone_freeze.BackboneFreeze` that
freezes the backbone, trains it at a scaled learning rate, and says which normalization its weights
expect (:attr:`ImageClassifier.expected_normalization`), which the CLI hands to the DataModule.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.types import OptimizerLRScheduler
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from zoo_lightning import metric_names as names
from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.callbacks.backbone_freeze import BackboneFreeze
from zoo_lightning.checkpoints import rebuild_backbone
from zoo_lightning.models.registry import head_parameter_names
from zoo_lightning.models.weights import build_options, library_normalization
from zoo_lightning.objectives import CrossEntropy, Objective, hard_targets, main_logits
from zoo_lightning.optimization import build_scheduler, default_lr_scheduler, default_optimizer, optimizer_groups
from zoo_lightning.options import (
    ImageSide,
    OpenUnitInterval,
    PositiveFloat,
    PositiveInt,
    PretrainedWeights,
    Stem,
    TTAMode,
    pretrained_kind,
)
from zoo_lightning.pretrained import (
    current_spelling,
    expected_normalization,
    head_modules,
    library_value,
    load_pretrained,
)
from zoo_lightning.tta import tta_logits, unsure_tta_logits

__all__ = ["ImageClassifier"]


class ImageClassifier(L.LightningModule):
    """Image classification with any backbone of the registry.

    Args:
        backbone: a registered model name (``python -m zoo_lightning models``), or
            ``torchvision:<name>`` / ``timm:<name>``.
        num_classes: classifier outputs; the CLI links it from the DataModule.
        stem: ``"cifar"`` for small inputs (32x32), ``"imagenet"`` for the paper's stem.
        backbone_kwargs: family options passed to the builder (``aux_logits``, ``se``, ...).
        objective: the loss; cross-entropy with label smoothing 0.1 when left out.
        optimizer: builds the optimizer from parameter groups (no weight decay on norms and biases).
        lr_scheduler: builds the LR schedule, stepped every optimizer step; ``total_steps`` is
            filled in from the Trainer when the scheduler takes it.
        channels_last: run the backbone and its inputs in NHWC memory format.
        compile: compile the backbone's forward with ``torch.compile``.
        norm_lr_scale: LR multiplier for the normalization layers' weights and biases (not for the
            biases of convolutions and linear layers); airbench trains BN biases at 64x the LR of
            the weights. The scheduler scales every group alike, so the ratio holds through warm-up
            and decay.
        tta: test-time augmentation in validate/test/predict: ``"flip"`` averages the logits of the
            image and its mirror, ``"flip_translate"`` adds both shifted by one pixel (four views alike),
            ``"flip_shift"`` (airbench's) weights the pair 0.5 and the pair shifted each way 0.25
            (:func:`~zoo_lightning.tta.tta_logits`). The per-epoch validation inside ``fit`` stays
            single-view, so it costs one forward pass and its curve compares across runs.
        tta_confidence: with ``tta``, only the images whose single-view top softmax probability is below
            this take the views; the rest keep their single view, at one forward pass
            (:func:`~zoo_lightning.tta.unsure_tta_logits`). Evaluation logs the share that took them
            (``test/tta_share``).
        input_size: side of the input images; the CLI links it from the DataModule's image_size. Only the model
            summary uses it, to count one image's FLOPs as ``python -m zoo_lightning models`` does.
        pretrained: weights for the backbone: ``torchvision`` (torchvision's ImageNet weights of a
            registered family with ``stem="imagenet"``, or of a ``torchvision:`` name), ``timm:TAG``
            (or ``timm``, its default tag) for a ``timm:`` name, or a file (a ``.ckpt`` of this project,
            a ``.pt``/``.pth`` state dict). All entries must fit except the head's, which starts new for
            ``num_classes``. Loaded when a new ``fit`` starts (:meth:`load_pretrained`): resuming one, or
            evaluating a checkpoint, never needs them.
        freeze_backbone: train the head alone (feature extraction): the other parameters get no
            gradient and are left out of the optimizer, and the backbone's normalization layers stay
            in eval mode, keeping the running statistics the weights came with.
        backbone_lr_scale: learning-rate multiplier of the backbone (all but the head), e.g. 0.1 to
            fine-tune pretrained layers gently; the schedule scales every group alike, so the ratio
            holds through warm-up and decay.
        unfreeze_at_epoch: with ``freeze_backbone``, train the backbone too from this epoch on (at
            ``backbone_lr_scale``). Its parameters are in the optimizer from the start, idle until then
            (no gradient: no step, no weight decay), so one schedule covers them and a resumed run
            restores them. Single-process only.
    """

    def __init__(
        self,
        backbone: str = "resnet20",
        num_classes: PositiveInt = 10,
        stem: Stem = "cifar",
        backbone_kwargs: dict[str, Any] | None = None,
        objective: Objective | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = default_lr_scheduler,
        channels_last: bool = False,
        compile: bool = False,
        norm_lr_scale: PositiveFloat = 1.0,
        tta: TTAMode | None = None,
        tta_confidence: OpenUnitInterval | None = None,
        input_size: ImageSide | None = None,
        pretrained: PretrainedWeights | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: PositiveFloat = 1.0,
        unfreeze_at_epoch: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        pretrained = current_spelling(pretrained, backbone)  # saved as spelled now (older checkpoints: a bare tag)
        _check_relations(backbone, stem, pretrained, freeze_backbone, unfreeze_at_epoch, tta, tta_confidence)
        self.save_hyperparameters(ignore=["objective", "optimizer", "lr_scheduler"])
        self.backbone = rebuild_backbone(self.hparams)
        self._head_names: list[str] | None = None
        self._freezing: BackboneFreeze | None = None  # the callback that freezes the backbone in this fit
        self._pretrained_loaded = False
        self.objective = objective if objective is not None else CrossEntropy()
        self.objective.attach(num_classes)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if input_size is not None:
            self.example_input_array = torch.zeros(1, 3, input_size, input_size)
        if compile:
            self.backbone.compile()  # in place: the state dict keeps the backbone's own names

        top_k = min(5, num_classes)
        metrics = MetricCollection(
            {
                "top1": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
                f"top{top_k}": MulticlassAccuracy(num_classes, top_k=top_k, average="micro"),
            }
        )
        self.train_metrics = metrics.clone(prefix=names.tag(names.TRAIN, ""))
        self.val_metrics = metrics.clone(prefix=names.tag(names.VAL, ""))
        self.test_metrics = metrics.clone(prefix=names.tag(names.TEST, ""))

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor | None, ...]:
        """The backbone's outputs: logits, or a tuple of them and the aux heads' logits (GoogLeNet in training)."""
        return self.backbone(images.contiguous(memory_format=self.memory_format))

    def evaluate_logits(self, images: Tensor) -> Tensor:
        """Main logits, averaged over the test-time views when ``tta`` is set (never while fitting)."""
        return self._viewed_logits(images)[0]

    def _viewed_logits(self, images: Tensor) -> tuple[Tensor, Tensor | None]:
        """Main logits, and under ``tta_confidence`` which images took the test-time views."""
        tta = None if self._fitting() else self.hparams["tta"]
        one_view = lambda views: main_logits(self(views))  # noqa: E731
        if tta is None:
            return one_view(images), None
        if self.hparams["tta_confidence"] is None:
            return tta_logits(one_view, images, tta), None
        return unsure_tta_logits(one_view, images, tta, self.hparams["tta_confidence"])

    def _fitting(self) -> bool:
        try:
            return self.trainer.state.fn == TrainerFn.FITTING
        except RuntimeError:  # attached to no Trainer: a network used on its own
            return False

    def training_step(self, batch: tuple[Tensor, Tensor] | TwoStreamBatch, batch_idx: int) -> Tensor:
        if isinstance(batch, TwoStreamBatch):
            (images, targets), unlabeled = batch
        else:
            (images, targets), unlabeled = batch, None
        outputs = self(images)
        terms = self.objective(outputs, targets, images)
        if unlabeled is not None:
            extra = self.objective.unlabeled(self(unlabeled), unlabeled)
            terms = {**terms, **{k: v for k, v in extra.items() if k != "loss"}, "loss": terms["loss"] + extra["loss"]}
        self.train_metrics(main_logits(outputs).detach(), hard_targets(targets))
        self.log_dict({names.tag(names.TRAIN, name): value.detach() for name, value in terms.items()}, prog_bar=False)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return terms["loss"]

    def _evaluate(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, stage: str) -> Tensor:
        images, targets = batch
        logits, unsure = self._viewed_logits(images)
        if unsure is not None:
            share = unsure.float().mean()
            self.log(names.tag(stage, names.TTA_SHARE), share, on_epoch=True, batch_size=len(unsure), sync_dist=True)
        loss = nn.functional.cross_entropy(logits, targets)
        metrics.update(logits, targets)
        self.log(names.tag(stage, names.LOSS), loss, on_epoch=True, sync_dist=True)
        self.log_dict(metrics, on_epoch=True, prog_bar=True)
        for name, metric in self.objective.eval_metrics(logits, targets, images).items():
            self.log(names.tag(stage, name), metric, on_epoch=True)
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, self.val_metrics, names.VAL)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._evaluate(batch, self.test_metrics, names.TEST)

    def predict_step(self, batch: Tensor | Sequence[Tensor], batch_idx: int) -> Tensor:
        images = batch if isinstance(batch, Tensor) else batch[0]
        return self.evaluate_logits(images).softmax(dim=1)

    def configure_optimizers(self) -> OptimizerLRScheduler:
        hparams = self.hparams
        head = set(self.head_names) if hparams["freeze_backbone"] or hparams["backbone_lr_scale"] != 1.0 else set()
        # What trains now, and what unfreezes later: in from the start, idle until then. Frozen to the end: left out.
        later = {id(p) for p in self._freezing.unfreezes} if self._freezing is not None else set()
        trained = {name for name, p in self.backbone.named_parameters() if p.requires_grad or id(p) in later}
        optimizer = self.optimizer_factory(
            optimizer_groups(self.backbone, trained, head, hparams["norm_lr_scale"], hparams["backbone_lr_scale"])
        )
        # Before the scheduler is built, so its base_lrs (and every later step) carry the ratios.
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("lr_scale")
        if self.lr_scheduler_factory is None:
            return optimizer
        steps = lambda: self.trainer.estimated_stepping_batches  # noqa: E731 (asked only of a schedule that takes it)
        scheduler = build_scheduler(self.lr_scheduler_factory, optimizer, steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_callbacks(self) -> list[L.Callback]:
        """:class:`BackboneFreeze` with ``freeze_backbone``: it freezes the backbone and unfreezes it at its epoch."""
        if not self.hparams["freeze_backbone"]:
            return []
        self._freezing = BackboneFreeze(head_modules(self.head_names), self.hparams["unfreeze_at_epoch"])
        return [self._freezing]

    # --- transfer learning ------------------------------------------------------------------------

    @property
    def head_names(self) -> list[str]:
        """The backbone's head parameters (:func:`~zoo_lightning.models.registry.head_parameter_names`)."""
        if self._head_names is None:
            hparams = self.hparams
            backbone = hparams["backbone"]
            options = {**build_options(hparams["pretrained"], backbone), **dict(hparams["backbone_kwargs"] or {})}
            self._head_names = head_parameter_names(backbone, hparams["num_classes"], hparams["stem"], **options)
            if not self._head_names:
                raise ValueError(
                    f"Backbone {backbone!r} has no classifier head whose size follows "
                    "num_classes, so pretrained loading and freezing cannot tell its head from the rest."
                )
        return self._head_names

    @property
    def expected_normalization(self) -> dict[str, Any] | None:
        """``{"mean", "std", "source"}`` that the pretrained weights were trained with, or None (the data's own)."""
        return self.normalization_for(self.hparams["pretrained"], self.hparams["backbone"])

    @staticmethod
    def normalization_for(pretrained: str | None, backbone: str) -> dict[str, Any] | None:
        """:attr:`expected_normalization` from the two options alone: the CLI links it to the DataModule when
        it parses the command line, before either is built."""
        return expected_normalization(pretrained, backbone)

    def load_pretrained(self) -> None:
        """Loads ``pretrained`` into the backbone, all but the head; once per instance (``fit`` calls it)."""
        pretrained, backbone = self.hparams["pretrained"], self.hparams["backbone"]
        if pretrained and not self._pretrained_loaded:
            rank_zero_info(load_pretrained(self.backbone, pretrained, backbone, self.head_names))
            self._pretrained_loaded = True

    def on_fit_start(self) -> None:
        # After a resumed fit restored its checkpoint (ckpt_path is then set): those weights are the ones to keep.
        # Before the first step, and in place, so the optimizer and an EMA copy start from the loaded weights.
        if self.trainer.ckpt_path is None:
            self.load_pretrained()


def _check_relations(
    backbone: str,
    stem: str,
    pretrained: str | None,
    freeze_backbone: bool,
    unfreeze_at_epoch: int | None,
    tta: str | None,
    tta_confidence: float | None,
) -> None:
    """Options each right alone (their types say so) but wrong together: checked here, not by the parser."""
    if tta_confidence is not None and tta is None:
        raise ValueError(
            f"--model.tta_confidence {tta_confidence} chooses which images take the test-time views, and "
            "--model.tta is unset: add --model.tta (e.g. flip_shift) or leave tta_confidence out."
        )
    if unfreeze_at_epoch is not None and not freeze_backbone:
        raise ValueError("--model.unfreeze_at_epoch needs --model.freeze_backbone true: it ends a frozen start.")
    if not pretrained:
        return
    kind, _ = pretrained_kind(pretrained)
    timm_backbone = backbone.startswith("timm:")
    if kind == "timm" and not timm_backbone:
        raise ValueError(
            f"--model.pretrained {pretrained} is timm's weights, for timm: backbones; {backbone!r} is not "
            "one: give torchvision (with --model.stem imagenet) or a weights file."
        )
    if kind == "torchvision" and timm_backbone:
        raise ValueError(
            f"--model.pretrained torchvision is for registered and torchvision: backbones; {backbone!r} "
            "is timm's: give --model.pretrained timm:TAG (or timm, its default tag)."
        )
    if kind != "file":  # a backbone without such weights fails here, before any advice about its stem
        library_normalization(library_value(pretrained), backbone)
    if kind == "torchvision" and ":" not in backbone and stem != "imagenet":
        raise ValueError(
            f"torchvision's ImageNet weights are for the ImageNet stem: add --model.stem imagenet to "
            f"--model.pretrained torchvision (backbone {backbone!r})."
        )
