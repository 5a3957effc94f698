"""Folders of image files, read the same way for training and for prediction.

A release such as CIFAR-10 is a labeled tree ``<split>/<class>/<image files>`` whose images all have the
dataset's size (:func:`read_class_tree`); your own photos are resized and center-cropped once into a store
(:mod:`zoo_lightning.data.store`, file by file with :func:`read_resized`), and prediction reads any folder of images
of any size and format the same way (:func:`load_folder`). All decode a file with :func:`decode_rgb`, so grayscale,
palette and RGBA files become RGB alike.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from zoo_lightning.progress import tracked

__all__ = [
    "IMAGE_SUFFIXES",
    "hidden",
    "image_files",
    "decode_rgb",
    "labeled_files",
    "read_class_tree",
    "resize_center_crop",
    "read_resized",
    "load_folder",
    "warn_skipped",
]

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def hidden(name: str) -> bool:
    """Dot files: macOS's ``._photo.jpg`` and ``.DS_Store``, editors' backups; never images of the set."""
    return name.startswith(".")


def image_files(folder: Path, suffixes: set[str] | None = IMAGE_SUFFIXES) -> list[Path]:
    """Files with an image suffix (any file, for ``suffixes=None``) under ``folder``, hidden ones left out,
    sorted by path components (class folders in name order).

    Symbolic links to folders are followed, each real folder once, so a class folder that links to
    images elsewhere is read like any other.
    """
    found: list[str] = []
    seen: set[str] = set()
    for parent, folders, names in os.walk(folder, followlinks=True):  # faster than Path.rglob on 60k files
        real = os.path.realpath(parent)
        if real in seen:  # a link back up the tree
            folders[:] = []
            continue
        seen.add(real)
        folders[:] = [f for f in folders if not hidden(f)]
        found.extend(
            os.path.join(parent, n)
            for n in names
            if not hidden(n) and (suffixes is None or os.path.splitext(n)[1].lower() in suffixes)
        )
    return [Path(p) for p in sorted(found, key=lambda p: p.split(os.sep))]


def _to_8_bit(image: Image.Image) -> Image.Image:
    """16-bit and 32-bit images scaled to 0..255; Pillow's own conversion clips them (all white)."""
    pixels = np.asarray(image)
    if image.mode.startswith("I;16"):
        top = 65535.0
    elif image.mode == "I":  # 16-bit PNGs open as 32-bit integers
        top = 65535.0 if pixels.max(initial=0) > 255 else 255.0
    else:  # "F": floats, in [0, 1] or in [0, 255]
        top = 1.0 if pixels.max(initial=0) <= 1.0 else 255.0
    scaled = np.clip(pixels.astype(np.float64) * (255.0 / top), 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def decode_rgb(path: Path, min_side: int | None = None) -> Image.Image:
    """The decoded RGB image in ``path``, whatever its mode; ValueError naming the file when it cannot be read.

    With ``min_side``, a JPEG is decoded at the smallest of its DCT scales (1/2, 1/4, 1/8) whose shorter side still
    reaches ``min_side`` (Pillow's ``draft``): a photo several times the training size decodes several times faster,
    and is resized from there.
    """
    try:
        with Image.open(path) as image:
            if min_side is not None and min(image.size) > 2 * min_side:
                scale = min_side / min(image.size)
                image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
            if image.mode.startswith("I") or image.mode == "F":
                image = _to_8_bit(image)
            return image.convert("RGB")  # decodes now, so a truncated file fails here, not later
    except Exception as error:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise ValueError(f"Cannot read image {path}: {error}. Remove or replace the file.") from None


def labeled_files(folder: Path, classes: Sequence[str]) -> tuple[list[Path], np.ndarray]:
    """The image files of ``folder/<class>/*`` and their int64 labels, the indices of their folders in ``classes``.

    Raises:
        ValueError: no image file at all, or one in a folder that is not one of ``classes``.
    """
    index = {name: i for i, name in enumerate(classes)}
    files = image_files(folder)
    if not files:
        raise ValueError(f"No image files ({', '.join(sorted(IMAGE_SUFFIXES))}) under {folder}/<class>/.")
    labels = np.empty(len(files), dtype=np.int64)
    for i, path in enumerate(files):
        class_name = path.relative_to(folder).parts[0]
        if class_name not in index:
            raise ValueError(f"{path}: class folder {class_name!r} is not one of the train classes {list(classes)}.")
        labels[i] = index[class_name]
    return files, labels


def read_class_tree(
    folder: Path, size: int, classes: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The images of ``folder/<class>/*``, each ``size`` x ``size`` (a release such as CIFAR-10), as uint8
    (N, 3, size, size), with their int64 labels and the classes.

    Args:
        folder: holds one subfolder per class.
        size: the side every image must have.
        classes: the class names that give the labels, e.g. those of the train split when reading
            the test split; None takes the sorted subfolder names of ``folder``.
    """
    folder = Path(folder)
    if classes is None:
        classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not hidden(p.name))
        if not classes:
            raise ValueError(f"{folder} has no class folders: expected {folder.name}/<class>/<image files>.")
    classes = list(classes)
    files, labels = labeled_files(folder, classes)
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    for i, path in enumerate(tracked(files, f"Decoding {folder}", len(files))):
        pixels = np.asarray(decode_rgb(path))
        if pixels.shape[:2] != (size, size):
            raise ValueError(
                f"{path} is {pixels.shape[1]}x{pixels.shape[0]}; the images of this dataset are {size}x{size}."
            )
        images[i] = pixels.transpose(2, 0, 1)
    return images, labels, classes


def resize_center_crop(image: Image.Image, size: int) -> np.ndarray:
    """The central square of ``image`` resized to ``size`` x ``size``: shorter side to ``size``, then the centre, as
    torchvision's evaluation transform, in one resize of that square alone (faster than resizing the whole image).

    Returns (size, size, 3) uint8 pixels.
    """
    image = image.convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) / 2, (image.height - side) / 2
    box = (left, top, left + side, top + side)
    return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))


def read_resized(path: Path, size: int) -> np.ndarray:
    """The image file ``path`` decoded, and its central square resized to ``size``, as uint8 (3, size, size): how
    training stores a photo (:func:`resize_center_crop`)."""
    return resize_center_crop(decode_rgb(path, size), size).transpose(2, 0, 1)


def load_folder(folder: str | Path, size: int, resized: int | None = None) -> tuple[Tensor, list[Path]]:
    """Every readable image under ``folder`` as uint8 (N, 3, size, size), with their paths.

    Each is stored as training stores it (:func:`read_resized` at ``resized``, None: ``size``), and its central
    ``size`` square kept, as evaluation crops a stored image. Every file is tried, whatever its suffix; the ones
    Pillow cannot read are skipped with one warning that lists them. No readable image at all is an error.
    """
    stored = resized or size
    top = (stored - size) // 2  # as CenterCrop on the device
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"predict_dir {str(root)!r} is not a folder.")
    images, paths, skipped = [], [], []
    files = image_files(root, suffixes=None)
    for path in tracked(files, f"Reading {root}", len(files)):
        try:
            images.append(read_resized(path, stored)[:, top : top + size, top : top + size])
        except ValueError:
            skipped.append(path)
            continue
        paths.append(path)
    if skipped:
        warn_skipped(skipped)
    if not images:
        raise ValueError(f"No readable image under {str(root)!r}: put .jpg/.png/... files there.")
    return torch.from_numpy(np.stack(images)), paths


def warn_skipped(skipped: Sequence[Path]) -> None:
    """One warning that lists the files skipped because they are not readable images."""
    warnings.warn(
        f"Skipped {len(skipped)} file(s) that are not readable images: " + ", ".join(str(p) for p in skipped),
        stacklevel=3,
    )
