"""A store of decoded images on disk: uint8 pixels in one memory-mapped ``.npy`` file, decoded once by all cores.

A store folder holds::

    images.npy    uint8 (N, 3, S, S): the images of each part (train/, val/, test/, unlabeled/), part after part
    labels.npy    int64: the class index of every labeled image, in the same order
    index.json    the parts' sizes, the stored side S and the key of the files it was made from; written last,
                  it is the store's completion record

Training reads a store through a memory map (``numpy.load(mmap_mode="r")``): a batch reads the rows it needs from
the page cache or the disk, and RAM does not grow with the dataset. A store is written in a hidden temporary
folder beside its place and renamed into place only once its completion record is written, so a build that is
killed leaves no store behind, only a temporary folder that the next build removes. A folder without a readable
completion record, or whose record names other source files, is rebuilt, never read.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from zoo_lightning.data.folder import read_resized, warn_skipped
from zoo_lightning.progress import progress

__all__ = ["Part", "ImageStore", "open_store", "build_store", "decode_processes"]

FORMAT = 1  # the layout above; a store of another format is rebuilt
CHUNK = 32  # images a worker decodes per task: small enough for a smooth progress bar, large enough to be cheap


@dataclass
class Part:
    """Files to store as one part (a split): with their labels, or without (unlabeled images).

    An unreadable file of a labeled part is an error that names it; one of an unlabeled part is skipped, and the
    skipped files are named in one warning.
    """

    name: str
    files: list[Path]
    labels: np.ndarray | None = None


@dataclass
class ImageStore:
    """An opened store: its images (a read-only memory map), the labels, and where each part lies.

    Attributes:
        path: the store folder.
        images: uint8 (N, 3, S, S), a ``numpy.memmap``: indexing it reads only the rows asked for.
        labels: int64 labels of the labeled parts, in their order.
        counts: images per part, in the order of the parts.
    """

    path: Path
    images: np.memmap
    labels: np.ndarray
    counts: dict[str, int]
    labeled: list[str]

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """The images of part ``name`` (a memory-mapped view: nothing is read yet) and their labels (none for an
        unlabeled part); empty for a part the store does not have."""
        row = label = 0
        for part, count in self.counts.items():
            if part == name:
                labels = self.labels[label : label + count] if name in self.labeled else self.labels[:0]
                return self.images[row : row + count], labels
            row += count
            label += count if part in self.labeled else 0
        return self.images[:0], self.labels[:0]


def decode_processes() -> int:
    """The processes a decode uses: one per core this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def open_store(path: Path, key: dict[str, Any]) -> ImageStore | None:
    """The complete store at ``path`` made under ``key``; None when there is none, it is incomplete (no completion
    record: its writer was killed), damaged, or was made from other files (the caller rebuilds it)."""
    try:
        index = json.loads((path / "index.json").read_text())
        if index.get("format") != FORMAT or _canonical(index.get("key")) != _canonical(key):
            return None
        counts = {str(name): int(count) for name, count in index["counts"].items()}
        labeled = [str(name) for name in index["labeled"]]
        side = int(index["side"])
        images = np.load(path / "images.npy", mmap_mode="r")  # a truncated file fails here
        labels = np.load(path / "labels.npy")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    labeled_count = sum(count for name, count in counts.items() if name in labeled)
    if images.shape[1:] != (3, side, side) or len(images) < sum(counts.values()) or len(labels) != labeled_count:
        return None
    return ImageStore(path, images, labels, counts, labeled)


