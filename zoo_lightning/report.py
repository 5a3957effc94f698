"""``python -m zoo_lightning report [LOGDIR] [--out DIR] [--runs NAME ...]``: runs compared on one page.

Every folder under LOGDIR that holds TensorBoard event files is a run (``<experiment>/<version>``).
Its scalars are read with TensorBoard's own reader (``EventAccumulator``, one event file at a time,
so a resumed run's steps join up and its downtime is not counted as wall time), its settings from
``config.yaml`` / ``hparams.yaml`` and the HPARAMS summary the dashboard callback writes. A
``test --ckpt_path RUN/checkpoints/X.ckpt`` run is joined to the run that wrote the checkpoint.

Written to DIR: ``report.md`` (one row per run, best val top-1 first; the runs' evaluations; the
per-class accuracy of the chosen runs; sweeps grouped by their values) and three PNGs:
``val_top1.png`` and ``val_loss.png`` (every run against epoch, one figure each) and
``per_class_accuracy.png`` (grouped bars). The plots use matplotlib with the Agg backend: it is
already a dependency (torchmetrics draws the confusion matrix with it), it renders headless, and it
writes plain PNGs that a markdown file, a README or a pull request can embed.
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = ["Run", "load_runs", "write_report", "main"]

DEFAULT_PER_CLASS_RUNS = 4  # runs in the per-class figure when --runs is not given: the best few


@dataclass
class Run:
    """One version folder: its scalars, settings and (for a training run) the evaluations of its checkpoints."""

    name: str  # experiment/version, relative to LOGDIR
    path: Path
    scalars: dict[str, list[tuple[int, float]]]  # tag -> [(step, value)], resumed sessions joined
    wall_seconds: float  # summed over the run's sessions
    config: dict[str, Any] = field(default_factory=dict)  # config.yaml (the newest config.resume-N.yaml)
    hparams: dict[str, Any] = field(default_factory=dict)  # hparams.yaml: the module's and data's arguments
    session: dict[str, Any] = field(default_factory=dict)  # what the HPARAMS tab shows for the run
    status: str | None = None  # "done" or "failed" once the dashboard has closed the session
    sweep: dict[str, str] = field(default_factory=dict)  # swept key -> value, from sweep.json
    evaluations: list["Run"] = field(default_factory=list)  # test runs of this run's checkpoints

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
        epochs = [(s, int(v)) for s, v in self.scalars.get("epoch", [])]
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

    def best_step(self, tag: str = "val/top1") -> int | None:
        points = self.scalars.get(tag)
        return max(points, key=lambda p: p[1])[0] if points else None

    def at_step(self, tag: str, step: int) -> float | None:
        return next((v for s, v in reversed(self.scalars.get(tag, [])) if s == step), None)

    # --- what the table shows -------------------------------------------------------------------

    @property
    def trains(self) -> bool:
        # The dashboard's session says so even for a fit killed before it logged anything.
        return any(tag.startswith("train/") for tag in self.scalars) or self.session.get("stage") == "fit"

    @property
    def model_config(self) -> dict[str, Any]:
        model = self.config.get("model")
        return model if isinstance(model, dict) else {}

    @property
    def backbone(self) -> str:
        name = self.model_config.get("backbone") or self.hparams.get("backbone") or self.session.get("backbone")
        return str(name or "-")

    @property
    def objective(self) -> str:
        objective = self.model_config.get("objective")
        if isinstance(objective, dict) and objective.get("class_path"):
            return str(objective["class_path"]).rsplit(".", 1)[-1]
        if self.session.get("objective"):
            return str(self.session["objective"])
        return "CrossEntropy" if self.model_config else "-"  # the module's default objective

    @property
    def max_epochs(self) -> int | None:
        value = (self.config.get("trainer") or {}).get("max_epochs") or self.session.get("max_epochs")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def epochs(self) -> int:
        """Epochs begun: the last epoch Lightning logged, plus one."""
        epochs = self.values("epoch")
        return int(max(epochs)) + 1 if epochs else 0

    @property
    def ckpt_path(self) -> str | None:
        path = self.config.get("ckpt_path") or self.session.get("ckpt_path")
        return str(path) if path else None

    @property
    def images_per_sec(self) -> float | None:
        """Median over epochs: a first epoch slowed by compilation or caching does not set the figure."""
        values = self.values("train/images_per_sec")
        return statistics.median(values) if values else None

    def test_top1(self) -> tuple[float | None, str | None]:
        """This run's own test top-1, else that of the evaluation of its best checkpoint (or the newest one)."""
        own = self.last("test/top1")
        if own is not None:
            return own, None
        tested = [r for r in self.evaluations if r.last("test/top1") is not None]
        if not tested:
            return None, None
        chosen = next((r for r in reversed(tested) if Path(r.ckpt_path or "").name == "best.ckpt"), tested[-1])
        return chosen.last("test/top1"), Path(chosen.ckpt_path or "?").name


