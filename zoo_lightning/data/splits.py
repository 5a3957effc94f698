"""What a dataset's release holds (:class:`Splits`), the parts a DataModule trains, validates and tests on
(:class:`ImageSet`), and the options that decide which images each part holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from zoo_lightning.data.loader import as_tensor

__all__ = ["Splits", "ImageSet", "SPLIT_OPTIONS", "TRAINING_SET_OPTIONS", "seeded_split", "split_release"]

# The DataModule options that decide which of a dataset's images are training and which validation images (a
# DataModule has those of them it takes). What identifies a run's split, beside which dataset (data_dir).
SPLIT_OPTIONS = ("val_size", "split_seed", "fold", "labeled_per_class")
# The options that decide what else the training set is made of: a teacher's pseudo-labels. Evaluation reads none.
TRAINING_SET_OPTIONS = ("pseudo_labels", "pseudo_label_mode", "pseudo_label_threshold")


@dataclass
class Splits:
    """What a dataset's release holds, as uint8 (N, 3, H, W) arrays and int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: Sequence[str]


@dataclass(eq=False, repr=False)  # tensors: no single truth value to compare by, too many values to print
class ImageSet:
    """uint8 (N, 3, H, W) images and their targets (int64 class indices, or float class probabilities).

    A map-style dataset of ``(image, target)`` pairs; the loaders take the tensors whole. A set that is a part of a
    store on disk names its ``rows`` of the store's ``images`` instead of holding a copy of them: the loaders then
    read only the rows each batch needs.

    Attributes:
        images: the images, or the store (a memory-mapped array) whose ``rows`` are the set.
        labels: one target per image of the set.
        rows: int64 row numbers into ``images``, one per image of the set; None when ``images`` is the set itself.
    """

    images: Tensor
    labels: Tensor
    rows: Tensor | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images of {tuple(self.images.shape[1:])})"

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index if self.rows is None else int(self.rows[index])], self.labels[index]

    def take(self, index: Tensor) -> Tensor:
        """The images at positions ``index`` of the set, gathered into a new uint8 tensor (a store reads just those)."""
        return torch.index_select(self.images, 0, index if self.rows is None else self.rows[index])

    def all_images(self) -> Tensor:
        """Every image of the set as one tensor: :attr:`images` itself, or the set's rows of a store, read into RAM."""
        return self.images if self.rows is None else self.take(torch.arange(len(self)))

    @property
    def labeled(self) -> ImageSet:
        """The part with the dataset's own labels: all of it (a pseudo-labeled set has more)."""
        return self


def seeded_split(count: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices of the training and validation parts of ``count`` images: ``val_size`` drawn with ``seed``."""
    if val_size >= count:
        raise ValueError(
            f"val_size={val_size} leaves no training images: the train set has {count}; use val_size < {count}."
        )
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


def split_release(splits: Splits, train: np.ndarray, val: np.ndarray) -> tuple[ImageSet, ImageSet, ImageSet]:
    """The training, validation and test sets of a release: the first two the rows ``train`` and ``val`` of its
    train part.

    Images in memory are copied into each set; images on disk (a ``numpy.memmap``, such as a store) stay there, and
    the sets name their rows of them, so that RAM does not grow with the dataset.
    """
    images, labels = splits.train_images, splits.train_labels
    test = ImageSet(as_tensor(splits.test_images), as_tensor(splits.test_labels))
    if isinstance(images, np.memmap):
        stored = as_tensor(images)
        return (
            ImageSet(stored, as_tensor(labels[train]), torch.from_numpy(np.asarray(train, np.int64))),
            ImageSet(stored, as_tensor(labels[val]), torch.from_numpy(np.asarray(val, np.int64))),
            test,
        )
    return (
        ImageSet(as_tensor(images[train]), as_tensor(labels[train])),
        ImageSet(as_tensor(images[val]), as_tensor(labels[val])),
        test,
    )
