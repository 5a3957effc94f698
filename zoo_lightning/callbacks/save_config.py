"""AtomicSaveConfigCallback: LightningCLI's ``config.yaml`` of a run, written so it is never half a file."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.cli import LightningArgumentParser, SaveConfigCallback

from zoo_lightning.files import atomic_write

__all__ = ["AtomicSaveConfigCallback"]


class _AtomicSaver:
    """The parser, with ``save`` going through a temporary file that is renamed into place."""

    def __init__(self, parser: LightningArgumentParser) -> None:
        self._parser = parser

    def save(self, config: Namespace, path: str, **kwargs: Any) -> None:
        kwargs["overwrite"] = True  # the temporary file; Lightning checked the real one before
        atomic_write(Path(path), lambda partial: self._parser.save(config, str(partial), **kwargs))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._parser, name)


class AtomicSaveConfigCallback(SaveConfigCallback):
    """Lightning's config saving, with the file written through a temporary one and renamed.

    jsonargparse writes the YAML in place; a run killed in that moment left an empty config.yaml.
    Lightning's checks (no overwrite, rank 0 only, broadcasts) are kept as they are. Evaluation runs
    without a logger save nothing: there is no run folder, and a config.yaml left in the working
    directory would abort the next such run.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if trainer.logger is None and stage != "fit":
            return
        parser = self.parser
        # A stand-in, not a parser: SaveConfigCallback.setup calls only its save (the rest is passed through).
        self.parser = cast(LightningArgumentParser, _AtomicSaver(parser))
        try:
            super().setup(trainer, pl_module, stage)
        finally:
            self.parser = parser
