"""``python -m zoo_lightning``: LightningCLI's fit/validate/test/predict plus the project's own tools.

    python -m zoo_lightning fit --config configs/resnet20_cifar.yaml --data.data_dir data
    python -m zoo_lightning models 'resnet*'

A ``--config`` that is not an existing path is looked up in the project's ``configs/`` folder.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Callable

import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.plugins.io import CheckpointIO

from zoo_lightning.callbacks import (ClassificationDashboard, HparamsSession, ImagesPerSecond, NonFiniteLossStop,
                                     PredictionWriter)
from zoo_lightning.callbacks.save_config import AtomicSaveConfigCallback
from zoo_lightning.checkpoints import AtomicCheckpointIO, CheckpointWriteError
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.data import ImageDataModule
from zoo_lightning.models import UnknownModelError

__all__ = ["ZooCLI", "main", "CONFIG_DIR", "EXTRA_COMMANDS"]

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
DEFAULT_EXPERIMENT = "default"
RUNTIME_OPTIONS = ("tta", "channels_last", "compile")  # model options a checkpoint does not fix


class ZooArgumentParser(LightningArgumentParser):
    """Errors show one usage line and the message, not the hundred-line usage of every option."""

    def print_usage(self, file=None) -> None:
        prog = self.prog.replace(" [options]", "")
        print(f"usage: {prog} [--config CONFIG] [--trainer.* ...] [--model.* ...] [--data.* ...]", file=file)


class ZooCLI(LightningCLI):
    """LightningCLI with the project's defaults: versioned TensorBoard runs, best/last checkpoints."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        kwargs.setdefault("save_config_callback", AtomicSaveConfigCallback)
        # `--trainer.max_epoch 3` must be an error, not silently taken as max_epochs.
        kwargs.setdefault("parser_kwargs", {"allow_abbrev": False})
        kwargs.setdefault("parser_class", ZooArgumentParser)
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
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val/top1",
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

    def _instantiate_trainer(self, config: dict, callbacks: list):
        callbacks = [*callbacks, HparamsSession()]
        if self.subcommand == "predict":
            callbacks = [*callbacks, PredictionWriter()]
        # A rich progress bar unless the user turned bars off or brought their own.
        given = [*callbacks, *(config.get("callbacks") or [])]
        if config.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, RichProgressBar()]
        # Checkpoints are written beside their target and renamed into place, unless the user brings a CheckpointIO.
        plugins = config.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
        return super()._instantiate_trainer(config, callbacks)

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        if args is None or isinstance(args, (list, tuple)):
            args = resolve_config_args(list(sys.argv[1:] if args is None else args))
            self.config = parser.parse_args(data_args_from_checkpoint(args))
        else:
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # Lightning puts the checkpoint's hyper-parameters over the command line's. The checkpoint decides
        # what the network is; how to run it (TTA, memory format, compile) stays the user's choice.
        subcommand = self.config.get("subcommand")
        model = self.config[subcommand].get("model") if subcommand else None
        chosen = {key: model.get(key) for key in RUNTIME_OPTIONS} if model is not None else {}
        super()._parse_ckpt_path()
        for key, value in chosen.items():
            self.config[subcommand].model[key] = value

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        logger = config.trainer.get("logger")
        # Runs without an experiment name are filed under their backbone, not all under "default".
        if logger and hasattr(logger, "init_args") and logger.init_args.get("name") == DEFAULT_EXPERIMENT:
            logger.init_args.name = str(config.model.backbone).replace(":", "_")
        if config.trainer.get("sync_batchnorm") and (
            config.trainer.get("accelerator") == "cpu" or not (torch.cuda.is_available() or torch.xpu.is_available())
        ):
            raise ValueError(
                "--trainer.sync_batchnorm true needs GPUs: PyTorch's SyncBatchNorm has no CPU implementation. "
                "On CPU drop it; each process then normalizes over its own part of the batch."
            )
        if self.subcommand == "fit" and config.get("ckpt_path") == "last" and logger and hasattr(logger, "init_args"):
            self._resume_in_place(config, logger.init_args)

    def _resume_in_place(self, config, logger_args) -> None:
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


def resolve_config_args(argv: list[str]) -> list[str]:
    """Rewrites ``--config NAME`` to ``configs/NAME`` when NAME is no file but the project has it."""
    resolved = list(argv)
    for i, arg in enumerate(resolved):
        name, value = (arg.split("=", 1) + [None])[:2] if arg.startswith("--config=") else (arg, None)
        if name != "--config":
            continue
        if value is None:
            if i + 1 >= len(resolved):
                break
            value, slot = resolved[i + 1], i + 1
        else:
            slot = i
        if not Path(value).exists():
            for candidate in (CONFIG_DIR / value, CONFIG_DIR / f"{value}.yaml"):
                if candidate.is_file():
                    resolved[slot] = str(candidate) if slot != i else f"--config={candidate}"
                    break
    return resolved


