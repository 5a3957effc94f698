"""BackboneFreeze: the backbone frozen while the head trains (feature extraction), trained from an epoch on.

The classifier adds it through ``configure_callbacks`` when ``--model.freeze_backbone true``; its
options stay the model's (``freeze_backbone``, ``unfreeze_at_epoch``, ``backbone_lr_scale``).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

import lightning as L
from lightning.pytorch.callbacks import BaseFinetuning
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.optim import Optimizer

from zoo_lightning.optimization import NORM_LAYERS

__all__ = ["BackboneFreeze"]


class BackboneFreeze(BaseFinetuning):
    """Freezes ``pl_module.backbone`` but for its head before training, and trains it from ``unfreeze_at_epoch`` on.

    Frozen, the backbone's parameters get no gradient (so no step and no weight decay either), and its
    normalization layers stay in eval mode: they normalize with the running statistics the weights came
    with and leave them as they are, so the head learns on the features evaluation will show it.
    (Lightning's own freezing keeps BatchNorm in training mode with ``track_running_stats=False``, which
    normalizes each batch by its own statistics: features evaluation never produces.)

    The optimizer is left alone: the classifier puts the parameters that unfreeze later (:attr:`unfreezes`)
    into it from the start, idle while they have no gradient, so the one LR schedule scales them at
    ``backbone_lr_scale`` of the head's from the first step and a resumed run restores the optimizer as saved.
    (``unfreeze_and_add_param_group`` would add a group at the unfreezing epoch, which a ``LambdaLR``
    built before it has no base learning rate for: the group would keep one fixed learning rate.)

    Args:
        head: the backbone's head modules (``fc``, ``classifier.2``): they train throughout.
        unfreeze_at_epoch: the first epoch that trains the backbone too; None keeps it frozen to the end.
    """

    def __init__(self, head: Collection[str], unfreeze_at_epoch: int | None = None) -> None:
        super().__init__()
        self.head = frozenset(head)
        self.unfreeze_at_epoch = unfreeze_at_epoch
        self.frozen: list[nn.Parameter] = []  # what freeze_before_training turned off
        self.fixed: list[nn.Parameter] = []  # what was off already: the network's own (airbench's BN scales)
        self.thawed = False

    def _body(self, pl_module: L.LightningModule) -> list[nn.Module]:
        """Every module of the backbone but the head's (each holds its own parameters: nothing is counted twice)."""
        backbone = cast(nn.Module, pl_module.backbone)  # nn.Module types an attribute it looks up Tensor | Module
        return [
            m
            for name, m in backbone.named_modules()
            if name not in self.head and not any(name.startswith(f"{h}.") for h in self.head)
        ]

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit":
            return  # validate, test and predict train nothing
        if self.unfreeze_at_epoch is not None and trainer.world_size > 1:
            raise ValueError(
                "--model.unfreeze_at_epoch works in one process only (DistributedDataParallel fixes the "
                "trained parameters when it starts). Run two fits instead: --model.freeze_backbone true, "
                "then --model.pretrained RUN/checkpoints/best.ckpt with --model.backbone_lr_scale."
            )
        super().setup(trainer, pl_module, stage)

    @property
    def unfreezes(self) -> list[nn.Parameter]:
        """The parameters it froze that train again from ``unfreeze_at_epoch`` (none when it never unfreezes)."""
        return self.frozen if self.unfreeze_at_epoch is not None else []

    def freeze_before_training(self, pl_module: L.LightningModule) -> None:
        body = [p for m in self._body(pl_module) for p in m.parameters(recurse=False)]
        self.frozen = [p for p in body if p.requires_grad]
        self.fixed = [p for p in body if not p.requires_grad]
        for module in self._body(pl_module):
            self.freeze_module(module)
        self.thawed = False

    def finetune_function(self, pl_module: L.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        # At every epoch start, after Lightning's check for modules left in eval mode at the start of training.
        if self.unfreeze_at_epoch is None or epoch < self.unfreeze_at_epoch:
            self._norms_training(pl_module, False)
        elif not self.thawed:
            self.make_trainable(self._body(pl_module))
            for param in self.fixed:
                param.requires_grad_(False)
            self._norms_training(pl_module, True)
            self.thawed = True
            rank_zero_info(f"Epoch {epoch}: the backbone trains from now on (unfreeze_at_epoch).")

    def _norms_training(self, pl_module: L.LightningModule, mode: bool) -> None:
        for module in self._body(pl_module):
            if isinstance(module, NORM_LAYERS):
                module.train(mode)
