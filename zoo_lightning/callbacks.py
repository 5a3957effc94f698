"""Dashboard callbacks: what TensorBoard shows beyond loss, accuracy and learning rate.

:class:`ClassificationDashboard` keeps a confusion matrix of every validation and test epoch and
logs per-class accuracy under the class names, the matrix as an image, a grid of misclassified
images, and the run's hyper-parameters with its final metrics (TensorBoard's HPARAMS tab). At the end
of ``test`` it prints the per-class accuracy table. Class names and normalization come from the
DataModule when it has them: the LightningModule never learns which dataset it sees.
"""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["ClassificationDashboard", "ImagesPerSecond", "per_class_accuracy"]


class ImagesPerSecond(L.Callback):
    """Logs ``train/images_per_sec`` once per epoch: images over the wall time of the training batches.

    Timed with the host clock between the first and last batch of the epoch, so it adds no device
    synchronization to the loop (on a GPU the last batch's queued work is not waited for: a small,
    constant error per epoch). Validation time is excluded.
    """

    def __init__(self) -> None:
        super().__init__()
        self.start = self.end = 0.0
        self.images = 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start, self.images = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        first = batch["labeled"] if isinstance(batch, dict) else batch
        self.images += int(first[0].shape[0]) * trainer.world_size
        self.end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.images and self.end > self.start:
            pl_module.log("train/images_per_sec", self.images / (self.end - self.start), rank_zero_only=True)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of each class from a (true, predicted) confusion matrix; NaN for classes never seen."""
    confusion = confusion.double()
    return confusion.diagonal() / confusion.sum(dim=1)


class ClassificationDashboard(L.Callback):
    """Per-class accuracy, confusion matrix, misclassified images and hparams for TensorBoard.

    Args:
        misclassified: images in the grid of wrong predictions (0 turns it off).
        figures_every_n_epochs: draw the confusion matrix and grid every n validation epochs
            (the per-class scalars are logged every epoch).
    """

    def __init__(self, misclassified: int = 32, figures_every_n_epochs: int = 1) -> None:
        super().__init__()
        self.misclassified = misclassified
        self.figures_every_n_epochs = figures_every_n_epochs
        self.confusion: MulticlassConfusionMatrix | None = None
        self.wrong: list[tuple[Tensor, int, int]] = []
        self.best_val_top1: float | None = None
        self.last_table: list[tuple[str, float, int]] = []

    # --- helpers ------------------------------------------------------------------------------

    @staticmethod
    def class_names(trainer: L.Trainer, num_classes: int) -> list[str]:
        names = list(getattr(trainer.datamodule, "class_names", []) or [])
        return names if len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]

    def _start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.confusion = MulticlassConfusionMatrix(pl_module.hparams.num_classes).to(pl_module.device)
        self.wrong = []

    def _update(self, outputs: Any, batch: Any) -> None:
        if self.confusion is None or not isinstance(outputs, Tensor):
            return
        images, targets = batch[0], batch[1]
        predictions = outputs.argmax(dim=1)
        self.confusion.update(predictions, targets)
        if len(self.wrong) < self.misclassified:
            for i in torch.nonzero(predictions != targets).flatten()[: self.misclassified - len(self.wrong)].tolist():
                self.wrong.append((images[i].detach().float().cpu(), int(targets[i]), int(predictions[i])))

    def _finish(self, trainer: L.Trainer, stage: str) -> Tensor:
        confusion = self.confusion.compute().cpu()  # synced over DDP ranks by torchmetrics
        accuracy = per_class_accuracy(confusion)
        names = self.class_names(trainer, len(accuracy))
        self.last_table = [(n, float(a), int(c)) for n, a, c in zip(names, accuracy, confusion.sum(dim=1))]
        for name, value, count in self.last_table:
            if count:
                trainer.lightning_module.log(f"{stage}_class/{name}", value, sync_dist=False, rank_zero_only=True)
        return confusion

    def _experiment(self, trainer: L.Trainer) -> Any:
        logger = trainer.logger
        return getattr(logger, "experiment", None) if logger is not None else None

    @rank_zero_only
    def _draw(self, trainer: L.Trainer, confusion: Tensor, stage: str) -> None:
        experiment = self._experiment(trainer)
        if experiment is None or not hasattr(experiment, "add_figure"):
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        names = self.class_names(trainer, confusion.shape[0])
        figure, _ = self.confusion.plot(val=confusion, labels=names)
        figure.set_size_inches(max(6, 0.6 * len(names)), max(5, 0.55 * len(names)))
        figure.tight_layout()
        experiment.add_figure(f"{stage}/confusion_matrix", figure, global_step=trainer.global_step)
        plt.close(figure)
        if self.wrong:
            experiment.add_figure(f"{stage}/misclassified", self._grid(trainer, names), global_step=trainer.global_step)

    def _grid(self, trainer: L.Trainer, names: list[str]) -> Any:
        import matplotlib.pyplot as plt

        datamodule = trainer.datamodule
        normalize = getattr(datamodule, "normalize", None)
        columns = 8
        rows = (len(self.wrong) + columns - 1) // columns
        figure, axes = plt.subplots(rows, columns, figsize=(columns * 1.6, rows * 1.9), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, (image, true, predicted) in zip(axes.flat, self.wrong):
            shown = normalize.inverse(image.unsqueeze(0))[0] if normalize is not None else image
            ax.imshow(shown.clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            ax.set_title(f"{names[true]}\n→ {names[predicted]}", fontsize=8, color="firebrick")
        figure.suptitle("Misclassified validation images (true → predicted)", fontsize=10)
        figure.tight_layout()
        return figure

    def _log_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule, metrics: dict[str, float]) -> None:
        if trainer.logger is None:
            return
        hparams = pl_module.hparams
        objective = type(pl_module.objective).__name__
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        params = {
            "backbone": hparams.backbone, "stem": hparams.stem, "objective": objective,
            "parameters_M": round(sum(p.numel() for p in pl_module.backbone.parameters()) / 1e6, 3),
            "batch_size": getattr(trainer.datamodule, "batch_size", 0), "max_epochs": trainer.max_epochs or -1,
            "lr": optimizer.defaults.get("lr", 0.0) if optimizer else 0.0,
            "optimizer": type(optimizer).__name__ if optimizer else "none",
            "precision": str(trainer.precision),
        }
        trainer.logger.log_hyperparams(params, metrics)

    # --- Lightning hooks ----------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        confusion = self._finish(trainer, "val")
        if trainer.current_epoch % self.figures_every_n_epochs == 0 or trainer.current_epoch + 1 == trainer.max_epochs:
            self._draw(trainer, confusion, "val")
        top1 = trainer.callback_metrics.get("val/top1")
        if top1 is not None and (self.best_val_top1 is None or float(top1) > self.best_val_top1):
            self.best_val_top1 = float(top1)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.best_val_top1 is not None:
            self._log_hparams(trainer, pl_module, {"hp/best_val_top1": self.best_val_top1})

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        confusion = self._finish(trainer, "test")
        self._draw(trainer, confusion, "test")
        top1 = trainer.callback_metrics.get("test/top1")
        metrics = {"hp/test_top1": float(top1)} if top1 is not None else {}
        if self.best_val_top1 is not None:
            metrics["hp/best_val_top1"] = self.best_val_top1
        self._log_hparams(trainer, pl_module, metrics)
        self._print_table()

    @rank_zero_only
    def _print_table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Test accuracy per class")
        table.add_column("class")
        table.add_column("accuracy", justify="right")
        table.add_column("images", justify="right")
        for name, value, count in self.last_table:
            table.add_row(name, f"{100 * value:.2f}%" if count else "-", str(count))
        Console().print(table)
