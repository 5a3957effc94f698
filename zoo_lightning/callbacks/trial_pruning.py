"""TrialPruning: a fit of a sweep's Optuna trial reports to it after each validation and stops when it is pruned.

``sweep`` adds the callback to the command line of each fit it starts for a trial. Both sides of what the
fit tells its trial are here: the callback writes, after each validation, a record of the fit into the
trial's user attributes (``fit <run folder>``: the best value of the metric so far, the validations done,
the validation it was pruned at), and the sweep reads it back with :func:`fit_record` once the fit ends.
The study's storage is the only channel: the fit may run on another machine than the study's database.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from zoo_lightning.options import NonNegativeInt, PrunerName
from zoo_lightning.studies import make_pruner, open_storage

if TYPE_CHECKING:
    import optuna

__all__ = ["TrialPruning", "fit_record", "RECORD_PREFIX"]

RECORD_PREFIX = "fit "  # a trial's user attribute "fit <run folder>" holds that fit's record


def fit_record(user_attrs: dict[str, Any], run: str) -> dict[str, Any] | None:
    """What the fit in run folder ``run`` recorded in its trial's user attributes: ``best`` (the metric's best
    value), ``validations`` (how many it reported) and ``pruned_at`` (the validation it was pruned at, or None);
    None when it recorded nothing (it stopped before its first validation)."""
    return user_attrs.get(RECORD_PREFIX + run)


class TrialPruning(Callback):
    """Reports ``monitor`` to the trial after each validation, and stops the fit when the study's pruner says so.

    The value of validation ``i`` (0, 1, ...; the sanity check is not one) is the trial's intermediate value at
    step ``i``, so trials with different batch sizes are compared validation by validation. A pruned fit
    finishes its step and epoch as any stopped fit does: it keeps its run folder and ``last.ckpt``, and exits 0;
    its record says it was pruned. If the sweep worker that runs the trial is gone (killed), the fit stops as
    SIGTERM stops it, at the step it reached, so no fit goes on training for a trial that is no longer run.

    Args:
        storage: the study's storage, a database URL or a journal file (``sweep --storage``).
        study: the study's name.
        trial: the trial's number in the study.
        monitor: the metric reported (``sweep --metric``); the study's direction says which value is best.
        pruner: the study's pruner (``sweep --pruner``); Optuna keeps none in the storage.
        report: report this fit's validations to the trial's pruner (False for the fits of a trial's later seeds:
            the pruner compares the first seed's validations; the later ones only record their best).
    """

    def __init__(
        self,
        storage: str,
        study: str,
        trial: NonNegativeInt,
        monitor: str = "val/top1",
        pruner: PrunerName = "median",
        report: bool = True,
    ) -> None:
        self.storage, self.study_name, self.number = storage, study, trial
        self.monitor, self.pruner, self.report = monitor, pruner, report
        self.worker = os.getppid()  # the sweep worker that started this fit
        self.trial: optuna.trial.Trial | None = None  # rank 0's, once setup opened it
        self.run = ""
        self.maximize = True
        self.best: float | None = None
        self.validations = 0
        self.pruned_at: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or not trainer.is_global_zero:
            return
        import optuna

        storage = open_storage(self.storage)
        study = optuna.load_study(study_name=self.study_name, storage=storage, pruner=make_pruner(self.pruner))
        trial_id = storage.get_trial_id_from_study_id_trial_number(
            storage.get_study_id_from_name(self.study_name), self.number
        )
        self.trial = optuna.trial.Trial(study, trial_id)
        self.maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        # The run folder's name keys the record: the sweep knows the folder it reserved for this fit.
        # Not trainer.log_dir, a broadcast that the other ranks, gone from here, would never join.
        self.run = (
            str(trainer.logger.version) if trainer.logger is not None else os.path.basename(trainer.default_root_dir)
        )

    def worker_gone(self) -> bool:
        return os.getppid() != self.worker

    def on_train_batch_start(self, trainer: L.Trainer, *args: Any) -> None:
        if trainer.is_global_zero and self.worker_gone():
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning stops at the step's end and writes last.ckpt

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        stop = False
        if trainer.is_global_zero and self.trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                logged = ", ".join(sorted(k for k in trainer.callback_metrics if not k.startswith("train"))) or "none"
                raise ValueError(
                    f"sweep --metric {self.monitor}: this fit logs no such metric after a validation "
                    f"(it logs {logged}). Give one of those."
                )
            if not trainer.sanity_checking and not self.worker_gone():
                stop = self.record(float(value))
        if trainer.world_size > 1:
            stop = trainer.strategy.broadcast(stop, src=0)
        if stop:
            trainer.should_stop = True

    def record(self, value: float) -> bool:
        """Reports a validation's value; True when the pruner stops the trial."""
        if self.trial is None:
            raise RuntimeError("TrialPruning.record needs the trial that setup opens (on rank 0 of a fit).")
        step = self.validations
        self.validations += 1
        if self.best is None or (value > self.best if self.maximize else value < self.best):
            self.best = value
        if self.report:
            self.trial.report(value, step)
            if self.trial.should_prune():
                self.pruned_at = step
        self.trial.set_user_attr(
            RECORD_PREFIX + self.run, {"best": self.best, "validations": self.validations, "pruned_at": self.pruned_at}
        )
        return self.pruned_at is not None
