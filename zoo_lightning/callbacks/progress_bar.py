"""RunProgressBar: Lightning's rich progress bar without the version column it cuts to four characters."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["RunProgressBar"]


class RunProgressBar(RichProgressBar):
    """The rich progress bar, less ``v_num``: Lightning shows a version's last four characters (``on_0`` for
    ``version_0``, ``=0.1`` for a sweep's ``lr=0.1``); the run's folder is said in full when it starts."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
