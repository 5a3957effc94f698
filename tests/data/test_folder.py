"""Image folders: listing, decoding, the labeled class tree of training, and prediction's load_folder."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo_lightning.data import CIFAR10DataModule
from zoo_lightning.data.folder import (
    IMAGE_SUFFIXES,
    decode_rgb,
    image_files,
    load_folder,
    read_class_tree,
    read_resized,
    resize_center_crop,
)


def _save(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode=mode).save(path)
    return path


def test_image_files_keep_image_suffixes_in_component_order(tmp_path: Path):
    pixels = np.zeros((2, 2, 3), dtype=np.uint8)
    for name in ("b/1.PNG", "a-b/0.jpg", "a/2.png", "a/10.bmp"):
        _save(tmp_path / name, pixels)
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    # By components: "a" before "a-b" (a plain string sort would put "a-b/..." before "a/...").
    assert [p.relative_to(tmp_path).as_posix() for p in image_files(tmp_path)] == [
        "a/10.bmp",
        "a/2.png",
        "a-b/0.jpg",
        "b/1.PNG",
    ]
    assert ".jpeg" in IMAGE_SUFFIXES and ".txt" not in IMAGE_SUFFIXES


def test_decode_rgb_turns_gray_and_rgba_into_rgb_and_names_bad_files(tmp_path: Path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = np.asarray(decode_rgb(_save(tmp_path / "gray.png", gray, mode="L")))
    assert out.shape == (3, 4, 3) and (out == gray[..., None]).all()
    rgba = np.full((2, 2, 4), 77, dtype=np.uint8)
    assert (np.asarray(decode_rgb(_save(tmp_path / "alpha.png", rgba, mode="RGBA"))) == 77).all()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot read image .*broken.png"):
        decode_rgb(tmp_path / "broken.png")


def test_read_class_tree_labels_by_sorted_class_folders(tmp_path: Path, image_folder_writer):
    written = image_folder_writer(tmp_path, per_class=2, classes=["cat", "ant"], size=8)
    images, labels, classes = read_class_tree(tmp_path / "train", 8)
    assert classes == ["ant", "cat"] and labels.tolist() == [0, 0, 1, 1]
    path, pixels = written["train"][0]  # the first file written is cat/0000.png: label 1, third in order
    assert path.parent.name == "cat" and np.array_equal(images[2], pixels.transpose(2, 0, 1))
    # Given classes (those of the train split) decide the labels of another split.
    _, test_labels, _ = read_class_tree(tmp_path / "test", 8, classes=["cat", "ant"])
    assert test_labels.tolist() == [1, 1, 0, 0]


def test_read_class_tree_errors_name_the_problem(tmp_path: Path, image_folder_writer):
    image_folder_writer(tmp_path, per_class=1, classes=["ant"], size=8)
    with pytest.raises(ValueError, match="'ant' is not one of the train classes"):
        read_class_tree(tmp_path / "train", 8, classes=["bee"])
    with pytest.raises(ValueError, match=r"0000.png is 8x8; the images of this dataset are 32x32"):
        read_class_tree(tmp_path / "train", 32)
    (tmp_path / "bare").mkdir()
    with pytest.raises(ValueError, match="has no class folders"):
        read_class_tree(tmp_path / "bare", 8)


def test_resize_then_center_crop():
    image = Image.fromarray(np.tile(np.arange(64, dtype=np.uint8), (32, 1)))  # 64 wide, 32 tall, ramp in x
    out = resize_center_crop(image, 16)
    assert out.shape == (16, 16, 3)
    assert out[0, 0, 0] > 10 and out[0, -1, 0] < 55  # the central half of the ramp, not its ends


def test_resize_center_crop_of_an_exact_size_image_is_the_image():
    pixels = np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8)
    assert np.array_equal(resize_center_crop(Image.fromarray(pixels), 12), pixels)


def test_prediction_keeps_the_centre_of_the_stored_image_as_evaluation_does(tmp_path: Path):
    pixels = np.random.default_rng(2).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    stored = resize_center_crop(Image.fromarray(pixels), 14)  # the central 20 x 20, resized to 14 x 14
    whole = np.asarray(Image.fromarray(pixels).resize((28, 14), Image.BILINEAR))  # the whole image, then its centre
    assert stored.shape == (14, 14, 3) and np.array_equal(stored, whole[:, 7:21])
    _save(tmp_path / "photo.png", pixels)
    images, _ = load_folder(tmp_path, 12, resized=14)  # stored at 14, then the centre 12 (offset 1)
    assert np.array_equal(images[0].numpy(), stored.transpose(2, 0, 1)[:, 1:13, 1:13])


def test_a_large_jpeg_is_decoded_at_a_reduced_scale_that_still_reaches_the_stored_side(tmp_path: Path):
    # A smooth 800 x 600 photo: JPEG's 1/4 scale (200 x 150) still covers a shorter side of 147, 1/8 would not.
    y, x = np.mgrid[0:600, 0:800]
    pixels = np.stack([x * 255 // 800, y * 255 // 600, (x + y) * 255 // 1400], axis=-1).astype(np.uint8)
    path = _save(tmp_path / "photo.jpg", pixels)
    assert decode_rgb(path, min_side=147).size == (200, 150)
    assert decode_rgb(path, min_side=400).size == (800, 600)  # less than half: decoded whole
    assert decode_rgb(path).size == (800, 600)
    fast, full = read_resized(path, 147), resize_center_crop(decode_rgb(path), 147).transpose(2, 0, 1)
    assert fast.shape == full.shape == (3, 147, 147)
    assert np.abs(fast.astype(int) - full.astype(int)).mean() < 2  # the same picture, within JPEG's noise


def test_load_folder_reads_any_size_and_skips_unreadable_files_with_one_warning(tmp_path: Path):
    rng = np.random.default_rng(0)
    square = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    _save(tmp_path / "sub" / "square.png", square)
    _save(tmp_path / "wide.jpg", rng.integers(0, 256, (20, 40, 3), dtype=np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match=r"Skipped 2 file\(s\)") as record:
        images, paths = load_folder(tmp_path, 16)
    assert len(record) == 1 and "notes.txt" in str(record[0].message) and "broken.png" in str(record[0].message)
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["sub/square.png", "wide.jpg"]
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 16, 16)
    assert torch.equal(images[0], torch.from_numpy(square).permute(2, 0, 1))  # already 16x16: untouched


def test_load_folder_without_readable_images_is_an_error(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No readable image"):
        load_folder(tmp_path / "empty", 32)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_folder(tmp_path / "nowhere", 32)
    (tmp_path / "empty" / "a.txt").write_text("text")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="No readable image"):
            load_folder(tmp_path / "empty", 32)


def test_predict_dataloader_batches_the_folder_with_indices_into_predict_paths(tmp_path: Path):
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png", "c.png"):
        _save(tmp_path / "photos" / name, rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    data = CIFAR10DataModule(
        data_dir=str(tmp_path / "no-dataset"), eval_batch_size=2, predict_dir=str(tmp_path / "photos")
    )
    batches = list(data.predict_dataloader())
    assert [x.shape for x, _ in batches] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert torch.cat([i for _, i in batches]).tolist() == [0, 1, 2]
    assert [p.name for p in data.predict_paths] == ["a.png", "b.png", "c.png"]
    with pytest.raises(ValueError, match="--data.predict_dir"):
        CIFAR10DataModule(data_dir=str(tmp_path)).predict_dataloader()
