"""``fit``, ``validate``, ``test``, ``predict``: LightningCLI with the project's defaults.

    python -m zoo_lightning fit --config resnet20_cifar.yaml --data.data_dir data
    python -m zoo_lightning test --ckpt_path lightning_logs/resnet20_cifar/version_0/checkpoints/best.ckpt

Every run starts from the recipe in ``configs/defaults.yaml``; a ``--config`` gives what differs and
may be a shipped config's name. Runs are versioned TensorBoard folders with best/last checkpoints.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.fabric.connector import _PRECISION_INPUT
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.plugins.io import CheckpointIO

from zoo_lightning import metric_names as names
from zoo_lightning.argv import (DEFAULTS, check_config_file, config_files, one_line, option_value,
                                resolve_config_args)
from zoo_lightning.callbacks import (ClassificationDashboard, HparamsSession, ImagesPerSecond, NonFiniteLossStop,
                                     PredictionWriter)
from zoo_lightning.callbacks.last_checkpoint import LastCheckpoint
from zoo_lightning.callbacks.lr_monitor import StepLearningRateMonitor
from zoo_lightning.callbacks.run_folder import RunStarted
from zoo_lightning.callbacks.save_config import AtomicSaveConfigCallback
from zoo_lightning.checkpoints import AtomicCheckpointIO, datamodule_args, read_checkpoint
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.data import ImageDataModule
from zoo_lightning.hardware import auto_precision
from zoo_lightning.runs import (CLAIM_TOKEN_ENV, DEFAULT_EXPERIMENT, DEFAULT_SAVE_DIR, claim_run_dir, experiment_name,
                                lock_for_resume, newest_run, release_claim)

__all__ = ["ZooCLI", "run", "TRAINER_COMMANDS"]

TRAINER_COMMANDS = ("fit", "validate", "test", "predict")
RUNTIME_OPTIONS = ("tta", "channels_last", "compile")  # model options a checkpoint does not fix
# Lightning's notices that say nothing a user of this project can act on.
_NOTICES = ("GPU available: False", "TPU available: False", "💡 Tip:", "Loading `train_dataloader` to estimate")


class _DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_NOTICES)


def quiet_lightning() -> None:
    """Drops :data:`_NOTICES`, the deprecation warning Lightning's own pytree code raises under torch 2.14,
    the warning about the empty validation loader of a fit on every training image, and the model
    summary's about its size estimate under bf16 (it counts parameters, which stay 32-bit)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # --data.val_size 0 hands Lightning an empty validation loader on purpose.
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")


