"""``python -m zoo_lightning sweep``: an Optuna study of fits, over a grid or a search space.

    python -m zoo_lightning sweep --config resnet20_cifar.yaml \
        --grid model.optimizer.init_args.lr=0.1,0.05 data.init_args.batch_size=128,256
    python -m zoo_lightning sweep --config resnet20_cifar.yaml --trials 24 --workers 2 --trainer.max_epochs 15 \
        --space 'model.optimizer.init_args.lr=loguniform(0.01,0.4)' \
                'model.optimizer.init_args.weight_decay=loguniform(1e-5,1e-3)'

Each trial of the study is one ``fit`` process per seed (``--seeds``), in a run folder of the config's
experiment named after its values (a grid: ``lr=0.1,batch_size=128`` as before; a search:
``trial_3,lr=0.0123,...``), claimed before it starts; ``sweep.json`` in the folder says which study,
trial, values and seed it is, and how the fit ended. Options this command does not know go to every fit.

The study (``--study``, by default the experiment's name) lives in ``--storage``: by default the SQLite
file ``studies.db`` in the experiment folder, or any database URL Optuna takes, or a journal file's
path. Every worker that runs the same command against the same storage shares it: the same command
started again, in another shell or on another machine, continues the study up to ``--trials``, and no
trial is run twice. ``--workers K`` starts K such workers here, each with its own GPU (or its share of
the CPU threads). A fit reports ``--metric`` after each validation; ``--pruner`` stops a trial that
falls behind (the fit keeps its folder and last.ckpt). A fit that fails is reported and the study goes
on; a trial whose worker was killed is run again once its heartbeat is stale, and Ctrl-C or SIGTERM
stops the running fit (which keeps its last.ckpt), queues its trial again and ends the worker.

``--config`` may also be a sweep file: a YAML whose one section, ``sweep:``, gives this command's
options (``config``, the fit config; ``space`` or ``grid``; ``sampler``, ``trials``, ``args``, ...);
the command line wins over it. ``sweeps/efficientnet_scaling_cifar.yaml`` is shipped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

from zoo_lightning.callbacks.trial_pruning import TrialPruning, fit_record
from zoo_lightning.commands.fit_runner import FitRunner
from zoo_lightning.commands.search_space import Dimension, fit_value, parse_space, run_name, trial_run_name
from zoo_lightning.options import PrunerName
from zoo_lightning.parsing import read_config_file, resolve_config
from zoo_lightning.signals import StopSignals
from zoo_lightning.studies import (RETRIES, RUNS, STUDIES_FILE, SURPLUS, absolute, counted_trials, default_storage,
                                   is_database, make_pruner, open_storage, quiet_optuna, shown, trials_table)

__all__ = ["main", "open_study", "SWEEP_RECORD", "STOPPED"]

SWEEP_RECORD = "sweep.json"  # in each run folder: its study, trial, values, seed and outcome, for report
STOPPED = "stopped"  # a trial's user attribute: the signal that stopped its worker
FAILED = "failed"  # a trial's user attribute: why its fit failed
SAMPLERS = ("grid", "random", "tpe")
FILE_OPTIONS = ("config", "grid", "space", "sampler", "trials", "metric", "direction", "pruner", "storage", "study",
                "workers", "seeds", "heartbeat", "args")


class FitFailed(Exception):
    """A trial's fit exited with an error, or logged no ``--metric``: the trial fails, the study goes on."""


class Stopped(Exception):
    """Ctrl-C or SIGTERM stopped the worker during a trial: the trial fails and is queued again."""


class Surplus(Exception):
    """The trial was started past the study's last slot (two workers asked at once): it ends before it trains."""


class SweepParser(argparse.ArgumentParser):
    """argparse with a refusal as one line (the CLI prints ``error: ...`` and exits 2)."""

    def error(self, message: str) -> Any:
        raise ValueError(f"{message}. `{self.prog} --help` lists the options")


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError(value)
    return number


_positive.__name__ = "whole number >= 1"  # argparse names the type in its refusal


