"""``fit``, ``validate``, ``test``, ``predict``: LightningCLI with the project's defaults.

    python -m zoo_lightning fit --config resnet20_cifar.yaml --data.data_dir data
    python -m zoo_lightning test --ckpt_path lightning_logs/resnet20_cifar/version_0/checkpoints/best.ckpt

Every run starts from the recipe in ``configs/defaults.yaml``; a ``--config`` gives what differs and
may be a shipped config's name. Runs are versioned TensorBoard folders with best/last checkpoints.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from zoo_lightning import metric_names as names
from zoo_lightning.argv import DEFAULTS, option_value, resolve_config_args
from zoo_lightning.callbacks import (ClassificationDashboard, HparamsSession, ImagesPerSecond, NonFiniteLossStop,
                                     PredictionWriter)
from zoo_lightning.callbacks.save_config import AtomicSaveConfigCallback
from zoo_lightning.checkpoints import AtomicCheckpointIO, datamodule_args, read_checkpoint
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.data import ImageDataModule
from zoo_lightning.runs import DEFAULT_EXPERIMENT, experiment_name

__all__ = ["ZooCLI", "run", "TRAINER_COMMANDS"]

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
RUNTIME_OPTIONS = ("tta", "channels_last", "compile")  # model options a checkpoint does not fix
# Lightning's notices that say nothing a user of this project can act on.
_NOTICES = ("GPU available: False", "TPU available: False", "💡 Tip:", "Loading `train_dataloader` to estimate")


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOTICES)


def quiet_lightning() -> None:
    """Drops :data:`_NOTICES` and the deprecation warning Lightning's own pytree code raises under torch 2.14."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


class ZooArgumentParser(LightningArgumentParser):
    """Errors show one usage line and the message, not the hundred-line usage of every option."""

    def print_usage(self, file=None) -> None:
        prog = self.prog.replace(" [options]", "").replace("__main__.py", "python -m zoo_lightning")
        print(f"usage: {prog} [--config CONFIG] [--trainer.* ...] [--model.* ...] [--data.* ...]", file=file)


