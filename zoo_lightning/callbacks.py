"""Dashboard callbacks: what TensorBoard shows beyond loss, top-1/top-5 and the learning rate.

:class:`ImagesPerSecond` logs training throughput from the host clock. :class:`ClassificationDashboard`
keeps a confusion matrix of every validation and test epoch (from the logits that
``validation_step``/``test_step`` return) and logs per-class accuracy under the class names, the
matrix as an image, a grid of misclassified images, and the run's hyper-parameters for TensorBoard's
HPARAMS tab; after ``validate``/``test`` it prints the per-class table. Class names and the
normalization come from the DataModule when it has them: the LightningModule never learns which
dataset it sees.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["ClassificationDashboard", "ImagesPerSecond", "per_class_accuracy", "class_names", "denormalize"]

# The hyper-parameters the HPARAMS table opens on (the others are a tick away).
KEY_HPARAMS = ("backbone", "objective", "lr", "batch_size", "max_epochs")
# Scalars the HPARAMS tab shows beside the hyper-parameters (blank where a run never logged one).
HPARAM_METRICS = ("hp/best_val_top1", "val/top1", "val/loss", "test/top1", "test/loss", "train/images_per_sec")


class ImagesPerSecond(L.Callback):
    """Logs ``train/images_per_sec`` once per training epoch: the images of all DDP ranks per second.

    Timed with ``time.perf_counter`` from the epoch start to the end of its last batch, so the loop
    gets no device synchronization (on a GPU the last batch's queued kernels are not waited for: a
    small error, once per epoch). Validation run inside the epoch is left out of the time.
    """

    def __init__(self) -> None:
        super().__init__()
        self.images = 0
        self.seconds = 0.0
        self._since: float | None = None

    def _pause(self) -> None:
        if self._since is not None:
            self.seconds += time.perf_counter() - self._since
            self._since = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.images, self.seconds, self._since = 0, 0.0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # An unlabeled stream (distillation) is extra work per step, not more training images.
        labeled = batch["labeled"] if isinstance(batch, dict) else batch
        self.images += int(labeled[0].shape[0]) * trainer.world_size
        self._pause()
        self._since = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pause()  # mid-epoch validation (val_check_interval < 1) is not training time

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._since = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # The time since the last batch ended is epoch bookkeeping, not throughput: drop it.
        self._since = None
        if self.images and self.seconds > 0:
            # Every rank logs its own estimate of the global rate; sync_dist averages them.
            pl_module.log("train/images_per_sec", self.images / self.seconds, sync_dist=True)


def per_class_accuracy(confusion: Tensor) -> Tensor:
    """Recall of each class from a (true, predicted) confusion matrix; NaN for classes never seen."""
    confusion = confusion.double()
    return confusion.diagonal() / confusion.sum(dim=1)


def class_names(datamodule: Any, num_classes: int) -> list[str]:
    """The DataModule's ``class_names`` when it has one per class, else ``class_0``, ``class_1``, ..."""
    names = [str(n) for n in (getattr(datamodule, "class_names", None) or [])]
    return names if len(names) == num_classes else [f"class_{i}" for i in range(num_classes)]


