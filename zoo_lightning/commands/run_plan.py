"""What a ``fit``, ``validate``, ``test`` or ``predict`` command's run is, decided once from its parsed config.

A fit is a new training run, or (``--ckpt_path last``, or a run's own ``checkpoints/last.ckpt``) the
continuation of one in its folder. An evaluation scores a checkpoint and is filed inside the run that
wrote it, under ``evaluations/``. ``--ckpt_path last|best`` means the newest training run of the
experiment whose recorded network and data are the ones the command asks for. An option that
contradicts the checkpoint is refused, not ignored; the network and the data an evaluation uses are
the checkpoint's unless the user set them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from jsonargparse import ArgumentParser, Namespace

from zoo_lightning.checkpoints import RUNTIME_OPTIONS, datamodule_args, read_checkpoint
from zoo_lightning.data.splits import SPLIT_OPTIONS, TRAINING_SET_OPTIONS
from zoo_lightning.parsing import DEFAULTS
from zoo_lightning.pretrained import current_spelling
from zoo_lightning.runs import (
    DEFAULT_SAVE_DIR,
    EVALUATIONS,
    RunLogger,
    RunRecord,
    experiment_name,
    find_run,
    run_of_checkpoint,
)

if TYPE_CHECKING:
    from lightning.pytorch import LightningDataModule, Trainer

    from zoo_lightning.classifier import ImageClassifier

__all__ = ["RunPlan", "plan_run", "experiment_dir", "user_settings", "NETWORK_OPTIONS"]

NETWORK_OPTIONS = ("backbone", "stem", "backbone_kwargs")  # what a checkpoint's weights fix
LAST, BEST = "last", "best"


def user_settings(config: Namespace, parser: ArgumentParser) -> dict[str, Any]:
    """The options the user set (in a config of theirs or on the command line): the parsed values that differ
    from the parser's defaults (which include ``configs/defaults.yaml``).

    When the config chose another data class than the defaults', that class's own defaults are the baseline of
    its options (parsed from the class's name alone), so its untouched options do not count as set.
    """
    defaults = parser.get_defaults()
    if config.get("data.class_path") != defaults.get("data.class_path"):
        defaults = parser.parse_args(["--data", str(config.get("data.class_path"))])
    return {key: value for key, value in config.items() if key != "config" and defaults.get(key) != value}


def experiment_dir(config: Namespace, backbone: str | None = None) -> Path:
    """``save_dir/experiment`` of a run of ``config``: the logger's name, else the first config's stem, else the
    backbone (``backbone`` overrides the config's, for evaluations named after their checkpoint's network)."""
    logger = config.get("trainer.logger")
    init = logger.get("init_args") if isinstance(logger, Namespace) else None
    init = init if isinstance(init, Namespace) else Namespace()
    configs: list[str | Path] = [str(p) for p in (config.get("config") or []) if Path(str(p)).resolve() != DEFAULTS]
    name = experiment_name(init.get("name"), configs, backbone or config.model.backbone)
    return Path(init.get("save_dir") or DEFAULT_SAVE_DIR) / name


def _plain(value: object) -> object:
    """Namespaces and tuples as dicts and lists, so a config value compares with a checkpoint's or a record's."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _same(key: str, ours: object, theirs: object) -> bool:
    if key.endswith("class_path"):
        return str(ours).rsplit(".", 1)[-1] == str(theirs).rsplit(".", 1)[-1]
    if key.endswith("data_dir") and ours is not None and theirs is not None:
        return Path(str(ours)).resolve() == Path(str(theirs)).resolve()
    return _plain(ours) == _plain(theirs)


def _compared(config: Namespace, model: dict[str, Any], data: dict[str, Any], with_split: bool) -> list[str]:
    """``key ours (recorded theirs)`` for each network option, the data's class and, ``with_split``, the data
    folder and the options that decide the train/validation split, that differ."""
    pairs = [(f"model.{k}", config.get(f"model.{k}"), model.get(k)) for k in NETWORK_OPTIONS if f"model.{k}" in config]
    if "data.class_path" in config:
        pairs.append(("data.class_path", config.get("data.class_path"), data.get("class_path")))
    if with_split:
        for key in ("data_dir", *SPLIT_OPTIONS):
            if f"data.init_args.{key}" in config and key in data:
                pairs.append((f"data.{key}", config.get(f"data.init_args.{key}"), data.get(key)))
    return [
        f"{key} {_plain(theirs)!r} (here {_plain(ours)!r})"
        for key, ours, theirs in pairs
        if theirs is not None and not _same(key, ours, theirs)
    ]


@dataclass
class RunPlan:
    """The decisions for one command: the checkpoint it reads, the folder it writes, what it checks first."""

    verb: str
    ckpt_path: str | None = None
    resume: Path | None = None  # the run a fit continues in place
    owner: RunLogger | None = None  # the run folder's owner when the Trainer has no logger

    def check_inputs(self, model: ImageClassifier, datamodule: LightningDataModule) -> int | None:
        """Everything that can be refused before a run folder is made: the data is there and splits, the
        training batches fit it, and (a new fit) the pretrained weights load. Returns a fit's batches an epoch."""
        if self.verb == "predict":
            return None  # prediction reads predict_dir and the checkpoint, never the dataset
        datamodule.prepare_data()
        datamodule.setup(self.verb)
        if self.verb != "fit":
            return None
        batches = len(datamodule.train_dataloader())
        try:  # torch's own words ("Invalid learning rate: -0.1") name no option
            model.optimizer_factory(model.parameters())
        except ValueError as error:
            raise ValueError(
                f"--model.optimizer: {error}. Fix its init_args (e.g. --model.optimizer.init_args.lr 0.1)."
            ) from None
        if self.ckpt_path is None:
            model.load_pretrained()
        return batches

    def default_root_dir(self, trainer: Namespace) -> str | None:
        """Where the Trainer writes without a logger: a run folder claimed now, for a fit's checkpoints or a
        prediction's CSV; else what the user gave."""
        if self.owner is None:
            return trainer.get("default_root_dir")
        return str(self.owner.take_folder())

    def save_config_kwargs(self) -> dict[str, str]:
        """A resumed run keeps its config.yaml and records this command's beside it."""
        if self.resume is None:
            return {}
        return {"config_filename": f"config.resume-{len(list(self.resume.glob('config.resume-*.yaml'))) + 1}.yaml"}

    def release(self) -> None:
        if self.owner is not None:
            self.owner.release()

    def run_folder(self, trainer: Trainer | None) -> Path | None:
        """The folder this command's run writes, once claimed."""
        logger = trainer.logger if trainer is not None else None
        owner = logger if isinstance(logger, RunLogger) else self.owner
        return owner.folder if owner is not None else None

    def resume_advice(self, trainer: Trainer | None) -> str:
        """What a stopped fit prints: the exact run to continue, and how."""
        folder = self.run_folder(trainer)
        last = folder / "checkpoints" / "last.ckpt" if folder is not None else None
        if self.verb != "fit" or last is None or not last.is_file():
            return ""
        return (
            f": {last} holds the step it reached; continue that run with "
            f"`python -m zoo_lightning fit ... --ckpt_path {last}`"
        )


def _checkpoint_of(run: RunRecord, which: str, verb: str) -> Path:
    path = run.checkpoint(which)
    if not path.is_file():
        if not path.parent.is_dir():
            why = "it stopped before its first checkpoint"
        else:
            why = f"it has no {which}.ckpt" + (" (best.ckpt needs a validation)" if which == BEST else "")
        fix = (
            "Drop `--ckpt_path last` to start a new run, or pass the checkpoint of another run."
            if verb == "fit"
            else "Pass the checkpoint of another run with --ckpt_path."
        )
        raise FileNotFoundError(f"The newest matching run {run.folder} has no checkpoints/{which}.ckpt: {why}. {fix}")
    return path


def _refuse_contradictions(
    config: Namespace, given: dict[str, Any], checkpoint: dict[str, Any], path: Path, resume: bool
) -> None:
    """Refuses a command whose options contradict what the checkpoint was trained with.

    A resumed fit builds its network and data from the command, so every network option, the data's class and
    folder and its split must be the checkpoint's; an evaluation takes them from the checkpoint, so only the
    network options the user set can contradict it.
    """
    data = {**dict(checkpoint.get("datamodule_hyper_parameters") or {})}
    data["class_path"] = data.get("_class_path")
    if resume:
        differences = _compared(config, checkpoint["hyper_parameters"], data, with_split=True)
    else:
        differences = _compared(
            Namespace({k: v for k, v in given.items() if k.startswith("model.")}),
            checkpoint["hyper_parameters"],
            {},
            with_split=False,
        )
    if differences:
        harm = "train on other images or another network" if resume else "score another network than the one asked for"
        fix = "start a new run without --ckpt_path" if resume else "pass the checkpoint of the network you mean"
        raise ValueError(
            f"{path} was trained with {'; '.join(differences)}: using it would {harm}. Give the options "
            f"it was trained with (or its config), or {fix}."
        )


def _with_checkpoint(
    parser: ArgumentParser, config: Namespace, checkpoint: dict[str, Any], given: dict[str, Any]
) -> Namespace:
    """The config an evaluation runs with: the checkpoint's network, and its data unless the user set the data's
    class; the user's other data options and how to run the network (TTA, memory format, compile) stay theirs."""
    model = {
        k: v for k, v in checkpoint["hyper_parameters"].items() if not k.startswith("_") and k not in RUNTIME_OPTIONS
    }
    model["pretrained"] = current_spelling(model.get("pretrained"), str(model.get("backbone")))
    update: dict[str, Any] = {"model": model}
    recorded = datamodule_args(checkpoint, leave_out=TRAINING_SET_OPTIONS)
    if recorded is not None:
        if "data.class_path" in given and not _same("class_path", given["data.class_path"], recorded["class_path"]):
            update["data"] = {"init_args": {"class_names": recorded["init_args"].get("class_names")}}
        else:
            init = recorded["init_args"]
            init.update(
                {
                    k.removeprefix("data.init_args."): v
                    for k, v in given.items()
                    if k.startswith("data.init_args.") and not k.startswith("data.init_args.pipeline")
                }
            )
            update["data"] = {"class_path": recorded["class_path"], "init_args": _plain(init)}
    return parser.parse_object(update, config)


def plan_run(verb: str, config: Namespace, parser: ArgumentParser) -> tuple[RunPlan, Namespace]:
    """The plan of ``verb`` with the parsed ``config``, and the config to instantiate (for an evaluation, with the
    checkpoint's network and data in it). Every refusal is raised here, before anything is built."""
    _refuse_options_that_cannot_take_effect(config)
    given = user_settings(config, parser)
    plan = RunPlan(verb)
    which = config.get("ckpt_path")
    path = None
    if which in (LAST, BEST):  # fit: `last` continues the run in place, `best` starts a new one from its best weights
        experiment = experiment_dir(config)
        run = find_run(experiment, which, lambda r: _compared(config, r.model, r.data, with_split=verb == "fit"))
        path = _checkpoint_of(run, which, verb)
    elif which is not None:
        path = Path(which)
    elif verb != "fit":
        raise ValueError(
            f"{verb} needs trained weights: pass --ckpt_path RUN/checkpoints/best.ckpt, or --ckpt_path "
            f"best (or last) for the newest run under {experiment_dir(config)}."
        )
    if path is not None:
        checkpoint = read_checkpoint(path)  # a bad file is refused here, in one line, before anything is built
        _refuse_contradictions(config, given, checkpoint, path, resume=verb == "fit")
        plan.ckpt_path = str(path)
        if verb != "fit":
            config = _with_checkpoint(parser, config, checkpoint, given)
        elif path.name == f"{LAST}.ckpt":
            plan.resume = run_of_checkpoint(path)
    _place(plan, config, path)
    return plan, config


def _refuse_options_that_cannot_take_effect(config: Namespace) -> None:
    """The option checks no type can say: each is about something other than the option's own value."""
    # LightningCLI's top-level optimizer options exist (old run configs name them) but this module builds its own.
    for key in ("optimizer", "lr_scheduler"):
        if config.get(key) is not None:
            raise ValueError(
                f"--{key} is not read here: the optimizer and schedule are --model.{key} (class_path and "
                "init_args), as in configs/defaults.yaml."
            )
    # The machine, not the value: options that need a GPU (Lightning's own words, "No supported gpu backend found!",
    # say not what to do; PyTorch's SyncBatchNorm has no CPU implementation).
    accelerator = str(config.get("trainer.accelerator") or "auto")
    if accelerator in ("gpu", "cuda") and not _has_gpu():
        raise ValueError(
            f"--trainer.accelerator {accelerator}: this machine has no CUDA GPU that torch can use. "
            "Use --trainer.accelerator auto (or cpu)."
        )
    # Two sections' options: the model's unfreezing and the trainer's length.
    unfreeze, epochs = config.get("model.unfreeze_at_epoch"), config.get("trainer.max_epochs")
    if unfreeze is not None and epochs is not None and epochs >= 0 and unfreeze >= epochs:
        raise ValueError(
            f"--model.unfreeze_at_epoch {unfreeze} is not before --trainer.max_epochs {epochs}: the backbone "
            "would stay frozen the whole run. Give an earlier epoch, or leave it out to train the head alone."
        )
    if config.get("trainer.sync_batchnorm") and (accelerator == "cpu" or not _has_gpu()):
        raise ValueError(
            "--trainer.sync_batchnorm true needs GPUs: PyTorch's SyncBatchNorm has no CPU implementation. "
            "On CPU drop it; each process then normalizes over its own part of the batch."
        )


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available() or torch.xpu.is_available()


class Place(TypedDict, total=False):
    """The options of a :class:`~zoo_lightning.runs.RunLogger` that say which folder a command's run is."""

    save_dir: str
    name: str
    version: str | None
    resume: bool
    version_prefix: str


def _place(plan: RunPlan, config: Namespace, path: Path | None) -> None:
    """Points the logger (or, without one, the run folder's owner) at the folder this command writes."""
    logger = config.get("trainer.logger")
    place: Place
    if plan.verb == "fit":
        experiment = experiment_dir(config)
        place = {"save_dir": str(experiment.parent), "name": experiment.name}
        if plan.resume is not None:
            place = {
                "save_dir": str(plan.resume.parent.parent),
                "name": plan.resume.parent.name,
                "version": plan.resume.name,
                "resume": True,
            }
    else:
        run = run_of_checkpoint(path) if path is not None else None
        evaluated = run if run is not None else experiment_dir(config, backbone=config.model.backbone)
        place = {"save_dir": str(evaluated), "name": EVALUATIONS, "version": None, "version_prefix": f"{plan.verb}_"}
    if isinstance(logger, Namespace) and str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        logger.class_path = (
            f"{RunLogger.__module__}.{RunLogger.__qualname__}"  # the same options, and it owns the folder
        )
    if isinstance(logger, Namespace) and logger.get("class_path", "").endswith("RunLogger"):
        for key, value in place.items():
            logger.init_args[key] = value
    elif plan.verb in ("fit", "predict"):
        # No logger, but checkpoints or predictions to write: a run folder of their own all the same.
        plan.owner = RunLogger(**place)
