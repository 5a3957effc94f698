"""``python -m zoo_lightning sweep``: one versioned ``fit`` per combination of a hyper-parameter grid.

    python -m zoo_lightning sweep --config resnet20_cifar.yaml \
        --grid model.optimizer.init_args.lr=0.1,0.05 data.init_args.batch_size=128,256

Each combination runs as its own process (one after another), in the config's experiment folder,
as a version named after its values (``lr=0.1,batch_size=128``, claimed before the run starts, so
two sweeps over one grid never share a folder); a run that fails is reported and the sweep goes on;
Ctrl-C or SIGTERM stops the running fit (which keeps its last.ckpt) and the sweep. The swept keys
are written to ``sweep.json`` in the run's folder so ``report`` can group runs by them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import dataclass

from zoo_lightning.commands.fit_runner import FitRunner
from zoo_lightning.parsing import resolve_config
from zoo_lightning.signals import StopSignals

__all__ = ["parse_grid", "combinations", "run_name", "main"]


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """``["a.b=1,2", "c=x"]`` -> ``{"a.b": ["1", "2"], "c": ["x"]}``."""
    grid: dict[str, list[str]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or not values:
            raise ValueError(f"Bad --grid item {item!r}: write KEY=V1,V2 (e.g. model.optimizer.init_args.lr=0.1,0.05).")
        if key in grid:
            raise ValueError(f"--grid names {key!r} twice.")
        grid[key] = [v.strip() for v in values.split(",") if v.strip()]
    if not grid:
        raise ValueError("sweep needs at least one --grid KEY=V1,V2.")
    return grid


def combinations(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def run_name(combo: dict[str, str]) -> str:
    """A version name from the swept values, e.g. ``lr=0.1,batch_size=128``."""
    short = [_short_key(k) for k in combo]
    # Two keys with the same last part (model...lr, other...lr) keep their full path.
    names = [s if short.count(s) == 1 else k for s, k in zip(short, combo)]
    return ",".join(f"{n}={v}".replace("/", "_") for n, v in zip(names, combo.values()))


@dataclass
class SweepRun:
    name: str
    combo: dict[str, str]
    returncode: int
    seconds: float


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning sweep", description=__doc__, allow_abbrev=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the config to sweep (a path or the name of a shipped config)")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="CLI keys and their values")
    args, passthrough = parser.parse_known_args(argv)
    config = resolve_config(args.config)
    grid = parse_grid(args.grid)
    combos = combinations(grid)
    with StopSignals() as stop:
        runner = FitRunner(config, passthrough, stop)
        for combo in combos:  # every combination is refused or accepted before the first one trains
            runner.check(_arguments(combo))
        experiment = runner.experiment.name
        runs: list[SweepRun] = []
        for i, combo in enumerate(combos, 1):
            folder = runner.reserve(run_name(combo))
            (folder / "sweep.json").write_text(json.dumps({"grid": list(grid), "values": combo}, indent=1))
            print(f"[sweep {i}/{len(combos)}] {experiment}/{folder.name}", flush=True)
            start = time.perf_counter()
            returncode = runner.fit(folder, _arguments(combo), records=("sweep.json",))
            runs.append(SweepRun(folder.name, combo, returncode, time.perf_counter() - start))
            if stop.received is not None:
                print(f"[sweep] stopped by {stop.name} during {folder.name}; {len(combos) - i} run(s) not started.",
                      file=sys.stderr)
                break
            if returncode:
                print(f"[sweep] run {folder.name} failed with exit code {returncode}; going on.", file=sys.stderr)
    print("\n| run | exit code | minutes |\n|---|---|---|")
    for run in runs:
        print(f"| {experiment}/{run.name} | {run.returncode} | {run.seconds / 60:.1f} |")
    if stop.exit_status is not None:
        sys.exit(stop.exit_status)
    if any(run.returncode for run in runs):
        sys.exit(1)


def _arguments(combo: dict[str, str]) -> list[str]:
    """The fit options that set a combination's values."""
    return [arg for key, value in combo.items() for arg in (f"--{key}", value)]
