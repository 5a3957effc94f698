"""The fits a command starts one after another (``sweep``'s combinations, ``selftrain``'s rounds).

Each fit runs as its own process in a folder claimed for it before it starts; the command hands it
the save_dir, experiment and version it computed, so the two agree by construction.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from zoo_lightning.runs import (CLAIM_FILE, CLAIM_TOKEN_ENV, LOGGER_NAME, LOGGER_SAVE_DIR, claim_named_run,
                                experiment_dir)

__all__ = ["FitRunner"]


class FitRunner:
    """Claims run folders in the experiment of ``--config config *argv`` and runs a ``fit`` in each.

    Ctrl-C or SIGTERM is passed to the running fit, which writes its last.ckpt and exits 130 / 143
    (a terminal's Ctrl-C reaches both processes, a ``kill`` only the command, so it is forwarded
    either way); :attr:`signal` then says the command should stop.
    """

    def __init__(self, config: Path, argv: list[str]) -> None:
        self.config, self.argv = config, list(argv)
        self.experiment = experiment_dir(config, argv)
        self.signal: int | None = None
        self._child: subprocess.Popen | None = None
        self._tokens: dict[Path, str] = {}

    def claim(self, name: str) -> Path:
        """A new run folder named ``name`` (``name_v2``, ... when taken), which the next fit in it adopts."""
        folder = claim_named_run(self.experiment, name)
        token = self._tokens[folder] = uuid.uuid4().hex
        (folder / CLAIM_FILE).write_text(token)
        return folder

    def fit(self, folder: Path, extra: list[str], records: tuple[str, ...] = ()) -> int:
        """Runs ``fit --config config *argv *extra`` in the claimed ``folder``; its exit code.

        A fit that stops before it begins leaves nothing to keep: its folder is removed, with the
        ``records`` the command wrote there for it.
        """
        cmd = [sys.executable, "-m", "zoo_lightning", "fit", "--config", str(self.config), *self.argv, *extra,
               LOGGER_SAVE_DIR[0], str(self.experiment.parent), LOGGER_NAME[0], self.experiment.name,
               "--trainer.logger.init_args.version", folder.name]
        env = {**os.environ, CLAIM_TOKEN_ENV: self._tokens[folder]}
        handlers = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._child = subprocess.Popen(cmd, env=env)
            returncode = self._child.wait()
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
        if folder.is_dir() and not any(p.name not in (CLAIM_FILE, *records) for p in folder.iterdir()):
            shutil.rmtree(folder)
        return returncode

    def _forward(self, signum: int, frame: object) -> None:
        self.signal = signum
        if self._child is not None and self._child.poll() is None:
            self._child.send_signal(signum)
