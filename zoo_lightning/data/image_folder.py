"""FolderDataModule: your own images, one folder per class, any number of classes, any image sizes.

``data_dir`` holds::

    train/<class>/<image files>   the training images; the folder names are the classes
    val/<class>/...               optional: the validation images (else a seeded part of train/)
    test/<class>/...              optional: the test images
    unlabeled/...                 optional: images without labels (for selftrain's pseudo-labels)

Every image is decoded once, by one worker process per core (any format Pillow reads, grayscale and
RGBA made RGB), its shorter side resized to the stored side, ``round((1 + margin) * image_size)``,
and its centre square kept, into a store on disk (:mod:`zoo_lightning.data.store`) in
``<data_dir>/.zoo_cache/`` that is rebuilt when a file is added, removed or changed. Training reads
batches from the store through a memory map, so RAM does not grow with the dataset; on the device,
training crops ``image_size`` windows out of the stored squares (or draws the pipeline's scale
augmentation), and evaluation and ``predict`` take their centre, as torchvision's ImageNet
evaluation does (shorter side 256, centre 224).
"""

from __future__ import annotations

import tempfile
import warnings
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from zoo_lightning.data.base import CACHE_DIR, ImageDataModule, Splits
from zoo_lightning.data.folder import hidden, image_files, labeled_files
from zoo_lightning.data.loader import BatchLoader, as_tensor
from zoo_lightning.data.store import ImageStore, Part, build_store, open_store
from zoo_lightning.options import ImageSide, NonNegativeFloat, NonNegativeInt

__all__ = ["FolderDataModule", "class_folders", "stored_side"]

SPLITS = ("train", "val", "test", "unlabeled")


