"""The cross-run report: its numbers against the event files, its plots, and the odd logdirs users have; runs
ranked only within their dataset, partial tests, evaluations kept with their run, failed runs apart."""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import yaml
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib import rcParams
from matplotlib.colors import to_rgb
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from tests.helpers import CLASSES, ROOT, TINY_NET, TinyData, fit_tiny
from zoo_lightning.callbacks import ClassificationDashboard, HparamsSession
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.cli import main
from zoo_lightning.commands.report import load_runs, write_report


def scalars(run_dir: Path, tag: str) -> list[float]:
    return [e.value for e in EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload().Scalars(tag)]


def row(text: str, run: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {run} |"))


def split_row(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def section(text: str, heading: str) -> str:
    """The part of the report under a ``## `` heading, up to the next one."""
    return text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]


def write_config(run_dir: Path, **config) -> None:
    """The part of the ``config.yaml`` LightningCLI writes into a run folder that ``report`` reads."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))


TINY_DATA = {"class_path": "tests.helpers.TinyData", "init_args": {"class_names": CLASSES}}
TINY_SECTION = "## TinyData, 3 classes"


@pytest.fixture(scope="module")
def logs(tiny_net, tmp_path_factory):
    """Two tiny fits (different lr and seed) and a test of the first one's best checkpoint, filed in that run."""
    root = tmp_path_factory.mktemp("report") / "lightning_logs"
    model = {"backbone": TINY_NET, "objective": {"class_path": "zoo_lightning.objectives.CrossEntropy"}, "tta": None}
    first, _, _ = fit_tiny(root, "tiny_a", epochs=2, lr=0.1, seed=0)
    fit_tiny(root, "tiny_b", epochs=2, lr=0.02, seed=1)
    for name in ("tiny_a", "tiny_b"):
        write_config(root / name / "version_0", model=model, trainer={"max_epochs": 2}, data=TINY_DATA, ckpt_path=None)
    # What `python -m zoo_lightning test --ckpt_path RUN/checkpoints/best.ckpt` does: RUN/evaluations/test_0.
    best = first.checkpoint_callback.best_model_path
    tester = L.Trainer(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=TensorBoardLogger(
            root / "tiny_a" / "version_0", name="evaluations", version="test_0", default_hp_metric=False
        ),
        callbacks=[ClassificationDashboard(print_table=False), HparamsSession()],
    )
    tester.test(ImageClassifier(TINY_NET, num_classes=3), datamodule=TinyData(), ckpt_path=best, verbose=False)
    write_config(
        root / "tiny_a" / "version_0" / "evaluations" / "test_0",
        model=model,
        trainer={"max_epochs": 2},
        data=TINY_DATA,
        ckpt_path=best,
    )
    return root


@pytest.fixture(scope="module")
def report(logs, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return write_report(logs, out), out


def test_rows_equal_the_logged_numbers(logs, report):
    text = report[0].read_text()
    for name in ("tiny_a", "tiny_b"):
        run_dir = logs / name / "version_0"
        line = row(text, f"{name}/version_0")
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[1:5] == [TINY_NET, "CrossEntropy", "163", "2"]  # backbone, objective, params, epochs
        assert cells[5] == f"{100 * max(scalars(run_dir, 'val/top1')):.2f}%"
        assert cells[8] == f"{statistics.median(scalars(run_dir, 'train/images_per_sec')):,.0f}"
        hours, minutes, seconds = map(int, cells[7].split(":"))
        assert 0 <= 3600 * hours + 60 * minutes + seconds < 600  # a tiny run can round to 0:00:00
    # The test lands in the row of the run whose checkpoint it tested, and in the evaluations under that run.
    evaluation_dir = logs / "tiny_a" / "version_0" / "evaluations" / "test_0"
    test_top1 = scalars(evaluation_dir, "test/top1")[-1]
    assert [c.strip() for c in row(text, "tiny_a/version_0").split("|")][7] == f"{100 * test_top1:.2f}% (best.ckpt)"
    assert [c.strip() for c in row(text, "tiny_b/version_0").split("|")][7] == "-"
    assert "evaluations/test_0 |" not in text.split("### Evaluations")[0]
    evaluation = split_row(row(text.split("### Evaluations")[1], "tiny_a/version_0"))
    # of run, evaluation, checkpoint, split, top-1, loss, images (TinyData tests on its 30 validation images)
    assert evaluation == [
        "tiny_a/version_0",
        "tiny_a/version_0/evaluations/test_0",
        "best.ckpt",
        "test",
        f"{100 * test_top1:.2f}%",
        f"{scalars(evaluation_dir, 'test/loss')[-1]:.4f}",
        "30",
    ]
    # Ranked by best val top-1.
    order = [name for name in ("tiny_a", "tiny_b")]
    order.sort(key=lambda n: -max(scalars(logs / n / "version_0", "val/top1")))
    assert text.index(f"| {order[0]}/version_0 |") < text.index(f"| {order[1]}/version_0 |")


def test_per_class_table_is_taken_at_the_best_epoch(logs, report):
    text = report[0].read_text()
    section = text.split("### Per-class val accuracy")[1]
    acc = EventAccumulator(str(logs / "tiny_a" / "version_0"), size_guidance={"scalars": 0}).Reload()
    best = max(acc.Scalars("val/top1"), key=lambda e: e.value).step
    for name in ("red", "green", "blue"):
        value = next(e.value for e in acc.Scalars(f"val_class/{name}") if e.step == best)
        cells = [c.strip() for c in row(section, name).strip("|").split("|")]
        header = [c.strip() for c in section.strip().splitlines()[2].strip("|").split("|")]
        assert cells[header.index("tiny_a/version_0")] == f"{100 * value:.2f}%"


def test_plots_are_real_pngs(report):
    text, out = report[0].read_text(), report[1]
    for png in (
        "val_top1-tinydata_3classes.png",
        "val_loss-tinydata_3classes.png",
        "per_class_accuracy-tinydata_3classes.png",
    ):
        path = out / png
        assert f"]({png})" in text
        assert path.stat().st_size > 5000
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            assert len(image.convert("RGB").getcolors(1 << 20)) > 20  # drawn, not blank


def _write_run(run_dir: Path, steps: list[int], top1: list[float], wall: list[float], epochs: list[int]) -> None:
    writer = SummaryWriter(str(run_dir))
    for step, value, at, epoch in zip(steps, top1, wall, epochs):
        writer.add_scalar("val/top1", value, step, walltime=at)
        writer.add_scalar("train/loss", 1.0, step, walltime=at)
        writer.add_scalar("epoch", epoch, step, walltime=at)
    writer.close()


def test_unfinished_and_resumed_runs(tmp_path):
    now = time.time()
    running = tmp_path / "logs" / "long" / "version_0"
    _write_run(running, [9, 19], [0.3, 0.4], [now + 30, now + 60], [0, 1])
    write_config(running, trainer={"max_epochs": 10}, model={"backbone": "cnn"})
    resumed = tmp_path / "logs" / "resumed" / "version_0"
    _write_run(resumed, [9, 19, 29], [0.3, 0.5, 0.9], [now + 10, now + 20, now + 30], [0, 1, 2])  # killed after 29
    time.sleep(1.1)  # the second session's event file is named one second later
    later = time.time()
    _write_run(resumed, [19, 29], [0.45, 0.6], [later + 10, later + 40], [1, 2])  # resumed from the step-19 checkpoint
    runs = {r.name: r for r in load_runs(tmp_path / "logs")}
    assert runs["resumed/version_0"].scalars["val/top1"] == [
        (9, pytest.approx(0.3)),
        (19, pytest.approx(0.45)),
        (29, pytest.approx(0.6)),
    ]
    assert runs["resumed/version_0"].wall_seconds == pytest.approx(30 + 40, abs=3)  # not the gap between sessions
    text = write_report(tmp_path / "logs", tmp_path / "out").read_text()
    long_row = [c.strip() for c in row(text, "long/version_0").strip("|").split("|")]
    assert long_row[1] == "cnn" and long_row[4] == "2/10 (unfinished)" and long_row[5] == "40.00%"
    assert long_row[6] == "-" and long_row[8] == "-"  # no test, no throughput logged
    assert [c.strip() for c in row(text, "resumed/version_0").strip("|").split("|")][5] == "60.00%"


def test_empty_or_missing_logdir_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty" / "cnn" / "version_0").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="No runs under .* no TensorBoard event files"):
        write_report(tmp_path / "empty", tmp_path / "out")
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_runs_option_picks_the_per_class_runs(logs, tmp_path):
    text = write_report(logs, tmp_path / "one", ["tiny_b"]).read_text()
    header = text.split("### Per-class val accuracy")[1].strip().splitlines()[2]
    assert "tiny_b/version_0" in header and "tiny_a/version_0" not in header
    with pytest.raises(ValueError, match="matches no run"):
        write_report(logs, tmp_path / "none", ["resnet*"])


def test_cli_report_prints_and_writes(logs, tmp_path, capsys):
    main(["report", str(logs), "--out", str(tmp_path / "cli")])
    out = capsys.readouterr().out
    assert "| tiny_a/version_0 |" in out and (tmp_path / "cli" / "report.md").is_file()


def test_cli_fit_then_test_then_report(tiny_net, cifar_python, tmp_path, monkeypatch, capsys):
    """The CLI's default callbacks, `test` printing its table, and `report` on what the CLI wrote: the tests filed
    in the run, a test of part of the test set (--trainer.limit_test_batches) marked partial with its image count."""
    data_dir, arrays = cifar_python
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    main(
        [
            "fit",
            "--config",
            "cnn_cifar.yaml",
            "--model.backbone",
            TINY_NET,
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "20",
            "--data.batch_size",
            "16",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    run = work / "lightning_logs" / "cnn_cifar" / "version_0"
    tags = EventAccumulator(str(run), size_guidance={"images": 1}).Reload().Tags()
    assert {"val_class/airplane", "train/images_per_sec", "hp/best_val_top1"} <= set(tags["scalars"])
    assert {"val/confusion_matrix", "val/misclassified"} <= set(tags["images"])
    capsys.readouterr()
    main(
        [
            "test",
            "--ckpt_path",
            "lightning_logs/cnn_cifar/version_0/checkpoints/best.ckpt",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    out = capsys.readouterr().out
    assert "Test accuracy per class" in out
    test_top1 = scalars(run / "evaluations" / "test_0", "test/top1")[-1]  # filed in the run it scored
    total = next(line for line in out.splitlines() if line.startswith("│ all "))
    assert [cell.strip() for cell in total.split("│")[1:4]] == ["all", f"{100 * test_top1:.2f}%", "20"]
    # One batch of the checkpoint's 16: 16 of the 20 test images.
    main(
        [
            "test",
            "--ckpt_path",
            "lightning_logs/cnn_cifar/version_0/checkpoints/last.ckpt",
            "--trainer.limit_test_batches",
            "1",
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    assert scalars(run / "evaluations" / "test_1", "test/images") == [16]

    monkeypatch.chdir(tmp_path)  # the report runs from elsewhere
    text = write_report(work / "lightning_logs", tmp_path / "out").read_text()
    cifar = section(text, "## CIFAR10DataModule, 10 classes")
    found = split_row(row(cifar, "cnn_cifar/version_0"))
    # From the config.yaml LightningCLI wrote and the run's HPARAMS session: backbone, objective, params, epochs.
    assert found[1:5] == [TINY_NET, "CrossEntropy", str(3 * 4 * 9 + 4 + 16 * 10 + 10), "1"]
    assert found[6] == f"{100 * test_top1:.2f}% (best.ckpt)"  # the full test, not the newer partial one
    tests = [split_row(line) for line in cifar.split("### Evaluations")[1].splitlines() if "/evaluations/" in line]
    assert [(t[1], t[2], t[6]) for t in tests] == [
        ("cnn_cifar/version_0/evaluations/test_0", "best.ckpt", "20"),
        ("cnn_cifar/version_0/evaluations/test_1", "last.ckpt", "16 (partial)"),
    ]


def test_sweep_runs_every_combination_and_the_report_groups_them(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_lightning",
            "sweep",
            "--config",
            "cnn_cifar.yaml",
            "--grid",
            "model.optimizer.init_args.lr=0.1,0.05",
            "data.init_args.batch_size=16,32",
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "20",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--trainer.logger.init_args.name",
            "sweep",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(p.name for p in (logs / "sweep").iterdir() if p.is_dir())
    assert folders == ["lr=0.05,batch_size=16", "lr=0.05,batch_size=32", "lr=0.1,batch_size=16", "lr=0.1,batch_size=32"]
    runs = load_runs(logs)
    assert {r.sweep["model.optimizer.init_args.lr"] for r in runs} == {"0.1", "0.05"}
    text = write_report(logs, tmp_path / "out").read_text()
    assert "## Sweeps" in text and "## Study `sweep`" in text
    for run in runs:  # the study's table names each trial's run and its value, the run's best val top-1
        assert f"| {100 * run.best('val/top1'):.2f}% | - | {run.name} |" in text.split("## Study")[0]
        assert f"| {run.best('val/top1'):.4f} | {run.name} |" in text.split("## Study")[1]


def _swept_run(root: Path, name: str, top1: list[float], values: dict, seed: int, outcome: str, study: str) -> Path:
    """A sweep's run folder as a fit leaves it: its val/top1 per epoch, its config.yaml and sweep.json."""
    import json

    run = root / "exp" / name
    _write_run(run, list(range(len(top1))), top1, [time.time() + i for i in range(len(top1))], list(range(len(top1))))
    write_config(run, model={"backbone": "cnn"}, trainer={"max_epochs": len(top1)})
    (run / "sweep.json").write_text(
        json.dumps(
            {
                "study": study,
                "trial": 0,
                "values": values,
                "seed": seed,
                "storage": None,
                "grid": list(values),
                "outcome": outcome,
            }
        )
    )
    return run


def test_seeds_of_a_configuration_aggregate_to_mean_and_std_and_the_study_is_drawn(tmp_path):
    import optuna

    logs = tmp_path / "logs"
    lr = "model.optimizer.init_args.lr"
    best = {("0.1", 0): 0.50, ("0.1", 1): 0.60, ("0.1", 2): 0.70, ("0.05", 0): 0.40}
    for (value, seed), top1 in best.items():
        _swept_run(logs, f"lr={value},seed={seed}", [top1 - 0.1, top1], {lr: value}, seed, "complete", "exp")
    _swept_run(logs, "lr=0.05,seed=1", [0.05], {lr: "0.05"}, 1, "pruned", "exp")  # left out of the mean
    study = optuna.create_study(
        study_name="exp", storage=f"sqlite:///{logs / 'exp' / 'studies.db'}", direction="maximize"
    )
    study.set_user_attr("metric", "val/top1")
    distribution = optuna.distributions.CategoricalDistribution(["0.1", "0.05"])
    for value, mean, runs in (("0.1", 0.6, ["exp/lr=0.1,seed=0"]), ("0.05", 0.4, ["exp/lr=0.05,seed=0"])):
        study.add_trial(
            optuna.create_trial(
                params={lr: value}, distributions={lr: distribution}, value=mean, user_attrs={"runs": runs}
            )
        )
    text = write_report(logs, tmp_path / "out").read_text()
    values = [0.50, 0.60, 0.70]
    mean = sum(values) / 3
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)  # the sample standard deviation
    assert f"| exp | 0.1 | 3 | {100 * mean:.2f} ± {100 * std:.2f}% | - |" in text
    assert "| exp | 0.05 | 1 | 40.00% | - | exp/lr=0.05,seed=0 |" in text  # the pruned run is not counted
    section = text.split("## Study `exp`")[1]
    assert "2 trials in sqlite:///" in section and "(2 complete), maximize val/top1" in section
    assert "| 0 | complete | 0.1 | 0.6000 | exp/lr=0.1,seed=0 |" in section
    for png in ("study_exp_history.png", "study_exp_slices.png", "study_exp_importances.png"):
        assert f"]({png})" in section
        with Image.open(tmp_path / "out" / png) as image:
            assert image.format == "PNG" and len(image.convert("RGB").getcolors(1 << 20)) > 20


@pytest.fixture
def drawn(monkeypatch):
    """The figures the report saves, by file name (still readable after the report closes them)."""
    from zoo_lightning import figures

    saved = {}
    original = figures.save_png

    def save_png(figure, path, dpi=120):
        saved[Path(path).name] = figure
        return original(figure, path, dpi)

    monkeypatch.setattr(figures, "save_png", save_png)
    return saved


def _curves(figure) -> dict:
    """The labelled lines of a figure's axes: label -> Line2D (the best-epoch stars carry no label)."""
    handles, labels = figure.axes[0].get_legend_handles_labels()
    return dict(zip(labels, handles))


def test_one_epoch_run_is_a_visible_point_on_an_integer_axis(tmp_path, drawn):
    writer = SummaryWriter(str(tmp_path / "logs" / "short" / "version_0"))
    for tag, value in (("train/loss", 1.0), ("val/top1", 0.3), ("val/loss", 1.5), ("epoch", 0)):
        writer.add_scalar(tag, value, 9)
    writer.close()
    write_report(tmp_path / "logs", tmp_path / "out")
    for png, label, value in (
        ("val_top1-unrecorded.png", "short/version_0 (30.00%)", 30.0),
        ("val_loss-unrecorded.png", "short/version_0", 1.5),
    ):
        figure = drawn[png]
        ax = figure.axes[0]
        line = _curves(figure)[label]
        assert list(line.get_xdata()) == [1] and list(line.get_ydata()) == [pytest.approx(value)]
        assert line.get_marker() not in ("None", "", " ", None) and line.get_markersize() >= 6
        low, high = ax.get_xlim()
        assert low <= 0.5 and high >= 1.5  # an epoch-wide axis around the point, not a 0.96..1.04 one
        assert [t for t in ax.get_xticks() if low <= t <= high] == [1]
    # In the PNG the point is a filled dot of the run's colour (val_loss: no best-epoch star drawn over it).
    with Image.open(tmp_path / "out" / "val_loss-unrecorded.png") as image:
        rgb = image.convert("RGB")
        x, y = ax.transData.transform((1, value))  # display pixels at the figure's dpi, from the bottom
        # the PNG is the drawn area (savefig's tight box and its padding) at the report's 120 dpi
        saved = figure.get_tightbbox().padded(rcParams["savefig.pad_inches"])
        px = round((x / figure.dpi - saved.x0) * 120)
        py = round(rgb.height - (y / figure.dpi - saved.y0) * 120)
        color = tuple(round(255 * c) for c in to_rgb(line.get_color()))
        box = [rgb.getpixel((px + dx, py + dy)) for dx in range(-4, 5) for dy in range(-4, 5)]
        assert sum(max(abs(a - b) for a, b in zip(pixel, color)) < 40 for pixel in box) >= 70


def test_loss_plot_has_a_log_axis_and_accuracy_a_linear_one(tmp_path, drawn):
    for name, losses in (("fine", [2.0, 1.2, 0.8]), ("diverged", [2.0, 300.0, 5e4])):
        writer = SummaryWriter(str(tmp_path / "logs" / name / "version_0"))
        for epoch, loss in enumerate(losses):
            writer.add_scalar("train/loss", loss, 10 * epoch + 9)
            writer.add_scalar("val/loss", loss, 10 * epoch + 9)
            writer.add_scalar("val/top1", 0.1 * epoch, 10 * epoch + 9)
            writer.add_scalar("epoch", epoch, 10 * epoch + 9)
        writer.close()
    write_report(tmp_path / "logs", tmp_path / "out")
    assert drawn["val_loss-unrecorded.png"].axes[0].get_yscale() == "log"
    assert drawn["val_top1-unrecorded.png"].axes[0].get_yscale() == "linear"
    # On the log axis the converging run spans a visible part of the height, not the bottom pixels.
    ax = drawn["val_loss-unrecorded.png"].axes[0]
    low, high = (math.log10(v) for v in ax.get_ylim())
    assert (math.log10(2.0) - math.log10(0.8)) / (high - low) > 0.05


@pytest.mark.parametrize("n", [12, 25])
def test_many_runs_are_drawn_in_pairwise_different_styles(n):
    from zoo_lightning.figures import curves_figure, run_styles

    styles = [(s["color"], s["linestyle"], s["marker"]) for s in run_styles(n)]
    assert len(set(styles)) == n
    figure = curves_figure([(f"run{i}", [(1, i), (2, i + 1)]) for i in range(n)], "t", "y")
    drawn = {(tuple(line.get_color()), line.get_linestyle(), line.get_marker()) for line in _curves(figure).values()}
    assert len(drawn) == n
    # Colour alone repeats past ten runs: the runs that share one differ in line style and marker.
    lines = list(_curves(figure).values())
    assert tuple(lines[0].get_color()) == tuple(lines[10].get_color())
    assert lines[0].get_linestyle() != lines[10].get_linestyle() and lines[0].get_marker() != lines[10].get_marker()


def test_test_column_says_when_the_figure_was_measured_with_tta(tmp_path):
    logs = tmp_path / "logs"
    _write_run(logs / "fit" / "version_0", [9, 19], [0.8, 0.86], [time.time(), time.time() + 5], [0, 1])
    # A `test --ckpt_path ... --model.tta flip` of its best checkpoint: config.yaml says which TTA it used.
    tested = logs / "eval" / "version_0"
    writer = SummaryWriter(str(tested))
    writer.add_scalar("test/top1", 0.877, 0)
    writer.add_scalar("test/loss", 0.41, 0)
    writer.close()
    write_config(tested, ckpt_path="logs/fit/version_0/checkpoints/best.ckpt", model={"backbone": "cnn", "tta": "flip"})
    # A run with its own test naming the four-view TTA.
    own = logs / "own" / "version_0"
    _write_run(own, [9], [0.5], [time.time()], [0])
    writer = SummaryWriter(str(own))
    writer.add_scalar("test/top1", 0.51, 10)
    writer.close()
    write_config(own, model={"backbone": "cnn", "tta": "flip_translate"})
    # And a test without TTA says nothing of it.
    plain = logs / "plain" / "version_0"
    _write_run(plain, [9], [0.4], [time.time()], [0])
    writer = SummaryWriter(str(plain))
    writer.add_scalar("test/top1", 0.39, 10)
    writer.close()
    write_config(plain, model={"backbone": "cnn", "tta": None})

    text = write_report(logs, tmp_path / "out").read_text()
    main_rows = text.split("### Evaluations")[0]
    assert row(main_rows, "fit/version_0").split("|")[7].strip() == "87.70% (best.ckpt, TTA flip)"
    assert row(main_rows, "own/version_0").split("|")[7].strip() == "51.00% (final weights, TTA flip_translate)"
    assert row(main_rows, "plain/version_0").split("|")[7].strip() == "39.00% (final weights)"
    assert "| eval/version_0 |" not in main_rows  # an evaluation filed beside its run, as older logs have it
    assert "87.70% (TTA flip)" in row(text.split("### Evaluations")[1], "fit/version_0")
    intro = text.split("| run |")[0]
    assert "`TTA flip` marks one measured with test-time augmentation (`--model.tta`" in intro


def test_damaged_event_files_are_named_in_a_warning_and_leave_a_finished_run_finished(logs, tmp_path, capsys):
    from torch.utils.tensorboard.summary import hparams

    run = tmp_path / "logs" / "tiny_a" / "version_0"
    shutil.copytree(logs / "tiny_a" / "version_0", run, ignore=shutil.ignore_patterns("evaluations"))
    (original,) = run.glob("events.out.tfevents.*")
    stamp = int(original.name.split(".")[3])
    # A later session of the run whose file was cut off inside its last record: its session start is whole,
    # its session end (if any) is lost.
    scratch = tmp_path / "scratch"
    writer = SummaryWriter(str(scratch))
    _, start, _ = hparams({"stage": "fit", "backbone": TINY_NET, "max_epochs": 2}, {"val/top1": 0.0})
    writer.file_writer.add_summary(start)
    writer.add_scalar("train/loss", 0.5, 10_000)
    writer.close()
    whole = next(scratch.glob("events.out.tfevents.*")).read_bytes()
    truncated = run / f"events.out.tfevents.{stamp + 100}.host.1.0"
    truncated.write_bytes(whole[:-7])
    garbage = run / f"events.out.tfevents.{stamp + 200}.host.2.0"
    garbage.write_bytes(b"\xff" * 64)
    capsys.readouterr()

    text = write_report(tmp_path / "logs", tmp_path / "out").read_text()
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2
    assert str(truncated) in warnings[0] and "truncated" in warnings[0] and "incomplete record" in warnings[0]
    assert str(garbage) in warnings[1] and "not an event file" in warnings[1] and "skipped" in warnings[1]
    cells = [c.strip() for c in row(text, "tiny_a/version_0").strip("|").split("|")]
    assert cells[4] == "2"  # not "2/2 (unfinished)": the lost session end is not taken for an open session
    assert cells[5] == f"{100 * max(scalars(logs / 'tiny_a' / 'version_0', 'val/top1')):.2f}%"
    (reread,) = load_runs(tmp_path / "logs", warn=lambda message: None)
    assert reread.status == "done" and set(reread.unread) == {truncated, garbage}


def test_non_finite_values_are_left_out_of_a_curve_and_named_in_its_label():
    from zoo_lightning.figures import curves_figure

    figure = curves_figure(
        [("ok", [(1, 2.0), (2, 1.0)]), ("blew up", [(1, 2.0), (2, math.nan), (3, math.inf)])],
        "loss",
        "val loss",
        log_y=True,
    )
    lines = _curves(figure)
    assert list(lines["blew up (NaN/inf not drawn)"].get_ydata()) == [2.0]
    assert list(lines["ok"].get_ydata()) == [2.0, 1.0]
    assert figure.axes[0].get_yscale() == "log"


# --- what the report must not mislead about ---------------------------------------------------------------------

CIFAR = {"class_path": "zoo_lightning.data.CIFAR10DataModule", "init_args": {"data_dir": "data"}}
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_scalars(run_dir: Path, values: dict[str, list[tuple[int, float]]]) -> None:
    writer = SummaryWriter(str(run_dir))
    for tag, points in values.items():
        for step, value in points:
            writer.add_scalar(tag, value, step)
    writer.close()


def training(
    run_dir: Path,
    val_top1: list[float],
    data: dict | None = None,
    num_classes: int | None = None,
    val_loss: bool = True,
    per_class: bool = False,
    max_epochs: int = 30,
) -> None:
    """A run folder as `fit` leaves it, one validation per epoch: config.yaml, hparams.yaml and the scalars."""
    steps = [10 * epoch + 9 for epoch in range(len(val_top1))]
    values = {
        "train/loss": [(s, 1.0) for s in steps],
        "epoch": [(s, e) for e, s in enumerate(steps)],
        "val/top1": list(zip(steps, val_top1)),
    }
    if val_loss:
        values["val/loss"] = [(s, 2.0 - v) for s, v in zip(steps, val_top1)]
    if per_class:
        for i, name in enumerate(CLASSES):
            values[f"val_class/{name}"] = [(s, v * (0.8 + 0.1 * i)) for s, v in zip(steps, val_top1)]
    write_scalars(run_dir, values)
    write_config(run_dir, model={"backbone": "cnn"}, trainer={"max_epochs": max_epochs}, data=data or {})
    if num_classes is not None:
        (run_dir / "hparams.yaml").write_text(yaml.safe_dump({"backbone": "cnn", "num_classes": num_classes}))


def evaluation(
    folder: Path, ckpt_path: str | Path, top1: float, images: int | None = None, stage: str = "test", **trainer
) -> None:
    """What `validate`/`test --ckpt_path CKPT` files: its config.yaml (the checkpoint's data and class names) and
    its scalars."""
    values = {f"{stage}/top1": [(0, top1)], f"{stage}/loss": [(0, 1.0 - top1 / 2)]}
    if images is not None:
        values[f"{stage}/images"] = [(0, images)]
    write_scalars(folder, values)
    data = {"class_path": CIFAR["class_path"], "init_args": {"data_dir": "data", "class_names": CIFAR_CLASSES}}
    write_config(folder, model={"backbone": "cnn", "tta": None}, trainer=trainer, data=data, ckpt_path=str(ckpt_path))


def table_rows(part: str) -> list[list[str]]:
    """The cells of a markdown table's body rows (header and rule left out)."""
    lines = [line for line in part.splitlines() if line.startswith("| ")]
    return [split_row(line) for line in lines[1:]]


def test_runs_on_different_datasets_are_ranked_apart_each_with_its_plots(tmp_path, drawn):
    logs = tmp_path / "logs"
    training(logs / "resnet20_cifar" / "version_0", [0.5, 0.62], CIFAR, num_classes=10)
    # The same dataset from another folder (the JPEG copy): the same table.
    elsewhere = {"class_path": CIFAR["class_path"], "init_args": {"data_dir": "/shared/cifar10-jpeg"}}
    training(logs / "resnet20_cifar" / "version_1", [0.6, 0.71], elsewhere, num_classes=10)
    # Two folders of your own images, 3 classes each: 100% of 9 images says nothing about CIFAR-10.
    for name, folder, top1 in (("shapes", "data/shapes", [0.9, 1.0]), ("colours", "data/colours/", [0.4, 0.5])):
        training(
            logs / name / "version_0",
            top1,
            {
                "class_path": "zoo_lightning.data.FolderDataModule",
                "init_args": {"data_dir": folder, "class_names": CLASSES},
            },
        )
    text = write_report(logs, tmp_path / "out").read_text()

    cifar = section(text, "## CIFAR10DataModule, 10 classes")
    shapes = section(text, "## FolderDataModule `data/shapes`, 3 classes")
    colours = section(text, "## FolderDataModule `data/colours`, 3 classes")
    assert [r[0] for r in table_rows(cifar.split("###")[0])] == ["resnet20_cifar/version_1", "resnet20_cifar/version_0"]
    assert [r[0] for r in table_rows(shapes.split("###")[0])] == ["shapes/version_0"]
    assert [r[0] for r in table_rows(colours.split("###")[0])] == ["colours/version_0"]
    # A set of plots per dataset, each holding that dataset's runs alone, shown in its section.
    assert set(_curves(drawn["val_top1-cifar10_10classes.png"])) == {
        "resnet20_cifar/version_1 (71.00%)",
        "resnet20_cifar/version_0 (62.00%)",
    }
    assert set(_curves(drawn["val_top1-folder_shapes_3classes.png"])) == {"shapes/version_0 (100.00%)"}
    assert set(_curves(drawn["val_loss-folder_colours_3classes.png"])) == {"colours/version_0"}
    assert "![val_top1](val_top1-cifar10_10classes.png)" in cifar and "val_top1-folder" not in cifar


def test_a_partial_test_is_marked_and_never_replaces_the_full_one(tmp_path):
    logs = tmp_path / "logs"
    run, other = logs / "cnn_cifar" / "version_0", logs / "cnn_cifar" / "version_1"
    training(run, [0.7, 0.78], CIFAR, num_classes=10)
    training(other, [0.5, 0.6], CIFAR, num_classes=10)
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    evaluation(run / "evaluations" / "test_0", best, 0.80, images=10_000)
    evaluation(run / "evaluations" / "test_1", best, 0.95, images=1_000, limit_test_batches=0.1)  # newer, partial
    evaluation(run / "evaluations" / "test_2", last, 0.79, images=10_000, limit_test_batches=1.0)  # 1.0: all of it
    evaluation(run / "evaluations" / "validate_0", best, 0.77, stage="val")
    evaluation(other / "evaluations" / "test_0", other / "checkpoints" / "best.ckpt", 0.55, limit_test_batches=1)
    # A checkpoint from no run (downloaded): filed under the experiment, listed on its own.
    evaluation(logs / "cnn_cifar" / "evaluations" / "test_0", "/downloads/model.ckpt", 0.40, images=10_000)

    runs = {r.name: r for r in load_runs(logs)}
    assert [r.name for r in runs.values() if not r.is_evaluation] == ["cnn_cifar/version_0", "cnn_cifar/version_1"]
    assert [e.path.name for e in runs["cnn_cifar/version_0"].evaluations] == [
        "test_0",
        "test_1",
        "test_2",
        "validate_0",
    ]
    chosen = runs["cnn_cifar/version_0"].test_top1()
    assert (chosen.top1, chosen.checkpoint, chosen.images, chosen.partial) == (
        pytest.approx(0.8),
        "best.ckpt",
        10_000,
        False,
    )

    text = write_report(logs, tmp_path / "out").read_text()
    assert "2 training runs and 6 evaluations" in text
    cifar = section(text, "## CIFAR10DataModule, 10 classes")
    main_rows = {r[0]: r for r in table_rows(cifar.split("###")[0])}
    assert list(main_rows) == ["cnn_cifar/version_0", "cnn_cifar/version_1"]  # evaluations are not trainings
    assert main_rows["cnn_cifar/version_0"][6] == "80.00% (best.ckpt)"
    assert main_rows["cnn_cifar/version_1"][6] == "55.00% (best.ckpt, partial: limit_test_batches 1)"
    evaluations = table_rows(cifar.split("### Evaluations")[1].split("###")[0])
    # of run, evaluation, checkpoint, split, top-1, images
    assert [r[:5] + r[6:] for r in evaluations] == [
        ["cnn_cifar/version_0", "cnn_cifar/version_0/evaluations/test_0", "best.ckpt", "test", "80.00%", "10,000"],
        [
            "cnn_cifar/version_0",
            "cnn_cifar/version_0/evaluations/test_1",
            "best.ckpt",
            "test",
            "95.00%",
            "1,000 (partial)",
        ],
        ["cnn_cifar/version_0", "cnn_cifar/version_0/evaluations/test_2", "last.ckpt", "test", "79.00%", "10,000"],
        ["cnn_cifar/version_0", "cnn_cifar/version_0/evaluations/validate_0", "best.ckpt", "val", "77.00%", "-"],
        [
            "cnn_cifar/version_1",
            "cnn_cifar/version_1/evaluations/test_0",
            "best.ckpt",
            "test",
            "55.00%",
            "- (partial: limit_test_batches 1)",
        ],
        ["- (no run here)", "cnn_cifar/evaluations/test_0", "/downloads/model.ckpt", "test", "40.00%", "10,000"],
    ]


def test_failed_runs_are_listed_apart_not_ranked(tiny_net, tmp_path):
    logs = tmp_path / "logs"

    class Crash(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if batch_idx == 2:
                raise RuntimeError("crash")

    trainer = L.Trainer(
        max_epochs=30,
        accelerator="cpu",
        devices=1,
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=TensorBoardLogger(logs, name="crashed", default_hp_metric=False),
        callbacks=[HparamsSession(), Crash()],
    )
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit(ImageClassifier(TINY_NET, num_classes=3), datamodule=TinyData())
    write_config(
        logs / "crashed" / "version_0", model={"backbone": TINY_NET}, trainer={"max_epochs": 30}, data=TINY_DATA
    )
    # Killed before its first validation: no result to rank.
    write_scalars(logs / "stalled" / "version_0", {"train/loss": [(0, 2.3)], "epoch": [(0, 0)]})
    write_config(
        logs / "stalled" / "version_0", model={"backbone": TINY_NET}, trainer={"max_epochs": 30}, data=TINY_DATA
    )
    training(logs / "fine" / "version_0", [0.4, 0.5], TINY_DATA)

    assert {r.name: r.status for r in load_runs(logs)}["crashed/version_0"] == "failed"
    text = write_report(logs, tmp_path / "out").read_text()
    tiny = section(text, TINY_SECTION)
    assert [r[0] for r in table_rows(tiny.split("###")[0])] == ["fine/version_0"]
    assert "(failed)" not in tiny and "crashed" not in tiny
    failed = {r[0]: r for r in table_rows(section(text, "## Failed runs and runs without a result"))}
    # run, dataset, backbone, epochs (its first begun), best val top-1, test top-1
    assert failed == {
        "crashed/version_0": ["crashed/version_0", "TinyData, 3 classes", TINY_NET, "1/30 (failed)", "-", "-"],
        "stalled/version_0": ["stalled/version_0", "TinyData, 3 classes", TINY_NET, "1/30 (unfinished)", "-", "-"],
    }


def test_a_run_keeps_its_look_in_every_plot(tmp_path, drawn):
    logs = tmp_path / "logs"
    training(logs / "a" / "version_0", [0.5, 0.9], TINY_DATA, per_class=True)
    training(logs / "b" / "version_0", [0.5, 0.8], TINY_DATA, per_class=True, val_loss=False)  # no loss plotted
    training(logs / "c" / "version_0", [0.5, 0.7], TINY_DATA, per_class=True)
    write_report(logs, tmp_path / "out")
    top1 = {label.split(" (")[0]: line for label, line in _curves(drawn["val_top1-tinydata_3classes.png"]).items()}
    loss = _curves(drawn["val_loss-tinydata_3classes.png"])
    bars = {
        bar.get_label().split(" (")[0]: bar
        for bar in drawn["per_class_accuracy-tinydata_3classes.png"].axes[0].containers
    }
    assert set(top1) == set(bars) == {"a/version_0", "b/version_0", "c/version_0"}
    assert set(loss) == {"a/version_0", "c/version_0"}
    assert len({to_rgb(line.get_color()) for line in top1.values()}) == 3
    for name, line in top1.items():
        assert to_rgb(bars[name].patches[0].get_facecolor()) == to_rgb(line.get_color())
        if name in loss:  # c is drawn in c's colour, not in the one b has in the other plot
            assert to_rgb(loss[name].get_color()) == to_rgb(line.get_color())
            assert (loss[name].get_linestyle(), loss[name].get_marker()) == (line.get_linestyle(), line.get_marker())


def test_one_epoch_runs_sit_side_by_side():
    from zoo_lightning.figures import curves_figure

    figure = curves_figure(
        [(f"run{i}", [(1, 50.0 + i)]) for i in range(5)] + [("long", [(1, 40), (2, 45), (3, 50)])], "t", "y"
    )
    figure.canvas.draw()
    lines = _curves(figure)
    xs = [float(lines[f"run{i}"].get_xdata()[0]) for i in range(5)]
    assert len(set(xs)) == 5 and all(0.65 <= x <= 1.35 for x in xs)  # around their epoch, clear of the next
    assert list(lines["long"].get_xdata()) == [1, 2, 3]
    # On the page, neighbours are further apart than a marker is wide.
    pixels = sorted(figure.axes[0].transData.transform((x, 50))[0] for x in xs)
    marker = lines["run0"].get_markersize() * figure.dpi / 72
    assert min(b - a for a, b in zip(pixels, pixels[1:])) > marker


@pytest.mark.parametrize("n", [12, 40, 120])
def test_the_legend_of_many_runs_fits_on_the_page_beside_a_readable_plot(n):
    from zoo_lightning.figures import curves_figure

    figure = curves_figure(
        [(f"resnet20_cifar/lr=0.{i},batch_size=128 (9{i % 10}.00%)", [(1, i), (2, i + 1)]) for i in range(n)],
        "t",
        "y",
        mark_best=True,
    )
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    legend = figure.axes[0].get_legend()
    box, page, axes = legend.get_window_extent(renderer), figure.bbox, figure.axes[0].get_window_extent(renderer)
    assert len(legend.get_texts()) == n
    assert box.x0 >= 0 and box.y0 >= -5 and box.x1 <= page.x1 and box.y1 <= page.y1  # all of it on the page
    assert not box.overlaps(axes)
    assert axes.width > 0.5 * page.width and axes.height > 3 * figure.dpi  # the plot keeps its size
