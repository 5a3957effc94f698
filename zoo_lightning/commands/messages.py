"""What Lightning prints that a user of this project cannot act on, filtered in one place."""

from __future__ import annotations

import logging
import warnings

__all__ = ["quiet_lightning"]

# Lightning's notices that say nothing a user of this project can act on.
NOTICES = (
    "GPU available: False",
    "TPU available: False",
    "💡 Tip:",
    "Loading `train_dataloader` to estimate",
    "Seed set to",  # the run's config.yaml records seed_everything
    # The command says itself that it stopped, and how to continue.
    "\nDetected KeyboardInterrupt, attempting graceful shutdown",
)


class DropNotices(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(NOTICES)


def quiet_lightning() -> None:
    """Drops :data:`NOTICES` and the warnings that are wrong for this project, each by its message (and, where
    it says which, the library module that warns), so a changed library text shows the line again:
    the deprecation Lightning's own pytree code raises under torch 2.14, the empty validation loader of
    a fit on every training image, the model summary's size estimate under bf16 (it counts parameters,
    which stay 32-bit), a resumed run's non-empty checkpoint folder, and the batch indices of a
    prediction, which the batches carry themselves."""
    for name in (
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.fabric.utilities.seed",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropNotices) for f in logger.filters):
            logger.addFilter(DropNotices())
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # --data.val_size 0 hands Lightning an empty validation loader on purpose.
    warnings.filterwarnings("ignore", message=r"Total length of `list` across ranks is zero")
    warnings.filterwarnings("ignore", message=r"Precision bf16-mixed is not supported by the model summary")
    # A resumed run continues in its own folder, whose checkpoints are there by design; a new run's folder is new.
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty", module=r"lightning\.")
    # The batch loader hands whole batches with their indices; PredictionWriter reads those, not a sampler's.
    warnings.filterwarnings(
        "ignore", message=r"Couldn't infer the batch indices fetched from your dataloader", module=r"lightning\."
    )
