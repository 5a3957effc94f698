"""The workers of a sweep: :class:`Worker` runs the study's trials in this process, one fit subprocess per seed;
:func:`run_workers` starts several such processes on this machine, each with its own GPU or share of the CPU."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_lightning.callbacks.trial_pruning import TrialPruning, fit_record
from zoo_lightning.commands.fit_runner import FitRunner
from zoo_lightning.commands.search_space import Dimension, fit_value, run_name, trial_run_name
from zoo_lightning.signals import StopSignals
from zoo_lightning.studies import RETRIES, RUNS, SURPLUS, absolute, counted_trials, shown

if TYPE_CHECKING:
    import optuna

__all__ = ["Worker", "run_workers", "worker_env", "reporting", "SWEEP_RECORD", "STOPPED", "FAILED"]

SWEEP_RECORD = "sweep.json"  # in each run folder: its study, trial, values, seed and outcome, for report
STOPPED = "stopped"  # a trial's user attribute: the signal that stopped its worker
FAILED = "failed"  # a trial's user attribute: why its fit failed


class FitFailed(Exception):
    """A trial's fit exited with an error, or logged no ``--metric``: the trial fails, the study goes on."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM stopped the worker during a trial: the trial fails and is queued again."""


class Surplus(Exception):
    """The trial was started past the study's last slot (two workers asked at once): it ends before it trains."""


# --- a worker -----------------------------------------------------------------------------------------------------


class Worker:
    """Runs trials of the study, one at a time, until it has its ``trials``: Optuna's ``study.optimize`` asks for a
    trial, :meth:`objective` runs its fits."""

    def __init__(
        self,
        study: optuna.Study,
        runner: FitRunner,
        args: argparse.Namespace,
        dimensions: dict[str, Dimension],
        storage: str,
        stop: StopSignals,
    ) -> None:
        self.study, self.runner, self.args, self.dimensions = study, runner, args, dimensions
        self.storage, self.stop = storage, stop
        self.failed = 0
        self.stopped_during: str | None = None
        self.tag = "sweep" if args.worker is None else f"sweep worker {args.worker}"

    def left(self) -> int:
        """Slots of the study not yet taken by a trial that started (queued retries are yet to start)."""
        from optuna.trial import TrialState

        started = [t for t in self.study.get_trials(deepcopy=False) if t.state != TrialState.WAITING]
        return self.args.trials - counted_trials(started)

    def run(self) -> int:
        """Runs trials until the study has its ``--trials``; the worker's exit status."""
        import optuna

        optuna.storages.fail_stale_trials(self.study)  # a dead worker's trial is queued again before we count
        if self.left() <= 0:
            print(
                f"[{self.tag}] study {self.study.study_name!r} has its {self.args.trials} trials; nothing to run "
                "(raise --trials, or give another --study).",
                flush=True,
            )
            return 0
        try:
            self.study.optimize(self.objective, catch=(FitFailed, Stopped, Surplus), callbacks=[self.after_trial])
        except KeyboardInterrupt:
            if self.stop.received is None:
                raise
        status = self.stop.exit_status  # set once a signal was received
        if status is not None:
            during = f" during {self.stopped_during}: it is queued to run again" if self.stopped_during else ""
            print(
                f"[{self.tag}] stopped by {self.stop.name}{during}; the same command continues the study.",
                file=sys.stderr,
                flush=True,
            )
            return status
        return 1 if self.failed else 0

    def objective(self, trial: optuna.Trial) -> float:
        try:
            return self.train(trial)
        except KeyboardInterrupt:  # the signal came between two fits, or during one (the fit saved its last.ckpt)
            trial.set_user_attr(STOPPED, self.stop.name or "SIGINT")
            self.stopped_during = self.stopped_during or f"trial {trial.number}"
            self.study.stop()
            raise Stopped(self.stop.name) from None

    def train(self, trial: optuna.Trial) -> float:
        """Fits the trial's configuration once per seed; the mean of their best ``--metric``."""
        if counted_trials(self.study.get_trials(deepcopy=False), up_to=trial.number) > self.args.trials:
            trial.set_user_attr(SURPLUS, True)
            self.study.stop()
            raise Surplus(f"trial {trial.number} is past the study's {self.args.trials} trials")
        values = {key: dimension.suggest(trial) for key, dimension in self.dimensions.items()}
        passed = {key: fit_value(value) for key, value in values.items()}
        grid = self.args.sampler == "grid"
        base = run_name(passed) if grid else trial_run_name(trial.number, values)
        runs: list[str] = []
        for key, value in ((RUNS, runs), (STOPPED, None), (FAILED, None)):  # a retry starts afresh
            trial.set_user_attr(key, value)
        bests = []
        for index, seed in enumerate(self.args.seeds or [None]):
            folder = self.runner.reserve(base if seed is None else f"{base},seed={seed}")
            run = f"{self.runner.experiment.name}/{folder.name}"
            runs.append(run)
            trial.set_user_attr(RUNS, runs)
            record = {
                "study": self.study.study_name,
                "trial": trial.number,
                "values": passed,
                "seed": seed,
                "storage": None if self.args.storage is None else shown(absolute(self.storage)),
            }
            record.update(
                {"grid": list(passed)} if grid else {"space": {k: d.spec for k, d in self.dimensions.items()}}
            )
            self.write_record(folder, record)
            self.stopped_during = f"trial {trial.number} ({run})"
            print(f"[{self.tag}] trial {trial.number}: {run}", flush=True)
            code = self.runner.fit(
                folder, self.fit_arguments(trial, passed, seed, report=index == 0), records=(SWEEP_RECORD,)
            )
            if self.stop.received is not None:
                raise KeyboardInterrupt
            # The fit wrote its record through the storage: read the trial afresh (a Trial caches its attributes).
            stored = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            fit = fit_record(stored.user_attrs, folder.name) or {}
            why = (
                f"its fit exited with code {code}"
                if code
                else None
                if fit.get("best") is not None
                else "its fit ended before its first validation: give it one (a whole epoch, or "
                "--trainer.val_check_interval)"
            )
            outcome = "failed" if why else "pruned" if fit.get("pruned_at") is not None else "complete"
            self.write_record(folder, {**record, "outcome": outcome, "best": fit.get("best")})
            if why:
                trial.set_user_attr(FAILED, f"{run}: {why}")
                raise FitFailed(why)
            if outcome == "pruned":
                import optuna

                raise optuna.TrialPruned(f"at validation {fit['pruned_at']}")
            bests.append(float(fit["best"]))
        return statistics.fmean(bests)

    def fit_arguments(self, trial: optuna.Trial, passed: dict[str, str], seed: int | None, report: bool) -> list[str]:
        """The options of one fit of the trial: its values, its seed and the callback that reports to the trial."""
        arguments = [arg for key, value in passed.items() for arg in (f"--{key}", value)]
        if seed is not None:
            arguments += ["--seed_everything", str(seed), "--data.init_args.shuffle_seed", str(seed)]
        return arguments + reporting(self.args, self.storage, trial.number, report)

    @staticmethod
    def write_record(folder: Path, record: dict[str, Any]) -> None:
        if folder.is_dir():
            (folder / SWEEP_RECORD).write_text(json.dumps(record, indent=1))

    def after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """Says how the trial ended; queues a stopped one again; stops when the study has its trials."""
        from optuna.storages import RetryHeartbeatStaleTrialCallback
        from optuna.trial import TrialState

        metric = self.args.metric
        if trial.state == TrialState.COMPLETE:
            print(f"[{self.tag}] trial {trial.number} complete: {metric} {trial.value:.4f}", flush=True)
        elif trial.state == TrialState.PRUNED:
            value = "" if trial.value is None else f" ({metric} {trial.value:.4f})"
            print(f"[{self.tag}] trial {trial.number} pruned{value}; its run keeps its last.ckpt.", flush=True)
        elif trial.user_attrs.get(STOPPED):
            RetryHeartbeatStaleTrialCallback(max_retry=RETRIES)(study, trial)
            return  # the worker stops: stopped_during names the trial
        elif trial.user_attrs.get(FAILED):
            self.failed += 1
            print(
                f"[{self.tag}] trial {trial.number} failed: {trial.user_attrs[FAILED]}; going on.",
                file=sys.stderr,
                flush=True,
            )
        self.stopped_during = None
        if self.left() <= 0:
            study.stop()


