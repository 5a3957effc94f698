"""Run folders: how an experiment is named, so ``fit`` and ``sweep`` file runs in the same place."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

__all__ = ["DEFAULT_EXPERIMENT", "experiment_name"]

DEFAULT_EXPERIMENT = "default"  # the logger's name when neither the user nor a config gives one


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
