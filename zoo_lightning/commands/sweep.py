r"""``python -m zoo_lightning sweep``: an Optuna study of fits, over a grid or a search space.

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
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from zoo_lightning.commands.fit_runner import FitRunner
from zoo_lightning.commands.search_space import Dimension, parse_space
from zoo_lightning.commands.sweep_worker import Worker, reporting, run_workers
from zoo_lightning.options import PositiveInt, PrunerName
from zoo_lightning.parsing import CommandParser, read_config_file, resolve_config
from zoo_lightning.signals import StopSignals
from zoo_lightning.studies import (
    RUNS,
    STUDIES_FILE,
    default_storage,
    is_database,
    make_pruner,
    make_sampler,
    open_study,
    quiet_optuna,
    shown,
    trials_table,
)

if TYPE_CHECKING:
    import optuna

__all__ = ["main", "parse"]

SAMPLERS = ("grid", "random", "tpe")
FILE_OPTIONS = (
    "config",
    "grid",
    "space",
    "sampler",
    "trials",
    "metric",
    "direction",
    "pruner",
    "storage",
    "study",
    "workers",
    "seeds",
    "heartbeat",
    "args",
)


def _parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m zoo_lightning sweep",
        description=__doc__,
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        help="the fit config of every trial (a path or a shipped config's name), or a sweep file",
    )
    parser.add_argument(
        "--grid", nargs="+", metavar="KEY=V1,V2", help="fit options and their values: every combination"
    )
    parser.add_argument(
        "--space",
        nargs="+",
        metavar="KEY=SPEC",
        help="fit options and what to draw: choice(a,b), uniform(lo,hi), loguniform(lo,hi), int(lo,hi)",
    )
    parser.add_argument(
        "--sampler",
        choices=SAMPLERS,
        help="grid (every combination of choices; the default when all are choices), random, or tpe "
        "(Bayesian, the default otherwise)",
    )
    parser.add_argument("--trials", type=PositiveInt, help="trials in the study (default: the grid's size)")
    parser.add_argument(
        "--metric",
        default="val/top1",
        help="what a trial is scored by, after each validation "
        "(default val/top1); a trial's value is its best, the mean over --seeds",
    )
    parser.add_argument("--direction", choices=("maximize", "minimize"), default="maximize")
    parser.add_argument(
        "--pruner", choices=get_args(PrunerName), help="stop trials that fall behind (default: median, none for a grid)"
    )
    parser.add_argument(
        "--storage",
        help=f"the study's storage: a database URL or a journal file (default: the "
        f"SQLite file {STUDIES_FILE} in the experiment folder)",
    )
    parser.add_argument("--study", help="the study's name (default: the experiment's)")
    parser.add_argument(
        "--workers",
        type=PositiveInt,
        default=1,
        help="worker processes here (default 1); each gets its own GPU, or its share of the CPU threads",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="S",
        help="train each configuration once per seed (seed_everything and the data's shuffle seed); "
        "its value is the mean",
    )
    parser.add_argument(
        "--heartbeat",
        type=PositiveInt,
        default=60,
        help="seconds between a running trial's heartbeats in a database storage; a trial silent "
        "for two is failed and run again (default 60)",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the index of a worker --workers started
    return parser


def _sweep_file(path: Path, content: dict[str, Any]) -> dict[str, Any]:
    """A sweep file's options as the parser's defaults (with ``args``, the fit options, kept apart)."""
    options = content.get("sweep")
    if set(content) != {"sweep"} or not isinstance(options, dict):
        raise ValueError(f"Sweep file {path}: it must hold one mapping, sweep:, of this command's options.")
    unknown = sorted(set(options) - set(FILE_OPTIONS))
    if unknown:
        raise ValueError(
            f"Sweep file {path}: unknown option(s) {', '.join(unknown)}; it takes {', '.join(FILE_OPTIONS)}."
        )
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


# --- the command --------------------------------------------------------------------------------------------------


def _checked_settings(args: argparse.Namespace, dimensions: dict[str, Dimension]) -> None:
    """Fills in the defaults that depend on the space (sampler, trials, pruner) and refuses what cannot run."""
    discrete = all(d.kind == "choice" for d in dimensions.values())
    args.sampler = args.sampler or ("grid" if discrete else "tpe")
    if args.sampler == "grid":
        if not discrete:
            drawn = ", ".join(k for k, d in dimensions.items() if d.kind != "choice")
            raise ValueError(
                f"--sampler grid takes choices only; {drawn} is drawn from a range: give its values with "
                "choice(...) or --grid, or use --sampler tpe or random."
            )
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
            print(
                "warning: --storage holds a password, which every run's config.yaml records (the fits report "
                "through it); keep it in ~/.pgpass or PGPASSWORD instead.",
                file=sys.stderr,
            )
        record = {"space": {k: d.spec for k, d in dimensions.items()}, "metric": args.metric, "seeds": args.seeds}
        study = open_study(
            storage,
            args.study,
            args.direction,
            record,
            make_sampler(args.sampler, dimensions),
            make_pruner(args.pruner),
            args.heartbeat,
        )
        if args.workers > 1:
            code = run_workers(argv, args.workers, stop)
        else:
            code = Worker(study, runner, args, dimensions, storage, stop).run()
    if args.worker is None:
        _summary(study, args, storage)
    sys.exit(code)


def _summary(study: optuna.Study, args: argparse.Namespace, storage: str) -> None:
    print(f"\nStudy {study.study_name!r} in {shown(storage)}:\n")
    print("\n".join(trials_table(study, args.metric)))
    from optuna.trial import TrialState

    if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        best = study.best_trial
        print(
            f"\nBest: trial {best.number}, {args.metric} {best.value:.4f} "
            f"({', '.join(best.user_attrs.get(RUNS) or [])})."
        )
    print(f"Dashboard: optuna-dashboard {shown(storage)}  (pip install -c constraints.txt -e '.[dashboard]')")
