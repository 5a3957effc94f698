"""selftrain: a teacher and two noisy-student rounds on tiny CIFAR-10, each a versioned run that report groups."""

import argparse
import json

import torch

from tests.helpers import run_cli
from zoo_lightning.checkpoints import datamodule_args
from zoo_lightning.commands.selftrain import _parser, student_arguments
from zoo_lightning.data.splits import TRAINING_SET_OPTIONS


def test_two_rounds_each_taught_by_the_round_before(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    result = run_cli(
        [
            "selftrain",
            "--config",
            "cnn_cifar.yaml",
            "--rounds",
            "2",
            "--students",
            "cnn",
            "resnet20",
            "--dropout",
            "0.1",
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "20",
            "--data.labeled_per_class",
            "2",
            "--data.batch_size",
            "8",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.enable_model_summary",
            "false",
            "--trainer.logger.save_dir",
            str(logs),
        ],
        cwd=tmp_path,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = logs / "cnn_cifar"
    assert not (tmp_path / "lightning_logs").exists()  # the short spelling of save_dir moves the rounds too
    assert sorted(p.name for p in runs.iterdir()) == ["round_0", "round_1", "round_2"]
    records = {n: json.loads((runs / f"round_{n}" / "selftrain.json").read_text()) for n in range(3)}
    assert len({r["session"] for r in records.values()}) == 1
    assert records[0]["role"] == "teacher" and records[0]["teacher"] is None
    # The second student's teacher is the first student, whose own checkpoint labelled its images.
    assert records[2]["teacher"] == "cnn_cifar/round_1"
    labels = torch.load(runs / "round_2" / "pseudo_labels.pt", weights_only=True)
    assert labels["teacher"] == str(logs / "cnn_cifar" / "round_1" / "checkpoints" / "best.ckpt")
    assert labels["probabilities"].shape == (60, 10) and records[2]["pseudo_labels"]["kept"] == 60
    student = torch.load(runs / "round_2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert student["hyper_parameters"]["backbone"] == "resnet20"
    assert student["hyper_parameters"]["backbone_kwargs"] == {"dropout": 0.1}
    assert student["datamodule_hyper_parameters"]["pseudo_labels"].endswith("round_2/pseudo_labels.pt")
    assert "pseudo_labels" in datamodule_args(student)["init_args"]
    assert (
        "pseudo_labels" not in datamodule_args(student, leave_out=TRAINING_SET_OPTIONS)["init_args"]
    )  # evaluation reads the test set alone
    config = (runs / "round_2" / "config.yaml").read_text()
    assert "zoo_lightning.data.RandAugmentPipeline" in config
    assert (
        torch.load(runs / "round_1" / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]["backbone"]
        == "cnn"
    )
    report = run_cli(["report", str(logs), "--out", str(tmp_path / "report")], cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    section = report.stdout.split("## Self-training", 1)[1]
    rows = [line for line in section.splitlines() if "| cnn_cifar/round_" in line]
    assert [row.split(" | ")[1] for row in rows] == ["0", "1", "2"]
    assert "| cnn_cifar/round_1 | 60 of 60 (soft, >= 0.0) |" in rows[2]


def test_student_arguments_carry_the_labels_and_the_noise(tmp_path):
    args = _parser().parse_args(
        [
            "--config",
            "x.yaml",
            "--hard",
            "--threshold",
            "0.7",
            "--dropout",
            "0.3",
            "--student_args",
            "--trainer.max_epochs 5",
        ]
    )
    extra = student_arguments(args, "resnet32", tmp_path / "labels.pt")
    assert extra[:2] == ["--model.backbone", "resnet32"]
    joined = " ".join(extra)
    assert f"--data.pseudo_labels {tmp_path / 'labels.pt'} --data.pseudo_label_mode hard" in joined
    assert "--data.pseudo_label_threshold 0.7" in joined and "--data.pipeline.init_args.magnitude 9" in joined
    assert '--model.backbone_kwargs {"dropout": 0.3}' in joined and extra[-2:] == ["--trainer.max_epochs", "5"]
    quiet = student_arguments(argparse.Namespace(**{**vars(args), "num_ops": 0, "dropout": None}), None, tmp_path)
    assert "RandAugmentPipeline" not in quiet and "--model.backbone" not in quiet
