"""The store of decoded images on disk: it round-trips images and labels exactly, is decoded by worker processes,
is rebuilt when its writer was killed or its files changed, is read through a memory map (never copied into RAM),
and its rows are sharded by rank."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import cli_env, set_up
from zoo_lightning.data import FolderDataModule
from zoo_lightning.data import image_folder as folder_module
from zoo_lightning.data import store as store_module
from zoo_lightning.data.folder import read_resized
from zoo_lightning.data.store import Part, build_store, open_store

CLASSES = ["apple", "pear", "plum"]


def _photos(root: Path, split: str, per_class: int, seed: int = 0) -> list[Path]:
    """JPEGs and PNGs of several shapes (wide, tall, square, larger than twice the stored side) in class folders."""
    rng = np.random.default_rng(seed)
    shapes = [(30, 50), (60, 24), (40, 40), (90, 120)]
    written = []
    for c, name in enumerate(CLASSES):
        (root / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = shapes[(c + i) % len(shapes)]
            path = root / split / name / f"{i:03d}{'.jpg' if i % 2 else '.png'}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            written.append(path)
    return written


def _expected(files: list[Path], side: int) -> np.ndarray:
    return np.stack([read_resized(path, side) for path in files])


def _mapped_file(tensor: torch.Tensor) -> str:
    """The file whose mapping holds ``tensor``'s memory ('' for anonymous memory), from /proc/self/maps."""
    address = tensor.data_ptr()
    for line in Path("/proc/self/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(v, 16) for v in fields[0].split("-"))
        if start <= address < end:
            return fields[5] if len(fields) > 5 else ""
    return ""


# --- the store alone ------------------------------------------------------------------------------------------


def test_a_store_round_trips_images_and_labels_exactly(tmp_path, monkeypatch):
    train = _photos(tmp_path, "train", per_class=15)  # 45 images: two chunks of work, so two worker processes
    test = _photos(tmp_path, "test", per_class=2, seed=1)
    labels = np.repeat(np.arange(3), 15), np.repeat(np.arange(3), 2)
    monkeypatch.setattr(store_module, "decode_processes", lambda: 2)
    parts = [Part("train", train, labels[0]), Part("test", test, labels[1])]
    built = build_store(tmp_path / "store", {"k": 1}, parts, side=20, description="test")
    opened = open_store(tmp_path / "store", {"k": 1})
    assert opened is not None and opened.counts == {"train": 45, "test": 6}
    for store in (built, opened):
        images, stored_labels = store.part("train")
        assert isinstance(images, np.memmap) and images.shape == (45, 3, 20, 20)
        np.testing.assert_array_equal(images, _expected(train, 20))
        np.testing.assert_array_equal(stored_labels, labels[0])
        np.testing.assert_array_equal(store.part("test")[0], _expected(test, 20))
        np.testing.assert_array_equal(store.part("test")[1], labels[1])
    assert len(store.part("unlabeled")[0]) == 0  # a part it does not have: empty
    assert open_store(tmp_path / "store", {"k": 2}) is None  # made under another key: not this store
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder left


def test_a_store_without_its_completion_record_is_never_read(tmp_path):
    files = _photos(tmp_path, "train", per_class=2)
    build_store(tmp_path / "store", {"k": 1}, [Part("train", files, np.zeros(6, np.int64))], 16, "test")
    index = tmp_path / "store" / "index.json"
    record = index.read_text()
    index.unlink()
    assert open_store(tmp_path / "store", {"k": 1}) is None
    index.write_text(record)
    images = tmp_path / "store" / "images.npy"
    with open(images, "r+b") as f:  # half the pixels lost (a copy cut short)
        f.truncate(images.stat().st_size // 2)
    assert open_store(tmp_path / "store", {"k": 1}) is None


def test_an_unreadable_unlabeled_file_is_skipped_and_an_unreadable_labeled_one_is_refused(tmp_path):
    train = _photos(tmp_path, "train", per_class=2)
    unlabeled = [tmp_path / "u" / f"{i}.png" for i in range(4)]
    unlabeled[0].parent.mkdir()
    for i, path in enumerate(unlabeled):
        Image.fromarray(np.full((12, 10, 3), 40 * i, np.uint8)).save(path)
    unlabeled[1].write_bytes(b"not a png")
    parts = [Part("train", train, np.arange(6) % 3), Part("unlabeled", unlabeled)]
    with pytest.warns(UserWarning, match=r"Skipped 1 file\(s\) that are not readable images: .*1.png"):
        store = build_store(tmp_path / "store", {"k": 1}, parts, 8, "test")
    assert store.counts == {"train": 6, "unlabeled": 3}
    np.testing.assert_array_equal(store.part("unlabeled")[0], _expected([unlabeled[i] for i in (0, 2, 3)], 8))
    np.testing.assert_array_equal(store.part("train")[0], _expected(train, 8))
    train[4].write_bytes(b"\xff\xd8 a truncated jpeg")
    with pytest.raises(ValueError, match=rf"Cannot read image {train[4]}: .*Remove or replace the file"):
        build_store(tmp_path / "other", {"k": 1}, parts, 8, "test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store", "train", "u"]  # nothing half-written left


def test_a_disk_too_small_is_one_error_before_any_decoding(tmp_path, monkeypatch):
    files = _photos(tmp_path, "train", per_class=1)
    monkeypatch.setattr(store_module.shutil, "disk_usage", lambda path: SimpleNamespace(free=1000))
    with pytest.raises(ValueError, match=r"need 0.0 GB in .* and only 0.0 GB are free: free some space"):
        build_store(tmp_path / "store", {"k": 1}, [Part("train", files, np.arange(3))], 20, "test")
    assert not (tmp_path / "store").exists()


WRITER = """
import sys, time
from pathlib import Path
import numpy as np
from zoo_lightning.data import folder, store

def slow(path, side):
    time.sleep(0.2)
    return folder.read_resized(path, side)

store.read_resized = slow
files = sorted(Path(sys.argv[1]).rglob("*.png")) + sorted(Path(sys.argv[1]).rglob("*.jpg"))
store.build_store(Path(sys.argv[2]), {"k": 1}, [store.Part("train", files, np.zeros(len(files), np.int64))], 16, "t")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kills a process group")
def test_a_store_whose_writer_is_killed_mid_write_is_rebuilt(tmp_path):
    files = _photos(tmp_path, "train", per_class=30)  # 90 images at 0.2 s each: the writer is killed long before
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path / "train"), str(tmp_path / "cache" / "store")],
        env=cli_env(),
        start_new_session=True,  # its worker processes too, as a kill -9 of a run takes them all
    )
    deadline = time.monotonic() + 120
    while not list((tmp_path / "cache").glob(".store.*.tmp/images.npy")) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # some rows written
    os.killpg(writer.pid, signal.SIGKILL)
    writer.wait()
    (abandoned,) = (tmp_path / "cache").glob(".store.*.tmp")
    assert not (tmp_path / "cache" / "store").exists()  # no store, however much was written
    assert open_store(tmp_path / "cache" / "store", {"k": 1}) is None
    files = sorted(files)
    store = build_store(tmp_path / "cache" / "store", {"k": 1}, [Part("train", files, np.zeros(90, np.int64))], 16, "t")
    np.testing.assert_array_equal(store.part("train")[0], _expected(files, 16))
    assert not abandoned.exists()  # the killed writer's folder is cleaned up


# --- FolderDataModule on the store ------------------------------------------------------------------------------


def _counting_builds(monkeypatch) -> list[Path]:
    built: list[Path] = []
    real = folder_module.build_store

    def counting(path, *args, **kwargs):
        built.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(folder_module, "build_store", counting)
    return built


def test_the_folder_is_stored_once_at_its_stored_side_and_rebuilt_when_incomplete_or_changed(tmp_path, monkeypatch):
    train = _photos(tmp_path, "train", per_class=4)
    built = _counting_builds(monkeypatch)
    data = set_up(FolderDataModule, tmp_path, image_size=16, val_size=0, batch_size=2)
    store = tmp_path / ".zoo_cache" / "folder_18px"  # round(1.15 * 16) = 18
    assert built == [store] and data.native_size == 18
    assert data.train_set.images.shape == (12, 3, 18, 18)
    np.testing.assert_array_equal(data.train_set.all_images().numpy(), _expected(sorted(train), 18))
    set_up(FolderDataModule, tmp_path, image_size=16, val_size=0, batch_size=2)
    assert len(built) == 1  # opened, not decoded again
    (store / "index.json").unlink()  # as a writer killed before its completion record leaves it
    set_up(FolderDataModule, tmp_path, image_size=16, val_size=0, batch_size=2)
    assert len(built) == 2 and json.loads((store / "index.json").read_text())["counts"] == {"train": 12}
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(tmp_path / "train" / "pear" / "new.png")
    changed = set_up(FolderDataModule, tmp_path, image_size=16, val_size=0, batch_size=2)
    assert len(built) == 3 and len(changed.train_set) == 13
    set_up(FolderDataModule, tmp_path, image_size=16, val_size=0, batch_size=2, margin=0)
    assert built[-1] == tmp_path / ".zoo_cache" / "folder_16px"  # another stored side: a store of its own


def test_training_reads_the_store_through_a_memory_map_never_a_copy(tmp_path):
    _photos(tmp_path, "train", per_class=6)
    _photos(tmp_path, "test", per_class=2, seed=1)
    data = set_up(FolderDataModule, tmp_path, image_size=16, val_size=5, batch_size=4)
    store = tmp_path / ".zoo_cache" / "folder_18px" / "images.npy"
    sets = data.train_set, data.val_set, data.test_set
    if sys.platform.startswith("linux"):
        for image_set in sets:
            assert _mapped_file(image_set.images) == str(store.resolve())  # memory of the file, not a copy
    # The training and validation sets are rows of one mapping of the store, not arrays of their own.
    assert data.train_set.images.data_ptr() == data.val_set.images.data_ptr()
    assert data.train_set.rows is not None and sorted(data.train_set.rows.tolist() + data.val_set.rows.tolist()) == (
        list(range(18))
    )
    loader = data.train_dataloader()
    assert loader.images is data.train_set.images and torch.equal(loader.rows, data.train_set.rows)
    assert loader.prefetch and data.test_dataloader().prefetch  # the disk is read a batch ahead
    images, labels = next(iter(loader))
    assert images.shape == (4, 3, 18, 18) and images.dtype == torch.uint8  # uint8 until the device
    stored = np.load(store, mmap_mode="r")
    stored_labels = np.load(store.parent / "labels.npy")
    first = loader.batches(0)[0]
    np.testing.assert_array_equal(images.numpy(), stored[data.train_set.rows[first].numpy()])
    np.testing.assert_array_equal(labels.numpy(), stored_labels[data.train_set.rows[first].numpy()])


def test_two_ranks_read_disjoint_shards_of_the_store_that_cover_it(tmp_path):
    _photos(tmp_path, "train", per_class=7)  # 21 images, 4 for validation: 17 for training
    data = set_up(FolderDataModule, tmp_path, image_size=16, val_size=4, batch_size=2)
    rows = {}
    for rank in range(2):
        data.trainer = SimpleNamespace(
            global_rank=rank, world_size=2, current_epoch=0, strategy=SimpleNamespace(root_device=torch.device("cpu"))
        )
        for split in ("train", "val"):
            loader = getattr(data, f"{split}_dataloader")()
            rows[split, rank] = [int(loader.rows[i]) for batch in loader.batches() for i in batch]
            batches = [images for images, _ in loader]
            gathered = torch.cat(batches)
            expected = torch.from_numpy(
                np.load(tmp_path / ".zoo_cache" / "folder_18px" / "images.npy")[rows[split, rank]]
            )
            assert torch.equal(gathered, expected)  # each rank reads exactly its own rows
    assert not set(rows["train", 0]) & set(rows["train", 1])
    assert len(rows["train", 0]) == len(rows["train", 1]) == 8  # 17 // 2 each, in whole batches of 2
    assert set(rows["train", 0] + rows["train", 1]) <= set(data.train_set.rows.tolist())
    assert sorted(rows["val", 0] + rows["val", 1]) == sorted(data.val_set.rows.tolist())  # every one exactly once


def test_a_data_folder_that_cannot_be_written_gets_a_temporary_store_and_a_warning(tmp_path):
    _photos(tmp_path, "train", per_class=2)
    (tmp_path / ".zoo_cache").write_text("a file where the cache folder goes")
    with pytest.warns(UserWarning, match=r"Could not write the decoded images store .*folder_18px .* decoding into"):
        data = set_up(FolderDataModule, tmp_path, image_size=16, val_size=0, batch_size=2)
    temporary = data.store().path.parent
    assert temporary.is_dir() and len(data.train_set) == 6
    del data
    import gc

    gc.collect()
    assert not temporary.exists()  # removed with its DataModule
