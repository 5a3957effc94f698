"""Run folders and their one owner, :class:`RunLogger`: how runs are named, claimed, locked and found.

A training run is a folder ``save_dir/<experiment>/<version>`` holding its ``config.yaml``, TensorBoard
events and ``checkpoints/``. ``fit``, ``sweep`` and ``selftrain`` configure the logger through its init
arguments; evaluations of a run (``validate``, ``test``, ``predict``) are filed inside it, under
``evaluations/``, so an experiment's folders are its trainings alone, and ``--ckpt_path last|best``
(:func:`find_run`) chooses among them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_only

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = [
    "RunLogger",
    "RunRecord",
    "DEFAULT_SAVE_DIR",
    "DEFAULT_EXPERIMENT",
    "EVALUATIONS",
    "experiment_name",
    "training_runs",
    "find_run",
    "run_of_checkpoint",
    "version_number",
]

DEFAULT_SAVE_DIR = "lightning_logs"  # the logger's save_dir when neither the user nor a config gives one
DEFAULT_EXPERIMENT = "default"  # the logger's name when neither the user nor a config gives one
VERSION_PREFIX = "version_"
EVALUATIONS = "evaluations"  # a training run's sub-folder for the evaluations of its checkpoints
CONFIG_FILE = "config.yaml"  # what LightningCLI writes when a run starts: the record of what it trains
CLAIM_FILE = ".claim"  # the token of a command that reserved a folder for a run it starts
RESUME_LOCK = ".resume.lock"


def experiment_name(logger_name: str | None, config_files: list[str | Path], backbone: str) -> str:
    """The experiment folder of a run under the logger's ``save_dir``.

    The name the user or a config gave the logger; else the stem of the first config file, the recipe
    (``--config resnet56_cifar.yaml`` files runs under ``resnet56_cifar/``); else the backbone, with the
    ``:`` of ``torchvision:``/``timm:`` names replaced so it is a plain folder name.
    """
    if logger_name and logger_name != DEFAULT_EXPERIMENT:
        return str(logger_name)
    if config_files:
        return Path(config_files[0]).stem
    return str(backbone).replace(":", "_")


def version_number(folder: Path, prefix: str = VERSION_PREFIX) -> int | None:
    """N of a ``{prefix}N`` folder, else None."""
    suffix = folder.name.removeprefix(prefix)
    return int(suffix) if folder.name.startswith(prefix) and suffix.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writable(parent: Path) -> None:
    """Makes ``parent`` or says, in one line, why a run folder cannot be made there."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PermissionError(
            f"Cannot make the run folder's parent {parent}: {error.strerror or error}. Give a "
            "writable --trainer.logger.init_args.save_dir."
        ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(
            f"Cannot write into {parent}: permission denied. Give a writable --trainer.logger.init_args.save_dir."
        )


def _global_rank() -> int:
    """This process's rank, as Lightning sets it for ``rank_zero_only`` (0 in a single process)."""
    # lightning_utilities documents the attribute ("set rank_zero_only.rank before use") but its overloads of the
    # decorator do not declare it.
    return rank_zero_only.rank  # type: ignore[attr-defined]


class RunLogger(TensorBoardLogger):
    """TensorBoard logger that owns its run folder: claims it atomically, locks a run it resumes.

    The folder is made the first time the run asks where it is (Lightning does while setting up, after the
    command has checked its inputs), with one ``os.mkdir``: of two commands started together, one gets
    ``version_N``, the other ``version_N+1``; a named version that exists is refused, never shared.

    Args:
        save_dir: the folder of experiments.
        name: the experiment (the CLI puts the config's name in place of ``"default"``).
        version: None for the next free ``{version_prefix}N``; a name or number for that folder, which must not
            exist (unless ``claim`` is the token of the command that reserved it, or ``resume`` is set).
        resume: continue the existing run in folder ``version``; it is locked while this process trains it.
        claim: the token a command that starts fits (``sweep``, ``selftrain``) wrote into the folder it
            reserved for this run with :meth:`reserve`.
        version_prefix: the stem of numbered versions: ``version_`` for trainings, ``test_`` (etc.) for evaluations.
        default_hp_metric: TensorBoardLogger's placeholder metric; off, as the run's HPARAMS session is the
            :class:`~zoo_lightning.callbacks.HparamsSession` callback's.
        **kwargs: :class:`~lightning.pytorch.loggers.TensorBoardLogger`'s.
    """

    def __init__(
        self,
        save_dir: str | Path = DEFAULT_SAVE_DIR,
        name: str = DEFAULT_EXPERIMENT,
        version: int | str | None = None,
        resume: bool = False,
        claim: str | None = None,
        version_prefix: str = VERSION_PREFIX,
        default_hp_metric: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version, default_hp_metric=default_hp_metric, **kwargs)
        self.requested_version = version
        self.resume, self.claim, self.version_prefix = resume, claim, version_prefix
        self.folder: Path | None = None  # the run folder once claimed (or locked, when resuming)
        self.lock: Path | None = None

    @property
    def version(self) -> str:
        """The run folder's name, claimed on first use (by rank 0; the others get its path from Lightning)."""
        if self.folder is None and _global_rank() > 0:
            return str(self.requested_version or "")
        return self.take_folder().name

    @property
    def experiment(self) -> SummaryWriter:
        """TensorBoard's SummaryWriter, made once the run folder is claimed (TensorBoardLogger would make the
        experiment folder first, and a save_dir that cannot hold it would fail without a word on how to fix it)."""
        if self.folder is None and _global_rank() == 0:
            self.take_folder()
        return super().experiment

    def take_folder(self) -> Path:
        """The run folder, claimed (or locked) now if it was not yet; said in one line, in full."""
        if self.folder is None:
            self.folder = self.take()
            rank_zero_info(f"{'Continuing the run in' if self.resume else 'Run folder:'} {self.folder}")
        return self.folder

    def folder_for(self, version: int | str) -> Path:
        name = f"{VERSION_PREFIX}{version}" if isinstance(version, int) else str(version)
        return Path(self.root_dir) / name

    def take(self) -> Path:
        """Claims (or, resuming, locks) the run folder; the logger's :attr:`folder` from then on."""
        root = Path(self.root_dir)
        _writable(root)
        if self.resume:
            if self.requested_version is None:
                raise ValueError("RunLogger(resume=True) needs the version of the run it continues.")
            folder = self.folder_for(self.requested_version)
            self.lock = lock_for_resume(folder)
            return folder
        if self.requested_version is not None:
            folder = self.folder_for(self.requested_version)
            try:
                folder.mkdir()
            except FileExistsError:
                token = folder / CLAIM_FILE
                if not self.claim or not token.is_file() or token.read_text() != self.claim:
                    raise FileExistsError(
                        f"Run folder {folder} already exists: another run's. Choose another "
                        "--trainer.logger.init_args.version, or leave it out to get the next free version."
                    ) from None
                token.unlink()
            return folder
        taken = [n for p in root.iterdir() if (n := version_number(p, self.version_prefix)) is not None]
        number = max(taken) + 1 if taken else 0
        while True:
            folder = root / f"{self.version_prefix}{number}"
            try:
                folder.mkdir()
                return folder
            except FileExistsError:
                number += 1

    @staticmethod
    def reserve(experiment: Path, name: str) -> tuple[Path, str]:
        """A new folder for a run named ``name`` (``name_v2``, ... when taken) that a command will start; the
        token the run's logger takes as ``claim`` to adopt it. A run folder is never reused."""
        _writable(experiment)
        token = uuid.uuid4().hex
        for suffix in range(1, 10_000):
            folder = experiment / (name if suffix == 1 else f"{name}_v{suffix}")
            try:
                folder.mkdir()
            except FileExistsError:
                continue
            (folder / CLAIM_FILE).write_text(token)
            return folder, token
        raise FileExistsError(f"No free run folder for {name} under {experiment}.")

    def release(self) -> None:
        """Drops the resume lock; the folder and what the run wrote stay."""
        if self.lock is not None:
            self.lock.unlink(missing_ok=True)
            self.lock = None

    def finalize(self, status: str) -> None:
        super().finalize(status)
        self.release()


