"""FolderDataModule: your own images, one folder per class, any number of classes, any image sizes.

``data_dir`` holds::

    train/<class>/<image files>   the training images; the folder names are the classes
    val/<class>/...               optional: the validation images (else a seeded part of train/)
    test/<class>/...              optional: the test images
    unlabeled/...                 optional: images without labels (for selftrain's pseudo-labels)

Every image is decoded once (any format Pillow reads, grayscale and RGBA made RGB), its shorter
side resized to ``image_size`` and its centre cropped square, exactly as ``predict`` treats a
photo, and the uint8 arrays are cached in ``<data_dir>/.zoo_cache/`` until a file is added, removed
or changed. From there on it trains like CIFAR-10: batches in memory, augmented on the device.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from zoo_lightning.data.base import CACHE_DIR, ImageDataModule, Splits
from zoo_lightning.data.folder import hidden, image_files, load_folder, read_class_tree
from zoo_lightning.data.loader import BatchLoader, as_tensor
from zoo_lightning.files import read_array_cache, write_array_cache
from zoo_lightning.options import ImageSide, NonNegativeInt

__all__ = ["FolderDataModule", "class_folders"]

SPLITS = ("train", "val", "test", "unlabeled")


def class_folders(folder: Path) -> list[str]:
    """The sorted class folder names under ``folder`` (hidden ones left out), or a one-line error."""
    if not folder.is_dir():
        raise FileNotFoundError(
            f"No {folder}/ folder: put your images as {folder}/<class>/<image files>, one folder "
            "per class (or pass --data.data_dir the folder that holds train/)."
        )
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not hidden(p.name))
    if len(classes) < 2:
        found = f"only {classes[0]!r}" if classes else "none"
        raise ValueError(
            f"{folder} needs at least two class folders ({folder.name}/<class>/<image files>), found {found}."
        )
    return classes


class FolderDataModule(ImageDataModule):
    """Images in class folders, resized once at load and cached as uint8, then served like CIFAR-10.

    Args:
        data_dir: holds ``train/<class>/*`` and optionally ``val/``, ``test/`` and ``unlabeled/``.
        image_size: the side images are resized (shorter side) and center-cropped to at load, and
            the network's input size (224 for ImageNet weights).
        val_size: training images held out for validation, drawn with ``split_seed``; None takes a
            tenth of them. With a ``val/`` folder, that folder is the validation set (None counts its
            images; 0 turns validation off).
        **kwargs: the options of :class:`~zoo_lightning.data.base.ImageDataModule`. With ``class_names``
            (the CLI passes a checkpoint's for validate/test/predict) the disk is not read to build it.
    """

    def __init__(
        self,
        data_dir: str = "data",
        image_size: ImageSide = 224,
        val_size: NonNegativeInt | None = None,
        **kwargs: Any,
    ) -> None:
        root = Path(data_dir)
        given = kwargs.get("class_names")
        classes = [str(n) for n in given] if given else class_folders(root / "train")
        if val_size is None:
            val_size = 0 if given else self._default_val_size(root)
        self.native_size = image_size  # stored at this size: the device pipeline resizes nothing
        super().__init__(data_dir=data_dir, image_size=image_size, val_size=val_size, **kwargs)
        self.class_names, self.num_classes = classes, len(classes)
        self._val_count: int | None = None  # images in val/, once read; None without the folder
        self._unlabeled: Tensor | None = None

    @staticmethod
    def _default_val_size(root: Path) -> int:
        if (root / "val").is_dir():
            return len(image_files(root / "val"))
        return len(image_files(root / "train")) // 10

    # --- reading ---------------------------------------------------------------------------------------

    def find_or_download(self) -> None:
        class_folders(self.data_dir / "train")  # says what to put where; there is nothing to download

    def source_files(self) -> list[Path]:
        return [f for split in SPLITS if (self.data_dir / split).is_dir() for f in image_files(self.data_dir / split)]

    def load_splits(self) -> Splits:
        key = json.dumps({"source": self.source_fingerprint(), "size": self.image_size, "classes": self.class_names})
        cache = self.data_dir / CACHE_DIR / f"folder_{self.image_size}px.npz"
        arrays = read_array_cache(cache, key)
        if arrays is None:
            arrays = self._read_folders()
            write_array_cache(cache, key, arrays, "resized images")
        val_count = int(arrays["val_count"])
        self._val_count = None if val_count < 0 else val_count
        self._unlabeled = as_tensor(arrays["unlabeled"]) if len(arrays["unlabeled"]) else None
        return Splits(
            arrays["train_images"],
            arrays["train_labels"],
            arrays["test_images"],
            arrays["test_labels"],
            class_names=self.class_names,
        )

    def _read_folders(self) -> dict[str, np.ndarray]:
        """Every split decoded and resized; val/ is appended to train/ (``val_count`` says how many it holds)."""
        size, root = self.image_size, self.data_dir
        empty = (np.empty((0, 3, size, size), np.uint8), np.empty(0, np.int64))

        def read(split: str) -> tuple[np.ndarray, np.ndarray]:
            if not (root / split).is_dir():
                return empty
            images, labels, _ = read_class_tree(root / split, size, self.class_names, resize=True)
            return images, labels

        train, val, test = read("train"), read("val"), read("test")
        counts = np.bincount(train[1], minlength=len(self.class_names))
        if not counts.all():
            missing = [name for name, count in zip(self.class_names, counts) if count == 0]
            raise ValueError(
                f"{root / 'train'}/{missing[0]}/ holds no image (classes without training images: "
                f"{', '.join(missing)}): add images, or remove the empty class folders."
            )
        # Read when there are images: a plain fit never asks for them, and an empty folder is not a mistake for it.
        has_unlabeled = (root / "unlabeled").is_dir() and bool(image_files(root / "unlabeled", suffixes=None))
        unlabeled = load_folder(root / "unlabeled", size)[0].numpy() if has_unlabeled else empty[0]
        return {
            "train_images": np.concatenate([train[0], val[0]]),
            "train_labels": np.concatenate([train[1], val[1]]),
            "val_count": np.asarray(len(val[1]) if (root / "val").is_dir() else -1),
            "test_images": test[0],
            "test_labels": test[1],
            "unlabeled": unlabeled,
        }

    def split_train(self, splits: Splits) -> tuple[np.ndarray, np.ndarray]:
        """A seeded split of train/, or train/ and val/ as they are."""
        if self._val_count is None:
            return super().split_train(splits)
        n, asked = len(splits.train_labels), self.hparams["val_size"]
        if asked not in (0, self._val_count):
            raise ValueError(
                f"{self.data_dir / 'val'} is the validation set ({self._val_count} images): leave "
                "--data.val_size out (or 0 for no validation)."
            )
        first_val = n - self._val_count
        return np.arange(first_val), (np.arange(first_val, n) if asked else np.arange(0))

    def _split_key(self) -> dict[str, Any]:
        return {**super()._split_key(), "image_size": self.image_size, "val_folder": self._val_count}

    def unlabeled_images(self) -> Tensor:
        """``unlabeled/`` resized like the rest, uint8 (N, 3, image_size, image_size)."""
        if self.train_set is None:
            self._load()
        if self._unlabeled is None:
            raise ValueError(
                f"{self.data_dir} has no unlabeled images: put images without labels in its unlabeled/ folder."
            )
        return self._unlabeled

    # --- loaders ---------------------------------------------------------------------------------------

    def test_dataloader(self) -> BatchLoader:
        if not len(self._read_sets()[2]):
            raise ValueError(
                f"{self.data_dir} has no test/ folder: put test images in {self.data_dir}/test/<class>/ "
                "to test, or score the validation split with `validate`."
            )
        return super().test_dataloader()