def option_value(argv: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in ``argv`` (the last one wins), else None."""
    value = None
    for i, arg in enumerate(argv):
        if arg.startswith(f"{name}="):
            value = arg.split("=", 1)[1]
        elif arg == name and i + 1 < len(argv):
            value = argv[i + 1]
    return value


def read_checkpoint(path: str) -> dict:
    """A checkpoint written by ``fit``, or a one-line error saying what is wrong with the file."""
    import torch

    if not Path(path).is_file():
        raise FileNotFoundError(f"Checkpoint {path!r} does not exist.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"Cannot read checkpoint {path!r} ({type(error).__name__}): the file is truncated or "
                         "not a PyTorch checkpoint. Use another one, e.g. the run's checkpoints/last.ckpt.") from None
    if not isinstance(checkpoint, dict) or not {"state_dict", "hyper_parameters"} <= checkpoint.keys():
        raise ValueError(f"{path!r} is not a checkpoint written by `python -m zoo_lightning fit` "
                         "(no state_dict/hyper_parameters).")
    return checkpoint


def data_args_from_checkpoint(argv: list[str]) -> list[str]:
    """For validate/test/predict with ``--ckpt_path``: the DataModule the checkpoint was trained with.

    Inserted right after the subcommand, so a ``--config`` or ``--data.*`` the user gives still wins;
    ``predict --ckpt_path X --data.predict_dir DIR`` then needs nothing else.
    """
    if not argv or argv[0] not in ("fit", "validate", "test", "predict"):
        return argv
    path = option_value(argv, "--ckpt_path")
    if not path or path in ("last", "best", "hpc"):
        return argv
    checkpoint = read_checkpoint(path)
    if argv[0] == "fit":
        return argv
    state = next((v for v in checkpoint.values() if isinstance(v, dict) and "mean" in v and "std" in v), {})
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    class_path = hparams.get("_class_path") or state.get("class_path")
    if class_path is None:
        return argv
    init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}  # drop the CLI's bookkeeping keys
    return [argv[0], "--data", json.dumps({"class_path": class_path, "init_args": init_args}), *argv[1:]]


def run_models(argv: list[str]) -> None:
    """``models [PATTERN]``: the registry as a table."""
    import argparse

    from zoo_lightning.models.summary import print_model_table

    parser = argparse.ArgumentParser(prog="python -m zoo_lightning models", description=run_models.__doc__)
    parser.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    print_model_table(parser.parse_args(argv).pattern)


def run_stats(argv: list[str]) -> None:
    """``stats --data.class_path X --data.init_args.data_dir D`` (or ``--config``): normalization statistics."""
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="python -m zoo_lightning stats", description=run_stats.__doc__)
    parser.add_argument("--config", action=ActionConfigFile, help="a data-only YAML, or a full fit config")
    parser.add_subclass_arguments(ImageDataModule, "data", required=True)
    # A fit config also holds trainer/model sections: accepted and ignored here.
    for section in ("trainer", "model", "seed_everything", "ckpt_path", "optimizer", "lr_scheduler"):
        parser.add_argument(f"--{section}", type=object, default=None, help="ignored")
    config = parser.parse_args(resolve_config_args(argv))
    data = parser.instantiate_classes(config).data
    data.prepare_data()
    mean, std = data.stats()
    print(f"{type(data).__name__} at {data.data_dir} (training part of the split, per channel R, G, B):")
    print(f"  mean = ({', '.join(f'{v:.5f}' for v in mean)})")
    print(f"  std  = ({', '.join(f'{v:.5f}' for v in std)})")


def run_export(argv: list[str]) -> None:
    from zoo_lightning.export import main as export_main

    export_main(argv)


def run_report(argv: list[str]) -> None:
    from zoo_lightning.commands.report import main as report_main

    report_main(argv)


def run_sweep(argv: list[str]) -> None:
    from zoo_lightning.sweep import main as sweep_main

    sweep_main(argv)


# Subcommands beyond LightningCLI's trainer verbs: name -> function taking the remaining argv.
EXTRA_COMMANDS: dict[str, Callable[[list[str]], None]] = {
    "models": run_models,
    "stats": run_stats,
    "export": run_export,
    "sweep": run_sweep,
    "report": run_report,
}

# Errors that mean the input was wrong, not the program: shown as one line, no traceback.
USER_ERRORS = (UnknownModelError, ValueError, FileNotFoundError, NotADirectoryError, CheckpointWriteError)


def _first_cause(message: str) -> str:
    """jsonargparse wraps an error raised while building an object in a list of union subtypes that
    failed; the first entry is the user's error."""
    import re

    found = re.search(r"Errors:\s*\n\s*- (.+)", message)
    return found.group(1) if found else message


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in EXTRA_COMMANDS:
            EXTRA_COMMANDS[argv[0]](argv[1:])
        else:
            ZooCLI(args=argv)
    except USER_ERRORS as error:
        if os.environ.get("ZOO_DEBUG"):
            raise
        print(f"error: {_first_cause(str(error))}", file=sys.stderr)
        print("(set ZOO_DEBUG=1 to see the traceback)", file=sys.stderr)
        sys.exit(2)
