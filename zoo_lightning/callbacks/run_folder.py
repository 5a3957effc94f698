"""RunStarted: tells the command that claimed a run folder whether the run got going in it."""

from __future__ import annotations

import lightning as L

__all__ = ["RunStarted"]


class RunStarted(L.Callback):
    """``started`` turns true once fit, validate, test or predict begins, after the data is set up.

    A command that fails before that (no data, a bad split, an offline download) had nothing to
    record, and removes the run folder it claimed rather than leave an empty ``version_N`` behind.
    """

    def __init__(self) -> None:
        super().__init__()
        self.started = False

    def _start(self, *args) -> None:
        self.started = True

    on_fit_start = on_validation_start = on_test_start = on_predict_start = _start