# --- reading -----------------------------------------------------------------------------------------


def _event_file_order(path: Path) -> tuple[int, str]:
    # events.out.tfevents.<unix time>.<host>.<pid>.<n>: the time orders a resumed run's sessions.
    parts = path.name.split(".")
    return (int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0, path.name)


def _read_events(run_dir: Path) -> tuple[dict[str, list[tuple[int, float]]], float, dict[str, Any], str | None]:
    """Scalars, wall seconds, HPARAMS session and status of a run, one event file (session) at a time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from zoo_lightning.callbacks.hparams_session import read_session

    scalars: dict[str, list[tuple[int, float]]] = {}
    wall, session, status = 0.0, {}, None
    for path in sorted(run_dir.glob("events.out.tfevents.*"), key=_event_file_order):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 1, "histograms": 1,
                                                                 "tensors": 1, "audio": 1})
        try:
            accumulator.Reload()
            first = accumulator.FirstEventTimestamp()
        except Exception:  # an empty or truncated file of a run that is just starting
            continue
        last = first
        for tag in accumulator.Tags()["scalars"]:
            events = accumulator.Scalars(tag)
            if not events:
                continue
            # A resumed session logs again from its checkpoint's step: what the killed one logged past it goes.
            kept = [p for p in scalars.get(tag, []) if p[0] < events[0].step]
            scalars[tag] = kept + [(e.step, e.value) for e in events]
            last = max(last, events[-1].wall_time)
        wall += last - first
        params, ended = read_session(accumulator)
        session.update(params)
        if ended or params:  # a session that started again (resumed) and has not ended is open
            status = ended
    return scalars, wall, session, status


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


def load_runs(logdir: str | Path) -> list[Run]:
    """Every folder under ``logdir`` holding TensorBoard event files, evaluations joined to their runs.

    Raises:
        FileNotFoundError: ``logdir`` does not exist or holds no event files.
    """
    root = Path(logdir)
    if not root.is_dir():
        raise FileNotFoundError(f"Log folder {str(logdir)!r} does not exist: pass the save_dir of your runs "
                                "(by default lightning_logs).")
    folders = sorted({events.parent for events in root.rglob("events.out.tfevents.*")})
    if not folders:
        raise FileNotFoundError(f"No runs under {str(logdir)!r}: no TensorBoard event files were found. Train one "
                                "with `python -m zoo_lightning fit --config ...`, or pass the logger's save_dir.")
    runs = []
    for folder in folders:
        scalars, wall, session, status = _read_events(folder)
        sweep = _read_yaml(folder / "sweep.json").get("values", {})  # JSON is YAML
        runs.append(Run(_run_name(folder, root), folder, scalars, wall, _read_config(folder),
                        _read_yaml(folder / "hparams.yaml"), session, status, sweep))
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


def _parameters(run: Run) -> int | None:
    value = run.session.get("parameters")
    if isinstance(value, (int, float)) and value > 0:
        return int(value)
    if isinstance(run.session.get("parameters_M"), (int, float)):
        return int(run.session["parameters_M"] * 1e6)
    try:  # runs written before the dashboard logged it: build the backbone without memory
        import torch

        from zoo_lightning.models import create_model

        model = {**run.hparams, **run.model_config}
        with torch.device("meta"):
            backbone = create_model(run.backbone, num_classes=int(model.get("num_classes") or 10),
                                    stem=model.get("stem") or "cifar", **(model.get("backbone_kwargs") or {}))
        return sum(p.numel() for p in backbone.parameters())
    except Exception:  # a backbone registered by code the report does not import
        return None


# --- formatting --------------------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _count(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1e6:.2f}M" if value >= 10_000 else f"{value:,}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _epochs(run: Run) -> str:
    done, planned = run.epochs, run.max_epochs
    if run.status == "failed":
        return f"{done}/{planned or '?'} (failed)"
    # The dashboard closes its session when fit ends; without one, only the epoch count can tell.
    open_session = run.status is None and bool(run.session) and run.trains
    if open_session or (run.status is None and planned and done < planned):
        return f"{done}/{planned or '?'} (unfinished)"
    return str(done)


def _ranked(runs: list[Run]) -> list[Run]:
    """Best val top-1 first; runs without one after, by name."""
    return sorted(runs, key=lambda r: (r.best("val/top1") is None, -(r.best("val/top1") or 0.0), r.name))


def _class_tags(run: Run) -> list[str]:
    return [tag for tag in run.scalars if tag.startswith("val_class/")]


def _choose(runs: list[Run], patterns: list[str] | None) -> list[Run]:
    """The runs named by --runs (substrings or shell patterns), else the best few that have per-class scalars."""
    with_classes = [r for r in _ranked(runs) if _class_tags(r)]
    if not patterns:
        return with_classes[:DEFAULT_PER_CLASS_RUNS]
    chosen = [r for r in with_classes
              if any(fnmatch.fnmatch(r.name, p) if any(c in p for c in "*?[") else p in r.name for p in patterns)]
    if not chosen:
        names = ", ".join(r.name for r in with_classes) or "none"
        raise ValueError(f"--runs {' '.join(patterns)} matches no run with per-class accuracy; those are: {names}.")
    return chosen


# --- plots ---------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list[Any]:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _legend(ax: Any, n: int) -> None:
    if n > 8:  # many runs: the legend goes beside the axes, not over the curves
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=8, loc="best")


def _plot_curves(runs: list[Run], tag: str, title: str, ylabel: str, out: Path, percent: bool,
                 mark_best: bool) -> Path | None:
    drawn = [r for r in runs if r.scalars.get(tag)]
    if not drawn:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    figure, ax = plt.subplots(figsize=(9.5 if len(drawn) > 8 else 8, 5), layout="constrained")
    scale = 100.0 if percent else 1.0
    for run, color in zip(drawn, _colors(len(drawn))):
        points = run.per_epoch(tag)
        xs, ys = [e for e, _ in points], [scale * v for _, v in points]
        label = run.name
        if mark_best:
            best = max(range(len(ys)), key=ys.__getitem__)
            ax.plot(xs[best], ys[best], marker="*", markersize=13, color=color, markeredgecolor="black",
                    markeredgewidth=0.6, zorder=3)
            label = f"{run.name} ({ys[best]:.2f}%)"
        ax.plot(xs, ys, marker="o", markersize=3.5, linewidth=1.6, color=color, label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    _legend(ax, len(drawn))
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


def _per_class(run: Run) -> dict[str, float]:
    """Per-class val accuracy at the run's best val top-1 (the epoch its best.ckpt holds)."""
    step = run.best_step("val/top1")
    values = {}
    for tag in _class_tags(run):
        value = run.at_step(tag, step) if step is not None else None
        values[tag.split("/", 1)[1]] = value if value is not None else run.last(tag)
    return values


