"""What Lightning prints that a user of this project cannot act on, filtered in one place."""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_lightning"]

# Lightning's notices that say nothing a user of this project can act on.
NOTICES = ("GPU available: False", "TPU available: False", "💡 Tip:", "Loading `train_dataloader` to estimate",
           "Seed set to",  # the run's config.yaml records seed_everything
           # The command says itself that it stopped, and how to continue.
           "\nDetected KeyboardInterrupt, attempting graceful shutdown")


class DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NOTICES)


def quiet_lightning() -> None:
    """Drops :data:`NOTICES`, the deprecation warning Lightning's own pytree code raises under torch 2.14,
    the warning about the empty validation loader of a fit on every training image, and the model
    summary's about its size estimate under bf16 (it counts parameters, which stay 32-bit)."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.fabric.utilities.seed"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) for f in logger.filters):
            logger.addFilter(DropNotices())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # --data.val_size 0 hands Lightning an empty validation loader on purpose.
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
