"""What many tests share: running the CLI as a user does, tiny fit arguments, a tiny DataModule and fit, and an
option checked by its type as the CLI's parser checks it."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from jsonargparse import ArgumentError, ArgumentParser
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
TINY_NET = "dashboard_tiny_net"
CLASSES = ["red", "green", "blue"]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: this checkout's package, one thread (the box has two cores)."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **extra}


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "zoo_lightning", *args]


def run_cli(args: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """``python -m zoo_lightning ARGS`` in ``cwd``, as typed in a shell; output captured as text."""
    return subprocess.run(
        cli_command(*args), cwd=cwd, env=cli_env(**env), capture_output=True, text=True, timeout=timeout
    )


def fit_args(data_dir: Path, logs: Path, *extra: str, epochs: int = 1, config: str = "cnn_cifar.yaml") -> list[str]:
    """A tiny ``fit`` on the 100-image CIFAR-10 release of the ``cifar_python`` fixture: 5 steps an epoch."""
    return [
        "fit",
        "--config",
        config,
        "--data.data_dir",
        str(data_dir),
        "--data.val_size",
        "20",
        "--data.batch_size",
        "16",
        "--trainer.max_epochs",
        str(epochs),
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.logger.init_args.save_dir",
        str(logs),
        "--trainer.enable_progress_bar",
        "false",
        *extra,
    ]


class TinyData(L.LightningDataModule):
    """Random 8x8 uint8 images, normalized with their own mean/std; val sorted by class, as real splits can be."""

    def __init__(
        self, train: int = 48, val: int = 30, batch_size: int = 8, names: list[str] | None = CLASSES, seed: int = 0
    ) -> None:
        super().__init__()
        from zoo_lightning.data.transforms import Normalize

        g = torch.Generator().manual_seed(seed)
        self.class_names = names
        self.batch_size = batch_size
        self.pixels = {
            "train": torch.randint(0, 256, (train, 3, 8, 8), generator=g, dtype=torch.uint8),
            "val": torch.randint(0, 256, (val, 3, 8, 8), generator=g, dtype=torch.uint8),
        }
        self.labels = {
            "train": torch.randint(0, 3, (train,), generator=g),
            "val": torch.arange(val) * 3 // val,
        }  # 0..0, 1..1, 2..2
        scaled = self.pixels["train"].double() / 255
        self.mean = scaled.mean(dim=(0, 2, 3)).tolist()
        self.std = scaled.std(dim=(0, 2, 3)).tolist()
        self.normalize = Normalize(self.mean, self.std)

    def normalized(self, split: str) -> torch.Tensor:
        return self.normalize(self.pixels[split])

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            TensorDataset(self.normalized(split), self.labels[split]),
            batch_size=self.batch_size,
            shuffle=split == "train",
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("val")


def tiny_net(num_classes: int = 10, stem: str = "cifar") -> torch.nn.Module:
    """A tiny test net."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, num_classes)
    )


tiny_net.__name__ = TINY_NET


def fit_tiny(root: Path, name: str, epochs: int = 2, lr: float = 0.1, seed: int = 0, **data_kwargs):
    """A fit with the dashboard callbacks and a TensorBoard logger under ``root``; returns (trainer, model, data).

    Needs the ``tiny_net`` fixture (it registers :data:`TINY_NET`).
    """
    from zoo_lightning.callbacks import ClassificationDashboard, HparamsSession, ImagesPerSecond
    from zoo_lightning.classifier import ImageClassifier

    L.seed_everything(seed, verbose=False)
    data = TinyData(seed=seed, **data_kwargs)
    model = ImageClassifier(TINY_NET, num_classes=3, optimizer=partial(torch.optim.SGD, lr=lr, momentum=0.9))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=TensorBoardLogger(root, name=name, default_hp_metric=False),
        callbacks=[
            ClassificationDashboard(misclassified=6),
            HparamsSession(),
            ImagesPerSecond(),
            ModelCheckpoint(monitor="val/top1", mode="max", filename="best", save_last=True),
        ],
    )
    trainer.fit(model, datamodule=data)
    return trainer, model, data


def events(run_dir: Path):
    """TensorBoard's reader over a run folder, every scalar and image kept."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0}).Reload()


def hand_per_class(model: torch.nn.Module, data: TinyData) -> list[tuple[int, int]]:
    """(right, count) per class of the model's argmax on the val split."""
    with torch.no_grad():
        predictions = model.eval()(data.normalized("val")).argmax(dim=1)
    labels = data.labels["val"]
    return [(int(((predictions == c) & (labels == c)).sum()), int((labels == c).sum())) for c in range(3)]


def set_up(datamodule_class: type, root: Path, **kwargs):
    """A DataModule over the tiny release in ``root``, prepared and set up for fit as the Trainer would."""
    data = datamodule_class(data_dir=str(root), **kwargs)
    data.prepare_data()
    data.setup("fit")
    return data


def check_option_type(
    cls: type, option: str, bad: str, good: str, expected: Any, *given: str, skip: tuple[str, ...] = ()
) -> None:
    """``--OPTION BAD`` is refused by jsonargparse at parse time, naming the option and the value; ``--OPTION GOOD``
    parses to ``expected``, of its plain type (an int stays an int: checkpoints load weights-only).

    The parser reads ``cls``'s constructor signature as the CLI does; ``given`` are other arguments it needs
    (a required teacher, say), ``skip`` parameters left out (a scheduler's optimizer).
    """
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, skip=set(skip))
    with pytest.raises(ArgumentError) as refused:
        parser.parse_args([*given, f"--{option}", bad])
    assert f'"{option}"' in str(refused.value) and bad in str(refused.value), str(refused.value)
    value = parser.parse_args([*given, f"--{option}", good])[option]
    assert value == expected and type(value) is type(expected), value


def option_error(cls: type, *argv: str, key: str = "model") -> str:
    """What the parser says when ``argv`` sets ``cls``'s options (``--{key}.NAME VALUE``) to a value its type refuses.

    The constructor is never called: a typed option is refused while the command line is parsed.
    """
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, key)
    try:
        parser.parse_args(list(argv))
    except ArgumentError as error:
        return str(error)
    raise AssertionError(f"{' '.join(argv)} was accepted")


class SignalAtStep(L.Callback):
    """Sends this process ``signum`` (Ctrl-C's SIGINT by default) once training has taken ``step`` steps, as a
    user at the keyboard would: ``--trainer.callbacks+=tests.helpers.SignalAtStep --trainer.callbacks.step N``."""

    def __init__(self, step: int, signum: int = 2) -> None:
        super().__init__()
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