def lock_for_resume(folder: Path) -> Path:
    """Takes the run's resume lock, so two resumes of one run never train into it together."""
    lock = folder / RESUME_LOCK
    for _ in range(2):
        try:
            with open(lock, "x") as f:
                f.write(str(os.getpid()))
            return lock
        except FileExistsError:
            holder = lock.read_text().strip()
            if holder.isdigit() and _alive(int(holder)):
                raise FileExistsError(
                    f"Run {folder} is being resumed by process {holder} already; wait for it, or stop it first."
                ) from None
            lock.unlink(missing_ok=True)  # left by a resume that was killed
    raise FileExistsError(f"Could not take the resume lock {lock}; remove it if no resume is running.")


@dataclass
class RunRecord:
    """A training run as its ``config.yaml`` records it."""

    folder: Path
    config: dict[str, Any]

    @property
    def model(self) -> dict[str, Any]:
        return dict(self.config.get("model") or {})

    @property
    def data(self) -> dict[str, Any]:
        data = self.config.get("data") or {}
        return {"class_path": data.get("class_path"), **dict(data.get("init_args") or {})}

    def checkpoint(self, which: str) -> Path:
        return self.folder / "checkpoints" / f"{which}.ckpt"


def training_runs(experiment: Path) -> list[RunRecord]:
    """The training runs of an experiment folder, the most recently started first (by their ``config.yaml``)."""
    import yaml

    runs = []
    for folder in experiment.iterdir() if experiment.is_dir() else ():
        config = folder / CONFIG_FILE
        if folder.is_dir() and config.is_file():
            try:
                content = yaml.safe_load(config.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if isinstance(content, dict):
                runs.append((config.stat().st_mtime_ns, RunRecord(folder, content)))
    return [record for _, record in sorted(runs, key=lambda item: (item[0], item[1].folder.name), reverse=True)]


def find_run(experiment: Path, which: str, differences: Callable[[RunRecord], list[str]]) -> RunRecord:
    """The run ``--ckpt_path last|best`` means: the newest training run of the experiment for which
    ``differences`` (what the command asks, against what the run recorded) is empty.

    Raises:
        FileNotFoundError: no training run at all, or the chosen one has no such checkpoint.
        ValueError: runs exist, but none trained what the command asks; names the differences of the newest.
    """
    runs = training_runs(experiment)
    if not runs:
        raise FileNotFoundError(
            f"No training run under {experiment} to take checkpoints/{which}.ckpt from: train one with "
            "`fit` first, or pass a checkpoint file."
        )
    for run in runs:
        if not differences(run):
            return run
    newest = runs[0]
    raise ValueError(
        f"No run under {experiment} trained what this command asks: the newest, {newest.folder.name}, "
        f"has {'; '.join(differences(newest))}. Give the options it was trained with, or pass its "
        "checkpoint with --ckpt_path FILE."
    )


def run_of_checkpoint(path: Path) -> Path | None:
    """The training run folder a checkpoint sits in (``RUN/checkpoints/X.ckpt``), or None."""
    run = path.resolve().parent.parent
    return run if path.resolve().parent.name == "checkpoints" and (run / CONFIG_FILE).is_file() else None
