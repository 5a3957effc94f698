"""The report's markdown tables: one row per run, the evaluations, the failed runs, per-class accuracy, sweeps and
self-training."""

from __future__ import annotations

from zoo_lightning import metric_names as names
from zoo_lightning.callbacks.hparams_session import FAILED, INTERRUPTED

from .runs import VAL_TOP1, MeasuredTop1, Run

__all__ = [
    "main_table",
    "evaluations_table",
    "failed_table",
    "per_class_table",
    "sweep_table",
    "selftrain_table",
    "class_order",
    "epochs_cell",
    "test_cell",
    "measured_cell",
    "percent",
]


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def count(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 10_000 else f"{value:,}"


def duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def epochs_cell(run: Run) -> str:
    done, planned = run.epochs, run.max_epochs
    if run.status in (FAILED, INTERRUPTED):
        return f"{done}/{planned or '?'} ({run.status})"
    # The session is closed when fit ends; without one, only the epoch count can tell. So it is when
    # an event file was damaged: the session's end may be what was lost.
    open_session = run.status is None and bool(run.session) and run.trains and not run.unread
    if open_session or (run.status is None and planned and done < planned):
        return f"{done}/{planned or '?'} (unfinished)"
    return str(done)


def measured_cell(result: MeasuredTop1) -> str:
    """``87.70% (best.ckpt, TTA flip)``, ``12.50% (last.ckpt, partial: 8 images)``: a test top-1, the checkpoint
    it scored, its TTA, and whether it saw only part of the test set."""
    if result.top1 is None:
        return "-"
    part = None
    if result.partial:
        part = (
            f"partial: {result.images:,} images"
            if result.images is not None
            else f"partial: limit_test_batches {result.limit}"
        )
    notes = [result.checkpoint, result.tta and f"TTA {result.tta}", part]
    return percent(result.top1) + f" ({', '.join(note for note in notes if note)})"


def test_cell(run: Run) -> str:
    """The test top-1 a run is shown with (:meth:`Run.test_top1`: a full test before a partial one)."""
    return measured_cell(run.test_top1())


def class_order(chosen: list[Run]) -> list[str]:
    order: list[str] = []  # the order the runs logged them in: the dataset's class order
    for run in chosen:
        order += [name for name in run.per_class() if name not in order]
    return order


def main_table(runs: list[Run]) -> list[str]:
    lines = [
        "| run | backbone | objective | params | epochs | best val top-1 | test top-1 | wall (h:mm:ss) | images/s |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        images = run.images_per_sec
        lines.append(
            f"| {run.name} | {run.backbone} | {run.objective} | {count(run.parameters)} | "
            f"{epochs_cell(run)} | {percent(run.best(VAL_TOP1))} | {test_cell(run)} | "
            f"{duration(run.wall_seconds)} | {'-' if images is None else f'{images:,.0f}'} |"
        )
    return lines


def evaluations_table(evaluations: list[tuple[Run | None, Run]]) -> list[str]:
    """One row per ``(training run it scored or None, evaluation)``: the split, the checkpoint, top-1 and loss, and
    the images scored (a partial evaluation says so)."""
    lines = ["| of run | evaluation | checkpoint | split | top-1 | loss | images |", "|---|---|---|---|--:|--:|--:|"]
    for owner, run in evaluations:
        stage = run.stage
        top1, loss = run.last(names.tag(stage, names.TOP1)), run.last(names.tag(stage, names.LOSS))
        images, limit = run.last(names.tag(stage, names.IMAGES)), run.split_limit(stage)
        count = "-" if images is None else f"{int(images):,}"
        if limit is not None:
            count += " (partial)" if images is not None else f" (partial: limit_{stage}_batches {limit})"
        lines.append(
            f"| {owner.name if owner else '- (no run here)'} | {run.name} | {run.checkpoint or '-'} | "
            f"{stage} | {percent(top1)}{f' (TTA {run.tta})' if run.tta and top1 is not None else ''} | "
            f"{'-' if loss is None else f'{loss:.4f}'} | {count} |"
        )
    return lines


def failed_table(runs: list[Run]) -> list[str]:
    """The runs that failed or logged no result: what they were, how far they got."""
    lines = ["| run | dataset | backbone | epochs | best val top-1 | test top-1 |", "|---|---|---|--:|--:|--:|"]
    for run in runs:
        lines.append(
            f"| {run.name} | {run.dataset.label} | {run.backbone} | {epochs_cell(run)} | "
            f"{percent(run.best(VAL_TOP1))} | {test_cell(run)} |"
        )
    return lines


def per_class_table(chosen: list[Run]) -> list[str]:
    classes = class_order(chosen)
    values = [run.per_class() for run in chosen]
    lines = ["| class | " + " | ".join(run.name for run in chosen) + " |", "|---|" + "--:|" * len(chosen)]
    for name in classes:
        lines.append(f"| {name} | " + " | ".join(percent(v.get(name)) for v in values) + " |")
    return lines


def sweep_table(runs: list[Run]) -> list[str]:
    swept = [r for r in runs if r.sweep]
    keys = sorted({k for r in swept for k in r.sweep})
    lines = [
        "| run | " + " | ".join(keys) + " | best val top-1 | test top-1 |",
        "|---|" + "---|" * len(keys) + "--:|--:|",
    ]
    for run in sorted(swept, key=lambda r: [str(r.sweep.get(k, "")) for k in keys]):
        lines.append(
            f"| {run.name} | "
            + " | ".join(str(run.sweep.get(k, "-")) for k in keys)
            + f" | {percent(run.best(VAL_TOP1))} | {test_cell(run)} |"
        )
    return lines


def selftrain_table(runs: list[Run]) -> list[str]:
    """The rounds of each ``selftrain`` session in order: who taught whom, on how many pseudo-labels, and how well."""
    rounds = sorted(
        (r for r in runs if r.selftrain.get("session")),
        key=lambda r: (str(r.selftrain["session"]), int(r.selftrain.get("round", 0))),
    )
    lines = [
        "| session | round | run | backbone | teacher | pseudo-labels | best val top-1 | test top-1 |",
        "|---|--:|---|---|---|---|--:|--:|",
    ]
    for run in rounds:
        record, labels = run.selftrain, run.selftrain.get("pseudo_labels") or {}
        used = (
            (
                f"{labels.get('kept', labels.get('images'))} of {labels.get('images')} ({labels.get('mode')}, "
                f">= {labels.get('threshold')})"
            )
            if labels
            else "-"
        )
        lines.append(
            f"| {record['session']} | {record.get('round', '-')} | {run.name} | {run.backbone} | "
            f"{record.get('teacher') or record.get('teacher_checkpoint') or '-'} | {used} | "
            f"{percent(run.best(VAL_TOP1))} | {test_cell(run)} |"
        )
    return lines
