"""Normalization statistics: the float64 pass and the JSON cache keyed by source and split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import set_up
from zoo_lightning.data import CIFAR10DataModule
from zoo_lightning.data.base import CACHE_DIR
from zoo_lightning.data.stats import cached_channel_stats, channel_stats


def test_channel_stats_match_numpy():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 3, 5, 6), dtype=np.uint8)
    mean, std = channel_stats(images, chunk=8)
    pixels = images.astype(np.float64) / 255
    np.testing.assert_allclose(mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(std, pixels.std(axis=(0, 2, 3)), rtol=1e-10)


def test_channel_stats_of_a_known_two_pixel_image():
    # Channel 0 holds 0 and 255: mean 0.5, population std 0.5; channel 1 is constant 51 = 0.2, std 0.
    images = torch.tensor([[[[0, 255]], [[51, 51]]]], dtype=torch.uint8)
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.5, 0.2]) and std == pytest.approx([0.5, 0.0], abs=1e-12)


class _Counting:
    """Stands in for reading the training split; counts how often the cache had to."""

    def __init__(self, images: np.ndarray) -> None:
        self.images, self.calls = images, 0

    def __call__(self) -> np.ndarray:
        self.calls += 1
        return self.images


def _images(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (6, 3, 4, 4), dtype=np.uint8)


def test_cache_hit_does_not_read_the_images(tmp_path: Path):
    cache, read = tmp_path / "c" / "stats.json", _Counting(_images(0))
    first = cached_channel_stats(cache, {"source": "abc", "split": {"val_size": 2}}, read)
    assert read.calls == 1 and first == channel_stats(_images(0))
    again = cached_channel_stats(cache, {"split": {"val_size": 2}, "source": "abc"}, read)  # key order is irrelevant
    assert read.calls == 1 and again == first


def test_each_key_keeps_its_own_entry(tmp_path: Path):
    cache = tmp_path / "stats.json"
    a = cached_channel_stats(cache, {"split": 1}, _Counting(_images(1)))
    b = cached_channel_stats(cache, {"split": 2}, _Counting(_images(2)))
    assert a != b and len(json.loads(cache.read_text())) == 2
    assert cached_channel_stats(cache, {"split": 1}, _Counting(_images(9))) == a


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        "[1, 2]",
        '{"{\\"k\\": 1}": {"mean": [0.5], "std": [0.0]}}',
        '{"{\\"k\\": 1}": {"mean": ["x"], "std": [0.1]}}',
    ],
)
def test_damaged_or_invalid_cache_is_recomputed(tmp_path: Path, content: str):
    cache = tmp_path / "stats.json"
    cache.write_text(content)
    read = _Counting(_images(3))
    assert cached_channel_stats(cache, {"k": 1}, read) == channel_stats(_images(3)) and read.calls == 1
    assert json.loads(cache.read_text())['{"k": 1}']["mean"] == channel_stats(_images(3))[0]


def _module(root, **kwargs) -> CIFAR10DataModule:
    return set_up(CIFAR10DataModule, root, **{"val_size": 20, "batch_size": 8, **kwargs})


def test_statistics_cache_keeps_one_entry_per_split(cifar_python):
    root, _ = cifar_python
    a, b = _module(root, val_size=20), _module(root, val_size=30)
    assert a.mean != b.mean
    entries = json.loads(next((root / CACHE_DIR).glob("*_stats.json")).read_text())
    assert len(entries) == 2
    assert _module(root, val_size=20).mean == a.mean


def test_stats_method_reads_the_cache_without_loading_the_dataset(cifar_python):
    root, _ = cifar_python
    expected = _module(root).mean
    fresh = CIFAR10DataModule(data_dir=str(root), val_size=20)
    assert fresh.stats()[0] == expected and fresh.train_set is None  # the cache answered: nothing decoded
    assert (root / CACHE_DIR / "cifar10datamodule_stats.json").is_file()
