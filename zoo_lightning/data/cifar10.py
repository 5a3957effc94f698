"""CIFAR-10 (Krizhevsky, 2009): the official python release or an image-folder tree.

``data_dir`` (or a folder one level below it) holds either ``cifar-10-batches-py/`` with the pickled
``data_batch_1..5``, ``test_batch`` and ``batches.meta``, or ``train/<class>/*`` and
``test/<class>/*`` image files. Either is decoded once into uint8 arrays, cached under
``<root>/.zoo_cache/`` and rebuilt when the source files change or the cache is unreadable.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from zoo_lightning.data.base import CACHE_DIR, ImageDataModule, Splits, atomic_write, fingerprint

__all__ = ["CIFAR10DataModule"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e9a4b55"
RELEASE = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
RELEASE_FILES = [*TRAIN_BATCHES, "test_batch", "batches.meta"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"}


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def read_python_release(folder: Path) -> Splits:
    """The pickled batches: rows of 3072 bytes, the R, G and B planes of a 32x32 image in turn."""

    def batch(names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        parts = [_unpickle(folder / name) for name in names]
        images = np.concatenate([np.asarray(p[b"data"], dtype=np.uint8) for p in parts]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(p[b"labels"], dtype=np.int64) for p in parts])
        return images, labels

    meta = _unpickle(folder / "batches.meta")
    names = [n.decode() if isinstance(n, bytes) else n for n in meta[b"label_names"]]
    return Splits(*batch(TRAIN_BATCHES), *batch(["test_batch"]), class_names=names)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_image_folder(root: Path, size: int = 32) -> Splits:
    """``train/<class>/*`` and ``test/<class>/*``; labels follow the sorted class folder names."""
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    index = {name: i for i, name in enumerate(classes)}

    def read(split: str) -> tuple[np.ndarray, np.ndarray]:
        files = _image_files(root / split)
        images = np.empty((len(files), 3, size, size), dtype=np.uint8)
        labels = np.empty(len(files), dtype=np.int64)
        for i, path in enumerate(files):
            class_name = path.relative_to(root / split).parts[0]
            if class_name not in index:
                raise ValueError(f"{path}: class folder {class_name!r} is not one of the train classes {classes}.")
            try:
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
            except OSError as error:
                raise ValueError(f"Cannot read image {path}: {error}. Remove or replace the file.") from None
            if pixels.shape[:2] != (size, size):
                raise ValueError(f"{path} is {pixels.shape[1]}x{pixels.shape[0]}; CIFAR-10 images are {size}x{size}.")
            images[i] = pixels.transpose(2, 0, 1)
            labels[i] = index[class_name]
        return images, labels

    return Splits(*read("train"), *read("test"), class_names=classes)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 50,000 train images split into train/val with a fixed seed, the official 10,000 test.

    Args:
        data_dir: holds ``cifar-10-batches-py/`` or ``train/`` + ``test/`` image folders, directly
            or in a subfolder (``data/cifar10-jpeg/train/...``).
        val_size: train images held out for validation (default 10,000: a 40k/10k split).
        **kwargs: see :class:`~zoo_lightning.data.base.ImageDataModule`.
    """

    num_classes = 10
    class_names = CLASSES
    native_size = 32
    default_val_size = 10000

    def _locate(self) -> tuple[str, Path] | None:
        """("python", folder) or ("folder", root) of the first layout found, or None."""
        for base in [self.data_dir, *sorted(p for p in self.data_dir.glob("*") if p.is_dir())]:
            if all((base / RELEASE / name).is_file() for name in RELEASE_FILES):
                return "python", base / RELEASE
            if (base / "train").is_dir() and (base / "test").is_dir():
                return "folder", base
        return None

    def _missing_error(self) -> FileNotFoundError:
        return FileNotFoundError(
            f"No CIFAR-10 under {str(self.data_dir)!r}. Put the official python release there as "
            f"{self.data_dir / RELEASE}/ ({', '.join(RELEASE_FILES)}), or an image folder as "
            f"{self.data_dir}/<name>/train/<class>/*.png and .../test/<class>/*, "
            "or pass --data.download true to fetch the official archive (about 163 MB)."
        )

    def prepare_data(self) -> None:
        if self._locate() is not None:
            return
        if not self.hparams.download:
            raise self._missing_error()
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(URL, download_root=str(self.data_dir), md5=MD5)

    def source_files(self) -> list[Path]:
        found = self._locate()
        if found is None:
            raise self._missing_error()
        layout, folder = found
        return [folder / name for name in RELEASE_FILES] if layout == "python" else _image_files(folder)

    def load_splits(self) -> Splits:
        found = self._locate()
        if found is None:
            raise self._missing_error()
        layout, folder = found
        key = fingerprint(self.source_files())
        cache = folder.parent / CACHE_DIR / f"cifar10_{layout}_{folder.name}.npz"
        try:
            with np.load(cache, allow_pickle=False) as stored:
                if str(stored["fingerprint"]) == key:
                    return Splits(stored["train_images"], stored["train_labels"], stored["test_images"],
                                  stored["test_labels"], class_names=list(stored["class_names"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # absent, truncated, foreign or stale: rebuild from the source
        splits = read_python_release(folder) if layout == "python" else read_image_folder(folder)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, fingerprint=key, train_images=splits.train_images, train_labels=splits.train_labels,
                         test_images=splits.test_images, test_labels=splits.test_labels,
                         class_names=np.asarray(splits.class_names))

        atomic_write(cache, write)
        return splits
