"""Dashboards (what the event files hold) and the cross-run report."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from zoo_lightning.callbacks import per_class_accuracy
from zoo_lightning.cli import main
from zoo_lightning.report import load_runs, write_report

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, cifar_writer):
    root = tmp_path_factory.mktemp("report")
    cifar_writer(root / "data")
    logs = root / "logs"
    for backbone in ("cnn", "resnet20"):
        main(["fit", "--config", "cnn_cifar.yaml", "--model.backbone", backbone, "--data.data_dir", str(root / "data"),
              "--data.val_size", "20", "--data.batch_size", "16", "--trainer.max_epochs", "2",
              "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
              "--trainer.logger.init_args.name", backbone, "--trainer.logger.init_args.save_dir", str(logs)])
    return root, logs


def test_event_file_holds_per_class_scalars_confusion_image_and_hparams(two_runs):
    _, logs = two_runs
    events = EventAccumulator(str(logs / "cnn" / "version_0"), size_guidance={"images": 0}).Reload()
    scalars = events.Tags()["scalars"]
    assert {f"val_class/{name}" for name in ("airplane", "truck")} <= set(scalars)
    assert "train/images_per_sec" in scalars and events.Scalars("train/images_per_sec")[-1].value > 0
    images = events.Tags()["images"]
    assert "val/confusion_matrix" in images and "val/misclassified" in images
    assert events.Images("val/confusion_matrix")[-1].width > 300
    plugins = events.PluginTagToContent("hparams")
    assert "_hparams_/session_start_info" in plugins
    assert b"backbone" in plugins["_hparams_/session_start_info"]


def test_per_class_accuracy_is_recall_per_row():
    confusion = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 2, 4]])
    accuracy = per_class_accuracy(confusion)
    assert accuracy[0] == pytest.approx(0.75) and torch.isnan(accuracy[1]) and accuracy[2] == pytest.approx(0.5)


def test_report_numbers_equal_the_logged_ones(two_runs, tmp_path):
    _, logs = two_runs
    report = write_report(logs, tmp_path / "out")
    text = report.read_text()
    for name in ("cnn", "resnet20"):
        events = EventAccumulator(str(logs / name / "version_0")).Reload()
        best = max(e.value for e in events.Scalars("val/top1"))
        row = next(line for line in text.splitlines() if line.startswith(f"| {name}/version_0 "))
        assert f"{100 * best:.2f}%" in row and f"| {name} |" in row
    for png in ("val_top1.png", "val_loss.png", "per_class_accuracy.png"):
        path = tmp_path / "out" / png
        with Image.open(path) as image:
            assert image.width > 300 and image.height > 200
        assert path.stat().st_size > 5000
        assert f"({png})" in text


def test_test_prints_the_per_class_table(two_runs, capsys):
    root, logs = two_runs
    ckpt = logs / "cnn" / "version_0" / "checkpoints" / "last.ckpt"
    main(["test", "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false",
          "--trainer.logger.init_args.save_dir", str(logs)])
    out = capsys.readouterr().out
    assert "Test accuracy per class" in out
    # Hand count on the same 20 test images.
    from zoo_lightning.classifier import ImageClassifier
    from zoo_lightning.data import CIFAR10DataModule

    data = CIFAR10DataModule(data_dir=str(root / "data"), val_size=20)
    data.setup()
    model = ImageClassifier.load_from_checkpoint(ckpt).eval()
    images, labels = data._splits["test"]
    with torch.no_grad():
        predictions = model(data.on_after_batch_transfer((images, labels), 0)[0]).argmax(1)
    for c, name in enumerate(data.class_names):
        count = int((labels == c).sum())
        if count:
            correct = int(((predictions == c) & (labels == c)).sum())
            assert any(name in line and f"{100 * correct / count:.2f}%" in line and str(count) in line
                       for line in out.splitlines()), name


def test_empty_logdir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No runs"):
        write_report(tmp_path, tmp_path / "out")


def test_sweep_runs_every_combination_and_the_report_groups_them(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "zoo_lightning", "sweep", "--config", "cnn_cifar.yaml",
         "--grid", "model.optimizer.init_args.lr=0.1,0.05", "data.init_args.batch_size=16,32",
         "--data.data_dir", str(data_dir), "--data.val_size", "20", "--trainer.max_steps", "2",
         "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(logs),
         "--trainer.logger.init_args.name", "sweep"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    folders = sorted(p.name for p in (logs / "sweep").iterdir())
    assert folders == ["lr=0.05,batch_size=16", "lr=0.05,batch_size=32", "lr=0.1,batch_size=16", "lr=0.1,batch_size=32"]
    runs = load_runs(logs)
    assert {r.sweep["model.optimizer.init_args.lr"] for r in runs} == {"0.1", "0.05"}
    assert "## Sweeps" in write_report(logs, tmp_path / "out").read_text()
