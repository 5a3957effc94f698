"""``python -m zoo_lightning COMMAND``: the command table, the help that lists it, and the error policy.

Nothing heavy is imported here: ``python -m zoo_lightning --help`` answers without loading torch, and
each command's module is imported only when that command runs.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import NamedTuple

__all__ = ["COMMANDS", "main", "usage"]


class Command(NamedTuple):
    target: str  # "module:function", called with the arguments after the command's name
    summary: str
    named: bool = False  # the Trainer's verbs share one function, which is also given the command's name


COMMANDS: dict[str, Command] = {
    "fit": Command(
        "zoo_lightning.commands.trainer:run",
        "train a backbone (--config, --trainer.*, --model.*, --data.*)",
        named=True,
    ),
    "validate": Command("zoo_lightning.commands.trainer:run", "score a checkpoint on the validation split", named=True),
    "test": Command("zoo_lightning.commands.trainer:run", "score a checkpoint on the test split", named=True),
    "predict": Command(
        "zoo_lightning.commands.trainer:run", "classify a folder of your own images into a CSV", named=True
    ),
    "models": Command("zoo_lightning.commands.models:main", "the registered backbones with parameters and FLOPs"),
    "stats": Command("zoo_lightning.commands.stats:main", "a dataset's per-channel mean and std"),
    "export": Command("zoo_lightning.commands.export:main", "a checkpoint as a standalone TorchScript or .pt2 model"),
    "sweep": Command("zoo_lightning.commands.sweep:main", "an Optuna study of fits over a grid or a search space"),
    "selftrain": Command(
        "zoo_lightning.commands.selftrain:main", "Noisy Student: rounds of pseudo-labels and noisy students"
    ),
    "report": Command("zoo_lightning.commands.report:main", "runs compared as a markdown table and PNG plots"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items())
    return (
        "usage: python -m zoo_lightning COMMAND [options]\n\n"
        "Train and compare image-classification CNNs with PyTorch Lightning.\n\n"
        f"commands:\n{rows}\n\n"
        "`python -m zoo_lightning COMMAND --help` lists a command's options."
    )


def _is_user_error(error: BaseException) -> bool:
    """Errors that mean the input was wrong, not the program: shown as one line, no traceback."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from zoo_lightning.checkpoints import CheckpointWriteError
    from zoo_lightning.models import UnknownModelError

    # MisconfigurationException: Lightning's word for a Trainer flag this machine or run cannot take.
    return isinstance(
        error,
        (
            ValueError,
            FileNotFoundError,
            FileExistsError,
            NotADirectoryError,
            IsADirectoryError,
            PermissionError,
            UnknownModelError,
            CheckpointWriteError,
            MisconfigurationException,
        ),
    )


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return
    name = argv[0]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}.\n\n{usage()}", file=sys.stderr)
        sys.exit(2)
    module, function = COMMANDS[name].target.split(":")
    command = getattr(importlib.import_module(module), function)
    try:
        if COMMANDS[name].named:
            command(name, argv[1:])
        else:
            command(argv[1:])
    except Exception as error:
        if os.environ.get("ZOO_DEBUG") or not _is_user_error(error):
            raise
        from zoo_lightning.parsing import one_line

        print(f"error: {one_line(error)}", file=sys.stderr)
        print("(set ZOO_DEBUG=1 to see the traceback)", file=sys.stderr)
        sys.exit(2)
