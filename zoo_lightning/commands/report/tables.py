"""The report's markdown tables: one row per run, the evaluations, per-class accuracy, sweeps and self-training."""

from __future__ import annotations

from zoo_lightning import metric_names as names
from zoo_lightning.callbacks.hparams_session import FAILED, INTERRUPTED

from .runs import VAL_TOP1, Run

__all__ = ["main_table", "evaluations_table", "per_class_table", "sweep_table", "selftrain_table", "class_order",
           "epochs_cell", "test_cell", "percent"]

TEST_LOSS = names.tag(names.TEST, names.LOSS)


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


def test_cell(run: Run) -> str:
    """``87.70% (best.ckpt, TTA flip)``: the checkpoint a separate test run measured, and its TTA."""
    top1, checkpoint, tta = run.test_top1()
    notes = [note for note in (checkpoint, tta and f"TTA {tta}") if note] if top1 is not None else []
    return percent(top1) + (f" ({', '.join(notes)})" if notes else "")


def class_order(chosen: list[Run]) -> list[str]:
    order: list[str] = []  # the order the runs logged them in: the dataset's class order
    for run in chosen:
        order += [name for name in run.per_class() if name not in order]
    return order


def main_table(runs: list[Run]) -> list[str]:
    lines = ["| run | backbone | objective | params | epochs | best val top-1 | test top-1 | wall (h:mm:ss) "
             "| images/s |", "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for run in runs:
        images = run.images_per_sec
        lines.append(f"| {run.name} | {run.backbone} | {run.objective} | {count(run.parameters)} | "
                     f"{epochs_cell(run)} | {percent(run.best(VAL_TOP1))} | {test_cell(run)} | "
                     f"{duration(run.wall_seconds)} | {'-' if images is None else f'{images:,.0f}'} |")
    return lines


def evaluations_table(training: list[Run], evaluations: list[Run]) -> list[str]:
    owner = {id(e): t.name for t in training for e in t.evaluations}
    lines = ["| evaluation run | checkpoint | of run | backbone | test top-1 | test loss |",
             "|---|---|---|---|--:|--:|"]
    for run in evaluations:
        loss = run.last(TEST_LOSS)
        lines.append(f"| {run.name} | {run.ckpt_path or '-'} | {owner.get(id(run), '-')} | {run.backbone} | "
                     f"{test_cell(run)} | {'-' if loss is None else f'{loss:.4f}'} |")
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
    lines = ["| run | " + " | ".join(keys) + " | best val top-1 | test top-1 |",
             "|---|" + "---|" * len(keys) + "--:|--:|"]
    for run in sorted(swept, key=lambda r: [str(r.sweep.get(k, "")) for k in keys]):
        lines.append(f"| {run.name} | " + " | ".join(str(run.sweep.get(k, "-")) for k in keys)
                     + f" | {percent(run.best(VAL_TOP1))} | {test_cell(run)} |")
    return lines


def selftrain_table(runs: list[Run]) -> list[str]:
    """The rounds of each ``selftrain`` session in order: who taught whom, on how many pseudo-labels, and how well."""
    rounds = sorted((r for r in runs if r.selftrain.get("session")),
                    key=lambda r: (str(r.selftrain["session"]), int(r.selftrain.get("round", 0))))
    lines = ["| session | round | run | backbone | teacher | pseudo-labels | best val top-1 | test top-1 |",
             "|---|--:|---|---|---|---|--:|--:|"]
    for run in rounds:
        record, labels = run.selftrain, run.selftrain.get("pseudo_labels") or {}
        used = (f"{labels.get('kept', labels.get('images'))} of {labels.get('images')} ({labels.get('mode')}, "
                f">= {labels.get('threshold')})") if labels else "-"
        lines.append(f"| {record['session']} | {record.get('round', '-')} | {run.name} | {run.backbone} | "
                     f"{record.get('teacher') or record.get('teacher_checkpoint') or '-'} | {used} | "
                     f"{percent(run.best(VAL_TOP1))} | {test_cell(run)} |")
    return lines
