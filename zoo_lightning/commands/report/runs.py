"""The runs under a log folder: their scalars, settings and status, and ``test`` runs joined to their training runs.

Every folder under LOGDIR that holds TensorBoard event files is a run (``<experiment>/<version>``).
What the run is (backbone, objective, epochs, checkpoint tested, TTA) is read from the ``config.yaml``
LightningCLI wrote; what it did from its event files (:mod:`.events`): the scalars, and the HPARAMS
session's stage, parameter count and status. A ``test --ckpt_path RUN/checkpoints/X.ckpt`` run is
joined to the run that wrote the checkpoint.
"""

from __future__ import annotations

import fnmatch
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, NamedTuple

import yaml

from zoo_lightning import metric_names as names

from .events import EVENT_GLOB, read_events

__all__ = ["Run", "MeasuredTop1", "load_runs", "ranked", "choose", "DEFAULT_PER_CLASS_RUNS"]

DEFAULT_PER_CLASS_RUNS = 4  # runs in the per-class figure when --runs is not given: the best few
VAL_TOP1 = names.tag(names.VAL, names.TOP1)
TEST_TOP1 = names.tag(names.TEST, names.TOP1)
VAL_CLASS = names.class_prefix(names.VAL)


class MeasuredTop1(NamedTuple):
    """A run's test top-1, the checkpoint file it was measured on (when a separate ``test`` run did), and its TTA."""

    top1: float | None
    checkpoint: str | None = None
    tta: str | None = None


@dataclass
class Run:
    """One version folder: its scalars, settings and (for a training run) the evaluations of its checkpoints."""

    name: str  # experiment/version, relative to LOGDIR
    path: Path
    scalars: dict[str, list[tuple[int, float]]]  # tag -> [(step, value)], resumed sessions joined
    wall_seconds: float  # summed over the run's sessions
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml (the newest config.resume-N.yaml)
    session: dict[str, Any] = field(default_factory=dict)  # what the HPARAMS tab shows for the run
    status: str | None = None  # DONE, FAILED or INTERRUPTED once the HparamsSession callback has closed the session
    sweep: dict[str, str] = field(default_factory=dict)  # swept key -> value, from sweep.json
    selftrain: dict[str, Any] = field(default_factory=dict)  # a self-training round: selftrain.json
    evaluations: list[Run] = field(default_factory=list)  # test runs of this run's checkpoints
    unread: dict[Path, str] = field(default_factory=dict)  # event file -> why it was skipped or read in part

    # --- scalars ---------------------------------------------------------------------------------

    def values(self, tag: str) -> list[float]:
        return [value for _, value in self.scalars.get(tag, [])]

    def last(self, tag: str) -> float | None:
        values = self.values(tag)
        return values[-1] if values else None

    def best(self, tag: str) -> float | None:
        values = self.values(tag)
        return max(values) if values else None

    def epoch_at(self, step: int) -> int | None:
        """The 0-based epoch Lightning logged at ``step`` (its ``epoch`` scalar)."""
        epochs = [(s, int(v)) for s, v in self.scalars.get(names.EPOCH, [])]
        at = [e for s, e in epochs if s == step]
        if at:
            return at[-1]
        before = [e for s, e in epochs if s <= step]
        return before[-1] if before else None

    def per_epoch(self, tag: str) -> list[tuple[int, float]]:
        """(1-based epoch, value) of an epoch-level scalar such as ``val/top1``."""
        points = []
        for i, (step, value) in enumerate(self.scalars.get(tag, [])):
            epoch = self.epoch_at(step)
            points.append(((epoch if epoch is not None else i) + 1, value))
        return points

    def best_step(self, tag: str = VAL_TOP1) -> int | None:
        points = self.scalars.get(tag)
        return max(points, key=lambda p: p[1])[0] if points else None

    def at_step(self, tag: str, step: int) -> float | None:
        return next((v for s, v in reversed(self.scalars.get(tag, [])) if s == step), None)

    def class_tags(self) -> list[str]:
        return [tag for tag in self.scalars if tag.startswith(VAL_CLASS)]

    def per_class(self) -> dict[str, float | None]:
        """Per-class val accuracy at the run's best val top-1 (the epoch its best.ckpt holds)."""
        step = self.best_step(VAL_TOP1)
        values = {}
        for tag in self.class_tags():
            value = self.at_step(tag, step) if step is not None else None
            values[tag.removeprefix(VAL_CLASS)] = value if value is not None else self.last(tag)
        return values

    # --- settings --------------------------------------------------------------------------------

    @property
    def trains(self) -> bool:
        # The HPARAMS session says so even for a fit killed before it logged anything.
        return any(tag.split("/", 1)[0] == names.TRAIN for tag in self.scalars) or self.session.get("stage") == "fit"

    @property
    def model_config(self) -> dict[str, Any]:
        model = self.config.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def backbone(self) -> str:
        return str(self.model_config.get("backbone") or "-")

    @property
    def objective(self) -> str:
        objective = self.model_config.get("objective")
        path = objective.get("class_path") if isinstance(objective, dict) else None
        return str(path).rsplit(".", 1)[-1] if path else "-"

    @property
    def max_epochs(self) -> int | None:
        value = (self.config.get("trainer") or {}).get("max_epochs")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def epochs(self) -> int:
        """Epochs begun: the last epoch Lightning logged, plus one."""
        epochs = self.values(names.EPOCH)
        return int(max(epochs)) + 1 if epochs else 0

    @property
    def ckpt_path(self) -> str | None:
        path = self.config.get("ckpt_path")
        return str(path) if path else None

    @property
    def tta(self) -> str | None:
        """The test-time augmentation of the run's validate/test/predict (``"flip"``, ...), None without."""
        value = self.model_config.get("tta")
        return str(value) if value else None

    @property
    def parameters(self) -> int | None:
        """The network's parameters, frozen ones included, as the run counted them for its HPARAMS session."""
        value = self.session.get("parameters")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def images_per_sec(self) -> float | None:
        """Median over epochs: a first epoch slowed by compilation or caching does not set the figure."""
        values = self.values(names.IMAGES_PER_SEC)
        return statistics.median(values) if values else None

    def test_top1(self) -> MeasuredTop1:
        """This run's own test top-1, else that of the evaluation of its best checkpoint (or the newest one)."""
        own = self.last(TEST_TOP1)
        if own is not None:
            return MeasuredTop1(own, None, self.tta)
        tested = [r for r in self.evaluations if r.last(TEST_TOP1) is not None]
        if not tested:
            return MeasuredTop1(None)
        chosen = next((r for r in reversed(tested) if Path(r.ckpt_path or "").name == "best.ckpt"), tested[-1])
        return MeasuredTop1(chosen.last(TEST_TOP1), Path(chosen.ckpt_path or "?").name, chosen.tta)


