"""CIFAR-10 (Krizhevsky, 2009): the official python release or an image-folder tree.

``data_dir`` (or a folder one level below it) holds either ``cifar-10-batches-py/`` with the pickled
``data_batch_1..5``, ``test_batch`` and ``batches.meta``, or ``train/<class>/*`` and
``test/<class>/*`` image files. Either is decoded once into uint8 arrays, cached in
``<data_dir>/.zoo_cache/`` and rebuilt when the source files change or the cache is unreadable.
With ``labeled_per_class`` only that many training images of each class keep their labels (the
semi-supervised benchmark's 4,000 labels: 400 a class); the rest are its unlabeled images.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from zoo_lightning.data.base import CACHE_DIR, ImageDataModule, Splits
from zoo_lightning.data.download import download_release
from zoo_lightning.data.folder import image_files, read_class_tree
from zoo_lightning.data.loader import as_tensor
from zoo_lightning.files import read_array_cache, write_array_cache
from zoo_lightning.options import PositiveInt

__all__ = ["CIFAR10DataModule"]

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e9a4b55"
RELEASE = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
RELEASE_FILES = [*TRAIN_BATCHES, "test_batch", "batches.meta"]
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _unpickle(path: Path, keys: tuple[bytes, ...]) -> dict:
    try:
        with open(path, "rb") as f:
            content = pickle.load(f, encoding="bytes")
    except Exception as error:  # truncated or foreign: pickle raises many kinds
        raise ValueError(f"Cannot read {path}: {error!r}. Unpack cifar-10-python.tar.gz again.") from None
    if not isinstance(content, dict) or any(key not in content for key in keys):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (a dict with keys {list(keys)}).")
    return content


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    content = _unpickle(path, (b"data", b"labels"))
    rows = np.asarray(content[b"data"])
    if rows.dtype != np.uint8:  # a cast would make floats near-black and wrap int16 values
        raise ValueError(
            f"{path}: the pixels are {rows.dtype}; the CIFAR-10 release stores uint8 bytes (0..255). "
            "Unpack cifar-10-python.tar.gz again, or write the batch with data.astype(np.uint8)."
        )
    labels = np.asarray(content[b"labels"])
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path}: the labels are {labels.dtype}; they must be the class indices 0..{len(CLASSES) - 1}."
        )
    wrong = np.unique(labels[(labels < 0) | (labels >= len(CLASSES))])
    if wrong.size:
        raise ValueError(
            f"{path}: label {', '.join(map(str, wrong[:5]))} is no class of CIFAR-10; labels must be "
            f"the class indices 0..{len(CLASSES) - 1}."
        )
    labels = labels.astype(np.int64)
    if rows.ndim != 2 or rows.shape[1] != 3072 or len(labels) != len(rows):
        raise ValueError(
            f"{path}: expected N x 3072 bytes and N labels, found data {rows.shape} and {len(labels)} labels."
        )
    return rows.reshape(-1, 3, 32, 32), labels  # each row: the R, G, B planes, 32x32 row-major


def read_python_release(folder: Path) -> Splits:
    """The pickled batches: rows of 3072 bytes, the R, G and B planes of a 32x32 image in turn."""
    train = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    test_images, test_labels = _read_batch(folder / "test_batch")
    meta = _unpickle(folder / "batches.meta", (b"label_names",))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[b"label_names"]]
    return Splits(
        np.concatenate([t[0] for t in train]),
        np.concatenate([t[1] for t in train]),
        test_images,
        test_labels,
        class_names=names,
    )


def read_image_folder(root: Path, size: int = 32) -> Splits:
    """``train/<class>/*`` and ``test/<class>/*``; labels follow the sorted class folder names of train/."""
    train_images, train_labels, classes = read_class_tree(root / "train", size)
    if len(classes) != len(CLASSES):
        raise ValueError(
            f"{root / 'train'} has {len(classes)} class folders ({', '.join(classes)}); CIFAR-10 has "
            f"{len(CLASSES)}. Give it the 10 folders ({', '.join(CLASSES)}), or train your own classes "
            "with --data zoo_lightning.data.FolderDataModule."
        )
    test_images, test_labels, _ = read_class_tree(root / "test", size, classes)
    return Splits(train_images, train_labels, test_images, test_labels, class_names=classes)


def _consistent(splits: Splits) -> bool:
    """Whether arrays read back from a cache have the shapes and types a decode gives."""
    pairs = ((splits.train_images, splits.train_labels), (splits.test_images, splits.test_labels))
    return all(
        x.dtype == np.uint8
        and x.ndim == 4
        and x.shape[1:] == (3, 32, 32)
        and y.dtype == np.int64
        and y.shape == (len(x),)
        for x, y in pairs
    )


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 50,000 train images split into train/val with a fixed seed, the official 10,000 test.

    Args:
        data_dir: holds ``cifar-10-batches-py/`` or ``train/`` + ``test/`` image folders, directly
            or in a subfolder (``data/cifar10-jpeg/train/...``).
        val_size: train images held out for validation (default 10,000: a 40k/10k split).
        labeled_per_class: keep the labels of only this many training images per class (drawn with
            ``split_seed`` from the training part, after the validation split); the others are
            :meth:`unlabeled_images`: with the defaults, 400 gives 4,000 labeled and 36,000 unlabeled.
        **kwargs: see :class:`~zoo_lightning.data.base.ImageDataModule`.
    """

    num_classes = 10
    class_names = CLASSES
    native_size = 32
    default_val_size = 10000

    def __init__(
        self,
        labeled_per_class: PositiveInt | None = None,
        **kwargs: Any,
    ) -> None:
        # **kwargs: jsonargparse follows them into ImageDataModule's signature, so the CLI lists every option.
        if kwargs.get("unlabeled") and labeled_per_class is None:  # a relation of two options, which no type can say
            raise ValueError(
                "--data.unlabeled true needs --data.labeled_per_class N: the unlabeled images are the "
                "training images beyond the N labeled ones of each class."
            )
        super().__init__(**kwargs)
        self._unlabeled: Tensor | None = None

    def _locate(self) -> tuple[str, Path] | None:
        """("python", folder) or ("folder", root) of the first layout found, or None."""
        for base in [self.data_dir, *sorted(p for p in self.data_dir.glob("*") if p.is_dir())]:
            if all((base / RELEASE / name).is_file() for name in RELEASE_FILES):
                return "python", base / RELEASE
            if (base / "train").is_dir() and (base / "test").is_dir():
                return "folder", base
        return None

    def _missing_error(self) -> FileNotFoundError:
        for release in [self.data_dir / RELEASE, *self.data_dir.glob(f"*/{RELEASE}")]:
            missing = [name for name in RELEASE_FILES if not (release / name).is_file()]
            if release.is_dir() and missing:
                return FileNotFoundError(
                    f"The CIFAR-10 release in {release} is incomplete: {', '.join(missing)} missing. "
                    "Unpack cifar-10-python.tar.gz there again, or pass --data.download true."
                )
        for base in [self.data_dir, *self.data_dir.glob("*")]:
            if (base / "train").is_dir() != (base / "test").is_dir():
                have, lack = ("train", "test") if (base / "train").is_dir() else ("test", "train")
                return FileNotFoundError(
                    f"{base} has {have}/ but no {lack}/: an image-folder CIFAR-10 needs "
                    f"both {base / 'train'}/<class>/* and {base / 'test'}/<class>/*."
                )
        return FileNotFoundError(
            f"No CIFAR-10 under {str(self.data_dir)!r}. Put the official python release there as "
            f"{self.data_dir / RELEASE}/ ({', '.join(RELEASE_FILES)}), or an image folder as "
            f"{self.data_dir}/<name>/train/<class>/*.png and .../test/<class>/*, "
            "or pass --data.download true to fetch the official archive (about 163 MB)."
        )

    def find_or_download(self) -> None:
        if self._locate() is not None:
            return
        error = self._missing_error()
        # A release or image folder that is there but incomplete is the user's to mend, not to download over.
        if not self.hparams["download"] or not str(error).startswith("No CIFAR-10 under"):
            raise error
        download_release(URL, MD5, self.data_dir)

    def split_train(self, splits: Splits) -> tuple[np.ndarray, np.ndarray]:
        """The seeded train/val split; with ``labeled_per_class``, the labeled part of the training images."""
        train, val = super().split_train(splits)
        per_class = self.hparams["labeled_per_class"]
        if per_class is None:
            return train, val
        # A stream of its own beside the val split.
        rng = np.random.default_rng([self.hparams["split_seed"], per_class])
        labels = splits.train_labels[train]
        labeled = []
        for index, name in enumerate(splits.class_names):
            members = train[labels == index]
            if len(members) < per_class:
                raise ValueError(
                    f"labeled_per_class {per_class}: class {name!r} has {len(members)} training images "
                    f"(after the validation split); use --data.labeled_per_class {len(members)} or less."
                )
            labeled.append(rng.choice(members, per_class, replace=False))
        kept = np.sort(np.concatenate(labeled))
        self._unlabeled = as_tensor(splits.train_images[np.setdiff1d(train, kept)])
        return kept, val

    def unlabeled_images(self) -> Tensor:
        """The training images beyond the ``labeled_per_class`` labeled ones, uint8 (N, 3, 32, 32)."""
        if self.hparams["labeled_per_class"] is None:
            return super().unlabeled_images()
        if self._unlabeled is None:
            self._load()
        assert self._unlabeled is not None, "split_train keeps the images beyond the labeled ones"
        return self._unlabeled

    def source_files(self) -> list[Path]:
        found = self._locate()
        if found is None:
            raise self._missing_error()
        layout, folder = found
        if layout == "python":
            return [folder / name for name in RELEASE_FILES]
        return image_files(folder / "train") + image_files(folder / "test")

    def load_splits(self) -> Splits:
        found = self._locate()
        if found is None:
            raise self._missing_error()
        layout, folder = found
        key = self.source_fingerprint()
        cache = self.data_dir / CACHE_DIR / f"cifar10_{layout}_{folder.resolve().name}.npz"
        stored = read_array_cache(cache, key)
        if stored is not None:
            splits = Splits(
                stored["train_images"],
                stored["train_labels"],
                stored["test_images"],
                stored["test_labels"],
                class_names=[str(n) for n in stored["class_names"]],
            )
            if _consistent(splits):
                return splits
        splits = read_python_release(folder) if layout == "python" else read_image_folder(folder)
        write_array_cache(
            cache,
            key,
            {
                "train_images": splits.train_images,
                "train_labels": splits.train_labels,
                "test_images": splits.test_images,
                "test_labels": splits.test_labels,
                "class_names": np.asarray(splits.class_names),
            },
            "decoded images",
        )
        return splits
