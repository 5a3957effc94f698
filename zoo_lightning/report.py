"""``python -m zoo_lightning report [LOGDIR] [--out DIR]``: many runs compared in one markdown page.

Reads every ``<experiment>/<version>/`` under LOGDIR with TensorBoard's event reader and the run's
``config.yaml``, then writes ``report.md`` (one row per run) and PNG plots: val top-1 and val loss
against epoch for all runs, and per-class val accuracy of the chosen runs. Runs made by ``sweep``
are grouped by their swept values. Plots use matplotlib (already a TensorBoard/torchmetrics
companion here, renders headless with Agg, and writes PNGs without a browser).
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Run", "load_runs", "write_report", "main"]


@dataclass
class Run:
    name: str  # experiment/version
    path: Path
    config: dict[str, Any]
    scalars: dict[str, list[tuple[int, float]]]  # tag -> [(step, value)]
    epochs: dict[int, int]  # step -> epoch
    wall_seconds: float
    sweep: dict[str, str] = field(default_factory=dict)

    def last(self, tag: str) -> float | None:
        values = self.scalars.get(tag)
        return values[-1][1] if values else None

    def best(self, tag: str) -> float | None:
        values = self.scalars.get(tag)
        return max(v for _, v in values) if values else None

    def per_epoch(self, tag: str) -> list[tuple[int, float]]:
        return [(self.epochs.get(step, i), value) for i, (step, value) in enumerate(self.scalars.get(tag, []))]

    @property
    def backbone(self) -> str:
        return str((self.config.get("model") or {}).get("backbone", "?"))

    @property
    def objective(self) -> str:
        objective = (self.config.get("model") or {}).get("objective") or {}
        path = objective.get("class_path", "CrossEntropy") if isinstance(objective, dict) else str(objective)
        return path.rsplit(".", 1)[-1]


def _read_events(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], dict[int, int], float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    scalars, first, last = {}, math.inf, 0.0
    for tag in events.Tags()["scalars"]:
        items = events.Scalars(tag)
        scalars[tag] = [(e.step, e.value) for e in items]
        first = min([first, *(e.wall_time for e in items)])
        last = max([last, *(e.wall_time for e in items)])
    epochs = {step: int(value) for step, value in scalars.get("epoch", [])}
    return scalars, epochs, (last - first) if scalars else 0.0


def load_runs(logdir: str | Path) -> list[Run]:
    """Every version folder under ``logdir`` that holds TensorBoard events."""
    root = Path(logdir)
    runs = []
    for events in sorted(root.rglob("events.out.tfevents.*")):
        run_dir = events.parent
        if any(r.path == run_dir for r in runs):
            continue
        config_file = run_dir / "config.yaml"
        config = yaml.safe_load(config_file.read_text()) if config_file.is_file() else {}
        sweep_file = run_dir / "sweep.json"
        sweep = json.loads(sweep_file.read_text())["values"] if sweep_file.is_file() else {}
        scalars, epochs, wall = _read_events(run_dir)
        if not scalars:
            continue
        runs.append(Run(str(run_dir.relative_to(root)), run_dir, config or {}, scalars, epochs, wall, sweep))
    return runs


def _fmt(value: float | None, percent: bool = False, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.{digits}f}%" if percent else f"{value:,.{digits}f}"


def _parameters(run: Run) -> str:
    try:
        from zoo_lightning.models import create_model

        model_cfg = run.config.get("model") or {}
        import torch

        with torch.device("meta"):
            model = create_model(run.backbone, num_classes=int(model_cfg.get("num_classes") or 10),
                                 stem=model_cfg.get("stem", "cifar"), **(model_cfg.get("backbone_kwargs") or {}))
        return f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"
    except Exception:  # an external or removed backbone: the report still lists the run
        return "-"


def _plot_curves(runs: list[Run], tag: str, ylabel: str, out: Path, percent: bool) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in runs if r.scalars.get(tag)]
    if not drawn:
        return None
    figure, ax = plt.subplots(figsize=(8, 5))
    for run in drawn:
        points = run.per_epoch(tag)
        xs = [epoch + 1 for epoch, _ in points]
        ys = [100 * v if percent else v for _, v in points]
        ax.plot(xs, ys, marker="o", markersize=3, label=run.name)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    ax.set_title(f"{ylabel} per epoch")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _plot_per_class(runs: list[Run], out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = [r for r in runs if any(t.startswith("val_class/") for t in r.scalars)]
    if not drawn:
        return None
    classes = sorted({t.split("/", 1)[1] for r in drawn for t in r.scalars if t.startswith("val_class/")})
    width = 0.8 / len(drawn)
    figure, ax = plt.subplots(figsize=(max(8, 0.9 * len(classes)), 5))
    for i, run in enumerate(drawn):
        values = [100 * (run.last(f"val_class/{c}") or 0.0) for c in classes]
        ax.bar([x + i * width for x in range(len(classes))], values, width, label=run.name)
    ax.set_xticks([x + width * (len(drawn) - 1) / 2 for x in range(len(classes))], classes, rotation=30, ha="right")
    ax.set_ylabel("val accuracy (%) at the last epoch")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Per-class validation accuracy")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def write_report(logdir: str | Path, out: str | Path, runs_pattern: list[str] | None = None) -> Path:
    runs = load_runs(logdir)
    if not runs:
        raise FileNotFoundError(f"No runs with TensorBoard events under {str(logdir)!r}: train one with "
                                "`python -m zoo_lightning fit --config ...` first, or point LOGDIR at its save_dir.")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# zoo_lightning report: {len(runs)} runs under `{logdir}`", "",
             "| run | backbone | objective | params | epochs | best val top-1 | test top-1 | wall (min) | images/s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        epochs = max(run.epochs.values()) + 1 if run.epochs else 0
        lines.append(
            f"| {run.name} | {run.backbone} | {run.objective} | {_parameters(run)} | {epochs} | "
            f"{_fmt(run.best('val/top1'), percent=True)} | {_fmt(run.last('test/top1'), percent=True)} | "
            f"{run.wall_seconds / 60:.1f} | {_fmt(run.last('train/images_per_sec'), digits=0)} |"
        )
    swept = [r for r in runs if r.sweep]
    if swept:
        keys = sorted({k for r in swept for k in r.sweep})
        lines += ["", "## Sweeps", "", "| run | " + " | ".join(keys) + " | best val top-1 |",
                  "|---|" + "---|" * len(keys) + "---|"]
        for run in sorted(swept, key=lambda r: [r.sweep.get(k, "") for k in keys]):
            lines.append(f"| {run.name} | " + " | ".join(run.sweep.get(k, "-") for k in keys)
                         + f" | {_fmt(run.best('val/top1'), percent=True)} |")
    chosen = [r for r in runs if not runs_pattern or any(p in r.name for p in runs_pattern)]
    plots = [
        _plot_curves(runs, "val/top1", "val top-1 (%)", out_dir / "val_top1.png", percent=True),
        _plot_curves(runs, "val/loss", "val loss", out_dir / "val_loss.png", percent=False),
        _plot_per_class(chosen, out_dir / "per_class_accuracy.png"),
    ]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots if p is not None]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", nargs="?", default="lightning_logs")
    parser.add_argument("--out", default="reports", help="folder for report.md and the PNGs")
    parser.add_argument("--runs", nargs="*", help="substrings of the run names to draw per-class bars for")
    args = parser.parse_args(argv)
    report = write_report(args.logdir, args.out, args.runs)
    print(report.read_text())
    print(f"wrote {report} and its plots")