def _class_order(chosen: list[Run]) -> list[str]:
    order: list[str] = []  # the order the runs logged them in: the dataset's class order
    for run in chosen:
        order += [tag.split("/", 1)[1] for tag in _class_tags(run) if tag.split("/", 1)[1] not in order]
    return order


def _plot_per_class(chosen: list[Run], out: Path) -> Path | None:
    if not chosen:
        return None
    plt = _pyplot()
    classes = _class_order(chosen)
    width = 0.8 / len(chosen)
    figure, ax = plt.subplots(figsize=(min(24, max(8, 0.5 * len(classes) * (1 + 0.3 * len(chosen)))), 5.2),
                              layout="constrained")
    for i, (run, color) in enumerate(zip(chosen, _colors(len(chosen)))):
        values = _per_class(run)
        xs = [c + (i - (len(chosen) - 1) / 2) * width for c in range(len(classes))]
        ax.bar(xs, [100 * (values.get(c) or 0.0) for c in classes], width, color=color,
               label=f"{run.name} ({_percent(run.best('val/top1'))})")
    ax.set_xticks(range(len(classes)), classes, rotation=35 if len(classes) > 6 else 0,
                  ha="right" if len(classes) > 6 else "center")
    ax.set_xlim(-0.6, len(classes) - 0.4)
    ax.set_ylim(0, 105)
    ax.set_ylabel("val accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_title("Per-class validation accuracy at each run's best epoch")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(classes) > 6 else -0.1),
              ncol=min(len(chosen), 3), frameon=False)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out


# --- the report -----------------------------------------------------------------------------------------


def _main_table(runs: list[Run]) -> list[str]:
    lines = ["| run | backbone | objective | params | epochs | best val top-1 | test top-1 | wall (h:mm:ss) "
             "| images/s |", "|---|---|---|--:|--:|--:|--:|--:|--:|"]
    for run in runs:
        test, source = run.test_top1()
        test_cell = _percent(test) + (f" ({source})" if source else "")
        images = run.images_per_sec
        lines.append(f"| {run.name} | {run.backbone} | {run.objective} | {_count(_parameters(run))} | "
                     f"{_epochs(run)} | {_percent(run.best('val/top1'))} | {test_cell} | "
                     f"{_duration(run.wall_seconds)} | {'-' if images is None else f'{images:,.0f}'} |")
    return lines


