"""uint8 images handed out as whole batches: no per-image Python, no PIL in the loop.

:class:`BatchLoader` slices shuffled index batches out of an (N, 3, H, W) uint8 tensor (which may
wrap a numpy memmap, such as a store on disk, so only the rows a batch touches are read; ``rows``
picks a set's rows out of a larger store; ``prefetch`` reads the next batch from the disk while the
current one trains). Under DDP every rank takes a disjoint shard of each
epoch's permutation, with the same number of batches on every rank.
:class:`TwoStreamLoader` pairs a labeled loader with an unlabeled one (semi-supervised objectives).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import lightning as L
import numpy as np
import torch
from torch import Tensor

from zoo_lightning.batch import TwoStreamBatch

__all__ = ["BatchLoader", "TwoStreamLoader", "TrainPosition", "as_tensor", "trainer_loader", "EVAL_ORDER_SEED"]

EVAL_ORDER_SEED = 1234  # the one order of validation and test images (see trainer_loader)


def as_tensor(array: np.ndarray | Tensor) -> Tensor:
    """A tensor view of ``array`` without copying (memmaps stay memmaps)."""
    if isinstance(array, Tensor):
        return array
    with warnings.catch_warnings():  # read-only memmaps: batches are gathered copies, never written
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


class BatchLoader:
    """Iterates ``(images[idx], labels[idx])`` batches over a per-epoch permutation.

    An iterable with ``__len__``, which Lightning takes as a dataloader as it is: being no
    ``DataLoader``, it is never re-instantiated with a ``DistributedSampler``
    (``use_distributed_sampler`` does not apply); it shards by rank itself.

    Args:
        images: uint8 (N, C, H, W) tensor, or a function opening one (e.g. a fresh memmap view per
            epoch, so the pages an epoch touched are not kept resident by a long-lived mapping).
        labels: int64 (N,) tensor, or None for unlabeled data (batches are then images alone).
        rows: the rows of ``images`` that make up the set (a split of a store on disk), one per label;
            None: all of ``images``, in order.
        batch_size: images per batch on each rank.
        shuffle: a new permutation every epoch, from ``seed + epoch``: the same on every machine.
        drop_last: drop the last incomplete batch (training); a shard smaller than one batch still
            gives that one batch, so a tiny training set never trains on nothing.
        seed: base of the per-epoch shuffle.
        rank, world_size: this process's shard under DDP.
        epoch: returns the current epoch when iteration starts (the Trainer's ``current_epoch``).
        pin_memory: gather each batch into page-locked memory, so the copy to a GPU is asynchronous.
        on_resume: called with (epoch, batches) when a pass starts after a restored position, so what is
            seeded per batch (the augmentation) continues where the interrupted run was.
        prefetch: gather the next batch in a background thread while the current one is used: for images on
            disk (a store), whose reads then overlap the training step instead of adding to it.

    It is resumable: :meth:`state_dict` (which Lightning saves in a checkpoint) says how many batches of
    which epoch were handed out, and after :meth:`load_state_dict` the next pass over that epoch starts
    after them, so a run stopped mid-epoch continues with the batches it had not seen.
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
        pin_memory: bool = False,
        on_resume: Callable[[int, int], None] | None = None,
        rows: Tensor | None = None,
        prefetch: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in 0..world_size-1, got rank={rank}, world_size={world_size}.")
        self.images, self.labels, self.rows = images, labels, rows
        if rows is not None:
            self.num_samples = len(rows)
        else:
            self.num_samples = len(images) if isinstance(images, Tensor) else len(images())
        if labels is not None and len(labels) != self.num_samples:
            raise ValueError(f"{self.num_samples} images but {len(labels)} labels.")
        if self.num_samples < world_size:
            raise ValueError(
                f"{self.num_samples} images cannot be shared by {world_size} processes: "
                "every rank needs at least one; use fewer devices or a larger split."
            )
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, epoch
        self.pin_memory, self.on_resume, self.prefetch = pin_memory, on_resume, prefetch
        self.position = {"epoch": -1, "batches": 0}  # where the pass in progress (or the last one) is
        self.resume_at: dict[str, int] | None = None  # a restored position, applied by the next pass of its epoch

    def _shard_size(self) -> int:
        n, w = self.num_samples, self.world_size
        # Training cuts every shard to n // w so all ranks step together (DDP all-reduce); evaluation
        # gives the first n % w ranks one sample more, so every sample is seen exactly once.
        return n // w if self.drop_last else n // w + (self.rank < n % w)

    def __len__(self) -> int:
        # Counted from the smallest shard, so it is the same on every rank; a rank with one sample
        # more puts it into its last batch.
        smallest = self.num_samples // self.world_size
        return max(1, smallest // self.batch_size) if self.drop_last else math.ceil(smallest / self.batch_size)

    def indices(self, epoch: int | None = None) -> Tensor:
        """This rank's sample indices for ``epoch`` (None: the current one), in iteration order."""
        n = self.num_samples
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + (self.epoch() if epoch is None else epoch))
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        return order[self.rank :: self.world_size][: self._shard_size()]

    def batches(self, epoch: int | None = None) -> list[Tensor]:
        """This rank's index batches for ``epoch`` (None: the current one)."""
        order, size, count = self.indices(epoch), self.batch_size, len(self)
        end = min(count * size, len(order)) if self.drop_last else len(order)
        return [order[i * size : (i + 1) * size if i < count - 1 else end] for i in range(count)]

    def _gather(self, source: Tensor, index: Tensor) -> Tensor:
        # index_select, not source[index]: an order of magnitude faster for uint8 image rows on CPU.
        if not self.pin_memory:
            return torch.index_select(source, 0, index)
        out = torch.empty((len(index), *source.shape[1:]), dtype=source.dtype, pin_memory=True)
        return torch.index_select(source, 0, index, out=out)

    def _rows(self, index: Tensor) -> Tensor:
        return index if self.rows is None else self.rows[index]

    def iterate(self, epoch: int | None = None) -> Iterator[tuple[Tensor, Tensor] | Tensor]:
        """The batches of one pass in the permutation of ``epoch`` (None: the current one)."""
        epoch = self.epoch() if epoch is None else epoch
        skip = 0
        if self.resume_at is not None and self.resume_at["epoch"] == epoch:
            skip = self.resume_at["batches"]
            if self.on_resume is not None:
                self.on_resume(epoch, skip)
        self.resume_at = None
        images = self.images if isinstance(self.images, Tensor) else self.images()
        self.position = {"epoch": epoch, "batches": skip}
        batches = self.batches(epoch)[skip:]
        if not self.prefetch:
            for batch in batches:
                self.position["batches"] += 1
                yield self._read(images, batch)
            return
        # torch releases the GIL while index_select copies rows, so the thread's page faults on a memory-mapped
        # store wait on the disk while the main thread trains. The position counts batches handed out, not read.
        if not batches:
            return
        with ThreadPoolExecutor(1, thread_name_prefix="zoo_lightning-prefetch") as reader:
            ahead = reader.submit(self._read, images, batches[0])
            for following in batches[1:]:
                current, ahead = ahead.result(), reader.submit(self._read, images, following)
                self.position["batches"] += 1
                yield current
            self.position["batches"] += 1
            yield ahead.result()

    def _read(self, images: Tensor, batch: Tensor) -> tuple[Tensor, Tensor] | Tensor:
        if self.labels is None:
            # Sorted indices read a memmap front to back; the order within a batch is irrelevant.
            return self._gather(images, self._rows(batch.sort().values))
        return self._gather(images, self._rows(batch)), self._gather(self.labels, batch)

    def state_dict(self) -> dict[str, int]:
        """The epoch of the pass in progress and how many of its batches were handed out."""
        return dict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Makes the next pass over ``state["epoch"]`` start after its first ``state["batches"]`` batches."""
        self.resume_at = {"epoch": int(state["epoch"]), "batches": int(state["batches"])}

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor] | Tensor]:
        return self.iterate()


class TwoStreamLoader:
    """Labeled batches paired with unlabeled ones: yields ``TwoStreamBatch((images, targets), unlabeled)``.

    An epoch is one pass over the labeled loader, so ``len`` is its length. A longer unlabeled
    stream is cut there (the next epoch starts it afresh in that epoch's permutation); a shorter one
    is cycled, each new pass in a permutation of its own: pass ``p`` of epoch ``e`` draws the
    unlabeled loader's permutation number ``e * K + p``, where ``K`` passes make up one epoch, so
    no order is ever repeated and every rank agrees on it.

    Args:
        labeled: the ``(images, targets)`` batches that define the epoch.
        unlabeled: a loader of images alone (``labels=None``), shuffled; its ``epoch`` is read once
            per epoch, when iteration starts.
    """

    def __init__(self, labeled: BatchLoader, unlabeled: BatchLoader) -> None:
        if labeled.labels is None or unlabeled.labels is not None:
            raise ValueError(
                "TwoStreamLoader pairs a labeled BatchLoader (with labels) with an unlabeled one (labels=None)."
            )
        self.labeled, self.unlabeled = labeled, unlabeled

    def __len__(self) -> int:
        return len(self.labeled)

    def passes(self) -> int:
        """How many passes over the unlabeled stream one epoch needs (``K``)."""
        return math.ceil(len(self.labeled) / len(self.unlabeled))

    def __iter__(self) -> Iterator[TwoStreamBatch]:
        first = self.unlabeled.epoch() * self.passes()
        resume = self.labeled.resume_at
        done = resume["batches"] if resume is not None and resume["epoch"] == self.labeled.epoch() else 0
        # The unlabeled batches the skipped labeled ones were paired with: whole passes, then part of one.
        pass_number, within = divmod(done, len(self.unlabeled))
        self.unlabeled.load_state_dict({"epoch": first + pass_number, "batches": within})
        stream = self._images(first + pass_number)
        for images, targets in self.labeled:
            unlabeled = next(stream, None)
            if unlabeled is None:
                pass_number += 1
                stream = self._images(first + pass_number)
                unlabeled = next(stream)
            yield TwoStreamBatch((images, targets), unlabeled)

    def _images(self, epoch: int) -> Iterator[Tensor]:
        # The unlabeled loader has no labels (checked in __init__), so its batches are images alone.
        return cast(Iterator[Tensor], self.unlabeled.iterate(epoch))

    def state_dict(self) -> dict[str, int]:
        """The labeled stream's position; the unlabeled one's follows from it."""
        return self.labeled.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.labeled.load_state_dict(state)


class TrainPosition:
    """Where training is in its epoch, for a DataModule's checkpoint state.

    Lightning restores a DataModule's state before it builds the training loader; the loader state its fit
    loop saves comes back only after the optimizer was built, which asks for the number of steps and so has
    the loader built already. The DataModule's own state is therefore how a mid-epoch resume reaches it.

    Args:
        on_resume: given to every tracked loader (see :class:`BatchLoader`).
    """

    def __init__(self, on_resume: Callable[[int, int], None] | None = None) -> None:
        self.on_resume = on_resume
        self.loader: BatchLoader | None = None
        self.restored: dict[str, int] | None = None

    def track(self, loader: BatchLoader) -> BatchLoader:
        """``loader``, from now on the one whose position is saved, resuming from a restored position if any."""
        loader.on_resume = self.on_resume
        if self.restored is not None:
            loader.load_state_dict(self.restored)
            self.restored = None
        self.loader = loader
        return loader

    def state_dict(self) -> dict[str, int] | None:
        return self.loader.state_dict() if self.loader is not None else None

    def load_state_dict(self, state: dict[str, int] | None) -> None:
        self.restored = state


def trainer_loader(
    images: Tensor | Callable[[], Tensor],
    labels: Tensor | None,
    batch_size: int,
    trainer: L.Trainer | None,
    train: bool,
    seed: int = 0,
    rows: Tensor | None = None,
    prefetch: bool = False,
) -> BatchLoader:
    """A :class:`BatchLoader` for ``trainer`` (None: one process at epoch 0): its rank's shard, gathered into
    page-locked memory for a CUDA device.

    Training is reshuffled every epoch, from ``seed`` and the epoch read when the epoch's iteration starts, and
    drops its last incomplete batch. Evaluation takes one fixed permutation, the same every epoch and on every
    machine: releases and splits are stored class by class, and ``limit_val_batches`` / ``limit_test_batches``
    would otherwise evaluate the first class or two alone. Full-set metrics do not depend on the order.
    """
    rank, world_size = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    epoch = (lambda: trainer.current_epoch if trainer is not None else 0) if train else (lambda: 0)
    return BatchLoader(
        images,
        labels,
        batch_size=batch_size,
        shuffle=True,
        drop_last=train,
        seed=seed if train else EVAL_ORDER_SEED,
        rank=rank,
        world_size=world_size,
        epoch=epoch,
        pin_memory=trainer is not None and trainer.strategy.root_device.type == "cuda",
        rows=rows,
        prefetch=prefetch,
    )