def denormalize(images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """(N, C, H, W) normalized images back to [0, 1]; each image min-max scaled when mean/std are unknown."""
    images = images.float()
    if mean is not None and std is not None:
        shape = (1, -1, 1, 1)
        images = images * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    else:
        low = images.amin(dim=(1, 2, 3), keepdim=True)
        high = images.amax(dim=(1, 2, 3), keepdim=True)
        images = (images - low) / (high - low).clamp_min(1e-8)
    return images.clamp(0, 1)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # headless: figures go to TensorBoard and PNG files, never to a window
    import matplotlib.pyplot as plt

    return plt


def _feature_key_hparams(experiment: Any) -> None:
    """Puts :data:`KEY_HPARAMS` first in the HPARAMS tab, whose table shows only its first few columns.

    TensorBoard orders columns by the ``differs`` flag, then by name, and ticks the first five; the
    flag is set on the key hyper-parameters so the table opens on them, not on ``channels_last``.
    """
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = experiment.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in KEY_HPARAMS
    value.metadata.plugin_data.content = data.SerializeToString()


def _hparam_value(value: Any) -> int | float | str | bool:
    # TensorBoard's hparams summary takes numbers, strings and booleans only.
    return value if isinstance(value, (int, float, str, bool)) else str(value)


class ClassificationDashboard(L.Callback):
    """Per-class accuracy, confusion matrix, misclassified images and hparams for TensorBoard.

    Logged each validation epoch: ``val_class/<class name>`` scalars, ``hp/best_val_top1``, and the
    images ``val/confusion_matrix`` and ``val/misclassified``; the same for ``test``. Images are
    drawn by rank 0 only; the confusion matrix is summed over DDP ranks by torchmetrics. The
    hyper-parameters (backbone, objective, optimizer, lr, batch size, epochs, ...) are written once
    training starts, with :data:`HPARAM_METRICS` as the HPARAMS tab's columns, and saved in the
    checkpoint so that a later ``test --ckpt_path`` reports them with the run's best val top-1.

    Args:
        misclassified: images in the grid of wrong predictions, spread over the true classes
            (0 turns the grid off).
        figures_every_n_epochs: draw the confusion matrix and the grid every n validation epochs
            and at the last one (the scalars are logged every epoch).
        print_table: print the per-class accuracy table at the end of ``validate`` and ``test``.
    """

    def __init__(self, misclassified: int = 32, figures_every_n_epochs: int = 1, print_table: bool = True) -> None:
        super().__init__()
        if misclassified < 0 or figures_every_n_epochs < 1:
            raise ValueError("misclassified must be >= 0 and figures_every_n_epochs >= 1, got "
                             f"{misclassified} and {figures_every_n_epochs}.")
        self.misclassified = misclassified
        self.figures_every_n_epochs = figures_every_n_epochs
        self.print_table = print_table
        self.confusion: MulticlassConfusionMatrix | None = None
        # Wrong predictions kept for the grid: (normalized image on CPU, true, predicted, probability).
        self.wrong: list[tuple[Tensor, int, int, float]] = []
        self._quota = 0
        self.best_val_top1: float | None = None
        self.run_params: dict[str, Any] = {}
        self.last_table: list[tuple[str, float, int]] = []

    # --- collecting ------------------------------------------------------------------------------

    def _start(self, pl_module: L.LightningModule) -> None:
        num_classes = int(pl_module.hparams.num_classes)
        # validate_args would look at the values on the host: a device sync per batch.
        self.confusion = MulticlassConfusionMatrix(num_classes, validate_args=False).to(pl_module.device)
        self.wrong = []
        # Up to `quota` images per true class, so the grid is not all one class when the set is sorted.
        self._quota = math.ceil(self.misclassified / num_classes) if self.misclassified else 0

    def _update(self, outputs: Any, batch: Any) -> None:
        if self.confusion is None or not isinstance(outputs, Tensor):
            return
        images, targets = batch[0], batch[1]
        predictions = outputs.argmax(dim=1)
        self.confusion.update(predictions, targets)
        if self._quota and len(self.wrong) < self._quota * self.confusion.num_classes:
            self._keep_wrong(images, targets, predictions, outputs)

    def _keep_wrong(self, images: Tensor, targets: Tensor, predictions: Tensor, logits: Tensor) -> None:
        # Two small device-to-host copies per eval batch, and only until every class has its quota.
        true, predicted = targets.cpu(), predictions.cpu()
        wrong = (predicted != true).nonzero().flatten()
        if not len(wrong):
            return
        taken = [0] * self.confusion.num_classes
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

    def _finish(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Tensor:
        """Computes the (DDP-synced) matrix, logs the per-class scalars, returns the matrix on CPU."""
        confusion = self.confusion.compute().cpu()  # every rank calls it: torchmetrics all-gathers here
        accuracy = per_class_accuracy(confusion)
        names = class_names(trainer.datamodule, len(accuracy))
        counts = confusion.sum(dim=1).tolist()
        self.last_table = [(n, float(a), int(c)) for n, a, c in zip(names, accuracy, counts)]
        values = {f"{stage}_class/{n}": float(a) for n, a, c in self.last_table if c}
        if stage == "val":
            for tag, value in values.items():  # equal on every rank already; sync_dist only keeps Lightning quiet
                pl_module.log(tag, value, sync_dist=True)
        else:
            # Straight to the loggers: the per-class table printed below says it better than
            # Lightning's results table would with one row per class.
            for logger in trainer.loggers:
                logger.log_metrics(values, step=trainer.global_step)
        return confusion

    # --- drawing -----------------------------------------------------------------------------------

    @staticmethod
    def _tensorboard(trainer: L.Trainer) -> Any:
        return next((lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)), None)

    @rank_zero_only
    def _draw(self, trainer: L.Trainer, confusion: Tensor, stage: str, title: str) -> None:
        experiment = self._tensorboard(trainer)
        if experiment is None:
            return
        plt = _pyplot()
        names = class_names(trainer.datamodule, confusion.shape[0])
        figure = self.confusion_figure(confusion, names, title)
        experiment.add_figure(f"{stage}/confusion_matrix", figure, global_step=trainer.global_step, close=True)
        if self.wrong:
            figure = self.misclassified_figure(trainer.datamodule, names, title)
            experiment.add_figure(f"{stage}/misclassified", figure, global_step=trainer.global_step, close=True)
        plt.close("all")

    def confusion_figure(self, confusion: Tensor, names: list[str], title: str) -> Any:
        """torchmetrics' confusion-matrix plot, sized to the class count, with readable cell text."""
        n = len(names)
        figure, ax = self.confusion.plot(val=confusion, labels=names, add_text=n <= 20, cmap="Blues")
        side = min(16.0, max(6.0, 0.55 * n + 2))
        figure.set_size_inches(side + 0.8, side)
        peak = max(int(confusion.max()), 1)
        for text in ax.texts:  # dark text on pale cells, white on dark ones, sized to the cell
            value = float(text.get_text() or 0)
            text.set_color("white" if value > 0.55 * peak else "black")
            text.set_fontsize(max(6, min(12, 90 / n)))
        ax.tick_params(axis="both", labelsize=max(5, min(10, 120 / n)))
        ax.set_xticks(range(n), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n), names, rotation=0)
        right, total = int(confusion.trace()), int(confusion.sum())
        ax.set_title(f"{title}: {right}/{total} right ({100 * right / max(total, 1):.1f}%)", fontsize=11)
        return figure

    def misclassified_figure(self, datamodule: Any, names: list[str], title: str) -> Any:
        """A grid of wrong predictions, as many per true class as there is room for, sorted by class."""
        plt = _pyplot()
        by_class: dict[int, list] = {}
        for item in self.wrong:
            by_class.setdefault(item[1], []).append(item)
        shown: list = []
        for rank in range(self._quota):  # round-robin over the classes, then grouped by class
            shown += [items[rank] for items in by_class.values() if rank < len(items)]
        shown = sorted(shown[: self.misclassified], key=lambda item: item[1])
        mean, std = getattr(datamodule, "mean", None), getattr(datamodule, "std", None)
        pictures = denormalize(torch.stack([item[0] for item in shown]), mean, std)
        columns = min(8, len(shown))
        rows = math.ceil(len(shown) / columns)
        figure, axes = plt.subplots(rows, columns, figsize=(1.7 * columns, 1.95 * rows + 0.4), squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for ax, picture, (_, true, predicted, probability) in zip(axes.flat, pictures, shown):
            ax.imshow(picture.permute(1, 2, 0).squeeze(-1).numpy(), interpolation="nearest",
                      cmap="gray" if picture.shape[0] == 1 else None)
            ax.set_title(f"{names[true]}\n→ {names[predicted]} ({probability:.0%})", fontsize=8, color="firebrick")
        figure.suptitle(f"{title}: misclassified images, true → predicted (confidence)", fontsize=10)
        figure.tight_layout()
        return figure

    # --- hyper-parameters --------------------------------------------------------------------------

    def _collect_hparams(self, trainer: L.Trainer, pl_module: L.LightningModule, training: bool) -> dict[str, Any]:
        hparams = pl_module.hparams
        objective = getattr(pl_module, "objective", None)
        params: dict[str, Any] = {
            "stage": "fit" if training else "test",
            "backbone": hparams.get("backbone", type(pl_module).__name__),
            "stem": hparams.get("stem", "-"),
            "parameters": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            "objective": type(objective).__name__ if objective is not None else "-",
        }
        if objective is not None:  # the objective's own settings: label_smoothing, temperature, alpha, ...
            params.update({f"objective.{k}": v for k, v in vars(objective).items()
                           if not k.startswith("_") and k != "training" and isinstance(v, (int, float, str, bool))})
        if training and trainer.optimizers:
            optimizer = trainer.optimizers[0]
            params["optimizer"] = type(optimizer).__name__
            params.update({k: v for k, v in optimizer.defaults.items()
                           if k in ("lr", "weight_decay", "momentum", "nesterov", "betas") and v is not None})
        if training and trainer.lr_scheduler_configs:
            params["lr_scheduler"] = type(trainer.lr_scheduler_configs[0].scheduler).__name__
        datamodule = trainer.datamodule
        params.update({
            "data": type(datamodule).__name__ if datamodule is not None else "-",
            "batch_size": getattr(datamodule, "batch_size", None) or "-",
            "precision": str(trainer.precision),
            "devices": trainer.world_size,
        })
        if training:
            params["max_epochs"] = trainer.max_epochs if trainer.max_epochs is not None else -1
        params.update({k: hparams[k] for k in ("channels_last", "compile", "tta") if k in hparams})
        return {k: _hparam_value(v) for k, v in params.items()}

    @rank_zero_only
    def _write_hparams(self, trainer: L.Trainer, params: dict[str, Any]) -> None:
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                # The summaries TensorBoard's HPARAMS tab reads; the metric columns are plain scalar tags
                # logged elsewhere, so a run still in progress (or killed) shows its values so far.
                experiment, start, _ = hparams_summary(params, {tag: 0.0 for tag in HPARAM_METRICS})
                _feature_key_hparams(experiment)
                writer = logger.experiment._get_file_writer()
                writer.add_summary(experiment)
                writer.add_summary(start)
            else:
                logger.log_hyperparams(params)

    @rank_zero_only
    def _end_session(self, trainer: L.Trainer, success: bool) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
        from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

        # TensorBoard's own session_end_pb needs TensorFlow; this is the same summary, end time included.
        end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS if success else api_pb2.STATUS_FAILURE,
                                             end_time_secs=time.time())
        content = plugin_data_pb2.HParamsPluginData(session_end_info=end, version=metadata.PLUGIN_DATA_VERSION)
        plugin = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=content.SerializeToString())
        summary = Summary(value=[Summary.Value(tag=metadata.SESSION_END_INFO_TAG,
                                               metadata=SummaryMetadata(plugin_data=plugin))])
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):  # the HPARAMS tab's status column; `report` reads it too
                logger.experiment._get_file_writer().add_summary(summary)

    def _from_checkpoint(self, path: str | None, load_state: bool) -> None:
        """The epoch of a checkpoint, and the fit-time hparams and best val top-1 this callback saved in it."""
        if not path or not Path(path).is_file():
            return
        try:  # mmap: the weights are not read, only the small callback state
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception:
            return
        states = checkpoint.get("callbacks") or {}
        state = next((s for k, s in states.items() if str(k).startswith(type(self).__name__)), None)
        if load_state and isinstance(state, dict):
            self.load_state_dict(state)
        if isinstance(checkpoint.get("epoch"), int):  # which epoch's weights are evaluated
            self.run_params["checkpoint_epoch"] = checkpoint["epoch"] + 1

    def state_dict(self) -> dict[str, Any]:
        return {"best_val_top1": self.best_val_top1, "hparams": dict(self.run_params)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_val_top1 = state_dict.get("best_val_top1", self.best_val_top1)
        self.run_params = dict(state_dict.get("hparams") or self.run_params)

    # --- Lightning hooks -----------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own log_hyperparams and with the optimizers built; a resumed fit keeps its best.
        self.run_params = self._collect_hparams(trainer, pl_module, training=True)
        self._write_hparams(trainer, self.run_params)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_session(trainer, success=True)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._end_session(trainer, success=False)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Lightning restores this callback's state from `ckpt_path`; read it ourselves where it did not.
        self._from_checkpoint(trainer.ckpt_path, load_state=not self.run_params)
        params = {**self._collect_hparams(trainer, pl_module, training=False), **self.run_params, "stage": "test"}
        if trainer.ckpt_path:
            params["ckpt_path"] = str(trainer.ckpt_path)
        self._write_hparams(trainer, params)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._update(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.confusion is None or not self.confusion.update_called:
            return
        confusion = self._finish(trainer, pl_module, "val")
        top1 = float(confusion.trace() / confusion.sum().clamp_min(1))  # = val/top1 (argmax, micro)
        if trainer.state.fn == "fit":
            self.best_val_top1 = max(top1, self.best_val_top1 or 0.0)
            pl_module.log("hp/best_val_top1", self.best_val_top1, sync_dist=True)
        epoch = trainer.current_epoch
        if epoch % self.figures_every_n_epochs == 0 or epoch + 1 == trainer.max_epochs or trainer.state.fn != "fit":
            self._draw(trainer, confusion, "val", f"val, epoch {epoch + 1}" if trainer.state.fn == "fit" else "val")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "validate" and self.print_table and self.last_table:
            self._print_table("Validation accuracy per class")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.confusion is None or not self.confusion.update_called:
            return
        confusion = self._finish(trainer, pl_module, "test")
        self._draw(trainer, confusion, "test", "test")
        if self.best_val_top1 is not None:
            for logger in trainer.loggers:
                logger.log_metrics({"hp/best_val_top1": self.best_val_top1}, step=trainer.global_step)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._end_session(trainer, success=True)
        if self.print_table and self.last_table:
            self._print_table("Test accuracy per class")

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
