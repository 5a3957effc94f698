"""ImageClassifier: the one LightningModule, wrapping any registered backbone.

It holds the training logic only: the backbone comes from the registry, the loss from an
:class:`~zoo_lightning.objectives.Objective`, optimizer and LR schedule from LightningCLI callables.
Devices, precision, DDP and checkpointing stay with the Trainer; the data (and so the dataset)
stays with the DataModule. For transfer learning it loads pretrained weights into the backbone (all
but the head), freezes the backbone or trains it at a scaled learning rate, and says which
normalization its weights expect (:attr:`ImageClassifier.expected_normalization`), which the CLI
hands to the DataModule.
"""

from __future__ import annotations

import inspect
from typing import Any, Iterable

import lightning as L
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from zoo_lightning import metric_names as names
from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.checkpoints import rebuild_backbone
from zoo_lightning.models.registry import head_parameter_names
from zoo_lightning.models.weights import TORCHVISION, build_options, library_normalization, library_of
from zoo_lightning.objectives import CrossEntropy, Objective, hard_targets, main_logits
from zoo_lightning.pretrained import expected_normalization, load_pretrained
from zoo_lightning.schedulers import WarmupCosineLR

__all__ = ["ImageClassifier", "parameter_groups"]

TTA_MODES = (None, "flip", "flip_translate", "flip_shift")


def _translate(images: Tensor, shift: int, mode: str = "constant") -> Tensor:
    """Shifts images by ``shift`` pixels down and right (negative: up and left); the uncovered edge is
    zeros (``mode="constant"``) or the image mirrored (``"reflect"``)."""
    n, c, h, w = images.shape
    padded = nn.functional.pad(images, (abs(shift),) * 4, mode=mode)
    start = abs(shift) - shift
    return padded[:, :, start : start + h, start : start + w]


