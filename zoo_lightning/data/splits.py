"""What a dataset's release holds (:class:`Splits`), the parts a DataModule trains, validates and tests on
(:class:`ImageSet`), and the options that decide which images each part holds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
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

    A map-style dataset of ``(image, target)`` pairs; the loaders take the two tensors whole.
    """

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} images of {tuple(self.images.shape[1:])})"

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index], self.labels[index]

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
    train part."""
    images, labels = splits.train_images, splits.train_labels
    return (
        ImageSet(as_tensor(images[train]), as_tensor(labels[train])),
        ImageSet(as_tensor(images[val]), as_tensor(labels[val])),
        ImageSet(as_tensor(splits.test_images), as_tensor(splits.test_labels)),
    )
