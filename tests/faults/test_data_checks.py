"""Data checked when it is read, not mid-training: wrong arrays and labels are refused with what was found,
every image mode decodes as it looks, symlinked class folders are read, hidden files are skipped."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from tests.conftest import CLASSES, write_image_folder, write_stl10_release
from tests.faults.cases import Case
from tests.faults.conftest import check_case, fit
from zoo_lightning.data import CIFAR10DataModule, STL10DataModule


def _stl10(w, name: str, fold_file: str) -> str:
    root = w / name
    if not root.is_dir():
        write_stl10_release(root)
        (root / "stl10_binary" / "fold_indices.txt").write_text(fold_file)
    return str(root)


def _folders(w, *extra: str, data: str) -> list[str]:
    return fit(w, "--data", "zoo_lightning.data.FolderDataModule", "--data.image_size", "32", *extra, data=data)


def _one_class(w) -> str:
    if not (w / "one_class").is_dir():
        write_image_folder(w / "one_class", per_class=2, classes=["only"])
    return "one_class"


def _pseudo_labels(w, rows: int) -> str:
    import torch

    path = w / f"pseudo_{rows}.pt"
    torch.save({"probabilities": torch.full((rows, 10), 0.1), "class_names": CLASSES, "digest": "?"}, path)
    return str(path)


def _stl_fit(w, data_dir: str, fold: int = 0) -> list[str]:
    return [
        "fit",
        "--config",
        "resnet18_stl10.yaml",
        "--model.backbone",
        "cnn",
        "--data.data_dir",
        data_dir,
        "--data.init_args.fold",
        str(fold),
        "--data.val_size",
        "2",
        "--data.batch_size",
        "2",
        "--trainer.max_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(w / "runs"),
    ]


CASES = [
    Case(
        "a label 10 in a CIFAR-10 batch file",
        lambda w: fit(w, data="label10"),
        "data_batch_1: label 10 is no class of CIFAR-10; labels must be the class indices 0..9",
    ),
    Case(
        "a label -1 in a CIFAR-10 batch file",
        lambda w: fit(w, data="label-1"),
        "data_batch_1: label -1 is no class of CIFAR-10",
    ),
    Case(
        "float pixels in a CIFAR-10 batch file",
        lambda w: fit(w, data="float"),
        "the pixels are float32; the CIFAR-10 release stores uint8 bytes",
    ),
    Case(
        "int16 pixels in a CIFAR-10 batch file",
        lambda w: fit(w, data="int16"),
        "the pixels are int16; the CIFAR-10 release stores uint8 bytes",
    ),
    Case(
        "an image folder with another number of classes than CIFAR-10's",
        lambda w: fit(w, data="three"),
        "has 3 class folders (a, b, c); CIFAR-10 has 10",
    ),
    Case("an image file that cannot be read", lambda w: fit(w, "--data.val_size", "1", data="folder"), "broken.png"),
    Case(
        "no dataset, and `--data.download false`",
        lambda w: fit(w, "--data.download", "false", data="empty"),
        "No CIFAR-10 under",
    ),
    Case(
        "an STL-10 fold that names images the release does not have",
        lambda w: _stl_fit(w, _stl10(w, "stl_fold", "0 1 99999\n" * 10)),
        "fold 0 names image 99999, but train_X.bin has images 0..19",
    ),
    Case(
        "an STL-10 fold file that is not numbers",
        lambda w: _stl_fit(w, _stl10(w, "stl_text", "0 1 two\n" * 10)),
        "fold_indices.txt, line 1: not whitespace-separated image indices",
    ),
    Case("an STL-10 fold index outside 0..9", lambda w: _stl_fit(w, str(w / "stl"), fold=10), "fold"),
    Case(
        "your own images (FolderDataModule) without a train/ folder",
        lambda w: _folders(w, data="empty"),
        "train/ folder: put your images as",
    ),
    Case(
        "your own images in one class folder",
        lambda w: _folders(w, data=_one_class(w)),
        "needs at least two class folders",
    ),
    Case("one of your own images that cannot be read", lambda w: _folders(w, data="folder"), "broken.png"),
    Case(
        "more labeled images per class than a CIFAR-10 class has",
        lambda w: fit(w, "--data.labeled_per_class", "50"),
        "training images (after the validation split); use --data.labeled_per_class",
    ),
    Case(
        "CIFAR-10's unlabeled stream without labeled_per_class",
        lambda w: fit(w, "--data.unlabeled", "true"),
        "--data.unlabeled true needs --data.labeled_per_class N",
    ),
    Case(
        "a pseudo-label file that does not exist",
        lambda w: fit(w, "--data.labeled_per_class", "2", "--data.pseudo_labels", str(w / "gone.pt")),
        "selftrain",
    ),
    Case(
        "pseudo-labels made for other unlabeled images",
        lambda w: fit(w, "--data.labeled_per_class", "2", "--data.pseudo_labels", _pseudo_labels(w, 7)),
        "were made for 7 other unlabeled images than these 60",
    ),
    Case("an unknown pseudo-label mode", lambda w: fit(w, "--data.pseudo_label_mode", "fuzzy"), "'soft', 'hard'"),
    Case(
        "a pseudo-label threshold of 1 (no probability is above it)",
        lambda w: fit(w, "--data.pseudo_label_threshold", "1"),
        "'1' is not in [0, 1)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    check_case(case, world, capsys, monkeypatch)


def test_16_bit_and_float_images_decode_to_what_they_show(tmp_path):
    from zoo_lightning.data.folder import decode_rgb

    ramp = (np.arange(32 * 32, dtype=np.uint32).reshape(32, 32) * 64).astype(np.uint16)  # 0..65472
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as image:
        assert image.mode.startswith("I")  # what Pillow opens a 16-bit PNG as
    pixels = np.asarray(decode_rgb(tmp_path / "deep.png"))
    expected = np.round(ramp / 257.0).astype(np.uint8)
    assert pixels.shape == (32, 32, 3) and np.array_equal(pixels[..., 0], expected)  # not all white
    assert pixels.max() > 250 and pixels.min() == 0
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32), mode="F").save(tmp_path / "half.tiff")
    assert np.asarray(decode_rgb(tmp_path / "half.tiff")).max() == 128


def test_a_symlinked_class_folder_is_read_and_hidden_files_are_skipped(tmp_path):
    written = write_image_folder(tmp_path / "elsewhere", per_class=2)
    root = tmp_path / "set"
    (root / "train").mkdir(parents=True)
    for name in CLASSES:
        os.symlink(tmp_path / "elsewhere" / "train" / name, root / "train" / name)
    os.symlink(tmp_path / "elsewhere" / "test", root / "test")
    (root / "train" / "cat" / "._0000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS metadata
    (root / "train" / ".DS_Store").write_bytes(b"Bud1")
    (root / "train" / ".hidden_class").mkdir()
    data = CIFAR10DataModule(data_dir=str(tmp_path / "set"), val_size=0, batch_size=4, download=False)
    data.prepare_data()
    data.setup("fit")
    images, labels = data.train_set.images, data.train_set.labels
    assert np.bincount(labels.numpy(), minlength=10).tolist() == [2] * 10  # every linked class, its 2 images
    assert data.class_names == CLASSES
    assert np.array_equal(images[0].numpy().transpose(1, 2, 0), written["train"][0][1])


def test_an_unlabeled_stream_shorter_than_the_labeled_one_is_cycled(tmp_path):
    write_stl10_release(tmp_path, train=20, unlabeled=6)
    data = STL10DataModule(data_dir=str(tmp_path), unlabeled=True, val_size=4, batch_size=4, download=False)
    data.prepare_data()
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert len(batches) == 16 // 4  # an epoch is one pass over the labeled images
    assert all(b.unlabeled.shape == (4, 3, 96, 96) for b in batches)