def stored_side(image_size: int, margin: float) -> int:
    """The side images are stored at: ``image_size`` and ``margin`` of it more (258 for 224 and 0.15)."""
    return max(image_size, round((1 + margin) * image_size))


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
    """Images in class folders, decoded once by all cores into a store on disk and read from it in batches.

    Args:
        data_dir: holds ``train/<class>/*`` and optionally ``val/``, ``test/`` and ``unlabeled/``.
        image_size: the network's input size (224 for ImageNet weights): training crops windows of this
            side out of the stored images, evaluation and prediction their centre.
        val_size: training images held out for validation, drawn with ``split_seed``; None takes a
            tenth of them. With a ``val/`` folder, that folder is the validation set (None counts its
            images; 0 turns validation off).
        margin: how much larger than ``image_size`` the images are stored (shorter side resized to
            ``(1 + margin) * image_size``, centre square kept), so that random crops and the scale
            augmentation see more than the centre, and evaluation takes the centre as torchvision's
            ImageNet evaluation does (0.15: 258 pixels for 224, as its 256 for 224). 0 stores the
            centre square at ``image_size``, for images no larger than that (CIFAR-sized ones), whose
            margin would only be upscaled pixels; the crop then pads, as for CIFAR-10.
        **kwargs: the options of :class:`~zoo_lightning.data.base.ImageDataModule`. With ``class_names``
            (the CLI passes a checkpoint's for validate/test/predict) the disk is not read to build it.
    """

    stored_on_disk = True  # every set is rows of the store

    def __init__(
        self,
        data_dir: str = "data",
        image_size: ImageSide = 224,
        val_size: NonNegativeInt | None = None,
        margin: NonNegativeFloat = 0.15,
        **kwargs: Any,
    ) -> None:
        root = Path(data_dir)
        given = kwargs.get("class_names")
        classes = [str(n) for n in given] if given else class_folders(root / "train")
        if val_size is None:
            val_size = 0 if given else self._default_val_size(root)
        self.native_size = stored_side(image_size, margin)  # the side of the stored images
        self.stored_with_margin = self.native_size > image_size
        super().__init__(data_dir=data_dir, image_size=image_size, val_size=val_size, **kwargs)
        self.class_names, self.num_classes = classes, len(classes)
        self._val_count: int | None = None  # images in val/, once read; None without the folder
        self._unlabeled: Tensor | None = None
        self._store: ImageStore | None = None

    @staticmethod
    def _default_val_size(root: Path) -> int:
        if (root / "val").is_dir():
            return len(image_files(root / "val"))
        return len(image_files(root / "train")) // 10

    # --- reading ---------------------------------------------------------------------------------------

    def find_or_download(self) -> None:
        class_folders(self.data_dir / "train")  # says what to put where; there is nothing to download

    def prepare_data(self) -> None:
        """Checks the folders and decodes them into the store when it is not there, on one process per machine
        (Lightning calls it on local rank 0 only, before the other ranks read the store)."""
        super().prepare_data()
        if self.trainer is None or not self.trainer.predicting:
            self.store()

    def source_files(self) -> list[Path]:
        return [f for split in SPLITS if (self.data_dir / split).is_dir() for f in image_files(self.data_dir / split)]

    def store(self) -> ImageStore:
        """The store of the decoded images, built on first use (or when the files changed) and then opened."""
        if self._store is not None:
            return self._store
        side = self.native_size
        key = {"source": self.source_fingerprint(), "side": side, "classes": self.class_names}
        path = self.data_dir / CACHE_DIR / f"folder_{side}px"
        store = open_store(path, key)
        if store is None:
            parts = self._parts()
            description = f"Decoding {sum(len(p.files) for p in parts):,} images of {self.data_dir} at {side} pixels"
            try:
                store = build_store(path, key, parts, side, description)
            except OSError as error:
                store = self._temporary_store(path, error, key, parts, side, description)
        self._store = store
        return store

    def _temporary_store(
        self, path: Path, error: OSError, key: dict[str, Any], parts: list[Part], side: int, description: str
    ) -> ImageStore:
        """A store in the system's temporary folder, removed when this DataModule is: the data folder is read-only
        or full, which costs a decode per run but is no reason to stop."""
        folder = Path(tempfile.mkdtemp(prefix="zoo_lightning_store_"))
        weakref.finalize(self, _remove_tree, folder)
        warnings.warn(
            f"Could not write the decoded images store {path} ({error.strerror or error}); decoding into "
            f"{folder} instead, which is removed when this run ends. Make the folder writable, or free space, to "
            "keep it.",
            stacklevel=3,
        )
        return build_store(folder / path.name, key, parts, side, description)

    def _parts(self) -> list[Part]:
        """What the store holds: the labeled splits there are, then unlabeled/ (val/ beside train/ as its own part)."""
        root = self.data_dir
        train_files, train_labels = labeled_files(root / "train", self.class_names)
        parts = [Part("train", train_files, train_labels)]
        for split in ("val", "test"):
            if (root / split).is_dir():
                parts.append(Part(split, *labeled_files(root / split, self.class_names)))
        counts = np.bincount(train_labels, minlength=len(self.class_names))
        missing = [name for name, count in zip(self.class_names, counts) if count == 0]
        if missing:
            raise ValueError(
                f"{root / 'train'}/{missing[0]}/ holds no image (classes without training images: "
                f"{', '.join(missing)}): add images, or remove the empty class folders."
            )
        if (root / "unlabeled").is_dir():
            parts.append(Part("unlabeled", image_files(root / "unlabeled", suffixes=None)))
        return parts

    def load_splits(self) -> Splits:
        """The store's parts as memory-mapped views: train/ and val/ as one train set, test/, unlabeled/."""
        store = self.store()
        train, val, test = store.part("train"), store.part("val"), store.part("test")
        self._val_count = store.counts["val"] if "val" in store.counts else None
        unlabeled = store.part("unlabeled")[0]
        self._unlabeled = as_tensor(unlabeled) if len(unlabeled) else None
        if self._val_count:  # train/ and val/ lie one after the other in the store: one view of both
            trainval = store.images[: len(train[0]) + len(val[0])]
            train = (trainval, np.concatenate([train[1], val[1]]))
        return Splits(train[0], train[1], test[0], test[1], class_names=self.class_names)

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
        return {
            **super()._split_key(),
            "image_size": self.image_size,
            "stored_side": self.native_size,
            "val_folder": self._val_count,
        }

    def unlabeled_images(self) -> Tensor:
        """``unlabeled/`` stored like the rest, uint8 (N, 3, S, S) at the stored side: a memory-mapped view."""
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


def _remove_tree(folder: Path) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