class ZooArgumentParser(LightningArgumentParser):
    """A refused option is one line naming it and the reason, not jsonargparse's nested report."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            return super().error(message, ex)  # jsonargparse trying one parse of several
        parser = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "")
        sys.stderr.write(f"error: {one_line(message)}. `{prog} --help` lists the options.\n")
        parser.exit(2)


class ZooTrainer(Trainer):
    """Lightning's Trainer, whose ``precision`` also takes ``"auto"``: bf16-mixed where the machine
    computes bf16 natively, else 32-true (:func:`zoo_lightning.hardware.auto_precision`), said in one line."""

    def __init__(self, *args: Any, precision: _PRECISION_INPUT | Literal["auto"] | None = None, **kwargs: Any) -> None:
        if precision == "auto":
            precision, why = auto_precision(kwargs.get("accelerator"))
            rank_zero_info(f"Precision auto: {precision}, as {why}.")
        super().__init__(*args, precision=precision, **kwargs)


class ZooCLI(LightningCLI):
    """LightningCLI with the project's defaults: the shipped recipe, versioned TensorBoard runs, best/last
    checkpoints written atomically, and the dashboard callbacks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        kwargs.setdefault("save_config_callback", AtomicSaveConfigCallback)
        kwargs.setdefault("parser_class", ZooArgumentParser)
        # `--trainer.max_epoch 3` must be an error, not silently taken as max_epochs.
        parser_kwargs = {"allow_abbrev": False, "prog": "python -m zoo_lightning",
                         **{c: {"default_config_files": [str(DEFAULTS)]} for c in TRAINER_COMMANDS}}
        kwargs.setdefault("parser_kwargs", parser_kwargs)
        trainer_defaults = {
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": DEFAULT_EXPERIMENT, "default_hp_metric": False},
            },
        }
        trainer_defaults.update(kwargs.pop("trainer_defaults", None) or {})
        kwargs.setdefault("trainer_class", ZooTrainer)
        self._resume_run: Path | None = None  # the run `fit --ckpt_path last` continues in place
        self._explicit: dict[str, Any] = {}
        self._runtime_options: dict[str, Any] = {}
        super().__init__(ImageClassifier, ImageDataModule, *args, trainer_defaults=trainer_defaults, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.input_size", apply_on="instantiate")
        # The mean/std the pretrained weights were trained with, for the data to normalize with. Linked when the
        # command line is parsed: the data is built before the model (whose class count it gives).
        parser.link_arguments(("model.pretrained", "model.backbone"), "data.init_args.normalization",
                              compute_fn=ImageClassifier.normalization_for, apply_on="parse")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": names.tag(names.VAL, names.TOP1),
                "checkpoint.mode": "max",
                "checkpoint.filename": "best",
                "checkpoint.save_last": False,
                "checkpoint.auto_insert_metric_name": False,
                # After each validation only: a fit that ends with no validation has no best, and says nothing.
                "checkpoint.save_on_train_epoch_end": False,
            }
        )
        # Not ModelCheckpoint's save_last: Lightning 2.6 refreshes it only when a top-k checkpoint was
        # written at that step, so last.ckpt would go stale whenever val/top1 does not improve.
        parser.add_lightning_class_args(LastCheckpoint, "last_checkpoint")
        parser.add_lightning_class_args(ClassificationDashboard, "dashboard")
        parser.add_lightning_class_args(ImagesPerSecond, "throughput")
        parser.add_lightning_class_args(NonFiniteLossStop, "nonfinite")
        parser.add_lightning_class_args(StepLearningRateMonitor, "lr_monitor")
        parser.add_argument("--test_after_fit", type=bool, default=False,
                            help="fit only: test the final weights when training ends (for runs that fit on every "
                                 "training image, --data.val_size 0, and so keep no best.ckpt)")

    def after_fit(self) -> None:
        if self.config.fit.get("test_after_fit") and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule)

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        argv = resolve_config_args(list(args))
        for path in config_files(argv):
            check_config_file(path)
        # Parsed here rather than by LightningCLI, which warns whenever `args` and sys.argv are both given.
        self.config = parser.parse_args(argv)
        subcommand = self.config.get("subcommand")
        if subcommand is None:
            return
        config = self.config[subcommand]
        ckpt_path = config.get("ckpt_path")
        if ckpt_path in ("last", "best") or (ckpt_path is None and subcommand != "fit"):
            # Lightning reads a checkpoint's hyper-parameters only from a file path: name the file first.
            path = checkpoint_of_newest_run(subcommand, ckpt_path, self._experiment(config))
            argv = [*argv, "--ckpt_path", str(path)]
            if subcommand == "fit":
                self._resume_run = path.parent.parent
        self._explicit = explicit_settings(argv)
        self.config = parser.parse_args(data_args_from_checkpoint(argv))
        # Lightning next puts the checkpoint's hyper-parameters over the command line's. The checkpoint
        # decides what the network is; how to run it (TTA, memory format, compile) stays the user's choice,
        # put back in before_instantiate_classes.
        model = self.config[subcommand].get("model")
        self._runtime_options = {key: model.get(key) for key in RUNTIME_OPTIONS} if model is not None else {}

    @staticmethod
    def _experiment(config: Any) -> Path:
        """``save_dir/name`` of the run this command writes (or would, were the logger off)."""
        logger = config.trainer.get("logger")
        init = logger.init_args if logger and hasattr(logger, "init_args") else {}
        configs = [str(p) for p in (config.get("config") or []) if Path(str(p)).resolve() != DEFAULTS]
        name = experiment_name(init.get("name"), configs, config.model.backbone)
        return Path(init.get("save_dir") or DEFAULT_SAVE_DIR) / name

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        for key, value in self._runtime_options.items():
            config.model[key] = value
        check_trainer_options(config.trainer)
        if config.trainer.get("sync_batchnorm") and (
            config.trainer.get("accelerator") == "cpu" or not (torch.cuda.is_available() or torch.xpu.is_available())
        ):
            raise ValueError(
                "--trainer.sync_batchnorm true needs GPUs: PyTorch's SyncBatchNorm has no CPU implementation. "
                "On CPU drop it; each process then normalizes over its own part of the batch."
            )
        if self.subcommand == "fit" and config.get("ckpt_path"):
            check_resume_matches(read_checkpoint(config.ckpt_path), self._explicit, config.ckpt_path)
        experiment = self._experiment(config)
        logger = config.trainer.get("logger")
        if logger and hasattr(logger, "init_args"):
            logger.init_args.name = experiment.name
        if _launched_rank() > 0:
            return  # rank 0 owns the run folder; Lightning hands its checkpoint path to the other ranks
        if logger and hasattr(logger, "init_args"):
            if self._resume_run is not None:  # continue the run in its own folder; its config is not rewritten
                _GUARD.lock = lock_for_resume(self._resume_run)
                logger.init_args.version = self._resume_run.name
                resumes = len(list(self._resume_run.glob("config.resume-*.yaml")))
                self.save_config_kwargs = {**self.save_config_kwargs,
                                           "config_filename": f"config.resume-{resumes + 1}.yaml"}
            else:
                folder = claim_run_dir(experiment, logger.init_args.get("version"), os.environ.get(CLAIM_TOKEN_ENV))
                _GUARD.claimed = folder
                logger.init_args.version = folder.name
        elif self.subcommand in ("fit", "predict"):
            # No logger, but checkpoints or predictions to write: a run folder of their own all the same.
            if self._resume_run is None:
                folder = _GUARD.claimed = claim_run_dir(experiment, None)
            else:
                folder = self._resume_run
                _GUARD.lock = lock_for_resume(folder)
            config.trainer.default_root_dir = str(folder)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        config = self._get(self.config_init, "trainer", default={})
        given = config.get("callbacks")
        callbacks = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
        callbacks += [HparamsSession(), _GUARD.started]
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