def build_store(path: Path, key: dict[str, Any], parts: Sequence[Part], side: int, description: str) -> ImageStore:
    """Decodes ``parts`` into a new store at ``path`` (replacing one made under another key) and opens it.

    Every file is decoded, its shorter side resized to ``side`` and its central square kept (:func:`read_resized`),
    by :func:`decode_processes` worker processes that write their rows straight into the file.

    Raises:
        ValueError: a file of a labeled part cannot be read (named), or the disk has no room for the store.
        OSError: the store cannot be written where ``path`` is (a read-only folder, say).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_builds(path)
    build = path.parent / f".{path.name}.{_owner()}.tmp"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir()
    try:
        total = sum(len(part.files) for part in parts)
        images_file = build / "images.npy"
        data_offset = _allocate(images_file, (total, 3, side, side))
        skipped = _decode(images_file, data_offset, side, parts, description)
        counts = {part.name: len(part.files) for part in parts}
        if skipped:
            counts = _close_gaps(images_file, parts, skipped)
            warn_skipped([path for _, path in sorted(skipped.items())])
        labels = [part.labels for part in parts if part.labels is not None]
        np.save(build / "labels.npy", np.concatenate(labels) if labels else np.empty(0, np.int64))
        _sync(images_file)
        _sync(build / "labels.npy")
        index = {
            "format": FORMAT,
            "key": key,
            "side": side,
            "counts": counts,
            "labeled": [part.name for part in parts if part.labels is not None],
        }
        (build / "index.json").write_text(json.dumps(index, indent=1))  # the completion record: written last
        _sync(build / "index.json")
        _publish(build, path, key)
    finally:
        shutil.rmtree(build, ignore_errors=True)  # left only where the store was not published
    store = open_store(path, key)
    if store is None:
        raise OSError(f"The store written to {path} cannot be read back.")
    return store


# --- writing ----------------------------------------------------------------------------------------------------


def _owner() -> str:
    """This process, as the name of its temporary folder says it: host and process id."""
    return f"{socket.gethostname()}.{os.getpid()}"


def _remove_abandoned_builds(path: Path) -> None:
    """Removes the temporary folders of builds of ``path`` on this host whose process is gone (killed mid-write)."""
    host = socket.gethostname()
    for folder in path.parent.glob(f".{path.name}.{host}.*.tmp"):
        pid = folder.name[len(f".{path.name}.{host}.") : -len(".tmp")]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _allocate(file: Path, shape: tuple[int, ...]) -> int:
    """Creates the ``.npy`` file of ``shape`` uint8 with its blocks allocated; returns where its data starts.

    Allocated up front, a disk too small for the store is one error before any decoding, not a failure (or, for a
    memory map, a crash) part-way through.
    """
    size = int(np.prod(shape))
    free = shutil.disk_usage(file.parent).free
    if size > free:
        raise ValueError(
            f"The decoded images need {size / 1e9:.1f} GB in {file.parent.parent} and only {free / 1e9:.1f} GB "
            "are free: free some space, or train at a smaller --data.image_size."
        )
    array = np.lib.format.open_memmap(file, mode="w+", dtype=np.uint8, shape=shape)
    offset = int(array.offset)
    del array  # the header is written; the workers write the rows
    if hasattr(os, "posix_fallocate") and size:
        descriptor = os.open(file, os.O_RDWR)
        try:
            os.posix_fallocate(descriptor, offset, size)
        finally:
            os.close(descriptor)
    return offset


def _sync(file: Path) -> None:
    """Flushes ``file`` to the disk, so the completion record is never on disk before what it records."""
    descriptor = os.open(file, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _publish(build: Path, path: Path, key: dict[str, Any]) -> None:
    """Renames the finished ``build`` folder to ``path``; a store already there is replaced unless another process
    has just published the same one."""
    try:
        os.rename(build, path)
        return
    except OSError:
        if not path.exists():
            raise
    if open_store(path, key) is not None:  # another process built the same store meanwhile
        return
    old = path.parent / f".{path.name}.{_owner()}.old"
    os.rename(path, old)  # processes that have the old store open keep reading it
    os.rename(build, path)
    shutil.rmtree(old, ignore_errors=True)


def _close_gaps(images_file: Path, parts: Sequence[Part], skipped: dict[int, Path]) -> dict[str, int]:
    """Moves the rows of each part up over its skipped (unreadable, unlabeled) files; returns the parts' new sizes.

    The rows left over at the end of the file are never read.
    """
    images = np.load(images_file, mmap_mode="r+")
    counts, source, target = {}, 0, 0
    for part in parts:
        kept = 0
        for _ in part.files:
            if source not in skipped:
                if target != source:
                    images[target] = images[source]
                target += 1
                kept += 1
            source += 1
        counts[part.name] = kept
    images.flush()
    return counts


# --- decoding ---------------------------------------------------------------------------------------------------

Task = list[tuple[int, str, bool]]  # (row, file, labeled) for each image of one chunk


class RowWriter:
    """Decodes files into their rows of a store's ``.npy`` file (one per worker process)."""

    def __init__(self, images_file: Path, data_offset: int, side: int) -> None:
        self.file = open(images_file, "r+b")  # noqa: SIM115 - open for the worker's lifetime
        self.offset, self.side = data_offset, side
        self.row_bytes = 3 * side * side

    def close(self) -> None:
        self.file.close()

    def write(self, task: Task) -> tuple[int, list[tuple[int, str, str, bool]]]:
        """Decodes and writes the chunk ``task``; returns how many images it held and the files that failed."""
        failed = []
        for row, file, labeled in task:
            try:
                pixels = read_resized(Path(file), self.side)
            except ValueError as error:
                failed.append((row, file, str(error), labeled))
                continue
            self.file.seek(self.offset + row * self.row_bytes)
            self.file.write(np.ascontiguousarray(pixels).tobytes())
        self.file.flush()
        return len(task), failed


