"""Tiny datasets written in the exact on-disk formats of the real releases, and a test run with no network."""

from __future__ import annotations

import errno
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Every test runs offline, as the project's machines do: a download fails at once, never hangs."""
    import socket

    def refuse(self, address):
        raise OSError(errno.ENETUNREACH, f"network disabled in tests (connect to {address})")

    def unknown(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, f"network disabled in tests (looking up {host})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", unknown)


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar_python_release(root: Path, per_batch: int = 20, test: int = 20, seed: int = 0) -> dict:
    """``root/cifar-10-batches-py/`` as the official archive unpacks: pickled dicts of byte keys.

    Returns the images as (N, 3, 32, 32) uint8 and labels, train then test, for comparison.
    """
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}

    def dump(name: str, n: int) -> tuple[np.ndarray, list[int]]:
        rows = rng.integers(0, 256, (n, 3072), dtype=np.uint8)  # R plane, G plane, B plane per row
        labels = [int(v) for v in rng.integers(0, 10, n)]
        with open(folder / name, "wb") as f:
            pickle.dump(
                {
                    b"batch_label": name.encode(),
                    b"labels": labels,
                    b"data": rows,
                    b"filenames": [f"{name}_{i}.png".encode() for i in range(n)],
                },
                f,
            )
        return rows.reshape(n, 3, 32, 32), labels

    train = [dump(f"data_batch_{i}", per_batch) for i in range(1, 6)]
    arrays["train_images"] = np.concatenate([t[0] for t in train])
    arrays["train_labels"] = np.concatenate([t[1] for t in train]).astype(np.int64)
    arrays["test_images"], test_labels = dump("test_batch", test)
    arrays["test_labels"] = np.asarray(test_labels, dtype=np.int64)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump(
            {b"label_names": [c.encode() for c in CLASSES], b"num_cases_per_batch": per_batch, b"num_vis": 3072}, f
        )
    return arrays


def write_image_folder(
    root: Path, per_class: int = 3, classes: list[str] = CLASSES, size: int = 32, seed: int = 0, suffix: str = ".png"
) -> dict[str, list[tuple[Path, np.ndarray]]]:
    """``root/{train,test}/<class>/NNNN.png``; returns each split's (path, HxWx3 pixels) in sorted order."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[Path, np.ndarray]]] = {}
    for split in ("train", "test"):
        written[split] = []
        for name in classes:
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                path = root / split / name / f"{i:04d}{suffix}"
                Image.fromarray(pixels).save(path)
                written[split].append((path, pixels))
    return written


@pytest.fixture
def cifar_python(tmp_path: Path) -> tuple[Path, dict]:
    """A data_dir with a 100-image train / 20-image test CIFAR-10 python release."""
    return tmp_path, write_cifar_python_release(tmp_path)


@pytest.fixture(scope="session")
def cifar_writer():
    """The python-release writer, for module-scoped fixtures too (``import conftest`` is ambiguous)."""
    return write_cifar_python_release


@pytest.fixture(scope="session")
def image_folder_writer():
    return write_image_folder


def write_stl10_release(root: Path, train: int = 20, test: int = 10, unlabeled: int = 30, seed: int = 0) -> dict:
    """``root/stl10_binary/`` in the official layout: column-major 3x96x96 bytes, labels 1..10.

    Returns the images as (N, 3, 96, 96) row-major arrays and the 0-based labels.
    """
    rng = np.random.default_rng(seed)
    folder = root / "stl10_binary"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, n in (("train", train), ("test", test), ("unlabeled", unlabeled)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        # The release stores each channel column by column: transpose rows and columns on disk.
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        arrays[f"{split}_images"] = images
        if split != "unlabeled":
            labels = rng.integers(0, 10, n)
            (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
            arrays[f"{split}_labels"] = labels
    (folder / "class_names.txt").write_text(
        "\n".join(["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]) + "\n"
    )
    folds = [rng.permutation(train)[: max(1, train // 5)] for _ in range(10)]
    (folder / "fold_indices.txt").write_text("".join(" ".join(map(str, f)) + " \n" for f in folds))
    arrays["folds"] = folds
    return arrays


@pytest.fixture
def stl10(tmp_path: Path) -> tuple[Path, dict]:
    return tmp_path, write_stl10_release(tmp_path)


@pytest.fixture(scope="module")
def tiny_net():
    """:data:`tests.helpers.TINY_NET` in the registry for a module's tests, removed afterwards."""
    from tests.helpers import TINY_NET
    from tests.helpers import tiny_net as builder
    from zoo_lightning.models import register_model
    from zoo_lightning.models.registry import _REGISTRY

    register_model(builder)
    yield TINY_NET
    del _REGISTRY[TINY_NET]


@pytest.fixture(scope="session")
def trained_cnn(tmp_path_factory, cifar_writer):
    """A cnn fitted for two steps through the CLI on a tiny CIFAR-10 release: (root, its last.ckpt)."""
    from tests.helpers import fit_args
    from zoo_lightning.cli import main

    root = tmp_path_factory.mktemp("trained")
    cifar_writer(root / "data")
    main(fit_args(root / "data", root / "logs", "--trainer.max_steps", "2"))
    return root, root / "logs" / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt"