def _launched_rank() -> int:
    """This process's global rank when a launcher (Lightning's DDP, torchrun, SLURM) started it, else 0."""
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "0")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 0


class _RunGuard:
    """What one command claimed and whether its run started: released, or removed, when it ends."""

    def __init__(self) -> None:
        self.claimed: Path | None = None
        self.lock: Path | None = None
        self.started = RunStarted()

    def release(self) -> None:
        if self.claimed is not None:
            release_claim(self.claimed, used=self.started.started)
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)


_GUARD = _RunGuard()


def checkpoint_of_newest_run(subcommand: str, which: str | None, experiment: Path) -> Path:
    """``--ckpt_path last`` / ``best``: that checkpoint of the experiment's newest run, or a one-line error.

    ``fit`` resumes from ``last``; evaluation needs trained weights, so without ``--ckpt_path`` it is an error.
    """
    if which is None:
        raise ValueError(f"{subcommand} needs trained weights: pass --ckpt_path RUN/checkpoints/best.ckpt, or "
                         f"--ckpt_path best (or last) for the newest run under {experiment}.")
    run = newest_run(experiment)
    if run is None:
        hint = "Drop `--ckpt_path last` to start a new run" if subcommand == "fit" else "Train one first with fit"
        raise FileNotFoundError(f"No run under {experiment} to take checkpoints/{which}.ckpt from. {hint}, or pass "
                                "a checkpoint path.")
    path = run / "checkpoints" / f"{which}.ckpt"
    if not path.is_file():
        if not (run / "checkpoints").is_dir():
            why = "it stopped before its first checkpoint"
        else:
            why = f"it has no {which}.ckpt" + (" (best.ckpt needs a validation)" if which == "best" else "")
        fix = ("Drop `--ckpt_path last` to start a new run, or pass the checkpoint of another run."
               if subcommand == "fit" else "Pass the checkpoint of another run with --ckpt_path.")
        raise FileNotFoundError(f"The newest run {run} has no checkpoints/{which}.ckpt: {why}. {fix}")
    read_checkpoint(path)  # a truncated file gets the message an explicit path would
    return path


RESUME_KEYS_MODEL = ("backbone", "stem", "backbone_kwargs")
RESUME_KEYS_DATA = ("split_seed", "val_size", "fold", "data_dir", "labeled_per_class")


def explicit_settings(argv: list[str]) -> dict[str, Any]:
    """The network and split settings the user gave, on the command line or in a config file of theirs."""
    import yaml

    given: dict[str, Any] = {}
    for path in config_files(argv):
        if Path(path).resolve() == DEFAULTS:
            continue
        content = check_config_file(path)
        model, data = content.get("model") or {}, content.get("data") or {}
        if isinstance(model, dict):
            given.update({f"model.{k}": model[k] for k in RESUME_KEYS_MODEL if k in model})
        if isinstance(data, dict):
            if "class_path" in data:
                given["data.class_path"] = data["class_path"]
            init = data.get("init_args") or {}
            given.update({f"data.{k}": init[k] for k in RESUME_KEYS_DATA if k in init})
    for key in (*(f"model.{k}" for k in RESUME_KEYS_MODEL), *(f"data.{k}" for k in RESUME_KEYS_DATA)):
        value = option_value(argv, f"--{key}", f"--{key.replace('data.', 'data.init_args.')}")
        if value is not None:
            given[key] = yaml.safe_load(value)
    return given


