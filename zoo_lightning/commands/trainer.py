"""``fit``, ``validate``, ``test``, ``predict``: LightningCLI with the project's recipe, run folders and checks.

    python -m zoo_lightning fit --config resnet20_cifar.yaml --data.data_dir data
    python -m zoo_lightning test --ckpt_path lightning_logs/resnet20_cifar/version_0/checkpoints/best.ckpt

Every run starts from the recipe in ``configs/defaults.yaml``; a ``--config`` gives what differs and may
be a shipped config's name. The command line is parsed once; what the run is (a new training, the
resumption of one, an evaluation filed in the run it scores) is decided by :mod:`zoo_lightning.commands.run_plan`
and carried out by the run's :class:`~zoo_lightning.runs.RunLogger`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Literal, cast

from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_info

from zoo_lightning import metric_names as names
from zoo_lightning.callbacks import (
    ClassificationDashboard,
    HparamsSession,
    ImagesPerSecond,
    NonFiniteLossStop,
    PredictionWriter,
)
from zoo_lightning.callbacks.fit_checkpoint import FitCheckpoint
from zoo_lightning.callbacks.last_checkpoint import LastCheckpoint
from zoo_lightning.callbacks.lr_monitor import StepLearningRateMonitor
from zoo_lightning.callbacks.progress_bar import run_progress_bar
from zoo_lightning.callbacks.save_config import AtomicSaveConfigCallback
from zoo_lightning.callbacks.stop_on_signal import StopOnSignal
from zoo_lightning.checkpoints import AtomicCheckpointIO
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.commands.messages import quiet_lightning
from zoo_lightning.commands.run_plan import RunPlan, plan_run
from zoo_lightning.data import ImageDataModule
from zoo_lightning.hardware import Precision, auto_precision
from zoo_lightning.options import PositiveFloat, PositiveInt
from zoo_lightning.parsing import DEFAULTS, ConfigFile, OneLineErrors
from zoo_lightning.runs import DEFAULT_EXPERIMENT, DEFAULT_SAVE_DIR
from zoo_lightning.signals import StopSignals
from zoo_lightning.tta import VIEWS

__all__ = ["ZooCLI", "ZooTrainer", "run"]

# A share of the batches (0 < x <= 1) or a count of them (>= 1).
BatchLimit = PositiveInt | PositiveFloat


class ZooArgumentParser(OneLineErrors, LightningArgumentParser):
    """LightningCLI's parser, with one-line errors; ``--help`` also lists the options of the default DataModule and
    of its pipeline, which jsonargparse shows only for ``--data.help CLASS`` (the data is chosen by class path)."""

    def format_help(self, formatter: argparse.HelpFormatter | None = None) -> str:
        from jsonargparse.typing import import_object

        from zoo_lightning.data import DevicePipeline

        data_class = self.get_defaults().get("data.class_path")
        if not data_class:
            return super().format_help(formatter)
        helper = LightningArgumentParser(prog=self.prog, usage=argparse.SUPPRESS, add_help=False, description="")
        helper.add_class_arguments(import_object(data_class), "data", skip={"pipeline", "class_names", "normalization"})
        helper.add_class_arguments(DevicePipeline, "data.pipeline")
        return (
            f"{super().format_help(formatter)}\nThe default data, {data_class} (`--data.help CLASS` shows another "
            f"DataModule's options), and its pipeline:\n\n{helper.format_help().lstrip()}"
        )


class ZooTrainer(Trainer):
    """Lightning's Trainer, with precision "auto" and the ranges of its counts checked when the command is parsed.

    ``precision="auto"`` is bf16-mixed where the machine computes bf16 natively, else 32-true
    (:func:`zoo_lightning.hardware.auto_precision`), said in one line. The options whose range Lightning
    checks only once training has begun (or never) are typed here, so the parser refuses a bad value before
    anything runs; the rest are Lightning's own.
    """

    def __init__(
        self,
        *args: Any,
        precision: Precision | None = None,
        accumulate_grad_batches: PositiveInt = 1,
        check_val_every_n_epoch: PositiveInt | None = 1,
        limit_train_batches: BatchLimit | None = None,
        limit_val_batches: BatchLimit | None = None,
        limit_test_batches: BatchLimit | None = None,
        limit_predict_batches: BatchLimit | None = None,
        **kwargs: Any,
    ) -> None:
        if precision == "auto":
            chosen, why = auto_precision(kwargs.get("accelerator"))
            # auto_precision chooses one of these two; its annotation says only str.
            precision = cast(Literal["bf16-mixed", "32-true"], chosen)
            rank_zero_info(f"Precision auto: {precision}, as {why}.")
        super().__init__(
            *args,
            precision=precision,
            accumulate_grad_batches=accumulate_grad_batches,
            check_val_every_n_epoch=check_val_every_n_epoch,
            limit_train_batches=limit_train_batches,
            limit_val_batches=limit_val_batches,
            limit_test_batches=limit_test_batches,
            limit_predict_batches=limit_predict_batches,
            **kwargs,
        )


class ZooCLI(LightningCLI):
    """LightningCLI for one of the Trainer's verbs (fit, validate, test, predict): the shipped recipe, runs owned by
    :class:`~zoo_lightning.runs.RunLogger`,
    best/last checkpoints written atomically, and the dashboard callbacks.

    Args:
        verb: ``fit``, ``validate``, ``test`` or ``predict``.
        args: the command line after the verb.
        build: instantiate the model, data and Trainer (False: parse and plan only, for commands that start fits).
        stop: the command's signal handling, which the Trainer then stops by at batch boundaries.
    """

    plan: RunPlan  # made by before_instantiate_classes, which LightningCLI's __init__ calls before anything reads it

    def __init__(
        self, verb: str, args: list[str], build: bool = True, stop: StopSignals | None = None, **kwargs: Any
    ) -> None:
        self.verb, self.build, self.stop = verb, build, stop
        kwargs.setdefault("subclass_mode_data", True)
        kwargs.setdefault("save_config_kwargs", {"overwrite": False})
        kwargs.setdefault("save_config_callback", AtomicSaveConfigCallback)
        kwargs.setdefault("parser_class", ZooArgumentParser)
        kwargs.setdefault("trainer_class", ZooTrainer)
        # `--trainer.max_epoch 3` must be an error, not silently taken as max_epochs.
        kwargs.setdefault(
            "parser_kwargs",
            {
                "allow_abbrev": False,
                "prog": f"python -m zoo_lightning {verb}",
                "default_config_files": [str(DEFAULTS)],
                "description": _summary(verb),
            },
        )
        logger = {
            "class_path": "zoo_lightning.runs.RunLogger",
            "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": DEFAULT_EXPERIMENT},
        }
        kwargs["trainer_defaults"] = {"logger": logger, **(kwargs.get("trainer_defaults") or {})}
        super().__init__(ImageClassifier, ImageDataModule, args=args, run=False, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        kwargs.setdefault("dump_header", None)
        parser = self.parser_class(**kwargs)
        parser.add_argument(
            "-c",
            "--config",
            action=ConfigFile,
            help="a YAML config: a path, or a shipped config's name (resnet20_cifar.yaml); "
            "every run starts from configs/defaults.yaml",
        )
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.num_classes", "model.num_classes", apply_on="instantiate")
        parser.link_arguments("data.image_size", "model.input_size", apply_on="instantiate")
        # The mean/std the pretrained weights were trained with, for the data to normalize with. Linked when the
        # command line is parsed: the data is built before the model (whose class count it gives).
        parser.link_arguments(
            ("model.pretrained", "model.backbone"),
            "data.init_args.normalization",
            compute_fn=ImageClassifier.normalization_for,
            apply_on="parse",
        )
        parser.add_lightning_class_args(FitCheckpoint, "checkpoint")
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
        parser.add_argument(
            "--ckpt_path",
            type=str | None,
            default=None,
            help="fit: `last` continues the newest matching run of the experiment in place, a file "
            "starts a new run from it; validate/test/predict: the weights to use, a file or "
            "`best`/`last` of the newest matching run",
        )
        parser.add_argument(
            "--weights_only",
            type=bool | None,
            default=None,
            help="passed to torch.load when a checkpoint is read (Lightning's default: None)",
        )
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=False,
            help="fit only: test the final weights when training ends (for runs that fit on every "
            "training image, --data.val_size 0, and so keep no best.ckpt)",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: ArgsType) -> None:
        # Not LightningCLI's for a command line: it warns whenever `args` and sys.argv are both given, which is how
        # this CLI runs.
        if not isinstance(args, list):
            return super().parse_arguments(parser, args)
        if isinstance(parser, OneLineErrors):
            parser.args_given = list(args)
        self.config = parser.parse_args(args)

    def before_instantiate_classes(self) -> None:
        self.plan, self.config = plan_run(self.verb, self.config, self.parser)

    def instantiate_classes(self) -> None:
        if not self.build:
            return
        self.config_init = self.parser.instantiate_classes(self.config)
        self.datamodule, self.model = self.config_init.data, self.config_init.model
        # Everything that can be refused is checked before the run folder exists: the Trainer's options first (a
        # logger claims its folder only when the run starts), then the data and weights, which take longer. A run
        # without a logger has its folder made for the Trainer's default_root_dir, so its Trainer comes last.
        if self.plan.owner is None:
            self.trainer = self.instantiate_trainer()
        batches = self.plan.check_inputs(self.model, self.datamodule)
        if self.plan.owner is not None:
            self.trainer = self.instantiate_trainer()
        if batches and self.config.get("trainer.log_every_n_steps") is None:
            # Lightning's 50, or every step of an epoch shorter than that (which it would otherwise warn about).
            # The Trainer's logger connector sets this attribute, which the Trainer class does not declare.
            self.trainer.log_every_n_steps = min(50, batches)  # type: ignore[attr-defined]

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = self.config_init.trainer
        given = trainer.get("callbacks")
        callbacks = [] if given is None else list(given) if isinstance(given, (list, tuple)) else [given]
        callbacks.append(HparamsSession())
        if self.stop is not None:
            callbacks.append(StopOnSignal(self.stop))
        if self.verb == "predict":
            callbacks.append(PredictionWriter())
        # A progress bar (or its lines, where the output is a file) unless the user turned bars off or brought one.
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            callbacks.append(run_progress_bar())
        # Checkpoints are written beside their target and renamed into place, unless the user brings a CheckpointIO.
        plugins = trainer.get("plugins")
        plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        if not any(isinstance(p, CheckpointIO) for p in plugins):
            plugins.append(AtomicCheckpointIO())
        self.save_config_kwargs = {**self.save_config_kwargs, **self.plan.save_config_kwargs()}
        return super().instantiate_trainer(
            callbacks=callbacks, plugins=plugins, default_root_dir=self.plan.default_root_dir(trainer), **kwargs
        )

    def run(self) -> None:
        """Runs the verb on the Trainer; ``fit --test_after_fit true`` tests the final weights after it."""
        options = {"ckpt_path": self.plan.ckpt_path, "weights_only": self.config.get("weights_only")}
        tta, confidence = self.model.hparams.get("tta"), self.model.hparams.get("tta_confidence")
        if tta and self.verb != "fit":
            whom = "every image" if confidence is None else f"each image whose top class has probability < {confidence}"
            cost = f"{VIEWS[tta]}x the time of one" if confidence is None else "one view of the rest"
            print(f"Test-time augmentation {tta}: {VIEWS[tta]} views of {whom}, {cost}.", flush=True)
        try:
            if self.verb in ("validate", "test"):
                # Lightning's own table prints every metric to 16 digits; the dashboard's per-class table and this
                # line say the same in a form one can read.
                summarize(
                    getattr(self.trainer, self.verb)(self.model, datamodule=self.datamodule, verbose=False, **options)
                )
            else:
                getattr(self.trainer, self.verb)(self.model, datamodule=self.datamodule, **options)
            if self.verb == "fit" and self.config.get("test_after_fit") and not self.trainer.interrupted:
                summarize(self.trainer.test(self.model, datamodule=self.datamodule, verbose=False))
        finally:
            self.plan.release()


def summarize(results: Sequence[Mapping[str, float]]) -> None:
    """One line of an evaluation's metrics: accuracies in percent, losses to four digits."""
    for metrics in results or ():
        parts = [
            f"{name} {100 * value:.2f}%" if "top" in name else f"{name} {value:.4f}"
            for name, value in sorted(metrics.items())
        ]
        print("  ".join(parts), flush=True)


def _summary(verb: str) -> str:
    """The first line of the Trainer method a verb runs (LightningCLI describes its subcommands so too)."""
    doc = (getattr(Trainer, verb).__doc__ or "").strip()
    return f"{verb}: {doc.splitlines()[0] if doc else ''}"


def run(verb: str, argv: list[str]) -> None:
    """Runs ``python -m zoo_lightning VERB ARGV``.

    Ctrl-C ends it with status 130 and SIGTERM with 143, after the run's last.ckpt is written; the line
    it prints names the run to continue.
    """
    quiet_lightning()
    cli: ZooCLI | None = None
    with StopSignals() as stop:
        try:
            cli = ZooCLI(verb, argv, stop=stop)
            cli.run()
        except (KeyboardInterrupt, SystemExit):
            if stop.received is None:
                raise
    if stop.received is not None:
        advice = cli.plan.resume_advice(getattr(cli, "trainer", None)) if cli is not None else ""
        print(f"Stopped by {stop.name}{advice}.", file=sys.stderr)
        sys.exit(stop.exit_status)
