"""``python -m zoo_lightning report [LOGDIR] [--out DIR] [--runs NAME ...]``: runs compared on one page.

Every folder under LOGDIR that holds TensorBoard event files is a run (``<experiment>/<version>``):
its ``config.yaml`` says what it is, its event files what it did (scalars and HPARAMS session). The
evaluations of a run's checkpoints (``RUN/evaluations/test_N``) are shown with that run, never as runs.

Runs are compared only with runs on the same dataset (DataModule, number of classes and, for your own
folders, the folder). Written to DIR: ``report.md``, with a section per dataset (its runs, best val
top-1 first; their evaluations; the per-class accuracy of the chosen runs), the failed runs apart,
sweeps grouped by their values, each configuration's mean ± std over its seeds and each Optuna
study as a table and plots, and the rounds of each ``selftrain`` session; and per dataset three
PNGs: ``val_top1-<dataset>.png`` and ``val_loss-<dataset>.png`` (every run against epoch) and
``per_class_accuracy-<dataset>.png`` (grouped bars). A run has one colour and line style in all of
them. The plots use matplotlib with the Agg backend: it is already a dependency (torchmetrics draws
the confusion matrix with it), it renders headless, and it writes plain PNGs that a markdown file,
a README or a pull request can embed.

This module holds the command (``main``, ``write_report``); ``runs`` reads the runs (``events`` their
event files), ``tables`` writes the markdown, and :mod:`zoo_lightning.figures` draws the plots.
"""

from __future__ import annotations

import argparse
import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from zoo_lightning import figures
from zoo_lightning import metric_names as names
from zoo_lightning.callbacks.hparams_session import FAILED

from .loading import load_runs
from .runs import DEFAULT_PER_CLASS_RUNS, VAL_TOP1, Dataset, Run, choose, ranked
from .studies import configurations_table, study_sections
from .tables import (
    class_order,
    evaluations_table,
    failed_table,
    main_table,
    per_class_table,
    percent,
    selftrain_table,
    sweep_table,
)

__all__ = ["main", "write_report", "load_runs", "Run"]

VAL_LOSS = names.tag(names.VAL, names.LOSS)
Styles = dict[str, dict[str, Any]]  # run name -> its colour, line style, marker and hatch in every plot


@dataclass
class DatasetSection:
    """The runs on one dataset: ranked among themselves only, with their own table and plots."""

    dataset: Dataset
    slug: str  # the plots' file-name part, unique in the report
    runs: list[Run] = field(default_factory=list)  # with a result, best val top-1 first
    evaluations: list[tuple[Run | None, Run]] = field(default_factory=list)  # (the run it scored, evaluation)

    def styles(self) -> Styles:
        """A look per run, in table order: the same run is drawn alike in each of the section's plots."""
        return dict(zip((run.name for run in self.runs), figures.run_styles(len(self.runs))))


def _has_result(run: Run) -> bool:
    return run.best(VAL_TOP1) is not None or run.test_top1().top1 is not None


def _sections(runs: list[Run]) -> tuple[list[DatasetSection], list[Run]]:
    """The runs by dataset (each training run with a result, and every evaluation, under its dataset), and the
    training runs that failed or logged no result, which are ranked nowhere."""
    trainings = [run for run in runs if not run.is_evaluation]
    failed = [run for run in trainings if run.status == FAILED or not _has_result(run)]
    failed_names = {run.name for run in failed}
    joined = {id(e) for run in trainings for e in run.evaluations}
    sections: dict[Dataset, DatasetSection] = {}

    def section(dataset: Dataset) -> DatasetSection:
        if dataset not in sections:
            taken, slug, n = {s.slug for s in sections.values()}, dataset.slug, 2
            while slug in taken:  # two folders of one name
                slug, n = f"{dataset.slug}_{n}", n + 1
            sections[dataset] = DatasetSection(dataset, slug)
        return sections[dataset]

    ordered = ranked([r for r in trainings if r.name not in failed_names]) + failed
    for run in ordered:
        target = section(run.dataset)
        if run.name not in failed_names:
            target.runs.append(run)
        target.evaluations += [(run, evaluation) for evaluation in run.evaluations if evaluation.scalars]
    for run in runs:
        if run.is_evaluation and id(run) not in joined and run.scalars:
            section(run.dataset).evaluations.append((None, run))
    order = sorted(sections.values(), key=lambda s: (not s.dataset.recorded, s.dataset.label))
    return [s for s in order if s.runs or s.evaluations], failed