# --- workers on this machine --------------------------------------------------------------------------------------


def _gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES names them."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def worker_env(index: int, workers: int, gpus: list[str]) -> dict[str, str]:
    """Worker ``index``'s environment: one GPU of its own (shared round-robin when there are fewer GPUs than
    workers), or, on a CPU, its share of the threads (of OMP_NUM_THREADS when set, else of the cores)."""
    env = dict(os.environ)
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        return env
    cores = int(env.get("OMP_NUM_THREADS") or 0) or len(os.sched_getaffinity(0))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(max(1, cores // workers))
    return env


def run_workers(argv: list[str], workers: int, stop: StopSignals) -> int:
    """Starts ``workers`` processes of this same command (each ``--workers 1``) and waits for them; a signal this
    process gets is passed on to each. The highest-priority exit status: a signal's, else 1 if any failed."""
    gpus = _gpus()
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "zoo_lightning", "sweep", *argv, "--workers", "1", "--worker", str(i)],
            env=worker_env(i, workers, gpus),
        )
        for i in range(workers)
    ]
    codes: list[int | None] = [None] * workers
    while any(c is None for c in codes):
        try:
            for i, child in enumerate(children):
                codes[i] = child.wait()
        except KeyboardInterrupt:
            if stop.received is None:  # not a signal this command handles: nothing to pass on
                raise
            for child in children:
                if child.poll() is None:
                    child.send_signal(stop.received)
    for i, code in enumerate(codes):
        if code is not None and code < 0:
            print(
                f"[sweep] worker {i} was killed (signal {-code}); a trial it ran is run again once its heartbeat "
                "is stale, by the same command.",
                file=sys.stderr,
                flush=True,
            )
    if stop.exit_status is not None:
        return stop.exit_status
    return 1 if any(codes) else 0


def reporting(args: argparse.Namespace, storage: str, trial: int, report: bool) -> list[str]:
    """The fit options that add the callback through which a fit reports to trial number ``trial``."""
    callback = {
        "class_path": f"zoo_lightning.callbacks.{TrialPruning.__name__}",
        "init_args": {
            "storage": storage,
            "study": args.study,
            "trial": trial,
            "monitor": args.metric,
            "pruner": args.pruner,
            "report": report,
        },
    }
    return ["--trainer.callbacks+", json.dumps(callback)]
