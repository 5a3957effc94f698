"""ClassificationDashboard: what TensorBoard shows of each evaluation beyond top-1/top-5 and the loss.

A confusion matrix of every validation and test epoch (from the logits ``validation_step`` and
``test_step`` return), per-class accuracy under the class names, the matrix as an image, a grid of
misclassified images, and after ``validate``/``test`` the per-class table. Class names and the
normalization come from the DataModule when it has them: the LightningModule never learns which
dataset it sees.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.types import STEP_OUTPUT
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

from zoo_lightning import metric_names as names
from zoo_lightning.data.base import trainer_datamodule
from zoo_lightning.figures import confusion_figure, denormalize, misclassified_figure, pyplot
from zoo_lightning.options import NonNegativeInt, PositiveInt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ClassificationDashboard", "per_class_accuracy", "class_names"]


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of each class from a (true, predicted) confusion matrix; NaN for classes never seen."""
    confusion = confusion.double()
    return confusion.diagonal() / confusion.sum(dim=1)


# A wrong prediction kept for the grid: (normalized image on CPU, true, predicted, probability).
Wrong = tuple[Tensor, int, int, float]


def class_names(datamodule: L.LightningDataModule | None, num_classes: int) -> list[str]:
    """The DataModule's ``class_names`` when it has one per class, else ``class_0``, ``class_1``, ..."""
    found = [str(n) for n in (getattr(datamodule, "class_names", None) or [])]
    return found if len(found) == num_classes else [f"class_{i}" for i in range(num_classes)]


