"""PredictionWriter: ``predict``'s CSV of the top classes of every image, and a table of the first rows.

python -m zoo_lightning predict --ckpt_path RUN/checkpoints/best.ckpt --data.predict_dir my_photos/
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import Tensor

from zoo_lightning.data.base import image_datamodule
from zoo_lightning.options import NonNegativeInt

__all__ = ["PredictionWriter", "PREDICTIONS_CSV"]

PREDICTIONS_CSV = "predictions.csv"


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (path, top-1 class and probability, top-5 classes) into the run folder
    and prints its first rows.

    The DataModule says which file each batch row is (``predict_paths``, indexed by the batch's
    second element) and what the classes are called (``class_names``).
    """

    def __init__(self, show: NonNegativeInt = 10) -> None:
        super().__init__(write_interval="batch")
        self.show = show
        self.rows: list[list[str]] = []
        self.path: Path | None = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Tensor,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        datamodule = image_datamodule(trainer, "PredictionWriter")
        names, paths = list(datamodule.class_names), datamodule.predict_paths
        probs = prediction.float().cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        for index, values, classes in zip(batch[1].tolist(), top.values.tolist(), top.indices.tolist()):
            self.rows.append(
                [str(paths[index]), names[classes[0]], f"{values[0]:.4f}", " ".join(names[c] for c in classes)]
            )

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(trainer.log_dir or ".")  # every rank asks: log_dir is a broadcast from rank 0
        if not trainer.is_global_zero:
            return
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / PREDICTIONS_CSV
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "top1_class", "top1_probability", "top5_classes"])
            writer.writerows(self.rows)
        from rich.console import Console
        from rich.table import Table

        shown = min(self.show, len(self.rows))
        table = Table(title=f"The first {shown} of {len(self.rows)} predictions")
        for column in ("path", "top-1", "probability", "top-5"):
            table.add_column(column)
        for row in self.rows[:shown]:
            table.add_row(*row)
        Console().print(table)
        print(f"Wrote {len(self.rows)} predictions to {self.path}", flush=True)  # whole, whatever the terminal's width