def check_resume_matches(checkpoint: dict[str, Any], given: dict[str, Any], path: str) -> None:
    """Refuses to continue a checkpoint with another network or another train/val split than its own."""
    saved = {f"model.{k}": checkpoint["hyper_parameters"].get(k) for k in RESUME_KEYS_MODEL}
    data = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    saved.update({f"data.{k}": data.get(k) for k in RESUME_KEYS_DATA})
    saved["data.class_path"] = data.get("_class_path")
    for key, value in given.items():
        if saved.get(key) is None or value is None:
            continue
        if key == "data.class_path":
            same = str(value).rsplit(".", 1)[-1] == str(saved[key]).rsplit(".", 1)[-1]
        elif key == "data.data_dir":
            same = Path(str(value)).resolve() == Path(str(saved[key])).resolve()
        else:
            same = _plain(value) == _plain(saved[key])
        if not same:
            harm = "train on its validation images" if key.startswith("data.") else "change its network"
            raise ValueError(f"{key} is {value!r} here but {saved[key]!r} in {path}: continuing it would {harm}. "
                             f"Give --{key} {saved[key]!r} (or its config), or start a new run without --ckpt_path.")


def _plain(value: Any) -> Any:
    """Namespaces and tuples as dicts and lists, so a config value compares with a checkpoint's."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_trainer_options(trainer: Any) -> None:
    """Refuses Trainer values that Lightning would take and then divide by, or train nothing with."""
    accelerator = str(trainer.get("accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(f"--trainer.accelerator {accelerator}: this machine has no CUDA GPU that torch can use. "
                         "Use --trainer.accelerator auto (or cpu).")
    devices = trainer.get("devices")
    if str(devices).strip() in ("0", "[]", "0.0"):
        raise ValueError(f"--trainer.devices {devices} asks for no device: give a count (1, 2, ...), a list of "
                         "device ids, or auto.")
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:
        raise ValueError(f"--trainer.accumulate_grad_batches must be >= 1 (1: an optimizer step every batch), "
                         f"got {accumulate}.")
    every = trainer.get("check_val_every_n_epoch")
    if isinstance(every, int) and every < 1:
        raise ValueError(f"--trainer.check_val_every_n_epoch must be >= 1, or null to validate only by "
                         f"val_check_interval; got {every}. To train without validation use --data.val_size 0.")
    for name in ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches"):
        value = trainer.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value <= 0:
            stage = name.split("_")[1]
            raise ValueError(f"--trainer.{name} {value} leaves no {stage} batches: give a count (e.g. 10) or a "
                             "fraction of the batches (e.g. 0.25), or leave it out for all of them.")


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


class _Stop:
    """The signal that asked this command to stop, and its exit status (128 + the signal number)."""

    signal: int | None = None

    @classmethod
    def on_sigint(cls, signum: int, frame: Any) -> None:
        cls.signal = signal.SIGINT
        raise KeyboardInterrupt

    @classmethod
    def on_sigterm(cls, signum: int, frame: Any) -> None:
        cls.signal = signal.SIGTERM
        # While a Trainer runs, Lightning's own handler (called beside this one) stops at the end of the
        # step, after which last.ckpt is written; before that there is nothing to save: stop now.
        if signal.getsignal(signal.SIGTERM) == cls.on_sigterm:
            raise KeyboardInterrupt


def run(argv: list[str]) -> None:
    """Runs one of :data:`TRAINER_COMMANDS`: ``argv`` starts with its name.

    Ctrl-C ends it with status 130 and SIGTERM with 143, after the run's last.ckpt is written.
    """
    quiet_lightning()
    global _GUARD
    _GUARD = _RunGuard()
    _Stop.signal = None
    handlers = {signal.SIGINT: signal.signal(signal.SIGINT, _Stop.on_sigint),
                signal.SIGTERM: signal.signal(signal.SIGTERM, _Stop.on_sigterm)}
    try:
        ZooCLI(args=argv)
    except (KeyboardInterrupt, SystemExit):
        if _Stop.signal is None:
            raise
    finally:
        _GUARD.release()
        for number, handler in handlers.items():
            signal.signal(number, handler)
    if _Stop.signal is not None:
        resume = (": the run's checkpoints/last.ckpt holds the step it reached; continue it with "
                  "`fit ... --ckpt_path last`") if argv[:1] == ["fit"] and _GUARD.started.started else ""
        print(f"Stopped by {signal.Signals(_Stop.signal).name}{resume}.", file=sys.stderr)
        sys.exit(128 + _Stop.signal)