def _evaluations_table(training: list[Run], evaluations: list[Run]) -> list[str]:
    owner = {id(e): t.name for t in training for e in t.evaluations}
    lines = ["| evaluation run | checkpoint | of run | backbone | test top-1 | test loss |",
             "|---|---|---|---|--:|--:|"]
    for run in evaluations:
        loss = run.last("test/loss")
        lines.append(f"| {run.name} | {run.ckpt_path or '-'} | {owner.get(id(run), '-')} | {run.backbone} | "
                     f"{_percent(run.last('test/top1'))} | {'-' if loss is None else f'{loss:.4f}'} |")
    return lines


def _per_class_table(chosen: list[Run]) -> list[str]:
    classes = _class_order(chosen)
    values = [_per_class(run) for run in chosen]
    lines = ["| class | " + " | ".join(run.name for run in chosen) + " |", "|---|" + "--:|" * len(chosen)]
    for name in classes:
        lines.append(f"| {name} | " + " | ".join(_percent(v.get(name)) for v in values) + " |")
    return lines


def _sweep_table(runs: list[Run]) -> list[str]:
    swept = [r for r in runs if r.sweep]
    keys = sorted({k for r in swept for k in r.sweep})
    lines = ["| run | " + " | ".join(keys) + " | best val top-1 | test top-1 |",
             "|---|" + "---|" * len(keys) + "--:|--:|"]
    for run in sorted(swept, key=lambda r: [str(r.sweep.get(k, "")) for k in keys]):
        lines.append(f"| {run.name} | " + " | ".join(str(run.sweep.get(k, "-")) for k in keys)
                     + f" | {_percent(run.best('val/top1'))} | {_percent(run.test_top1()[0])} |")
    return lines


def write_report(logdir: str | Path, out: str | Path, runs_pattern: list[str] | None = None) -> Path:
    """Writes ``report.md`` and its PNGs into ``out``; returns the path of ``report.md``."""
    runs = load_runs(logdir)
    joined = {id(e) for r in runs for e in r.evaluations}
    shown = _ranked([r for r in runs if id(r) not in joined])  # evaluations appear in their run's row
    training = [r for r in runs if r.trains]
    evaluations = [r for r in runs if not r.trains and r.scalars]
    chosen = _choose(training, runs_pattern)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)

    lines = [f"# Runs under `{logdir}`", "",
             f"{len(shown)} runs, written {datetime.datetime.now():%Y-%m-%d %H:%M} by "
             "`python -m zoo_lightning report`. "
             "Best val top-1: the highest `val/top1` (the epoch `best.ckpt` holds). Test top-1: the run's own, "
             "or that of a `test` of its checkpoint (named). Wall: training and validation time, a resumed "
             "run's downtime left out. Images/s: training images per second, the median over epochs.", "",
             *_main_table(shown)]
    if evaluations:
        lines += ["", "## Evaluations", "", *_evaluations_table(training, evaluations)]
    plots = {
        "val_top1": _plot_curves(training, "val/top1", "Validation top-1 accuracy (★ best epoch)", "val top-1 (%)",
                                 out_dir / "val_top1.png", percent=True, mark_best=True),
        "val_loss": _plot_curves(training, "val/loss", "Validation loss (cross-entropy)", "val loss",
                                 out_dir / "val_loss.png", percent=False, mark_best=False),
        "per_class_accuracy": _plot_per_class(chosen, out_dir / "per_class_accuracy.png"),
    }
    if plots["val_top1"] or plots["val_loss"]:
        lines += ["", "## Curves", ""] + [f"![{k}]({p.name})" for k, p in plots.items()
                                          if p is not None and k != "per_class_accuracy"]
    if chosen:
        lines += ["", "## Per-class val accuracy", "",
                  f"At each run's best epoch; {'the runs asked for' if runs_pattern else 'the best runs'} "
                  "(`--runs NAME ...` picks others).", "", *_per_class_table(chosen), "",
                  "![per_class_accuracy](per_class_accuracy.png)"]
    if any(r.sweep for r in runs):
        lines += ["", "## Sweeps", "", *_sweep_table(runs)]
    report = out_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m zoo_lightning report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", nargs="?", default="lightning_logs",
                        help="the runs' save_dir (default: lightning_logs)")
    parser.add_argument("--out", default="reports", help="folder for report.md and the PNGs (default: reports)")
    parser.add_argument("--runs", nargs="+", metavar="NAME",
                        help=f"runs for the per-class figure: substrings or patterns of their names "
                             f"(default: the {DEFAULT_PER_CLASS_RUNS} best)")
    args = parser.parse_args(argv)
    report = write_report(args.logdir, args.out, args.runs)
    print(report.read_text())
    print(f"wrote {report} and its plots")