_writer: RowWriter | None = None  # the worker process's own


def _start_worker(images_file: Path, data_offset: int, side: int) -> None:
    global _writer
    _writer = RowWriter(images_file, data_offset, side)


def _work(task: Task) -> tuple[int, list[tuple[int, str, str, bool]]]:
    assert _writer is not None, "_start_worker runs first in every worker"
    return _writer.write(task)


def _tasks(parts: Sequence[Part]) -> Iterator[Task]:
    row, chunk = 0, []
    for part in parts:
        for file in part.files:
            chunk.append((row, str(file), part.labels is not None))
            row += 1
            if len(chunk) == CHUNK:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _decode(images_file: Path, data_offset: int, side: int, parts: Sequence[Part], description: str) -> dict[int, Path]:
    """Decodes every file into its row, in parallel; returns the skipped (unreadable, unlabeled) files by row.

    Raises:
        ValueError: a labeled file cannot be read; the other workers are stopped at once.
    """
    total = sum(len(part.files) for part in parts)
    tasks = list(_tasks(parts))
    processes = min(decode_processes(), len(tasks))
    skipped: dict[int, Path] = {}
    label = f"{description} ({processes} process{'es' if processes > 1 else ''})"
    if processes <= 1:
        writer = RowWriter(images_file, data_offset, side)
        try:
            with progress(label, total) as advance:
                _collect(map(writer.write, tasks), advance, skipped)
        finally:
            writer.close()
        return skipped
    # fork on Linux: the workers start at once with what is imported (they use no threads of the parent's);
    # elsewhere spawn, the safe default of macOS and Windows.
    context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    # The pool starts before the progress bar's thread; leaving the block stops the workers, even on an error.
    with (
        context.Pool(processes, _start_worker, (images_file, data_offset, side)) as pool,
        progress(label, total) as advance,
    ):
        _collect(pool.imap_unordered(_work, tasks), advance, skipped)
    return skipped


def _collect(
    results: Iterator[tuple[int, list[tuple[int, str, str, bool]]]], advance: Any, skipped: dict[int, Path]
) -> None:
    for done, failed in results:
        for row, file, message, labeled in failed:
            if labeled:
                raise ValueError(message)
            skipped[row] = Path(file)
        advance(done)


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)