def _parser() -> SweepParser:
    parser = SweepParser(prog="python -m zoo_lightning sweep", description=__doc__, allow_abbrev=False,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="the fit config of every trial (a path or a shipped config's name), or a sweep file")
    parser.add_argument("--grid", nargs="+", metavar="KEY=V1,V2",
                        help="fit options and their values: every combination")
    parser.add_argument("--space", nargs="+", metavar="KEY=SPEC",
                        help="fit options and what to draw: choice(a,b), uniform(lo,hi), loguniform(lo,hi), int(lo,hi)")
    parser.add_argument("--sampler", choices=SAMPLERS,
                        help="grid (every combination of choices; the default when all are choices), random, or tpe "
                             "(Bayesian, the default otherwise)")
    parser.add_argument("--trials", type=_positive, help="trials in the study (default: the grid's size)")
    parser.add_argument("--metric", default="val/top1", help="what a trial is scored by, after each validation "
                        "(default val/top1); a trial's value is its best, the mean over --seeds")
    parser.add_argument("--direction", choices=("maximize", "minimize"), default="maximize")
    parser.add_argument("--pruner", choices=get_args(PrunerName),
                        help="stop trials that fall behind (default: median, none for a grid)")
    parser.add_argument("--storage", help=f"the study's storage: a database URL or a journal file (default: the "
                                          f"SQLite file {STUDIES_FILE} in the experiment folder)")
    parser.add_argument("--study", help="the study's name (default: the experiment's)")
    parser.add_argument("--workers", type=_positive, default=1, help="worker processes here (default 1); each gets "
                        "its own GPU, or its share of the CPU threads")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="S",
                        help="train each configuration once per seed (seed_everything and the data's shuffle seed); "
                             "its value is the mean")
    parser.add_argument("--heartbeat", type=_positive, default=60,
                        help="seconds between a running trial's heartbeats in a database storage; a trial silent "
                             "for two is failed and run again (default 60)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the index of a worker --workers started
    return parser


def _sweep_file(path: Path, content: dict[str, Any]) -> dict[str, Any]:
    """A sweep file's options as the parser's defaults (with ``args``, the fit options, kept apart)."""
    options = content.get("sweep")
    if set(content) != {"sweep"} or not isinstance(options, dict):
        raise ValueError(f"Sweep file {path}: it must hold one mapping, sweep:, of this command's options.")
    unknown = sorted(set(options) - set(FILE_OPTIONS))
    if unknown:
        raise ValueError(f"Sweep file {path}: unknown option(s) {', '.join(unknown)}; it takes "
                         f"{', '.join(FILE_OPTIONS)}.")
    if "config" not in options:
        raise ValueError(f"Sweep file {path}: give config:, the fit config of every trial.")
    defaults = dict(options)
    for key, render in (("space", lambda k, v: f"{k}={v}"), ("grid", lambda k, v: f"{k}={','.join(map(str, v))}")):
        if isinstance(defaults.get(key), dict):
            defaults[key] = [render(k, v) for k, v in defaults[key].items()]
    defaults["args"] = [str(a) for a in defaults.get("args") or []]
    return defaults


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """The sweep's options (a sweep file's under the command line's) and the options for every fit."""
    parser = _parser()
    args, fit_options = parser.parse_known_args(argv)
    args.config = resolve_config(args.config)
    content = read_config_file(args.config)
    if "sweep" in content:
        defaults = _sweep_file(args.config, content)
        file_args = defaults.pop("args")
        parser.set_defaults(**{k: v for k, v in defaults.items() if k != "config"})
        args, fit_options = parser.parse_known_args(argv)
        args.config = resolve_config(defaults["config"])
        fit_options = file_args + fit_options
    return args, fit_options


# --- the study ---------------------------------------------------------------------------------------------------


def make_sampler(name: str, dimensions: dict[str, Dimension]) -> Any:
    import optuna

    if name == "grid":
        return optuna.samplers.GridSampler({k: list(d.values) for k, d in dimensions.items()}, seed=0)
    if name == "random":
        return optuna.samplers.RandomSampler()
    # The constant liar keeps workers from drawing the point another is training.
    return optuna.samplers.TPESampler(constant_liar=True)


def open_study(url: str, name: str, direction: str, record: dict[str, Any], sampler: Any, pruner: Any,
               heartbeat: int | None) -> Any:
    """The study ``name`` in the storage at ``url``: loaded when it exists (its recorded space, metric and seeds must
    be ``record``'s), else created with ``record`` as its user attributes.

    Raises:
        ValueError: the storage cannot be used, or the study searched something else.
    """
    import optuna

    storage = open_storage(url, heartbeat=heartbeat if is_database(url) else None)
    if name in optuna.study.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)
        stored = study.user_attrs
        if study.direction.name.lower() != direction:
            raise ValueError(f"Study {name!r} in {shown(url)} {study.direction.name.lower()}s its metric, this "
                             f"command would {direction} it: give another --study NAME.")
        for key, value in record.items():
            if key in stored and stored[key] != value:
                raise ValueError(f"Study {name!r} in {shown(url)} has {key} {_said(stored[key])}, this command "
                                 f"{_said(value)}: give another --study NAME, or the same {key} to continue it.")
        missing = {k: v for k, v in record.items() if k not in stored}  # a study made outside a sweep
    else:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction, sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
        missing = record
    for key, value in missing.items():
        study.set_user_attr(key, value)
    return study


