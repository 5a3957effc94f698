"""What the objective tests share: a tiny cnn, random batches, a quiet trainer, a teacher checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import Logger
from torch.utils.data import DataLoader, TensorDataset

from zoo_lightning.classifier import ImageClassifier

TINY_CNN = {"widths": (8, 16, 16)}


class Recorder(Logger):
    """Keeps every logged (step, metrics) row in memory."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[int, dict[str, float]]] = []

    name = "recorder"
    version = 0

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append((step, dict(metrics)))

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def values(self, key: str) -> list[tuple[int, float]]:
        return [(step, row[key]) for step, row in self.rows if key in row]


def quiet_trainer(tmp_path, logger=False, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def random_data(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def random_loader(n: int = 16, seed: int = 0) -> DataLoader:
    return DataLoader(TensorDataset(*random_data(n, seed)), batch_size=8)


@pytest.fixture(scope="package")
def teacher_ckpt(tmp_path_factory):
    """A checkpoint of this project: a tiny cnn with the ImageNet stem (the students use the CIFAR stem)."""
    tmp_path = tmp_path_factory.mktemp("teacher")
    model = ImageClassifier("cnn", num_classes=10, stem="imagenet", backbone_kwargs=TINY_CNN)
    trainer = quiet_trainer(tmp_path, max_steps=4)
    trainer.fit(model, random_loader())
    path = tmp_path / "teacher.ckpt"
    trainer.save_checkpoint(path)
    return path
