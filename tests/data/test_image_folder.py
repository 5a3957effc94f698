"""FolderDataModule: your own class folders, any number of classes and any image sizes, stored once with a margin
(tests/data/test_store.py covers the store itself); evaluation sees a photo as predict does; its checkpoints predict
and export without the folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import check_option_type, set_up
from zoo_lightning.data import FolderDataModule


def _write(root: Path, split: str, classes: list[str], per_class: int, seed: int = 0) -> list[tuple[Path, str]]:
    """Images of mixed sizes, modes and formats: wide and tall RGB JPEGs, gray PNGs, RGBA PNGs."""
    rng = np.random.default_rng(seed)
    written = []
    for c, name in enumerate(classes):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = [(20, 36), (50, 24), (17, 17), (64, 40)][(c + i) % 4]
            kind = (c + i) % 3
            if kind == 0:
                path = root / split / name / f"{i:03d}.jpg"
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            elif kind == 1:
                path = root / split / name / f"{i:03d}.png"
                Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(path)
            else:
                path = root / split / name / f"{i:03d}.png"
                Image.fromarray(rng.integers(0, 256, (h, w, 4), dtype=np.uint8), mode="RGBA").save(path)
            written.append((path, name))
    return written


@pytest.mark.parametrize("count", [3, 37])
def test_any_number_of_classes_and_image_sizes(tmp_path, count):
    classes = [f"class_{i:02d}" for i in range(count)][::-1]  # written in reverse: labels follow sorted names
    _write(tmp_path, "train", classes, per_class=4)
    _write(tmp_path, "test", classes, per_class=1, seed=1)
    data = FolderDataModule(data_dir=str(tmp_path), image_size=16, batch_size=4)
    # Known at construction, before anything is read: the CLI links it to the model from here.
    assert data.num_classes == count and data.class_names == sorted(classes)
    assert data.hparams.val_size == 4 * count // 10  # a tenth of train/ by default
    data.prepare_data()
    data.setup("fit")
    images, labels = data.train_set.all_images(), data.train_set.labels
    val_images, val_labels = data.val_set.all_images(), data.val_set.labels
    # Stored with a margin of 15%: round(1.15 * 16) = 18 pixels, out of which the device crops 16.
    assert images.dtype == torch.uint8 and images.shape[1:] == val_images.shape[1:] == (3, 18, 18)
    assert len(labels) + len(val_labels) == 4 * count
    assert torch.bincount(torch.cat([labels, val_labels]), minlength=count).tolist() == [4] * count
    assert data.test_set.images.shape == (count, 3, 18, 18)
    batch = data.on_after_batch_transfer(next(iter(data.val_dataloader())), 0)
    assert batch[0].dtype == torch.float32 and batch[0].shape[1:] == (3, 16, 16)
    assert data.state_dict()["class_names"] == sorted(classes)


def test_evaluation_sees_a_stored_image_as_predict_sees_its_file(tmp_path):
    from zoo_lightning.data.folder import load_folder, read_resized

    written = _write(tmp_path, "train", ["a", "b"], per_class=3)
    _write(tmp_path, "test", ["a", "b"], per_class=2, seed=4)
    data = set_up(FolderDataModule, tmp_path, image_size=12, val_size=0, batch_size=2)
    images, labels = data.train_set.all_images(), data.train_set.labels
    for i, (path, name) in enumerate(sorted(written)):  # shorter side to round(1.15 * 12) = 14, centre square
        assert np.array_equal(images[i].numpy(), read_resized(path, 14)) and labels[i] == ["a", "b"].index(name)
    # A test image through the pipeline (its centre 12 of 14) is what predict makes of the same file.
    test_images = data.test_set.all_images()
    evaluated = data.on_after_batch_transfer((test_images, data.test_set.labels), 0)[0]
    predicted = load_folder(tmp_path / "test", 12, resized=14)[0]
    torch.testing.assert_close(evaluated, data.pipeline(predicted)[0], rtol=0, atol=0)
    assert torch.equal(test_images[:, :, 1:13, 1:13], predicted)


def test_the_split_is_seeded_and_a_val_folder_is_the_validation_set(tmp_path):
    _write(tmp_path / "one", "train", ["a", "b", "c"], per_class=10)
    first = set_up(FolderDataModule, tmp_path / "one", image_size=8, val_size=6, batch_size=4)
    again = set_up(FolderDataModule, tmp_path / "one", image_size=8, val_size=6, batch_size=4)
    other = set_up(FolderDataModule, tmp_path / "one", image_size=8, val_size=6, batch_size=4, split_seed=1)
    assert torch.equal(first.val_set.all_images(), again.val_set.all_images())
    assert not torch.equal(first.val_set.all_images(), other.val_set.all_images())
    root = tmp_path / "two"
    _write(root, "train", ["a", "b"], per_class=5)
    _write(root, "val", ["a", "b"], per_class=2, seed=3)
    data = FolderDataModule(data_dir=str(root), image_size=8, batch_size=2)
    assert data.hparams.val_size == 4  # counted from val/
    data.prepare_data()
    data.setup("fit")
    assert len(data.train_set.labels) == 10 and len(data.val_set.labels) == 4
    with pytest.raises(ValueError, match=r"val is the validation set \(4 images\): leave --data.val_size out"):
        set_up(FolderDataModule, root, image_size=8, val_size=3, batch_size=2)
    with pytest.raises(ValueError, match="has no test/ folder"):
        data.test_dataloader()


def test_given_class_names_build_it_without_touching_the_disk(tmp_path):
    data = FolderDataModule(
        data_dir=str(tmp_path / "not-here"), image_size=32, class_names=["cat", "dog", "owl"], val_size=5
    )
    assert data.num_classes == 3 and data.class_names == ["cat", "dog", "owl"]
    assert not (tmp_path / "not-here").exists()


def test_unlabeled_images_are_read_from_their_folder(tmp_path):
    _write(tmp_path, "train", ["a", "b"], per_class=2)
    (tmp_path / "unlabeled").mkdir()
    for i in range(5):
        Image.fromarray(np.full((30, 20 + i, 3), i, np.uint8)).save(tmp_path / "unlabeled" / f"{i}.png")
    data = set_up(FolderDataModule, tmp_path, image_size=8, val_size=0, batch_size=2, unlabeled=True)
    assert data.unlabeled_images().shape == (5, 3, 9, 9)  # stored like the labeled images, at round(1.15 * 8)
    batch = next(iter(data.train_dataloader()))
    assert batch.unlabeled.shape == (2, 3, 9, 9)


@pytest.mark.parametrize(
    "option, bad, good, expected",
    [
        ("image_size", "4", "96", 96),
        ("val_size", "-1", "0", 0),
    ],
)
def test_the_parser_checks_each_option_against_its_type(option, bad, good, expected):
    check_option_type(FolderDataModule, option, bad, good, expected)


def test_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No .*train/ folder: put your images as"):
        FolderDataModule(data_dir=str(tmp_path))
    _write(tmp_path, "train", ["only"], per_class=2)
    with pytest.raises(ValueError, match="needs at least two class folders.*found only 'only'"):
        FolderDataModule(data_dir=str(tmp_path))
    _write(tmp_path, "train", ["other"], per_class=2)
    (tmp_path / "train" / "other" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken.jpg"):
        set_up(FolderDataModule, tmp_path, image_size=8, val_size=0, batch_size=2)
    (tmp_path / "train" / "other" / "broken.jpg").unlink()
    with pytest.raises(ValueError, match="has no unlabeled images: put images without labels in its unlabeled/"):
        FolderDataModule(data_dir=str(tmp_path), image_size=8).unlabeled_images()


def test_an_empty_class_folder_is_refused_and_an_empty_unlabeled_folder_is_no_mistake_for_a_plain_fit(tmp_path):
    _write(tmp_path, "train", ["cat", "dog"], per_class=4)
    (tmp_path / "unlabeled").mkdir()  # empty: a fit that never reads it trains all the same
    data = set_up(FolderDataModule, tmp_path, image_size=8, val_size=2, batch_size=2)
    assert len(data.train_set) + len(data.val_set) == 8
    with pytest.raises(ValueError, match="has no unlabeled images"):
        data.unlabeled_images()
    (tmp_path / "train" / "fox").mkdir()  # a third class, with no image
    with pytest.raises(ValueError, match=r"train/fox/ holds no image \(classes without training images: fox\)"):
        set_up(FolderDataModule, tmp_path, image_size=8, val_size=2, batch_size=2)


def test_its_checkpoints_predict_and_export_without_the_folders(tmp_path, monkeypatch, capsys):
    from zoo_lightning.cli import main

    root = tmp_path / "mine"
    _write(root, "train", ["apple", "pear", "plum"], per_class=6)
    _write(root, "test", ["apple", "pear", "plum"], per_class=2, seed=5)
    main(
        [
            "fit",
            "--model.backbone",
            "cnn",
            "--data",
            "zoo_lightning.data.FolderDataModule",
            "--data.data_dir",
            str(root),
            "--data.image_size",
            "24",
            "--data.batch_size",
            "4",
            "--trainer.max_epochs",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "logs"),
        ]
    )
    checkpoint = next((tmp_path / "logs").rglob("best.ckpt"))
    state = torch.load(checkpoint, weights_only=True)["FolderDataModule"]
    assert state["class_names"] == ["apple", "pear", "plum"] and state["image_size"] == 24
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(np.zeros((100, 60, 3), np.uint8)).save(photos / "tall.jpg")
    root.rename(tmp_path / "moved")  # predict and export need only the checkpoint
    monkeypatch.chdir(tmp_path)
    main(
        [
            "predict",
            "--ckpt_path",
            str(checkpoint),
            "--data.predict_dir",
            str(photos),
            "--trainer.enable_progress_bar",
            "false",
        ]
    )
    rows = next(tmp_path.rglob("predictions.csv")).read_text().splitlines()
    assert rows[0].startswith("path,top1_class") and rows[1].split(",")[1] in ("apple", "pear", "plum")
    main(["export", "--ckpt_path", str(checkpoint)])
    exported = torch.export.load(str(checkpoint.with_suffix(".pt2"))).module()  # the default format
    assert exported(torch.zeros(1, 3, 24, 24, dtype=torch.uint8)).shape == (1, 3)
