"""In-memory uint8 images handed out as whole batches: no per-image Python, no PIL in the loop.

:class:`BatchLoader` slices shuffled index batches out of an (N, 3, H, W) uint8 tensor (which may
wrap a numpy memmap, so only the rows a batch touches are read). Under DDP every rank takes a
disjoint shard of each epoch's permutation, with the same number of batches on every rank.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

__all__ = ["BatchLoader", "as_tensor", "channel_stats"]


def as_tensor(array: np.ndarray | Tensor) -> Tensor:
    """A tensor view of ``array`` without copying (memmaps stay memmaps)."""
    if isinstance(array, Tensor):
        return array
    with warnings.catch_warnings():  # read-only memmaps: batches are gathered copies, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def channel_stats(images: np.ndarray | Tensor, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population, as numpy's) of uint8 (N, C, H, W) images scaled to [0, 1].

    One pass in float64 over chunks, so a large or memmapped array is never turned into float whole.
    """
    array = images.numpy() if isinstance(images, Tensor) else images
    channels = array.shape[1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(array), chunk):
        block = np.asarray(array[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 2, 3))
        squares += np.square(block).sum(axis=(0, 2, 3))
    count = array.shape[0] * array.shape[2] * array.shape[3]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return mean.tolist(), std.tolist()


class BatchLoader:
    """Iterates ``(images[idx], labels[idx])`` batches over a per-epoch permutation.

    Args:
        images: uint8 (N, C, H, W) tensor, or a function opening one (e.g. a fresh memmap view per
            epoch, so the pages an epoch touched are not kept resident by a long-lived mapping).
        labels: int64 (N,) tensor, or None for unlabeled data (batches are then images alone).
        batch_size: images per batch on each rank.
        shuffle: a new permutation every epoch, from ``seed + epoch``: the same on every machine.
        drop_last: drop the last incomplete batch (training).
        seed: base of the per-epoch shuffle.
        rank, world_size: this process's shard under DDP.
        epoch: returns the current epoch when iteration starts (the Trainer's ``current_epoch``).
    """

    def __init__(
        self,
        images: Tensor | Callable[[], Tensor],
        labels: Tensor | None,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        epoch: Callable[[], int] = lambda: 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        self.images, self.labels = images, labels
        self.num_samples = len(images) if isinstance(images, Tensor) else len(images())
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, epoch

    def _shard_size(self) -> int:
        n = self.num_samples
        # Training drops the remainder so every rank steps the same number of times (DDP all-reduce);
        # evaluation keeps every sample exactly once, so metrics summed over ranks are exact.
        return n // self.world_size if self.drop_last else math.ceil((n - self.rank) / self.world_size)

    def __len__(self) -> int:
        size = self._shard_size()
        return size // self.batch_size if self.drop_last else math.ceil(size / self.batch_size)

    def indices(self) -> Tensor:
        """This rank's sample indices for the current epoch, in iteration order."""
        n = self.num_samples
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch())
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size][: self._shard_size()]

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor] | Tensor]:
        order = self.indices()
        images = self.images if isinstance(self.images, Tensor) else self.images()
        for i in range(len(self)):
            batch = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.labels is None:
                # Sorted indices read a memmap front to back; the order within a batch is irrelevant.
                yield images[batch.sort().values]
            else:
                yield images[batch], self.labels[batch]