def _plot_curves(
    runs: list[Run],
    styles: Styles,
    tag: str,
    title: str,
    ylabel: str,
    out: Path,
    percent_scale: bool = False,
    mark_best: bool = False,
    log_y: bool = False,
) -> Path | None:
    scale = 100.0 if percent_scale else 1.0
    curves, looks = [], []
    for run in runs:
        points = [(epoch, scale * value) for epoch, value in run.per_epoch(tag)]
        if not points:
            continue
        label = f"{run.name} ({max(y for _, y in points):.2f}%)" if mark_best else run.name
        curves.append((label, points))
        looks.append(styles[run.name])
    if not curves:
        return None
    figure = figures.curves_figure(curves, title, ylabel, mark_best=mark_best, log_y=log_y, styles=looks)
    return figures.save_png(figure, out)


def _plot_per_class(chosen: list[Run], styles: Styles, title: str, out: Path) -> Path | None:
    if not chosen:
        return None
    classes = class_order(chosen)
    bars = []
    for run in chosen:
        values = run.per_class()
        heights = [None if value is None else 100 * value for value in (values.get(c) for c in classes)]
        bars.append((f"{run.name} ({percent(run.best(VAL_TOP1))})", heights))
    figure = figures.per_class_figure(
        classes, bars, title, "val accuracy (%)", styles=[styles[run.name] for run in chosen]
    )
    return figures.save_png(figure, out)


def _section_lines(
    section: DatasetSection, out_dir: Path, chosen: list[Run], runs_pattern: list[str] | None
) -> list[str]:
    """A dataset's part of the report: its table, its evaluations, its curves and its per-class accuracy."""
    label, slug, styles = section.dataset.label, section.slug, section.styles()
    lines = ["", f"## {label}", ""]
    if section.runs:
        lines += main_table(section.runs)
    else:
        lines.append("No training run on this dataset logged a result; its evaluations:")
    if section.evaluations:
        lines += [
            "",
            "### Evaluations",
            "",
            "Each `validate` or `test` of a checkpoint, under the run it scored.",
            "",
            *evaluations_table(section.evaluations),
        ]
    curves = {
        "val_top1": _plot_curves(
            section.runs,
            styles,
            VAL_TOP1,
            f"Validation top-1 accuracy (★ best epoch), {label}",
            "val top-1 (%)",
            out_dir / f"val_top1-{slug}.png",
            percent_scale=True,
            mark_best=True,
        ),
        "val_loss": _plot_curves(
            section.runs,
            styles,
            VAL_LOSS,
            f"Validation loss (cross-entropy, log scale), {label}",
            "val loss",
            out_dir / f"val_loss-{slug}.png",
            log_y=True,
        ),
    }
    if any(curves.values()):
        lines += ["", "### Curves", ""] + [f"![{k}]({p.name})" for k, p in curves.items() if p is not None]
    title = f"Per-class validation accuracy at each run's best epoch, {label}"
    per_class = out_dir / f"per_class_accuracy-{slug}.png"
    if _plot_per_class(chosen, styles, title, per_class):
        lines += [
            "",
            "### Per-class val accuracy",
            "",
            f"At each run's best epoch; {'the runs asked for' if runs_pattern else 'the best runs'} "
            "(`--runs NAME ...` picks others).",
            "",
            *per_class_table(chosen),
            "",
            f"![per_class_accuracy]({per_class.name})",
        ]
    return lines


