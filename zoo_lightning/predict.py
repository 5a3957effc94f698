"""Prediction on a folder of one's own images, and the CSV it writes.

    python -m zoo_lightning predict --ckpt_path RUN/checkpoints/best.ckpt --data.predict_dir my_photos/

The checkpoint carries everything needed (backbone, class names, input size, normalization), so no
dataset is read. Images of any size and any format Pillow reads are resized (shorter side) and
center-cropped to the training input size, then batched as uint8 like the training data.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = ["load_folder", "PredictionWriter", "PREDICTIONS_CSV"]

PREDICTIONS_CSV = "predictions.csv"


def _resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """Shorter side to ``size``, then the central ``size`` x ``size`` square, as torchvision's eval transform."""
    image = image.convert("RGB")
    scale = size / min(image.size)
    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))),
                           Image.BILINEAR)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return np.asarray(resized.crop((left, top, left + size, top + size)))


def load_folder(folder: str | Path, size: int) -> tuple[Tensor, list[Path]]:
    """Every readable image under ``folder`` as uint8 (N, 3, size, size), with their paths.

    Files Pillow cannot read are skipped with one warning that lists them; no readable image at all
    is an error.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"predict_dir {str(root)!r} is not a folder.")
    images, paths, skipped = [], [], []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            with Image.open(path) as image:
                images.append(_resize_center_crop(image, size).transpose(2, 0, 1))
            paths.append(path)
        except (UnidentifiedImageError, OSError, ValueError):
            skipped.append(path)
    if skipped:
        warnings.warn(f"Skipped {len(skipped)} file(s) that are not readable images: "
                      + ", ".join(str(p) for p in skipped), stacklevel=2)
    if not images:
        raise ValueError(f"No readable image under {str(root)!r}: put .jpg/.png/... files there.")
    return torch.from_numpy(np.stack(images)), paths


class PredictionWriter(BasePredictionWriter):
    """Writes ``predictions.csv`` (path, top-1 class and probability, top-5 classes) into the run folder
    and prints its first rows."""

    def __init__(self, show: int = 10) -> None:
        super().__init__(write_interval="batch")
        self.show = show
        self.rows: list[list[Any]] = []
        self.path: Path | None = None

    def on_predict_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rows = []

    def write_on_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, prediction: Tensor,
                           batch_indices: Sequence[int] | None, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        datamodule = trainer.datamodule
        names, paths = list(datamodule.class_names), datamodule.predict_paths
        probs = prediction.float().cpu()
        top = probs.topk(min(5, probs.shape[1]), dim=1)
        for index, values, classes in zip(batch[1].tolist(), top.values.tolist(), top.indices.tolist()):
            self.rows.append([str(paths[index]), names[classes[0]], f"{values[0]:.4f}",
                              " ".join(names[c] for c in classes)])

    def on_predict_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        folder = Path(trainer.log_dir or ".")
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / PREDICTIONS_CSV
        with open(self.path, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "top1_class", "top1_probability", "top5_classes"])
            writer.writerows(self.rows)
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"{len(self.rows)} predictions -> {self.path}")
        for column in ("path", "top-1", "probability", "top-5"):
            table.add_column(column)
        for row in self.rows[: self.show]:
            table.add_row(*row)
        Console().print(table)