def default_optimizer(params: Iterable) -> torch.optim.Optimizer:
    """SGD with Nesterov momentum 0.9, lr 0.1, weight decay 5e-4: the standard CIFAR ResNet recipe."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def default_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int | None = None) -> WarmupCosineLR:
    """Linear warm-up over 5% of the steps, then cosine decay to zero, stepped per batch."""
    return WarmupCosineLR(optimizer, total_steps=total_steps)


NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def parameter_groups(module: nn.Module) -> list[dict[str, Any]]:
    """Three groups: weights that decay; normalization layers' weights and biases; other biases.

    Weight decay skips the last two (1-d tensors); ``norm_lr_scale`` multiplies the second's LR.
    Frozen parameters are left out.
    """
    norms = {id(p) for m in module.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}
    decay, norm, bias = [], [], []
    for param in module.parameters():
        if param.requires_grad:
            (norm if id(param) in norms else bias if param.ndim <= 1 else decay).append(param)
    # The optimizer's own weight_decay applies to the first group; the others override it with 0.
    return [{"params": decay}, {"params": norm, "weight_decay": 0.0}, {"params": bias, "weight_decay": 0.0}]


def _accepts_total_steps(factory: Any) -> bool:
    # jsonargparse hands partial(call, instantiator, SchedulerClass, **init_args): the class is in args.
    target = next((a for a in getattr(factory, "args", ()) if isinstance(a, type)), getattr(factory, "func", factory))
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return False
    given = getattr(factory, "keywords", {}) or {}
    return "total_steps" in params and given.get("total_steps") is None


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
        compile: wrap the backbone's forward in ``torch.compile``.
        norm_lr_scale: LR multiplier for the normalization layers' weights and biases (not for the
            biases of convolutions and linear layers); airbench trains BN biases at 64x the LR of
            the weights. The scheduler scales every group alike, so the ratio holds through warm-up
            and decay.
        tta: test-time augmentation in validate/test/predict: ``"flip"`` averages the logits of the
            image and its mirror; ``"flip_translate"`` adds both views shifted by one pixel
            (right-down and left-up, zero-filled), four views weighted alike; ``"flip_shift"``
            (airbench's level 2) weights the image-and-mirror pair 0.5 and each pair shifted by one
            pixel up-left and down-right, with reflect padding, 0.25. The per-epoch validation inside
            ``fit`` stays single-view, so it costs one forward pass and its curve compares across runs.
        input_size: side of the input images; the CLI links it from the DataModule's image_size. Only the model
            summary uses it, to count one image's FLOPs as ``python -m zoo_lightning models`` does.
        pretrained: weights for the backbone: ``"torchvision"`` (torchvision's ImageNet weights of a
            registered family with ``stem="imagenet"``, or of a ``torchvision:`` name), a timm tag for a
            ``timm:`` name, or a file (a ``.ckpt`` of this project, a ``.pt``/``.pth`` state dict). All
            entries must fit except the head's, which starts new for ``num_classes``. Loaded when a new
            ``fit`` starts (:meth:`load_pretrained`): resuming one, or evaluating a checkpoint, never
            needs them.
        freeze_backbone: train the head alone (feature extraction): the other parameters get no
            gradient and are left out of the optimizer, and the backbone's BatchNorm layers stay in
            eval mode, keeping the running statistics the weights came with.
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
        num_classes: int = 10,
        stem: str = "cifar",
        backbone_kwargs: dict[str, Any] | None = None,
        objective: Objective | None = None,
        optimizer: OptimizerCallable = default_optimizer,
        lr_scheduler: LRSchedulerCallable | None = default_lr_scheduler,
        channels_last: bool = False,
        compile: bool = False,
        norm_lr_scale: float = 1.0,
        tta: str | None = None,
        input_size: int | None = None,
        pretrained: str | None = None,
        freeze_backbone: bool = False,
        backbone_lr_scale: float = 1.0,
        unfreeze_at_epoch: int | None = None,
    ) -> None:
        super().__init__()
        _check_transfer_options(backbone, stem, pretrained, freeze_backbone, backbone_lr_scale, unfreeze_at_epoch)
        if norm_lr_scale <= 0:
            raise ValueError(f"norm_lr_scale must be > 0 (1.0 trains norms and biases at the base LR), got {norm_lr_scale}.")
        if tta not in TTA_MODES:
            raise ValueError(f"Unknown tta {tta!r}: choose one of {', '.join(map(str, TTA_MODES))}.")
        self.save_hyperparameters(ignore=["objective", "optimizer", "lr_scheduler"])
        self.backbone = rebuild_backbone(self.hparams)
        self._head_names: list[str] | None = None
        self._pretrained_loaded = False
        self._backbone_frozen = freeze_backbone
        if freeze_backbone:
            self._set_backbone_trainable(False)
        self.objective = objective if objective is not None else CrossEntropy()
        self.objective.attach(num_classes)
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        if input_size is not None:
            self.example_input_array = torch.zeros(1, 3, input_size, input_size)
        # Set past nn.Module.__setattr__ so the (compiled) alias is not registered twice in state_dict.
        object.__setattr__(self, "_forward", torch.compile(self.backbone) if compile else self.backbone)

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

    def forward(self, images: Tensor) -> Any:
        return self._forward(images.contiguous(memory_format=self.memory_format))

    def evaluate_logits(self, images: Tensor) -> Tensor:
        """Main logits, averaged over the test-time views when ``tta`` is set."""
        tta = None if self._fitting() else self.hparams.tta
        if tta is None:
            return main_logits(self(images))
        pair = lambda x: (main_logits(self(x)) + main_logits(self(x.flip(3)))) / 2  # noqa: E731
        if tta == "flip":
            return pair(images)
        if tta == "flip_translate":
            views = [images, images.flip(3)]
            views += [_translate(images, 1), _translate(views[1], -1)]
            return torch.stack([main_logits(self(v)) for v in views]).mean(dim=0)
        return (0.5 * pair(images) + 0.25 * pair(_translate(images, -1, "reflect"))
                + 0.25 * pair(_translate(images, 1, "reflect")))

    def _fitting(self) -> bool:
        return self._trainer is not None and self._trainer.state.fn == TrainerFn.FITTING

    def training_step(self, batch: tuple[Tensor, Tensor] | TwoStreamBatch, batch_idx: int) -> Tensor:
        two_streams = isinstance(batch, TwoStreamBatch)
        images, targets = batch.labeled if two_streams else batch
        outputs = self(images)
        terms = self.objective(outputs, targets, images)
        if two_streams:
            extra = self.objective.unlabeled(self(batch.unlabeled), batch.unlabeled)
            terms = {**terms, **{k: v for k, v in extra.items() if k != "loss"}, "loss": terms["loss"] + extra["loss"]}
        self.train_metrics(main_logits(outputs).detach(), hard_targets(targets))
        self.log_dict({names.tag(names.TRAIN, name): value.detach() for name, value in terms.items()}, prog_bar=False)
        self.log_dict(self.train_metrics, on_step=False, on_epoch=True)
        return terms["loss"]

    def _evaluate(self, batch: tuple[Tensor, Tensor], metrics: MetricCollection, stage: str) -> Tensor:
        images, targets = batch
        logits = self.evaluate_logits(images)
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

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.evaluate_logits(images).softmax(dim=1)

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(self._optimizer_groups())
        # Before the scheduler is built, so its base_lrs (and every later step) carry the ratios.
        for group in optimizer.param_groups:
            group["lr"] *= group.pop("lr_scale")
        if self.lr_scheduler_factory is None:
            return optimizer
        if _accepts_total_steps(self.lr_scheduler_factory):
            scheduler = self.lr_scheduler_factory(optimizer, total_steps=int(self.trainer.estimated_stepping_batches))
        else:
            scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- transfer learning ------------------------------------------------------------------------

    @property
    def head_names(self) -> list[str]:
        """The backbone's head parameters (:func:`~zoo_lightning.models.registry.head_parameter_names`)."""
        if self._head_names is None:
            hparams = self.hparams
            options = {**build_options(hparams.pretrained, hparams.backbone), **dict(hparams.backbone_kwargs or {})}
            self._head_names = head_parameter_names(hparams.backbone, hparams.num_classes, hparams.stem, **options)
            if not self._head_names:
                raise ValueError(f"Backbone {hparams.backbone!r} has no classifier head whose size follows num_classes, "
                                 "so pretrained loading and freezing cannot tell its head from the rest.")
        return self._head_names

    @property
    def expected_normalization(self) -> dict[str, Any] | None:
        """``{"mean", "std", "source"}`` that the pretrained weights were trained with, or None (the data's own)."""
        return self.normalization_for(self.hparams.pretrained, self.hparams.backbone)

    @staticmethod
    def normalization_for(pretrained: str | None, backbone: str) -> dict[str, Any] | None:
        """:attr:`expected_normalization` from the two options alone: the CLI links it to the DataModule when
        it parses the command line, before either is built."""
        return expected_normalization(pretrained, backbone)

    def load_pretrained(self) -> None:
        """Loads ``pretrained`` into the backbone, all but the head; once per instance (``fit`` calls it)."""
        if self.hparams.pretrained and not self._pretrained_loaded:
            rank_zero_info(load_pretrained(self.backbone, self.hparams.pretrained, self.hparams.backbone,
                                           self.head_names))
            self._pretrained_loaded = True

    def setup(self, stage: str) -> None:
        if stage != TrainerFn.FITTING:
            return
        if self.hparams.unfreeze_at_epoch is not None and self.trainer.world_size > 1:
            raise ValueError("--model.unfreeze_at_epoch works in one process only (DistributedDataParallel fixes the "
                             "trained parameters when it starts). Run two fits instead: --model.freeze_backbone true, "
                             "then --model.pretrained RUN/checkpoints/best.ckpt with --model.backbone_lr_scale.")

    def on_fit_start(self) -> None:
        # After a resumed fit restored its checkpoint (ckpt_path is then set): those weights are the ones to keep.
        # Before the first step, and in place, so the optimizer and an EMA copy start from the loaded weights.
        if self.trainer.ckpt_path is None:
            self.load_pretrained()

    def _set_backbone_trainable(self, trainable: bool) -> None:
        head = set(self.head_names)
        for name, param in self.backbone.named_parameters():
            if name not in head:
                param.requires_grad_(trainable)

    def _frozen_in(self, epoch: int) -> bool:
        until = self.hparams.unfreeze_at_epoch
        return bool(self.hparams.freeze_backbone) and (until is None or epoch < until)

    def train(self, mode: bool = True) -> "ImageClassifier":
        super().train(mode)
        if mode and self._backbone_frozen:
            head_modules = {name.rpartition(".")[0] for name in self.head_names}
            for name, module in self.backbone.named_modules():
                if isinstance(module, _BATCH_NORMS) and name not in head_modules:
                    module.eval()  # frozen statistics: the running mean/var the weights were trained with
        return self

    def on_train_start(self) -> None:
        if not self.hparams.freeze_backbone:
            return
        # Here, after Lightning's check for modules left in eval mode, which frozen BatchNorm layers would trip.
        self._backbone_frozen = self._frozen_in(self.current_epoch)
        self._set_backbone_trainable(not self._backbone_frozen)
        self.train()

    def on_train_epoch_start(self) -> None:
        frozen = self._frozen_in(self.current_epoch)
        if frozen != self._backbone_frozen:
            self._backbone_frozen = frozen
            self._set_backbone_trainable(True)
            self.train()
            rank_zero_info(f"Epoch {self.current_epoch}: the backbone trains from now on (unfreeze_at_epoch), at "
                           f"{self.hparams.backbone_lr_scale} x the head's learning rate.")

    def _optimizer_groups(self) -> list[dict[str, Any]]:
        """:func:`parameter_groups`, each with its ``lr_scale`` (``norm_lr_scale`` on the second), and each split
        into the backbone's part (at ``backbone_lr_scale``) and the head's when those differ.

        A backbone frozen for the whole run is left out (it has no trainable parameter); one that unfreezes
        later is in from the start.
        """
        hparams = self.hparams
        later = hparams.freeze_backbone and hparams.unfreeze_at_epoch is not None
        if later:
            self._set_backbone_trainable(True)  # for parameter_groups, which leaves out frozen parameters
        groups = parameter_groups(self.backbone)
        if later:
            self._set_backbone_trainable(False)
        for index, group in enumerate(groups):
            group["lr_scale"] = hparams.norm_lr_scale if index == 1 else 1.0
        if not hparams.freeze_backbone and hparams.backbone_lr_scale == 1.0:
            return groups
        head = {id(p) for n, p in self.backbone.named_parameters() if n in set(self.head_names)}
        split = []
        for part, scale in (("backbone", hparams.backbone_lr_scale), ("head", 1.0)):
            for index, group in enumerate(groups):
                params = [p for p in group["params"] if (id(p) in head) == (part == "head")]
                # Named for the LR monitor: lr-SGD/backbone, lr-SGD/backbone_pg2, ..., lr-SGD/head, ...
                split.append({**group, "params": params, "name": part if index == 0 else f"{part}_pg{index + 1}",
                              "lr_scale": group["lr_scale"] * scale})
        return [group for group in split if group["params"]]


