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
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

from zoo_lightning.argv import option_value, resolve_config
from zoo_lightning.runs import CLAIM_FILE, CLAIM_TOKEN_ENV, claim_run_dir, experiment_name

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


def _config_logger(config: Path) -> tuple[str | None, str | None]:
    """The (save_dir, name) a config file gives its TensorBoard logger, None where it gives none."""
    cfg = yaml.safe_load(config.read_text()) or {}
    logger = (cfg.get("trainer") or {}).get("logger") if isinstance(cfg, dict) else None
    init = (logger.get("init_args") or {}) if isinstance(logger, dict) else {}
    return init.get("save_dir"), init.get("name")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the config to sweep (a path or the name of a shipped config)")
    parser.add_argument("--grid", nargs="+", required=True, metavar="KEY=V1,V2", help="CLI keys and their values")
    args, passthrough = parser.parse_known_args(argv)
    config = Path(resolve_config(args.config))
    if not config.is_file():
        raise FileNotFoundError(f"Config {args.config!r} not found (looked in . and configs/).")
    grid = parse_grid(args.grid)
    save_dir, name = _config_logger(config)
    save_dir = option_value(passthrough, "--trainer.logger.init_args.save_dir") or save_dir or "lightning_logs"
    name = option_value(passthrough, "--trainer.logger.init_args.name") or name
    # The rule `fit` applies, given to every run explicitly so the sweep and its runs agree by construction.
    experiment = experiment_name(name, [config], backbone="")
    runs: list[SweepRun] = []
    combos = combinations(grid)
    stop = _Stop()
    for i, combo in enumerate(combos, 1):
        folder = _claim(Path(save_dir) / experiment, run_name(combo))
        token = uuid.uuid4().hex  # handed to the run, which adopts the folder claimed for it
        (folder / CLAIM_FILE).write_text(token)
        (folder / "sweep.json").write_text(json.dumps({"grid": list(grid), "values": combo}, indent=1))
        cmd = [sys.executable, "-m", "zoo_lightning", "fit", "--config", str(config), *passthrough,
               "--trainer.logger.init_args.name", experiment, "--trainer.logger.init_args.version", folder.name]
        for key, value in combo.items():
            cmd += [f"--{key}", value]
        print(f"[sweep {i}/{len(combos)}] {experiment}/{folder.name}", flush=True)
        start = time.perf_counter()
        returncode = stop.run(cmd, {**os.environ, CLAIM_TOKEN_ENV: token})
        runs.append(SweepRun(folder.name, combo, returncode, time.perf_counter() - start))
        if folder.is_dir() and not any(p.name not in (CLAIM_FILE, "sweep.json") for p in folder.iterdir()):
            shutil.rmtree(folder)  # the run stopped before it began: nothing to keep, nothing to report
        if stop.signal is not None:
            print(f"[sweep] stopped by {signal.Signals(stop.signal).name} during {folder.name}; "
                  f"{len(combos) - i} run(s) not started.", file=sys.stderr)
            break
        if returncode:
            print(f"[sweep] run {folder.name} failed with exit code {returncode}; going on.", file=sys.stderr)
    print("\n| run | exit code | minutes |\n|---|---|---|")
    for run in runs:
        print(f"| {experiment}/{run.name} | {run.returncode} | {run.seconds / 60:.1f} |")
    if stop.signal is not None:
        sys.exit(128 + stop.signal)
    if any(run.returncode for run in runs):
        sys.exit(1)


def _claim(experiment: Path, name: str) -> Path:
    """A new folder for a run named ``name`` (``name_v2``, ... when one exists): a run's folder is never reused."""
    for suffix in range(1, 10_000):
        try:
            return claim_run_dir(experiment, name if suffix == 1 else f"{name}_v{suffix}")
        except FileExistsError:
            continue
    raise FileExistsError(f"No free run folder for {name} under {experiment}.")


class _Stop:
    """Runs one fit at a time; Ctrl-C or SIGTERM is passed to it, and the sweep stops once it has ended.

    The fit writes its last.ckpt and exits 130 / 143 (a terminal's Ctrl-C reaches both processes,
    a ``kill`` only the sweep, so the signal is forwarded either way).
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.child: subprocess.Popen | None = None

    def _forward(self, signum: int, frame: object) -> None:
        self.signal = signum
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)

    def run(self, cmd: list[str], env: dict[str, str]) -> int:
        handlers = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.child = subprocess.Popen(cmd, env=env)
            return self.child.wait()
        finally:
            for number, handler in handlers.items():
                signal.signal(number, handler)
