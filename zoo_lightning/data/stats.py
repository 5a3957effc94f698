"""Normalization statistics of a training split: computed once, then read from a small JSON cache.

:func:`channel_stats` is one float64 pass over uint8 images; :func:`cached_channel_stats` keeps its
result in a JSON file under a key (the source files' fingerprint and the split), so a changed file
or another split recomputes it and a damaged cache file is ignored.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from zoo_lightning.data.loader import as_tensor
from zoo_lightning.data.splits import ImageSet
from zoo_lightning.files import write_cache
from zoo_lightning.progress import progress

__all__ = ["channel_stats", "cached_channel_stats"]


def channel_stats(images: np.ndarray | Tensor | ImageSet, chunk: int = 2048) -> tuple[list[float], list[float]]:
    """Per-channel mean and std (population, as numpy's) of uint8 (N, C, H, W) images scaled to [0, 1].

    One pass in float64 over chunks, so a large or memmapped array is never turned into float whole, and an
    :class:`ImageSet` that is rows of a store is read a chunk of rows at a time.
    """
    if isinstance(images, ImageSet):
        count, take, shape = len(images), images.take, images.images.shape
    else:
        tensor = as_tensor(images)
        count, shape = len(tensor), tensor.shape
        take = partial(torch.index_select, tensor, 0)
    channels, height, width = shape[1:]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    with progress("Computing the training images' mean and std", count) as advance:
        for start in range(0, count, chunk):
            rows = torch.arange(start, min(start + chunk, count))
            block = take(rows).numpy().astype(np.float64) / 255.0
            total += block.sum(axis=(0, 2, 3))
            squares += np.square(block).sum(axis=(0, 2, 3))
            advance(len(block))
    pixels = count * height * width
    mean = total / pixels
    std = np.sqrt(np.maximum(squares / pixels - mean**2, 0.0))
    return mean.tolist(), std.tolist()


def _valid(mean: object, std: object) -> bool:
    return (
        isinstance(mean, list)
        and isinstance(std, list)
        and len(mean) == len(std) > 0
        and all(isinstance(v, float) for v in mean + std)
        and all(v > 0 for v in std)
    )


def _read_entries(cache: Path) -> dict[str, dict[str, Any]]:
    try:
        entries = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}  # absent or unreadable: recompute
    return {k: v for k, v in entries.items() if isinstance(v, dict)} if isinstance(entries, dict) else {}


def cached_channel_stats(
    cache: Path, key: Mapping[str, Any], images: Callable[[], np.ndarray | Tensor | ImageSet]
) -> tuple[list[float], list[float]]:
    """:func:`channel_stats` of ``images()``, kept in the JSON file ``cache`` under ``key``.

    Args:
        cache: the JSON file; it holds one entry per key, so several splits share it.
        key: what the statistics depend on (e.g. the source fingerprint and the split), JSON-serializable.
        images: returns the uint8 (N, C, H, W) training images; called only when the cache has no
            valid entry, so the dataset is not read when the statistics are known.
    """
    name = json.dumps(dict(key), sort_keys=True)
    entries = _read_entries(cache)
    entry = entries.get(name)
    if entry is not None and _valid(entry.get("mean"), entry.get("std")):
        return entry["mean"], entry["std"]
    mean, std = channel_stats(images())
    entries[name] = {"mean": mean, "std": std}
    write_cache(cache, lambda tmp: tmp.write_text(json.dumps(entries, indent=1)), "normalization statistics")
    return mean, std
