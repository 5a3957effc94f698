"""Reading the runs under a log folder: every folder with TensorBoard event files, its records, and the
evaluations joined to the runs they scored (:mod:`.runs` says what a run is).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from zoo_lightning.progress import tracked
from zoo_lightning.runs import EVALUATIONS

from .events import EVENT_GLOB, read_events
from .runs import Run

__all__ = ["load_runs"]


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else {}
    except (yaml.YAMLError, OSError):
        return {}
    return data if isinstance(data, dict) else {}


def _read_config(run_dir: Path) -> dict[str, Any]:
    resumes = sorted(run_dir.glob("config.resume-*.yaml"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
    return _read_yaml(resumes[-1] if resumes else run_dir / "config.yaml")


def _natural_key(name: str) -> list[int | str]:
    """``test_2`` before ``test_10``: the numbers in a name compared as numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


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
        raise NotADirectoryError(
            f"{str(logdir)!r} is a file; report reads a folder of runs: pass their save_dir "
            "(by default lightning_logs)."
        )
    if not root.is_dir():
        raise FileNotFoundError(
            f"Log folder {str(logdir)!r} does not exist: pass the save_dir of your runs (by default lightning_logs)."
        )
    folders = sorted({events.parent for events in root.rglob(EVENT_GLOB) if events.is_file()})
    if not folders:
        raise FileNotFoundError(
            f"No runs under {str(logdir)!r}: no TensorBoard event files were found. Train one "
            "with `python -m zoo_lightning fit --config ...`, or pass the logger's save_dir."
        )
    runs = []
    for folder in tracked(folders, "Reading the runs' event files", len(folders), unit="runs", shown_from=10):
        events = read_events(folder)
        for path, reason in events.unread.items():
            warn(f"event file {path}: {reason}")
        runs.append(
            Run(
                _run_name(folder, root),
                folder,
                events.scalars,
                events.wall_seconds,
                config=_read_config(folder),
                session=events.session,
                status=events.status,
                unread=events.unread,
                hparams=_read_yaml(folder / "hparams.yaml"),
                sweep=_read_yaml(folder / "sweep.json").get("values", {}),  # JSON is YAML
                selftrain=_read_yaml(folder / "selftrain.json"),
            )
        )
    _join_evaluations(runs)
    return runs


def _join_evaluations(runs: list[Run]) -> None:
    """Attaches each evaluation to the training run it scored: the run it is filed in (``RUN/evaluations/X``), else
    the run whose ``checkpoints/`` holds the checkpoint it names."""
    by_path = {run.path.resolve(): run for run in runs if not run.is_evaluation}
    for run in runs:
        if not run.is_evaluation:
            continue
        owner = by_path.get(run.path.parent.parent.resolve()) if run.path.parent.name == EVALUATIONS else None
        if owner is None:
            owner = _owner_by_checkpoint(run, by_path)
        if owner is not None and owner is not run:
            owner.evaluations.append(run)
    for run in runs:
        run.evaluations.sort(
            key=lambda evaluation: (
                evaluation.path.parent.name != EVALUATIONS,
                _natural_key(evaluation.path.name),
                evaluation.name,
            )
        )


def _owner_by_checkpoint(run: Run, by_path: dict[Path, Run]) -> Run | None:
    """The training run whose ``checkpoints/`` holds the checkpoint the evaluation ``run`` names, or None."""
    if not run.ckpt_path:
        return None
    checkpoint = Path(run.ckpt_path)
    if checkpoint.parent.name != "checkpoints":
        return None
    source = checkpoint.parent.parent
    # The path was written relative to the directory `test` ran in: try it from here, then by its
    # last two parts (experiment/version), which are unique under one LOGDIR.
    owner = by_path.get(source.resolve()) if source.is_absolute() or source.exists() else None
    if owner is None:
        tail = "/".join(source.parts[-2:])
        matches = [r for r in by_path.values() if r.name == tail or r.name.endswith("/" + tail)]
        owner = matches[0] if len(matches) == 1 else None
    return owner


# --- choosing ------------------------------------------------------------------------------------------
