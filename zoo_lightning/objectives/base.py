"""The objective contract: what the classifier minimizes, and the helpers every objective shares."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import Metric

__all__ = ["Objective", "main_logits", "hard_targets"]


# Backbone outputs stay Any: a logits tensor, or torchvision's GoogLeNetOutputs / InceptionOutputs (untyped).
def main_logits(outputs: Any) -> Tensor:
    """The main classifier's logits, whether the backbone returned a tensor or a tuple with aux heads."""
    return outputs if isinstance(outputs, Tensor) else outputs[0]


def hard_targets(targets: Tensor) -> Tensor:
    """Class indices from index or soft (N, C) targets, for the accuracy metrics."""
    return targets.argmax(dim=1) if targets.is_floating_point() else targets


class Objective(nn.Module):
    """Base class: ``forward(outputs, targets, images) -> {"loss": ..., <term>: ...}``.

    ``outputs`` is the backbone's (a logits tensor, or GoogLeNet's named tuple in training);
    ``targets`` class indices or soft (N, C) probabilities (MixUp/CutMix). The ``"loss"`` entry is
    minimized, the other entries are logged beside it. Hooks with defaults, called by the
    classifier: :meth:`attach` checks the objective against the classifier it serves,
    :meth:`eval_metrics` adds validation/test metrics, :meth:`unlabeled` scores a batch of
    unlabeled images.
    """

    def forward(self, outputs: Any, targets: Tensor, images: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def attach(self, num_classes: int) -> None:
        """Called by the classifier once it knows its number of classes."""

    def eval_metrics(self, logits: Tensor, targets: Tensor, images: Tensor) -> dict[str, Metric]:
        """Extra metrics (torchmetrics objects, updated here) to log each validation/test epoch."""
        return {}

    def unlabeled(self, outputs: Any, images: Tensor) -> dict[str, Tensor]:
        """Loss terms for images without labels (a second training stream); most objectives have none."""
        raise ValueError(f"{type(self).__name__} cannot learn from unlabeled images; use the Distillation objective.")