# --- reading -----------------------------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (yaml.YAMLError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_config(run_dir: Path) -> dict[str, Any]:
    resumes = sorted(run_dir.glob("config.resume-*.yaml"),
                     key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return _read_yaml(resumes[-1] if resumes else run_dir / "config.yaml")


def _run_name(run_dir: Path, root: Path) -> str:
    relative = run_dir.relative_to(root).as_posix()
    return relative if relative != "." else run_dir.name


def load_runs(logdir: str | Path, warn: Callable[[str], None] = _warn) -> list[Run]:
    """Every folder under ``logdir`` holding TensorBoard event files, evaluations joined to their runs.

    ``warn`` gets one line for each event file that could not be read in full (by default printed
    to stderr); the run is still loaded from what could be read.

    Raises:
        FileNotFoundError: ``logdir`` does not exist or holds no event files.
    """
    root = Path(logdir)
    if root.is_file():
        raise NotADirectoryError(f"{str(logdir)!r} is a file; report reads a folder of runs: pass their save_dir "
                                 "(by default lightning_logs).")
    if not root.is_dir():
        raise FileNotFoundError(f"Log folder {str(logdir)!r} does not exist: pass the save_dir of your runs "
                                "(by default lightning_logs).")
    folders = sorted({events.parent for events in root.rglob(EVENT_GLOB) if events.is_file()})
    if not folders:
        raise FileNotFoundError(f"No runs under {str(logdir)!r}: no TensorBoard event files were found. Train one "
                                "with `python -m zoo_lightning fit --config ...`, or pass the logger's save_dir.")
    runs = []
    for folder in folders:
        events = read_events(folder)
        for path, reason in events.unread.items():
            warn(f"event file {path}: {reason}")
        runs.append(Run(_run_name(folder, root), folder, events.scalars, events.wall_seconds,
                        config=_read_config(folder), session=events.session, status=events.status,
                        unread=events.unread,
                        sweep=_read_yaml(folder / "sweep.json").get("values", {}),  # JSON is YAML
                        selftrain=_read_yaml(folder / "selftrain.json")))
    _join_evaluations(runs)
    return runs


def _join_evaluations(runs: list[Run]) -> None:
    """Attaches each evaluation run (no training, a ``ckpt_path``) to the run whose checkpoint it tested."""
    by_path = {run.path.resolve(): run for run in runs if run.trains}
    for run in runs:
        if run.trains or not run.ckpt_path:
            continue
        checkpoint = Path(run.ckpt_path)
        if checkpoint.parent.name != "checkpoints":
            continue
        source = checkpoint.parent.parent
        # The path was written relative to the directory `test` ran in: try it from here, then by its
        # last two parts (experiment/version), which are unique under one LOGDIR.
        owner = by_path.get(source.resolve()) if source.is_absolute() or source.exists() else None
        if owner is None:
            tail = "/".join(source.parts[-2:])
            matches = [r for r in by_path.values() if r.name == tail or r.name.endswith("/" + tail)]
            owner = matches[0] if len(matches) == 1 else None
        if owner is not None and owner is not run:
            owner.evaluations.append(run)


# --- choosing ------------------------------------------------------------------------------------------


def ranked(runs: list[Run]) -> list[Run]:
    """Best val top-1 first; runs without one after, by name."""
    return sorted(runs, key=lambda r: (r.best(VAL_TOP1) is None, -(r.best(VAL_TOP1) or 0.0), r.name))


def choose(runs: list[Run], patterns: list[str] | None) -> list[Run]:
    """The runs named by --runs (substrings or shell patterns), else the best few that have per-class scalars.

    Raises:
        ValueError: the patterns match no run with per-class scalars.
    """
    with_classes = [r for r in ranked(runs) if r.class_tags()]
    if not patterns:
        return with_classes[:DEFAULT_PER_CLASS_RUNS]
    chosen = [r for r in with_classes
              if any(fnmatch.fnmatch(r.name, p) if any(c in p for c in "*?[") else p in r.name for p in patterns)]
    if not chosen:
        found = ", ".join(r.name for r in with_classes) or "none"
        raise ValueError(f"--runs {' '.join(patterns)} matches no run with per-class accuracy; those are: {found}.")
    return chosen
