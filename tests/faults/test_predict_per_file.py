"""predict reads one file at a time: a bad or huge image is skipped with a warning, any class count
writes its CSV, and predict says what it needs."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from tests.faults.cases import Case
from tests.faults.conftest import check_case, run_main


def _predict(w, folder: str, *extra: str) -> list[str]:
    return [
        "predict",
        *extra,
        "--data.predict_dir",
        str(w / folder),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(w / "runs"),
    ]


CASES = [
    Case("`predict` without --ckpt_path", lambda w: _predict(w, "photos"), "predict needs trained weights"),
    Case(
        "`predict` on a folder with no image in it",
        lambda w: _predict(w, "photos", "--ckpt_path", str(w.ckpt)),
        "No readable image",
    ),
    Case(
        "`predict` on a folder that does not exist",
        lambda w: _predict(w, "nowhere", "--ckpt_path", str(w.ckpt)),
        "is not a folder",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    check_case(case, world, capsys, monkeypatch)


def _rows(folder) -> list[dict[str, str]]:
    """The rows of the newest prediction filed under ``folder`` (a run, or the logs of checkpoints from no run)."""
    newest = max(folder.rglob("evaluations/predict_*/predictions.csv"), key=lambda p: p.stat().st_mtime_ns)
    return list(csv.DictReader(open(newest)))


def test_a_huge_image_is_skipped_with_a_warning_and_the_others_predicted(world, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(photos / "big.png")
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(photos / "small.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # Pillow's bomb guard: 40x40 counts as a bomb now
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match="big.png"):
        code, err = run_main(
            [
                "predict",
                "--ckpt_path",
                str(world.ckpt),
                "--data.predict_dir",
                str(photos),
                "--trainer.enable_progress_bar",
                "false",
            ],
            capsys,
        )
    assert code == 0, err[-2000:]
    assert [r["path"].rsplit("/", 1)[1] for r in _rows(world.ckpt.parent.parent)] == ["small.png"]


def test_a_checkpoint_of_three_classes_writes_three_class_names(world, tmp_path, capsys, monkeypatch):
    checkpoint = torch.load(world.ckpt, weights_only=True)
    checkpoint["hyper_parameters"]["num_classes"] = 3
    for key in [k for k in checkpoint["state_dict"] if k.startswith("backbone.classifier")]:
        checkpoint["state_dict"][key] = checkpoint["state_dict"][key][:3]
    state = checkpoint["CIFAR10DataModule"]
    state["class_names"] = ["cat", "dog", "fox"]
    path = tmp_path / "three.ckpt"
    torch.save(checkpoint, path)
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(photos / "a.png")
    monkeypatch.chdir(tmp_path)
    code, err = run_main(
        [
            "predict",
            "--ckpt_path",
            str(path),
            "--data.predict_dir",
            str(photos),
            "--trainer.enable_progress_bar",
            "false",
        ],
        capsys,
    )
    assert code == 0, err[-2000:]
    (row,) = _rows(tmp_path / "lightning_logs")  # a checkpoint from no run: its evaluations go to its experiment
    assert sorted(row["top5_classes"].split()) == ["cat", "dog", "fox"] and row["top1_class"] in ("cat", "dog", "fox")