class ZooCLI(LightningCLI):
    """LightningCLI with the project's defaults: the shipped recipe, versioned TensorBoard runs, best/last
    checkpoints written atomically, and the dashboard callbacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        kwargs.setdefault("save_config_callback", AtomicSaveConfigCallback)
        kwargs.setdefault("parser_class", ZooArgumentParser)
        # `--trainer.max_epoch 3` must be an error, not silently taken as max_epochs.
        parser_kwargs = {"allow_abbrev": False, **{c: {"default_config_files": [str(DEFAULTS)]} for c in TRAINER_COMMANDS}}
        kwargs.setdefault("parser_kwargs", parser_kwargs)
        trainer_defaults = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "lightning_logs", "name": DEFAULT_EXPERIMENT, "default_hp_metric": False},
            },
        }
        trainer_defaults.update(kwargs.pop("trainer_defaults", None) or {})
        super().__init__(ImageClassifier, ImageDataModule, *args, trainer_defaults=trainer_defaults, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.input_size", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": names.tag(names.VAL, names.TOP1),
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": False,
                "checkpoint.auto_insert_metric_name": False,
            }
        )
        # Lightning 2.6 refreshes `save_last` only when a top-k checkpoint was written at that step,
        # so last.ckpt would go stale whenever val/top1 does not improve; this one is rewritten every
        # epoch, which is what `--ckpt_path last` resumes from.
        parser.add_lightning_class_args(ModelCheckpoint, "last_checkpoint")
        parser.set_defaults({"last_checkpoint.filename": "last", "last_checkpoint.monitor": None,
                             "last_checkpoint.save_top_k": 1, "last_checkpoint.enable_version_counter": False})
        parser.add_lightning_class_args(ClassificationDashboard, "dashboard")
        parser.add_lightning_class_args(ImagesPerSecond, "throughput")
        parser.add_lightning_class_args(NonFiniteLossStop, "nonfinite")
        parser.add_lightning_class_args(LearningRateMonitor, "lr_monitor")
        parser.set_defaults({"lr_monitor.logging_interval": "step"})

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # Parsed here rather than by LightningCLI, which warns whenever `args` and sys.argv are both given.
        self.config = parser.parse_args(data_args_from_checkpoint(resolve_config_args(list(args))))
        # Lightning next puts the checkpoint's hyper-parameters over the command line's. The checkpoint
        # decides what the network is; how to run it (TTA, memory format, compile) stays the user's choice,
        # put back in before_instantiate_classes.
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        self._runtime_options = {key: model.get(key) for key in RUNTIME_OPTIONS} if model is not None else {}

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        for key, value in self._runtime_options.items():
            config.model[key] = value
        logger = config.trainer.get("logger")
        if logger and hasattr(logger, "init_args"):
            configs = [str(p) for p in (config.get("config") or []) if Path(str(p)).resolve() != DEFAULTS]
            logger.init_args.name = experiment_name(logger.init_args.get("name"), configs, config.model.backbone)
        if config.trainer.get("sync_batchnorm") and (
            config.trainer.get("accelerator") == "cpu" or not (torch.cuda.is_available() or torch.xpu.is_available())
        ):
            raise ValueError(
                "--trainer.sync_batchnorm true needs GPUs: PyTorch's SyncBatchNorm has no CPU implementation. "
                "On CPU drop it; each process then normalizes over its own part of the batch."
            )
        if self.subcommand == "fit" and config.get("ckpt_path") == "last" and logger and hasattr(logger, "init_args"):
            self._resume_in_place(config, logger.init_args)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self._get(self.config_init, "trainer", default={})
        given = config.get("callbacks")
        callbacks = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
        callbacks.append(HparamsSession())
        if self.subcommand == "predict":
            callbacks.append(PredictionWriter())
        # A rich progress bar unless the user turned bars off or brought their own.
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(RichProgressBar())
        # Checkpoints are written beside their target and renamed into place, unless the user brings a CheckpointIO.
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        return super().instantiate_trainer(callbacks=callbacks, plugins=plugins, **kwargs)

    def _resume_in_place(self, config: Any, logger_args: Any) -> None:
        """``fit --ckpt_path last``: continue the experiment's newest run in its own folder.

        The run's ``checkpoints/last.ckpt`` is restored (global step, epoch, optimizer and LR
        schedule), TensorBoard appends to the same version, and the resolved config is saved beside
        the original one as ``config.resume-N.yaml``, never over it.
        """
        experiment = Path(logger_args.get("save_dir") or "lightning_logs") / str(logger_args.get("name"))
        version = logger_args.get("version")
        candidates = [experiment / str(version)] if version is not None else sorted(
            (p for p in experiment.glob("*") if (p / "checkpoints" / "last.ckpt").is_file()),
            key=lambda p: (p / "checkpoints" / "last.ckpt").stat().st_mtime)
        run = candidates[-1] if candidates else None
        if run is None or not (run / "checkpoints" / "last.ckpt").is_file():
            raise FileNotFoundError(
                f"Nothing to resume: no {experiment}/<version>/checkpoints/last.ckpt. "
                "Drop `--ckpt_path last` to start a new run, or pass a checkpoint path."
            )
        logger_args.version = run.name
        config.ckpt_path = str(run / "checkpoints" / "last.ckpt")
        resumes = len(list(run.glob("config.resume-*.yaml")))
        self.save_config_kwargs = {**self.save_config_kwargs, "config_filename": f"config.resume-{resumes + 1}.yaml"}


def data_args_from_checkpoint(argv: list[str]) -> list[str]:
    """For validate/test/predict with ``--ckpt_path``: the DataModule the checkpoint was trained with.

    Inserted right after the subcommand, so a ``--config`` or ``--data.*`` the user gives still wins;
    ``predict --ckpt_path X --data.predict_dir DIR`` then needs nothing else.
    """
    if not argv or argv[0] not in TRAINER_COMMANDS:
        return argv
    path = option_value(argv, "--ckpt_path")
    if not path or path in ("last", "best", "hpc"):
        return argv
    checkpoint = read_checkpoint(path)  # a bad file is refused here, in one line, before anything is built
    data = datamodule_args(checkpoint) if argv[0] != "fit" else None
    return argv if data is None else [argv[0], "--data", json.dumps(data), *argv[1:]]


def run(argv: list[str]) -> None:
    """Runs one of :data:`TRAINER_COMMANDS`: ``argv`` starts with its name."""
    quiet_lightning()
    ZooCLI(args=argv)