class ClassificationDashboard(L.Callback):
    """Per-class accuracy, confusion matrix and misclassified images of each evaluation epoch.

    Logged each validation epoch: ``val_class/<class name>`` scalars and the images
    ``val/confusion_matrix`` and ``val/misclassified``; the same for ``test``. Images are drawn by
    rank 0 only; the confusion matrix is summed over DDP ranks by torchmetrics.

    Args:
        misclassified: images in the grid of wrong predictions, spread over the true classes
            (0 turns the grid off).
        figures_every_n_epochs: draw the confusion matrix and the grid every n validation epochs
            and at the last one (the scalars are logged every epoch).
        print_table: print the per-class accuracy table at the end of ``validate`` and ``test``.
    """

    def __init__(
        self, misclassified: NonNegativeInt = 32, figures_every_n_epochs: PositiveInt = 1, print_table: bool = True
    ) -> None:
        super().__init__()
        self.misclassified = misclassified
        self.figures_every_n_epochs = figures_every_n_epochs
        self.print_table = print_table
        self.confusion: MulticlassConfusionMatrix | None = None
        self.wrong: list[Wrong] = []
        self._quota = 0
        self.last_table: list[tuple[str, float, int]] = []

    # --- collecting ------------------------------------------------------------------------------

    def _start(self, pl_module: L.LightningModule) -> None:
        num_classes = int(pl_module.hparams["num_classes"])
        # validate_args would look at the values on the host: a device sync per batch.
        self.confusion = MulticlassConfusionMatrix(num_classes, validate_args=False).to(pl_module.device)
        self.wrong = []
        # Up to `quota` images per true class, so the grid is not all one class when the set is sorted.
        self._quota = math.ceil(self.misclassified / num_classes) if self.misclassified else 0

    def _update(self, outputs: STEP_OUTPUT, batch: Any) -> None:
        if self.confusion is None or not isinstance(outputs, Tensor):
            return
        images, targets = batch[0], batch[1]
        predictions = outputs.argmax(dim=1)
        self.confusion.update(predictions, targets)
        num_classes = self.confusion.num_classes
        if self._quota and len(self.wrong) < self._quota * num_classes:
            self._keep_wrong(images, targets, predictions, outputs, num_classes)

    def _keep_wrong(
        self, images: Tensor, targets: Tensor, predictions: Tensor, logits: Tensor, num_classes: int
    ) -> None:
        # Two small device-to-host copies per eval batch, and only until every class has its quota.
        true, predicted = targets.cpu(), predictions.cpu()
        wrong = (predicted != true).nonzero().flatten()
        if not len(wrong):
            return
        taken = [0] * num_classes
        for _, t, _, _ in self.wrong:
            taken[t] += 1
        chosen = []
        for i, t, p in zip(wrong.tolist(), true[wrong].tolist(), predicted[wrong].tolist()):
            if taken[t] < self._quota:
                taken[t] += 1
                chosen.append((i, t, p))
        if not chosen:
            return
        index = torch.tensor([c[0] for c in chosen], device=images.device)
        pixels = images.index_select(0, index).detach().float().cpu()
        probability = logits.index_select(0, index).float().softmax(dim=1).max(dim=1).values.cpu().tolist()
        self.wrong += [(pixels[k], t, p, probability[k]) for k, (_, t, p) in enumerate(chosen)]

    def _finish(
        self, trainer: L.Trainer, pl_module: L.LightningModule, metric: MulticlassConfusionMatrix, stage: str
    ) -> Tensor:
        """Computes the (DDP-synced) matrix, logs the per-class scalars, returns the matrix on CPU."""
        confusion = metric.compute().cpu()  # every rank calls it: torchmetrics all-gathers here
        accuracy = per_class_accuracy(confusion)
        labels = class_names(trainer_datamodule(trainer), len(accuracy))
        counts = confusion.sum(dim=1).tolist()
        self.last_table = [(n, float(a), int(c)) for n, a, c in zip(labels, accuracy, counts)]
        values = {names.class_tag(stage, n): float(a) for n, a, c in self.last_table if c}
        if stage == names.VAL:
            for tag, value in values.items():  # equal on every rank already; sync_dist only keeps Lightning quiet
                pl_module.log(tag, value, sync_dist=True)
        else:
            # Straight to the loggers: the per-class table printed below says it better than
            # Lightning's results table would with one row per class.
            # The images scored: `report` tells a test of part of the set (limit_test_batches) by it.
            values[names.tag(stage, names.IMAGES)] = sum(counts)
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        return confusion

    # --- drawing -----------------------------------------------------------------------------------

    def _grid(self, trainer: L.Trainer, labels: list[str], title: str) -> Figure:
        """The misclassified grid: as many per true class as there is room for, sorted by class."""
        by_class: dict[int, list[Wrong]] = {}
        for item in self.wrong:
            by_class.setdefault(item[1], []).append(item)
        shown: list[Wrong] = []
        for rank in range(self._quota):  # round-robin over the classes, then grouped by class
            shown += [items[rank] for items in by_class.values() if rank < len(items)]
        shown = sorted(shown[: self.misclassified], key=lambda item: item[1])
        normalize = getattr(trainer_datamodule(trainer), "normalize", None)
        pictures = denormalize(torch.stack([item[0] for item in shown]), normalize)
        return misclassified_figure(pictures, [item[1:] for item in shown], labels, title)

    @rank_zero_only
    def _draw(self, trainer: L.Trainer, confusion: Tensor, stage: str, title: str) -> None:
        experiment = next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if experiment is None:
            return
        labels = class_names(trainer_datamodule(trainer), confusion.shape[0])
        step = trainer.global_step
        experiment.add_figure(
            f"{stage}/confusion_matrix", confusion_figure(confusion, labels, title), global_step=step, close=True
        )
        if self.wrong:
            experiment.add_figure(
                f"{stage}/misclassified", self._grid(trainer, labels, title), global_step=step, close=True
            )
        pyplot().close("all")

    @rank_zero_only
    def _print_table(self, title: str) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        table.add_column("class")
        table.add_column("accuracy", justify="right")
        table.add_column("images", justify="right")
        for name, value, count in self.last_table:
            table.add_row(name, f"{100 * value:.2f}%" if count else "-", str(count))
        total = sum(c for _, _, c in self.last_table)
        right = sum(round(v * c) for _, v, c in self.last_table if c)
        table.add_section()
        table.add_row("all", f"{100 * right / max(total, 1):.2f}%", str(total))
        Console().print(table)

    # --- Lightning hooks -----------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._update(outputs, batch)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: STEP_OUTPUT,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.confusion is None or not self.confusion.update_called:
            return
        confusion = self._finish(trainer, pl_module, self.confusion, names.VAL)
        fitting, epoch = trainer.state.fn == "fit", trainer.current_epoch
        if not fitting or epoch % self.figures_every_n_epochs == 0 or epoch + 1 == trainer.max_epochs:
            self._draw(trainer, confusion, names.VAL, f"val, epoch {epoch + 1}" if fitting else "val")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate" and self.print_table and self.last_table:
            self._print_table("Validation accuracy per class")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.confusion is None or not self.confusion.update_called:
            return
        self._draw(trainer, self._finish(trainer, pl_module, self.confusion, names.TEST), names.TEST, "test")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.print_table and self.last_table:
            self._print_table("Test accuracy per class")