_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # kept in eval mode when frozen


def _check_transfer_options(backbone: str, stem: str, pretrained: str | None, freeze_backbone: bool,
                            backbone_lr_scale: float, unfreeze_at_epoch: int | None) -> None:
    if not backbone_lr_scale > 0:
        raise ValueError(f"backbone_lr_scale must be > 0 (1.0 trains the backbone at the head's learning rate; "
                         f"--model.freeze_backbone true freezes it), got {backbone_lr_scale}.")
    if unfreeze_at_epoch is not None:
        if not freeze_backbone:
            raise ValueError("--model.unfreeze_at_epoch needs --model.freeze_backbone true: it ends a frozen start.")
        if unfreeze_at_epoch < 1:
            raise ValueError(f"unfreeze_at_epoch must be >= 1 (the first epoch trains the head alone), got "
                             f"{unfreeze_at_epoch}; leave --model.freeze_backbone out to train everything from the start.")
    library = library_of(pretrained, backbone)
    if library == TORCHVISION and ":" not in backbone and stem != "imagenet":
        raise ValueError(f"torchvision's ImageNet weights are for the ImageNet stem: add --model.stem imagenet to "
                         f"--model.pretrained torchvision (backbone {backbone!r}).")
    if library is not None:
        library_normalization(pretrained, backbone)  # a backbone without such weights fails here, before any work
