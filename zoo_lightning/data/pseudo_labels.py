"""Pseudo-labels: a teacher's class probabilities for a dataset's unlabeled images, as more training images.

``selftrain`` writes them (``pseudo_labels.pt``: the probabilities, the class names and the digest of
the unlabeled images they were made for). :class:`PseudoLabeledSet` is a student's training set: its
labeled images, and the unlabeled ones the teacher is sure enough of, with the teacher's targets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from zoo_lightning.data.splits import SPLIT_OPTIONS, ImageSet
from zoo_lightning.options import PseudoLabelMode

__all__ = ["PseudoLabeledSet", "images_digest", "read_pseudo_labels"]


def images_digest(images: Tensor) -> str:
    """A short digest of a uint8 image array: its shape and 64 rows spread over it (a memmap reads only those).

    Pseudo-labels carry the digest of the unlabeled images they were made for, so a student whose data
    options select other images is stopped instead of learning from labels of the wrong pictures.
    """
    rows = torch.linspace(0, len(images) - 1, min(64, len(images))).long() if len(images) else torch.zeros(0).long()
    sample = torch.index_select(images, 0, rows).contiguous()
    return hashlib.sha1(repr(tuple(images.shape)).encode() + sample.numpy().tobytes()).hexdigest()[:16]


def read_pseudo_labels(path: str | Path, unlabeled: Tensor, class_names: Sequence[str]) -> Tensor:
    """The float (N, classes) probabilities of the file at ``path``, made for exactly ``unlabeled`` and these classes.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file cannot be read, or was made for other images or classes (its digest says which).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"--data.pseudo_labels {str(path)!r} does not exist; `python -m zoo_lightning "
            "selftrain` writes them (pseudo_labels.pt in a student round's run folder)."
        )
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
        probabilities = content["probabilities"].float()
    except Exception as error:  # truncated, foreign, or a dict without the entry
        raise ValueError(
            f"Cannot read pseudo-labels from {path} ({type(error).__name__}): write them again with "
            "`python -m zoo_lightning selftrain`."
        ) from None
    same = (
        tuple(probabilities.shape) == (len(unlabeled), len(class_names))
        and content.get("digest") == images_digest(unlabeled)
        and list(content.get("class_names") or []) == list(class_names)
    )
    if not same:
        raise ValueError(
            f"The pseudo-labels in {path} were made for {probabilities.shape[0]} other unlabeled images "
            f"than these {len(unlabeled)} ({len(class_names)} classes): give the data options "
            f"({', '.join(('data_dir', *SPLIT_OPTIONS))}) the teacher was trained with."
        )
    return probabilities


class PseudoLabeledSet(ImageSet):
    """A labeled training set plus the unlabeled images whose top probability reaches ``threshold``.

    ``"soft"`` targets are the teacher's probabilities, and the labeled images' labels become one-hot
    probabilities (one kind of target per batch); ``"hard"`` targets are the teacher's top class.

    Attributes:
        kept: indices of the unlabeled images that joined it.
    """

    def __init__(
        self,
        labeled: ImageSet,
        unlabeled: Tensor,
        probabilities: Tensor,
        mode: PseudoLabelMode = "soft",
        threshold: float = 0.0,
    ) -> None:
        confidence, predicted = probabilities.max(dim=1)
        kept = torch.nonzero(confidence >= threshold).flatten()
        if not len(kept):
            raise ValueError(
                f"No unlabeled image reaches pseudo_label_threshold {threshold} (the teacher's highest "
                f"confidence is {confidence.max():.3f}): lower it."
            )
        if mode == "hard":
            labels, targets = labeled.labels, predicted[kept]
        else:
            labels = torch.nn.functional.one_hot(labeled.labels, probabilities.shape[1]).float()
            targets = probabilities[kept]
        images = torch.cat([labeled.all_images(), torch.index_select(unlabeled, 0, kept)])
        super().__init__(images, torch.cat([labels, targets]))
        self._labeled, self.kept = labeled, kept
        self.description = (
            f"{len(labeled)} labeled and {len(kept)} of {len(unlabeled)} pseudo-labeled images ({mode} "
            f"labels, confidence >= {threshold})"
        )

    def __str__(self) -> str:
        return self.description

    @property
    def labeled(self) -> ImageSet:
        """The labeled part: normalization statistics stay its own, as the teacher's were."""
        return self._labeled

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        labeled: ImageSet,
        unlabeled: Tensor,
        class_names: Sequence[str],
        mode: PseudoLabelMode = "soft",
        threshold: float = 0.0,
    ) -> PseudoLabeledSet:
        """The set from a file :func:`read_pseudo_labels` reads and checks against ``unlabeled``."""
        return cls(labeled, unlabeled, read_pseudo_labels(path, unlabeled, class_names), mode, threshold)
