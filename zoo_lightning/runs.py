"""Run folders: how an experiment is named, and how a command claims the folder it writes into.

``fit``, ``sweep`` and ``selftrain`` name runs by one rule; every command that writes a run claims its
folder atomically before anything is written, and a resume locks the run it continues.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from zoo_lightning.argv import option_value

__all__ = ["DEFAULT_EXPERIMENT", "DEFAULT_SAVE_DIR", "experiment_name", "experiment_dir", "config_logger", "newest_run", "claim_run_dir",
           "claim_named_run", "release_claim", "lock_for_resume", "version_number", "CLAIM_FILE", "CLAIM_TOKEN_ENV",
           "LOGGER_SAVE_DIR", "LOGGER_NAME"]

DEFAULT_EXPERIMENT = "default"  # the logger's name when neither the user nor a config gives one
DEFAULT_SAVE_DIR = "lightning_logs"  # the logger's save_dir when neither the user nor a config gives one


def experiment_name(logger_name: str | None, config_files: Sequence[str | Path], backbone: str) -> str:
    """The experiment folder of a run under the logger's ``save_dir``.

    The name the user or a config gave the logger; else the stem of the first config file, the
    recipe (``--config resnet56_cifar.yaml`` files runs under ``resnet56_cifar/``); else the backbone,
    with the ``:`` of ``torchvision:``/``timm:`` names replaced so it is a plain folder name.
    """
    if logger_name and logger_name != DEFAULT_EXPERIMENT:
        return str(logger_name)
    if config_files:
        return Path(config_files[0]).stem
    return str(backbone).replace(":", "_")


# The two spellings LightningCLI accepts for the logger's options.
LOGGER_SAVE_DIR = ("--trainer.logger.init_args.save_dir", "--trainer.logger.save_dir")
LOGGER_NAME = ("--trainer.logger.init_args.name", "--trainer.logger.name")


def config_logger(config: Path) -> tuple[str | None, str | None]:
    """The (save_dir, name) a config file gives its TensorBoard logger, None where it gives none."""
    import yaml

    cfg = yaml.safe_load(config.read_text()) or {}
    logger = (cfg.get("trainer") or {}).get("logger") if isinstance(cfg, dict) else None
    init = (logger.get("init_args") or logger) if isinstance(logger, dict) else {}
    return init.get("save_dir"), init.get("name")


def experiment_dir(config: Path, argv: list[str]) -> Path:
    """``save_dir/experiment`` of the fits ``--config config *argv`` starts, for commands that start them.

    Such a command hands both parts to every fit it starts, so it and its fits agree by construction.
    """
    save_dir, name = config_logger(config)
    save_dir = option_value(argv, *LOGGER_SAVE_DIR) or save_dir or DEFAULT_SAVE_DIR
    return Path(save_dir) / experiment_name(option_value(argv, *LOGGER_NAME) or name, [config], backbone="")


VERSION_PREFIX = "version_"
CLAIM_FILE = ".claim"  # who claimed a run folder; a sweep hands its token to the run it starts
CLAIM_TOKEN_ENV = "ZOO_RUN_CLAIM"
RESUME_LOCK = ".resume.lock"


def version_number(folder: Path) -> int | None:
    """N of a ``version_N`` folder, else None."""
    suffix = folder.name.removeprefix(VERSION_PREFIX)
    return int(suffix) if folder.name.startswith(VERSION_PREFIX) and suffix.isdigit() else None


def newest_run(experiment: Path) -> Path | None:
    """The experiment's most recently claimed ``version_N`` folder (the highest N), or None."""
    runs = [p for p in experiment.glob(f"{VERSION_PREFIX}*") if p.is_dir() and version_number(p) is not None]
    return max(runs, key=version_number, default=None)


def claim_run_dir(experiment: Path, version: str | int | None, token: str | None = None) -> Path:
    """Creates the run folder before anything is written into it, so no two commands ever share one.

    ``version`` None claims the next free ``version_N`` (``os.mkdir`` is atomic: of two commands
    started together one gets N, the other N + 1). A given version must not exist yet, unless it
    holds the claim ``token`` of the sweep that made it for this run.
    """
    experiment.mkdir(parents=True, exist_ok=True)
    if version is not None:
        folder = experiment / (f"{VERSION_PREFIX}{version}" if isinstance(version, int) else str(version))
        try:
            folder.mkdir()
        except FileExistsError:
            claim = folder / CLAIM_FILE
            if token is None or not claim.is_file() or claim.read_text() != token:
                raise FileExistsError(
                    f"Run folder {folder} already exists: another run's. Choose another "
                    "--trainer.logger.init_args.version, or leave it out to get the next free version_N."
                ) from None
            return folder
        (folder / CLAIM_FILE).write_text(str(os.getpid()))
        return folder
    taken = [n for p in experiment.glob(f"{VERSION_PREFIX}*") if (n := version_number(p)) is not None]
    number = max(taken) + 1 if taken else 0
    while True:
        folder = experiment / f"{VERSION_PREFIX}{number}"
        try:
            folder.mkdir()
        except FileExistsError:
            number += 1
            continue
        (folder / CLAIM_FILE).write_text(str(os.getpid()))
        return folder


def claim_named_run(experiment: Path, name: str) -> Path:
    """A new folder for a run named ``name`` (``name_v2``, ... when one exists): a run's folder is never reused."""
    for suffix in range(1, 10_000):
        try:
            return claim_run_dir(experiment, name if suffix == 1 else f"{name}_v{suffix}")
        except FileExistsError:
            continue
    raise FileExistsError(f"No free run folder for {name} under {experiment}.")


def release_claim(folder: Path, used: bool) -> None:
    """Drops the claim marker; a folder whose command failed before it started is removed with what it holds."""
    (folder / CLAIM_FILE).unlink(missing_ok=True)
    if not used and folder.is_dir():
        shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
                raise FileExistsError(f"Run {folder} is being resumed by process {holder} already; wait for it, "
                                      "or stop it first.") from None
            lock.unlink(missing_ok=True)  # left by a resume that was killed
    raise FileExistsError(f"Could not take the resume lock {lock}; remove it if no resume is running.")
