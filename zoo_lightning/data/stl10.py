"""STL-10 (Coates et al., 2011): the official binary release, read through numpy memmaps.

``data_dir`` (or ``data_dir/stl10_binary``) holds ``train_X.bin``, ``train_y.bin``, ``test_X.bin``,
``test_y.bin``, ``unlabeled_X.bin``, ``class_names.txt`` and ``fold_indices.txt``. Every image is
3 x 96 x 96 bytes, each channel stored column by column; labels are bytes 1..10 (0..9 here). The
labeled splits (5,000 + 8,000 images) are copied into memory once; the 100,000 unlabeled images stay
a memmap, mapped afresh each epoch, and are never turned into float on the host.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
from torch import Tensor

from zoo_lightning.data.base import ImageDataModule, Splits
from zoo_lightning.data.download import download_release
from zoo_lightning.data.loader import as_tensor

__all__ = ["STL10DataModule", "read_stl10_images", "read_stl10_labels"]

URL = "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz"
MD5 = "91f7769df0f17e558f3565bffb0c7dfb"
RELEASE = "stl10_binary"
SIZE = 96
IMAGE_BYTES = 3 * SIZE * SIZE  # 27,648
LABELED_FILES = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "class_names.txt", "fold_indices.txt"]
CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
Fold = Literal[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]  # the ten official folds of fold_indices.txt


def read_stl10_images(path: Path) -> np.ndarray:
    """A read-only (N, 3, 96, 96) view of a ``*_X.bin`` file (a memmap: nothing is read yet)."""
    size = path.stat().st_size
    if size == 0 or size % IMAGE_BYTES:
        raise ValueError(
            f"{path} has {size:,} bytes, which is not a whole number of {IMAGE_BYTES:,}-byte 3x96x96 images "
            f"(expected N x {IMAGE_BYTES:,}); the file is truncated or not STL-10. Download it again."
        )
    raw = np.memmap(path, dtype=np.uint8, mode="r", shape=(size // IMAGE_BYTES, 3, SIZE, SIZE))
    return raw.transpose(0, 1, 3, 2)  # stored column-major: swap to (row, column)


def read_stl10_labels(path: Path, count: int) -> np.ndarray:
    labels = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if len(labels) != count:
        raise ValueError(
            f"{path} holds {len(labels):,} labels but its images file {count:,} images: "
            "the release is incomplete or mixed up. Download it again."
        )
    if len(labels) and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"{path}: labels must be 1..10, found {labels.min()}..{labels.max()}.")
    return labels - 1


class STL10DataModule(ImageDataModule):
    """STL-10: 5,000 labeled train images (or one official 1,000-image fold), 8,000 test, 100,000 unlabeled.

    The release files lie in ``data_dir``, directly or in ``stl10_binary/``.

    Args:
        fold: 0..9 trains on that official fold of ``fold_indices.txt`` (validation is then drawn
            from the other 4,000); None uses all 5,000 with a seeded ``val_size`` split.
        **kwargs: the options of :class:`~zoo_lightning.data.base.ImageDataModule` (data_dir, batch_size,
            pipeline, ...). The pipeline's default crop padding is 12 pixels here, one eighth of 96.
    """

    num_classes = 10
    class_names = CLASSES
    native_size = SIZE
    default_val_size = 1000

    def __init__(
        self,
        fold: Fold | None = None,
        **kwargs: Any,
    ) -> None:
        # **kwargs: jsonargparse follows them into ImageDataModule's signature, so the CLI lists every option.
        super().__init__(**kwargs)

    def folder(self) -> Path:
        for base in (self.data_dir / RELEASE, self.data_dir):
            if (base / "train_X.bin").is_file():
                return base
        return self.data_dir / RELEASE

    def _missing(self) -> list[str]:
        needed = LABELED_FILES + (["unlabeled_X.bin"] if self.hparams["unlabeled"] else [])
        return [name for name in needed if not (self.folder() / name).is_file()]

    def find_or_download(self) -> None:
        if not self._missing():
            return
        if self.hparams["download"]:
            download_release(URL, MD5, self.data_dir)
            return
        raise FileNotFoundError(
            f"STL-10 is missing {', '.join(self._missing())} in {self.folder()}/. Put the official binary release "
            f"there (stl10_binary/ from stl10_binary.tar.gz), or pass --data.download true (about 2.6 GB)."
        )

    def source_files(self) -> list[Path]:
        return [self.folder() / name for name in ("train_X.bin", "train_y.bin", "fold_indices.txt")]

    def load_splits(self) -> Splits:
        missing = self._missing()
        if missing:
            self.find_or_download()  # raises with the list of files to put where
        folder = self.folder()
        train = read_stl10_images(folder / "train_X.bin")
        test = read_stl10_images(folder / "test_X.bin")
        names = [line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip()]
        return Splits(
            np.ascontiguousarray(train),
            read_stl10_labels(folder / "train_y.bin", len(train)),
            np.ascontiguousarray(test),
            read_stl10_labels(folder / "test_y.bin", len(test)),
            class_names=names or CLASSES,
        )

    def fold_indices(self, train_size: int | None = None) -> list[np.ndarray]:
        """The ten official folds: indices into the labeled train images, checked against ``train_size``."""
        path = self.folder() / "fold_indices.txt"
        folds = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                folds.append(np.array([int(v) for v in line.split()], dtype=np.int64))
            except ValueError:
                raise ValueError(
                    f"{path}, line {number}: not whitespace-separated image indices "
                    f"({line.strip()[:40]!r}). Download the release again."
                ) from None
        if len(folds) != 10:
            raise ValueError(f"{path} has {len(folds)} folds; the release has 10.")
        for number, fold in enumerate(folds):
            if train_size is not None and fold.size and (fold.min() < 0 or fold.max() >= train_size):
                raise ValueError(
                    f"{path}: fold {number} names image {fold.min() if fold.min() < 0 else fold.max()}, "
                    f"but train_X.bin has images 0..{train_size - 1}. Download the release again."
                )
        return folds

    def split_train(self, splits: Splits) -> tuple[np.ndarray, np.ndarray]:
        fold = self.hparams["fold"]
        if fold is None:
            return super().split_train(splits)
        train = np.sort(self.fold_indices(len(splits.train_labels))[fold])
        rest = np.setdiff1d(np.arange(len(splits.train_labels)), train)
        val_size = min(self.hparams["val_size"], len(rest))
        val = np.random.default_rng(self.hparams["split_seed"]).permutation(rest)[:val_size]
        return train, np.sort(val)

    def unlabeled_images(self) -> Tensor:
        """A fresh memmap view of the unlabeled split (no bytes read until a batch indexes it)."""
        return as_tensor(read_stl10_images(self.folder() / "unlabeled_X.bin"))