def _said(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return " ".join(map(str, value))
    return "none" if value is None else str(value)


# --- a worker -----------------------------------------------------------------------------------------------------


class Worker:
    """Runs trials of the study, one at a time, until it has its ``trials``: Optuna's ``study.optimize`` asks for a
    trial, :meth:`objective` runs its fits."""

    def __init__(self, study: Any, runner: FitRunner, args: argparse.Namespace, dimensions: dict[str, Dimension],
                 storage: str, stop: StopSignals) -> None:
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
            print(f"[{self.tag}] study {self.study.study_name!r} has its {self.args.trials} trials; nothing to run "
                  "(raise --trials, or give another --study).", flush=True)
            return 0
        try:
            self.study.optimize(self.objective, catch=(FitFailed, Stopped, Surplus), callbacks=[self.after_trial])
        except KeyboardInterrupt:
            if self.stop.received is None:
                raise
        if self.stop.received is not None:
            during = f" during {self.stopped_during}: it is queued to run again" if self.stopped_during else ""
            print(f"[{self.tag}] stopped by {self.stop.name}{during}; the same command continues the study.",
                  file=sys.stderr, flush=True)
            return self.stop.exit_status
        return 1 if self.failed else 0

    def objective(self, trial: Any) -> float:
        try:
            return self.train(trial)
        except KeyboardInterrupt:  # the signal came between two fits, or during one (the fit saved its last.ckpt)
            trial.set_user_attr(STOPPED, self.stop.name or "SIGINT")
            self.stopped_during = self.stopped_during or f"trial {trial.number}"
            self.study.stop()
            raise Stopped(self.stop.name) from None

    def train(self, trial: Any) -> float:
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
            record = {"study": self.study.study_name, "trial": trial.number, "values": passed, "seed": seed,
                      "storage": None if self.args.storage is None else shown(absolute(self.storage))}
            record.update({"grid": list(passed)} if grid else
                          {"space": {k: d.spec for k, d in self.dimensions.items()}})
            self.write_record(folder, record)
            self.stopped_during = f"trial {trial.number} ({run})"
            print(f"[{self.tag}] trial {trial.number}: {run}", flush=True)
            code = self.runner.fit(folder, self.fit_arguments(trial, passed, seed, report=index == 0),
                                   records=(SWEEP_RECORD,))
            if self.stop.received is not None:
                raise KeyboardInterrupt
            # The fit wrote its record through the storage: read the trial afresh (a Trial caches its attributes).
            stored = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
            fit = fit_record(stored.user_attrs, folder.name) or {}
            why = (f"its fit exited with code {code}" if code else None if fit.get("best") is not None else
                   "its fit ended before its first validation: give it one (a whole epoch, or "
                   "--trainer.val_check_interval)")
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

    def fit_arguments(self, trial: Any, passed: dict[str, str], seed: int | None, report: bool) -> list[str]:
        """The options of one fit of the trial: its values, its seed and the callback that reports to the trial."""
        arguments = [arg for key, value in passed.items() for arg in (f"--{key}", value)]
        if seed is not None:
            arguments += ["--seed_everything", str(seed), "--data.init_args.shuffle_seed", str(seed)]
        return arguments + reporting(self.args, self.storage, trial.number, report)

    @staticmethod
    def write_record(folder: Path, record: dict[str, Any]) -> None:
        if folder.is_dir():
            (folder / SWEEP_RECORD).write_text(json.dumps(record, indent=1))

    def after_trial(self, study: Any, trial: Any) -> None:
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
            print(f"[{self.tag}] trial {trial.number} failed: {trial.user_attrs[FAILED]}; going on.", file=sys.stderr,
                  flush=True)
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
    children = [subprocess.Popen([sys.executable, "-m", "zoo_lightning", "sweep", *argv, "--workers", "1",
                                  "--worker", str(i)], env=worker_env(i, workers, gpus)) for i in range(workers)]
    codes: list[int | None] = [None] * workers
    while any(c is None for c in codes):
        try:
            for i, child in enumerate(children):
                codes[i] = child.wait()
        except KeyboardInterrupt:
            for child in children:
                if child.poll() is None:
                    child.send_signal(stop.received)
    for i, code in enumerate(codes):
        if code is not None and code < 0:
            print(f"[sweep] worker {i} was killed (signal {-code}); a trial it ran is run again once its heartbeat "
                  "is stale, by the same command.", file=sys.stderr, flush=True)
    if stop.exit_status is not None:
        return stop.exit_status
    return 1 if any(codes) else 0


def reporting(args: argparse.Namespace, storage: str, trial: int, report: bool) -> list[str]:
    """The fit options that add the callback through which a fit reports to trial number ``trial``."""
    callback = {"class_path": f"zoo_lightning.callbacks.{TrialPruning.__name__}",
                "init_args": {"storage": storage, "study": args.study, "trial": trial, "monitor": args.metric,
                              "pruner": args.pruner, "report": report}}
    return ["--trainer.callbacks+", json.dumps(callback)]


# --- the command --------------------------------------------------------------------------------------------------


def _checked_settings(args: argparse.Namespace, dimensions: dict[str, Dimension]) -> None:
    """Fills in the defaults that depend on the space (sampler, trials, pruner) and refuses what cannot run."""
    discrete = all(d.kind == "choice" for d in dimensions.values())
    args.sampler = args.sampler or ("grid" if discrete else "tpe")
    if args.sampler == "grid":
        if not discrete:
            drawn = ", ".join(k for k, d in dimensions.items() if d.kind != "choice")
            raise ValueError(f"--sampler grid takes choices only; {drawn} is drawn from a range: give its values with "
                             "choice(...) or --grid, or use --sampler tpe or random.")
        size = math.prod(len(d.values) for d in dimensions.values())
        if (args.trials or size) > size:
            raise ValueError(f"--trials {args.trials} is more than the grid's {size} combinations: each runs once.")
        args.trials = args.trials or size
    elif args.trials is None:
        raise ValueError(f"--sampler {args.sampler} needs --trials N: how many configurations the study tries.")
    args.pruner = args.pruner or ("none" if args.sampler == "grid" else "median")
    if args.seeds and len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds {' '.join(map(str, args.seeds))} names a seed twice.")


def _check_fits(runner: FitRunner, dimensions: dict[str, Dimension], args: argparse.Namespace, storage: str) -> None:
    """Refuses, before anything is written, a key or value fit would refuse: each value of each key (the bounds
    of a range), with the others at their first, the seed options and the reporting callback."""
    first = {key: d.examples()[0] for key, d in dimensions.items()}
    seed = args.seeds[0] if args.seeds else None
    for key, dimension in dimensions.items():
        for value in dimension.examples():
            passed = {**first, key: value}
            extra = [arg for k, v in passed.items() for arg in (f"--{k}", v)]
            if seed is not None:
                extra += ["--seed_everything", str(seed), "--data.init_args.shuffle_seed", str(seed)]
            runner.check(extra + reporting(args, storage, 0, report=True))


def main(argv: list[str]) -> None:
    args, fit_options = parse(argv)
    dimensions = parse_space(args.grid, args.space)
    _checked_settings(args, dimensions)
    quiet_optuna()
    with StopSignals() as stop:
        runner = FitRunner(args.config, fit_options, stop)
        args.study = args.study or runner.experiment.name
        storage = args.storage or default_storage(runner.experiment)
        _check_fits(runner, dimensions, args, storage)
        if args.storage is None:
            runner.experiment.mkdir(parents=True, exist_ok=True)
        elif is_database(storage) and shown(storage) != storage and args.worker is None:
            print("warning: --storage holds a password, which every run's config.yaml records (the fits report "
                  "through it); keep it in ~/.pgpass or PGPASSWORD instead.", file=sys.stderr)
        record = {"space": {k: d.spec for k, d in dimensions.items()}, "metric": args.metric, "seeds": args.seeds}
        study = open_study(storage, args.study, args.direction, record, make_sampler(args.sampler, dimensions),
                           make_pruner(args.pruner), args.heartbeat)
        if args.workers > 1:
            code = run_workers(argv, args.workers, stop)
        else:
            code = Worker(study, runner, args, dimensions, storage, stop).run()
    if args.worker is None:
        _summary(study, args, storage)
    sys.exit(code)


def _summary(study: Any, args: argparse.Namespace, storage: str) -> None:
    print(f"\nStudy {study.study_name!r} in {shown(storage)}:\n")
    print("\n".join(trials_table(study, args.metric)))
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        print(f"\nBest: trial {best.number}, {args.metric} {best.value:.4f} "
              f"({', '.join(best.user_attrs.get(RUNS) or [])}).")
    print(f"Dashboard: optuna-dashboard {shown(storage)}  (pip install -c constraints.txt -e '.[dashboard]')")