def write_report(
    logdir: str | Path, out: str | Path, runs_pattern: list[str] | None = None, storage: str | None = None
) -> Path:
    """Writes ``report.md`` and its PNGs into ``out``; returns the path of ``report.md``.

    Raises:
        FileNotFoundError: ``logdir`` does not exist or holds no event files.
        ValueError: ``runs_pattern`` matches no run with per-class accuracy.

    ``storage`` is where the studies of sweeps are read from, instead of where their runs say.
    """
    runs = load_runs(logdir)
    sections, failed = _sections(runs)
    if runs_pattern:
        asked = {run.name for run in choose([r for s in sections for r in s.runs], runs_pattern)}  # raises if none
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    trainings = sum(len(s.runs) for s in sections) + len(failed)
    evaluations = sum(len(s.evaluations) for s in sections)
    lines = [
        f"# Runs under `{logdir}`",
        "",
        f"{trainings} training runs and {evaluations} evaluations, written "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} by `python -m zoo_lightning report`. "
        "One section per dataset (DataModule, number of classes and, for your own images, the folder): "
        "runs are ranked only against runs on the same data. "
        "Best val top-1: the highest `val/top1` (the epoch `best.ckpt` holds). Test top-1: the run's own "
        "(`final weights`), or that of a `test` of its checkpoint (named), a test of the whole test set before "
        "one of part of it (`partial`, with the images it scored: `--trainer.limit_test_batches`); "
        "`TTA flip` marks one measured with test-time augmentation (`--model.tta`: `flip` averages the "
        "logits of each image and its mirror, `flip_translate` of four views), which the per-epoch "
        "validation of `fit` never uses. Wall: training and validation time, a resumed run's downtime left "
        "out. Images/s: training images per second, the median over epochs.",
    ]
    for section in sections:
        if runs_pattern:
            chosen = [run for run in ranked(section.runs) if run.name in asked]
        else:
            chosen = choose(section.runs, None)
        lines += _section_lines(section, out_dir, chosen, runs_pattern)
    if failed:
        lines += [
            "",
            "## Failed runs and runs without a result",
            "",
            "Ranked nowhere: runs that raised an error, and runs stopped before they logged a validation or "
            "test top-1.",
            "",
            *failed_table(failed),
        ]
    if any(r.sweep for r in runs):
        lines += [
            "",
            "## Sweeps",
            "",
            *sweep_table(runs),
            "",
            "Each configuration over its runs (seeds): the "
            "mean ± sample standard deviation of the runs that trained to their end.",
            "",
            *configurations_table(runs),
            *study_sections(runs, out_dir, storage),
        ]
    if any(r.selftrain.get("session") for r in runs):
        lines += [
            "",
            "## Self-training",
            "",
            "Noisy Student rounds (`selftrain`): each student learned from the pseudo-labels of the round before.",
            "",
            *selftrain_table(runs),
        ]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str]) -> None:
    description = __doc__.rsplit("\n\n", 1)[0]  # the last paragraph is for readers of the code
    parser = argparse.ArgumentParser(
        prog="python -m zoo_lightning report",
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "logdir", nargs="?", default="lightning_logs", help="the runs' save_dir (default: lightning_logs)"
    )
    parser.add_argument("--out", default="reports", help="folder for report.md and the PNGs (default: reports)")
    parser.add_argument(
        "--runs",
        nargs="+",
        metavar="NAME",
        help=f"runs for the per-class figure: substrings or patterns of their names "
        f"(default: the {DEFAULT_PER_CLASS_RUNS} best)",
    )
    parser.add_argument("--storage", help="where the sweeps' Optuna studies are (default: where their runs say)")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NotADirectoryError(
            f"--out {args.out!r} is a file; report writes report.md and its PNGs into a folder. "
            "Pass a folder's name (it is created)."
        )
    report = write_report(args.logdir, args.out, args.runs, args.storage)
    print(report.read_text())
    print(f"wrote {report} and its plots")
