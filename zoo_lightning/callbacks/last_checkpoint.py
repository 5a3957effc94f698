"""LastCheckpoint: ``checkpoints/last.ckpt``, the checkpoint ``--ckpt_path last`` resumes from."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

__all__ = ["LastCheckpoint"]


class LastCheckpoint(ModelCheckpoint):
    """Rewrites ``last.ckpt`` at the end of every training epoch, whether or not validation ran, and
    when the run is stopped by Ctrl-C or SIGTERM (then at the step it had reached).

    Any other exception (a NaN loss, a crash) leaves the file as it was: the last good checkpoint.
    A fit that ends inside an epoch (``max_steps``) still ends the epoch, so its last step is saved.
    """

    def __init__(self, filename: str = "last", **kwargs: Any) -> None:
        # One last.ckpt, rewritten in place: the parser hands every ModelCheckpoint option over, the version
        # counter's True included, which made a resumed run write last-v1.ckpt beside the one it resumed.
        kwargs.update(monitor=None, save_top_k=1, save_on_train_epoch_end=True, save_on_exception=True,
                      enable_version_counter=False)
        super().__init__(filename=filename, **kwargs)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, (KeyboardInterrupt, SIGTERMException)) and trainer.training:
            super().on_exception(trainer, pl_module, exception)
