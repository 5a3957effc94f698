"""LastCheckpoint: ``checkpoints/last.ckpt``, the checkpoint ``--ckpt_path last`` resumes from."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.utilities.exceptions import SIGTERMException

from zoo_lightning.callbacks.fit_checkpoint import FitCheckpoint

__all__ = ["LastCheckpoint"]


class LastCheckpoint(FitCheckpoint):
    """Rewrites ``last.ckpt`` at the end of every training epoch, whether or not validation ran, and
    when the run is stopped by Ctrl-C or SIGTERM (then at the step it had reached).

    Any other exception (a NaN loss, a crash) leaves the file as it was: the last good checkpoint.
    A fit that ends inside an epoch (``max_steps``) still ends the epoch, so its last step is saved.
    """

    def __init__(self, filename: str = "last", **kwargs: Any) -> None:
        # One last.ckpt, rewritten in place: the parser hands every ModelCheckpoint option over, the version
        # counter's True included, which made a resumed run write last-v1.ckpt beside the one it resumed.
        kwargs.update(
            monitor=None,
            save_top_k=1,
            save_on_train_epoch_end=True,
            save_on_exception=True,
            enable_version_counter=False,
        )
        super().__init__(filename=filename, **kwargs)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Saved through the Trainer rather than ModelCheckpoint's own handler, whose "An KeyboardInterrupt was raised
        # with message: ..." line only repeats what the command says when it stops.
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and trainer.training and self.dirpath:
            trainer.save_checkpoint(
                os.path.join(self.dirpath, f"{self.filename}{self.FILE_EXTENSION}"), weights_only=self.save_weights_only
            )
