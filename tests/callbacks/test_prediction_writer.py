"""PredictionWriter: `predict` on a folder of one's own images writes the CSV the module's forward gives."""

import csv
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.cli import main
from zoo_lightning.data.folder import load_folder
from zoo_lightning.data.transforms import Normalize


def _photos(folder):
    rng = np.random.default_rng(0)
    folder.mkdir()
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(folder / "wide.png")
    Image.fromarray(rng.integers(0, 256, (50, 32, 3), dtype=np.uint8)).save(folder / "tall.jpg", quality=95)
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8), mode="L").save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 256, (64, 64, 4), dtype=np.uint8), mode="RGBA").save(folder / "alpha.png")
    (folder / "notes.txt").write_text("not an image")


def test_predict_on_a_folder_matches_the_modules_forward(trained_cnn, tmp_path, monkeypatch):
    root, ckpt = trained_cnn
    photos = tmp_path / "photos"
    _photos(photos)
    monkeypatch.chdir(tmp_path)
    shutil.move(root / "data", root / "data.away")  # prediction must not need the dataset
    try:
        with pytest.warns(UserWarning, match="notes.txt"):
            main(
                [
                    "predict",
                    "--ckpt_path",
                    str(ckpt),
                    "--data.predict_dir",
                    str(photos),
                    "--trainer.logger.init_args.save_dir",
                    str(tmp_path / "logs"),
                    "--trainer.enable_progress_bar",
                    "false",
                ]
            )
    finally:
        shutil.move(root / "data.away", root / "data")
    # Filed in the run of the checkpoint it used, beside that run's other evaluations.
    (csv_path,) = (ckpt.parent.parent / "evaluations").glob("predict_*/predictions.csv")
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["path"].rsplit("/", 1)[1] for r in rows] == ["alpha.png", "gray.png", "tall.jpg", "wide.png"]

    checkpoint = torch.load(ckpt, weights_only=True)
    data_state = checkpoint["CIFAR10DataModule"]
    model = ImageClassifier.load_from_checkpoint(ckpt).eval()
    images, _ = load_folder(photos, 32)
    x = Normalize(data_state["mean"], data_state["std"])(images)
    with torch.no_grad():
        probs = model(x).softmax(1)
    names = data_state["class_names"]
    for row, p in zip(rows, probs):
        assert row["top1_class"] == names[p.argmax()]
        assert float(row["top1_probability"]) == pytest.approx(p.max().item(), abs=1e-4)
        assert row["top5_classes"].split() == [names[i] for i in p.topk(5).indices]
