"""The report's sweep sections: each configuration's mean ± std over its runs (seeds), and each Optuna study as a
table of its trials and the plots an experimenter reads (Optuna's matplotlib visualizations).

A run of a ``sweep`` has a ``sweep.json`` naming its study, trial, values, seed and outcome; the study is
read from the storage that file names (the experiment folder's ``studies.db`` unless the sweep was given
``--storage``; ``report --storage URL`` reads them all from another URL, such as one with a password).
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo_lightning import figures
from zoo_lightning.commands.sweep_worker import SWEEP_RECORD

from .runs import VAL_TOP1, Run

if TYPE_CHECKING:
    import optuna

__all__ = ["configurations_table", "study_sections", "mean_std"]

PLOTS = (
    ("history", "plot_optimization_history", "optimization history: each trial's value and the best so far"),
    ("importances", "plot_param_importances", "parameter importances (PED-ANOVA)"),
    ("slices", "plot_slice", "the metric against each parameter"),
)


def _record(run: Run) -> dict[str, Any]:
    try:
        content = json.loads((run.path / SWEEP_RECORD).read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def mean_std(values: list[float]) -> str:
    """``87.10 ± 0.35%`` (sample standard deviation, in points) of fractions; the value alone for one."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f}%"
    return f"{100 * statistics.fmean(values):.2f} ± {100 * statistics.stdev(values):.2f}%"


def _finished(run: Run, record: dict[str, Any]) -> bool:
    """A run that trained to its end: its sweep says complete (older sweeps: its session ended done)."""
    outcome = record.get("outcome")
    return outcome == "complete" if outcome else run.status == "done"


def configurations_table(runs: list[Run]) -> list[str]:
    """One row per swept configuration (an experiment and its values, whatever the seed): n, and the mean ± std of
    its finished runs' best val top-1 and test top-1. Pruned, failed and stopped runs are left out of the mean."""
    groups: dict[tuple[str, str], list[Run]] = {}
    keys: list[str] = []
    for run in runs:
        record = _record(run)
        if not run.sweep or not _finished(run, record):
            continue
        keys += [k for k in run.sweep if k not in keys]
        group = (run.name.split("/", 1)[0], json.dumps(run.sweep, sort_keys=True))
        groups.setdefault(group, []).append(run)
    lines = [
        "| experiment | "
        + " | ".join(k.rsplit(".", 1)[-1] for k in keys)
        + " | n | best val top-1 | test top-1 | runs |",
        "|---|" + "---|" * len(keys) + "--:|--:|--:|---|",
    ]
    ranked = sorted(groups.items(), key=lambda g: -statistics.fmean(r.best(VAL_TOP1) or 0.0 for r in g[1]))
    for (experiment, _), members in ranked:
        values = members[0].sweep
        tests = [t for t in (r.test_top1().top1 for r in members) if t is not None]
        bests = [b for b in (r.best(VAL_TOP1) for r in members) if b is not None]
        lines.append(
            f"| {experiment} | "
            + " | ".join(str(values.get(k, "-")) for k in keys)
            + f" | {len(members)} | {mean_std(bests)} | {mean_std(tests)} | "
            f"{', '.join(sorted(r.name for r in members))} |"
        )
    return lines


def _studies(runs: list[Run], storage: str | None) -> dict[tuple[str, str], None]:
    """(storage URL, study name) of every study the runs belong to, in the order first met."""
    from zoo_lightning.studies import default_storage

    found: dict[tuple[str, str], None] = {}
    for run in runs:
        record = _record(run)
        if record.get("study"):
            url = storage or record.get("storage") or default_storage(run.path.resolve().parent)
            found[(url, str(record["study"]))] = None
    return found


def _plots(study: optuna.Study, metric: str, out_dir: Path) -> list[str]:
    """Optuna's history, importance and slice plots of ``study`` as PNGs in ``out_dir``; their markdown lines."""
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as plots

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return []
    plt = figures.pyplot()  # the Agg backend before Optuna imports pyplot
    stem = "study_" + re.sub(r"[^\w.-]", "_", study.study_name)
    lines = []
    for suffix, function, caption in PLOTS:
        if suffix == "importances" and (len(complete) < 2 or not complete[0].params):
            continue  # nothing to compare
        with plt.rc_context():  # Optuna sets its own style for the whole process
            try:
                axes = getattr(plots, function)(study, target_name=metric)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue  # too few distinct trials for this plot
            axis = axes.flat[0] if hasattr(axes, "flat") else axes
            path = figures.save_png(axis.figure, out_dir / f"{stem}_{suffix}.png")
        lines += [f"![{study.study_name}: {caption}]({path.name})", ""]
    return lines


def study_sections(runs: list[Run], out_dir: Path, storage: str | None = None) -> list[str]:
    """A section per study the runs belong to: its trials (state, values, metric, run folders) and its plots."""
    import optuna

    from zoo_lightning.studies import open_storage, quiet_optuna, shown, stored_file, trials_table

    quiet_optuna()
    lines: list[str] = []
    for url, name in _studies(runs, storage):
        lines += ["", f"## Study `{name}`", ""]
        file = stored_file(url)
        if file is not None and not file.is_file():  # opening it would make an empty one
            lines.append(f"Not read: {file} is not there (`report --storage URL` names where the study is).")
            continue
        try:
            study = optuna.load_study(study_name=name, storage=open_storage(url))
        except (ValueError, FileNotFoundError, KeyError) as error:
            lines.append(f"Not read from {shown(url)}: {error} (`report --storage URL` names where it is).")
            continue
        trials = study.get_trials(deepcopy=False)
        counts = {
            state: sum(t.state.name.lower() == state for t in trials)
            for state in ("complete", "pruned", "fail", "running", "waiting")
        }
        metric = str(study.user_attrs.get("metric") or "value")
        said = ", ".join(f"{n} {'failed' if s == 'fail' else s}" for s, n in counts.items() if n)
        lines += [
            f"{len(trials)} trials in {shown(url)} ({said}), {study.direction.name.lower()} {metric}. "
            f"Live: `optuna-dashboard {shown(url)}` (the `dashboard` extra).",
            "",
            *trials_table(study, metric),
            "",
            *_plots(study, metric, out_dir),
        ]
    return lines
