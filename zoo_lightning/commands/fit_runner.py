"""The fits a command starts one after another (``sweep``'s combinations, ``selftrain``'s rounds).

The command's own arguments for ``fit`` are parsed once, by fit's parser, before anything runs: a
mistake is refused at once, and the experiment folder is the one fit computes. Each fit then runs as
its own process in a folder reserved for it by :meth:`~zoo_lightning.runs.RunLogger.reserve`, which
the fit's logger adopts through its init arguments.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from zoo_lightning.commands.run_plan import experiment_dir
from zoo_lightning.commands.trainer import ZooCLI
from zoo_lightning.runs import CLAIM_FILE, RunLogger
from zoo_lightning.signals import StopSignals

__all__ = ["FitRunner"]

LOGGER = "--trainer.logger.init_args."


class FitRunner:
    """Runs ``fit --config config *argv *extra`` processes in reserved run folders of one experiment.

    Ctrl-C or SIGTERM received by the command (``stop``) is passed to the running fit, which writes its
    last.ckpt and exits 130 / 143; ``stop.received`` then says the command should stop.
    """

    def __init__(self, config: Path, argv: list[str], stop: StopSignals) -> None:
        self.config, self.argv, self.stop = config, list(argv), stop
        self.cli = ZooCLI("fit", self.arguments(), build=False)
        self.experiment = experiment_dir(self.cli.config)
        self.tokens: dict[Path, str] = {}

    def arguments(self, extra: Sequence[str] = ()) -> list[str]:
        return ["--config", str(self.config), *self.argv, *extra]

    def check(self, extra: list[str]) -> None:
        """Parses a fit's options as fit will (a refused one ends the command with one line, exit 2)."""
        self.cli.parser.parse_args(self.arguments(extra))

    def reserve(self, name: str) -> Path:
        """A new run folder named ``name`` (``name_v2``, ... when taken), which the next fit in it adopts."""
        folder, token = RunLogger.reserve(self.experiment, name)
        self.tokens[folder] = token
        return folder

    def fit(self, folder: Path, extra: list[str], records: tuple[str, ...] = ()) -> int:
        """Runs ``fit`` in the reserved ``folder``; its exit code.

        A fit that stops before it begins leaves nothing to keep: its folder is removed, with the ``records``
        the command wrote there for it.
        """
        cmd = [
            sys.executable,
            "-m",
            "zoo_lightning",
            "fit",
            *self.arguments(extra),
            f"{LOGGER}save_dir",
            str(self.experiment.parent),
            f"{LOGGER}name",
            self.experiment.name,
            f"{LOGGER}version",
            folder.name,
            f"{LOGGER}claim",
            self.tokens[folder],
        ]
        child = subprocess.Popen(cmd)
        self.stop.forward_to(child)
        try:
            returncode = child.wait()
        finally:
            self.stop.forward_to(None)
        if folder.is_dir() and not any(p.name not in (CLAIM_FILE, *records) for p in folder.iterdir()):
            shutil.rmtree(folder)
        return returncode
