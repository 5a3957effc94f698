"""The fit's progress: Lightning's rich bar on a terminal; lines every half minute where the output is a file."""

from __future__ import annotations

import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from zoo_lightning import metric_names as names
from zoo_lightning.progress import LOGGED_EVERY_S, progress_line

__all__ = ["LoggedProgressBar", "RunProgressBar", "run_progress_bar"]


def _listed(metrics: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())


def _shown(metrics: dict[str, Any]) -> dict[str, Any]:
    # Lightning shows a version's last four characters (``on_0`` for ``version_0``, ``=0.1`` for a sweep's
    # ``lr=0.1``); the run's folder is said in full when it starts.
    return {k: v for k, v in metrics.items() if k != "v_num"}


class RunProgressBar(RichProgressBar):
    """The rich progress bar, less ``v_num``."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return _shown(super().get_metrics(trainer, pl_module))


class LoggedProgressBar(ProgressBar):
    """Progress as lines on stderr, for output that is a file (nohup, a scheduler's log), where a bar cannot redraw
    and rich shows its last state only when the fit ends: while training, validating, testing or predicting, a line
    at most every ``every_s`` seconds (batches done, rate, time left, the training loss), and one at each epoch's end
    with its validation metrics.
    """

    def __init__(self, every_s: float = LOGGED_EVERY_S) -> None:
        super().__init__()
        self.every_s = every_s
        self.enabled = True
        self._started: dict[str, tuple[float, int | None]] = {}  # stage: (start time, its first batch)
        self._last_line = 0.0

    def disable(self) -> None:
        self.enabled = False

    def enable(self) -> None:
        self.enabled = True

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self.enabled:
            kwargs.setdefault("file", sys.stderr)
            print(*args, flush=True, **kwargs)

    def _epoch(self, trainer: L.Trainer) -> str:
        epochs = trainer.max_epochs
        last = f" of {epochs}" if epochs is not None and epochs > 0 else ""
        return f"Epoch {trainer.current_epoch + 1}{last}"

    def _start(self, stage: str) -> None:
        self._started[stage] = (time.monotonic(), None)
        self._last_line = time.monotonic()  # the first line once every_s has passed, or at the stage's end

    def _line(self, stage: str, description: str, batch_idx: int, total: float, metrics: dict[str, Any]) -> None:
        started, first = self._started.get(stage, (time.monotonic(), None))
        if first is None:  # the first batch since the stage started: a resumed epoch starts past 0
            self._started[stage] = (started, first := batch_idx)
        now, done = time.monotonic(), batch_idx + 1
        if done < total and now - self._last_line < self.every_s:
            return
        self._last_line = now
        line = progress_line(description, done, total, "batches", now - started, timed=done - first)
        self.print(line + (f"; {_listed(metrics)}" if metrics else ""))

    def _train_metrics(self, trainer: L.Trainer) -> dict[str, Any]:
        # The step's loss is kept off rich's bar, which redraws; a line written every half minute says it. The last
        # validation's metrics are said once, in the line that ends its epoch.
        loss = trainer.callback_metrics.get(names.tag(names.TRAIN, names.LOSS))
        return {} if loss is None else {names.tag(names.TRAIN, names.LOSS): float(loss)}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start("train")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        metrics = self._train_metrics(trainer)
        self._line("train", self._epoch(trainer), batch_idx, self.total_train_batches, metrics)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        elapsed = time.monotonic() - self._started.get("train", (time.monotonic(), None))[0]
        metrics = _shown(self.get_metrics(trainer, pl_module))
        self.print(f"{self._epoch(trainer)} done in {elapsed:.0f} s" + (f": {_listed(metrics)}" if metrics else ""))

    def _eval_batch_start(self, stage: str, dataloader_idx: int) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # each loader is timed and counted on its own
            self._start(stage)

    def on_validation_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if not trainer.sanity_checking:
            self._eval_batch_start("validate", dataloader_idx)

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if not trainer.sanity_checking:
            self._line("validate", "Validating", batch_idx, self.total_val_batches_current_dataloader, {})

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset_dataloader_idx_tracker()

    def on_test_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_start("test", dataloader_idx)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._line("test", "Testing", batch_idx, self.total_test_batches_current_dataloader, {})

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset_dataloader_idx_tracker()

    def on_predict_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._eval_batch_start("predict", dataloader_idx)

    def on_predict_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._line("predict", "Predicting", batch_idx, self.total_predict_batches_current_dataloader, {})

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.reset_dataloader_idx_tracker()


def run_progress_bar() -> ProgressBar:
    """The rich bar where it can redraw (stdout, where it draws, is a terminal); else the logged lines."""
    from rich.console import Console

    return RunProgressBar() if Console().is_terminal else LoggedProgressBar()
