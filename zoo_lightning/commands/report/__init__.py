"""``python -m zoo_lightning report [LOGDIR] [--out DIR] [--runs NAME ...]``: runs compared on one page.

Every folder under LOGDIR that holds TensorBoard event files is a run (``<experiment>/<version>``):
its ``config.yaml`` says what it is, its event files what it did (scalars and HPARAMS session). A
``test --ckpt_path RUN/checkpoints/X.ckpt`` run is shown in the row of the run that wrote the checkpoint.

Written to DIR: ``report.md`` (one row per run, best val top-1 first; the runs' evaluations; the
per-class accuracy of the chosen runs; sweeps grouped by their values, each configuration's mean ± std over
its seeds, and each Optuna study as a table and plots; the rounds of each
``selftrain`` session) and three PNGs:
``val_top1.png`` and ``val_loss.png`` (every run against epoch, one figure each) and
``per_class_accuracy.png`` (grouped bars). The plots use matplotlib with the Agg backend: it is
already a dependency (torchmetrics draws the confusion matrix with it), it renders headless, and it
writes plain PNGs that a markdown file, a README or a pull request can embed.

This module holds the command (``main``, ``write_report``); ``runs`` reads the runs (``events`` their
event files), ``tables`` writes the markdown, and :mod:`zoo_lightning.figures` draws the plots.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

from zoo_lightning import figures
from zoo_lightning import metric_names as names

from .runs import DEFAULT_PER_CLASS_RUNS, VAL_TOP1, Run, choose, load_runs, ranked
from .studies import configurations_table, study_sections
from .tables import (class_order, evaluations_table, main_table, per_class_table, percent, selftrain_table,
                     sweep_table)

__all__ = ["main", "write_report", "load_runs", "Run"]

VAL_LOSS = names.tag(names.VAL, names.LOSS)


def _plot_curves(runs: list[Run], tag: str, title: str, ylabel: str, out: Path, percent_scale: bool = False,
                 mark_best: bool = False, log_y: bool = False) -> Path | None:
    scale = 100.0 if percent_scale else 1.0
    curves = []
    for run in runs:
        points = [(epoch, scale * value) for epoch, value in run.per_epoch(tag)]
        if not points:
            continue
        label = f"{run.name} ({max(y for _, y in points):.2f}%)" if mark_best else run.name
        curves.append((label, points))
    if not curves:
        return None
    return figures.save_png(figures.curves_figure(curves, title, ylabel, mark_best=mark_best, log_y=log_y), out)


def _plot_per_class(chosen: list[Run], out: Path) -> Path | None:
    if not chosen:
        return None
    classes = class_order(chosen)
    bars = []
    for run in chosen:
        values = run.per_class()
        heights = [None if values.get(c) is None else 100 * values[c] for c in classes]
        bars.append((f"{run.name} ({percent(run.best(VAL_TOP1))})", heights))
    figure = figures.per_class_figure(classes, bars, "Per-class validation accuracy at each run's best epoch",
                                      "val accuracy (%)")
    return figures.save_png(figure, out)


def write_report(logdir: str | Path, out: str | Path, runs_pattern: list[str] | None = None,
                 storage: str | None = None) -> Path:
    """Writes ``report.md`` and its PNGs into ``out``; returns the path of ``report.md``.

    Raises:
        FileNotFoundError: ``logdir`` does not exist or holds no event files.
        ValueError: ``runs_pattern`` matches no run with per-class accuracy.

    ``storage`` is where the studies of sweeps are read from, instead of where their runs say.
    """
    runs = load_runs(logdir)
    joined = {id(e) for r in runs for e in r.evaluations}
    shown = ranked([r for r in runs if id(r) not in joined])  # evaluations appear in their run's row
    training = [r for r in runs if r.trains]
    evaluations = [r for r in runs if not r.trains and r.scalars]
    chosen = choose(training, runs_pattern)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    lines = [f"# Runs under `{logdir}`", "",
             f"{len(shown)} runs, written {datetime.datetime.now():%Y-%m-%d %H:%M} by "
             "`python -m zoo_lightning report`. "
             "Best val top-1: the highest `val/top1` (the epoch `best.ckpt` holds). Test top-1: the run's own, "
             "or that of a `test` of its checkpoint (named); `TTA flip` marks one measured with test-time "
             "augmentation (`--model.tta`: `flip` averages the logits of each image and its mirror, "
             "`flip_translate` of four views), which the per-epoch validation of `fit` never uses. "
             "Wall: training and validation time, a resumed run's downtime left out. "
             "Images/s: training images per second, the median over epochs.", "",
             *main_table(shown)]
    if evaluations:
        lines += ["", "## Evaluations", "", *evaluations_table(training, evaluations)]
    curves = {
        "val_top1": _plot_curves(training, VAL_TOP1, "Validation top-1 accuracy (★ best epoch)", "val top-1 (%)",
                                 out_dir / "val_top1.png", percent_scale=True, mark_best=True),
        "val_loss": _plot_curves(training, VAL_LOSS, "Validation loss (cross-entropy, log scale)", "val loss",
                                 out_dir / "val_loss.png", log_y=True),
    }
    if any(curves.values()):
        lines += ["", "## Curves", ""] + [f"![{k}]({p.name})" for k, p in curves.items() if p is not None]
    if _plot_per_class(chosen, out_dir / "per_class_accuracy.png"):
        lines += ["", "## Per-class val accuracy", "",
                  f"At each run's best epoch; {'the runs asked for' if runs_pattern else 'the best runs'} "
                  "(`--runs NAME ...` picks others).", "", *per_class_table(chosen), "",
                  "![per_class_accuracy](per_class_accuracy.png)"]
    if any(r.sweep for r in runs):
        lines += ["", "## Sweeps", "", *sweep_table(runs), "", "Each configuration over its runs (seeds): the "
                  "mean ± sample standard deviation of the runs that trained to their end.", "",
                  *configurations_table(runs), *study_sections(runs, out_dir, storage)]
    if any(r.selftrain.get("session") for r in runs):
        lines += ["", "## Self-training", "", "Noisy Student rounds (`selftrain`): each student learned from the "
                  "pseudo-labels of the round before.", "", *selftrain_table(runs)]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str]) -> None:
    description = __doc__.rsplit("\n\n", 1)[0]  # the last paragraph is for readers of the code
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning report", description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", nargs="?", default="lightning_logs",
                        help="the runs' save_dir (default: lightning_logs)")
    parser.add_argument("--out", default="reports", help="folder for report.md and the PNGs (default: reports)")
    parser.add_argument("--runs", nargs="+", metavar="NAME",
                        help=f"runs for the per-class figure: substrings or patterns of their names "
                             f"(default: the {DEFAULT_PER_CLASS_RUNS} best)")
    parser.add_argument("--storage", help="where the sweeps' Optuna studies are (default: where their runs say)")
    args = parser.parse_args(argv)
    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise NotADirectoryError(f"--out {args.out!r} is a file; report writes report.md and its PNGs into a folder. "
                                 "Pass a folder's name (it is created).")
    report = write_report(args.logdir, args.out, args.runs, args.storage)
    print(report.read_text())
    print(f"wrote {report} and its plots")
