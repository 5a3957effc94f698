"""CIFAR-10: the python release and image-folder layouts, the seeded split, the decode cache, downloads."""

import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import CLASSES
from tests.helpers import option_error, set_up
from zoo_lightning.data import CIFAR10DataModule
from zoo_lightning.data.base import CACHE_DIR


def _module(root, **kwargs) -> CIFAR10DataModule:
    return set_up(CIFAR10DataModule, root, **{"val_size": 20, "batch_size": 8, **kwargs})


def test_python_release_pixels_land_in_the_right_place_and_channel(cifar_python):
    root, arrays = cifar_python
    data = _module(root, val_size=0)
    images, labels = data.train_set.images, data.train_set.labels
    # Row layout: bytes 0..1023 red, 1024..2047 green, 2048..3071 blue, each 32x32 row-major.
    raw_row = arrays["train_images"].reshape(-1, 3072)[7]
    assert images[7, 1, 2, 5].item() == raw_row[1024 + 2 * 32 + 5]
    assert torch.equal(images, torch.from_numpy(arrays["train_images"]))
    assert labels.tolist() == arrays["train_labels"].tolist()
    test_images, test_labels = data.test_set.images, data.test_set.labels
    assert torch.equal(test_images, torch.from_numpy(arrays["test_images"]))
    assert test_labels.tolist() == arrays["test_labels"].tolist()
    assert data.class_names[0] == "airplane" and data.class_names[9] == "truck"


def test_split_sizes_and_determinism(cifar_python):
    root, _ = cifar_python
    a, b = _module(root, split_seed=3), _module(root, split_seed=3)
    assert len(a.train_set.images) == 80 and len(a.val_set.images) == 20 and len(a.test_set.images) == 20
    assert torch.equal(a.val_set.images, b.val_set.images)
    other = _module(root, split_seed=4)
    assert not torch.equal(a.val_set.images, other.val_set.images)
    # Train and val partition the train set: no image in both, none lost.
    train_val = torch.cat([a.train_set.images, a.val_set.images]).flatten(1)
    assert torch.unique(train_val, dim=0).shape[0] == 100


def test_split_indices_are_fixed_for_a_seed(cifar_python):
    """The same seed gives the same split on every machine: numpy's PCG64 permutation."""
    root, arrays = cifar_python
    data = _module(root, split_seed=0, val_size=10)
    val_idx = np.sort(np.random.default_rng(0).permutation(100)[:10])
    assert torch.equal(data.val_set.images, torch.from_numpy(arrays["train_images"][val_idx]))


def test_mean_std_equal_numpys_on_the_training_part(cifar_python):
    root, _ = cifar_python
    data = _module(root)
    pixels = data.train_set.images.numpy().astype(np.float64) / 255
    np.testing.assert_allclose(data.mean, pixels.mean(axis=(0, 2, 3)), rtol=1e-10)
    np.testing.assert_allclose(data.std, pixels.std(axis=(0, 2, 3)), rtol=1e-10)


def test_image_folder_round_trip(tmp_path, image_folder_writer):
    written = image_folder_writer(tmp_path / "cifar-like", per_class=4)
    data = _module(tmp_path, val_size=0)  # found one level below data_dir
    images, labels = data.train_set.images, data.train_set.labels
    path, pixels = written["train"][5]  # class 1 ("automobile"), second file
    assert labels[5].item() == 1
    assert images[5, 2, 10, 3].item() == pixels[10, 3, 2]  # channel-first, same row and column
    assert data.class_names == CLASSES
    assert len(data.test_set.images) == 40


def test_cache_is_used_then_rebuilt_when_the_source_changes(cifar_python, cifar_writer):
    root, _ = cifar_python
    _module(root)
    cache = next((root / CACHE_DIR).glob("cifar10_python_*.npz"))
    first_write = cache.stat().st_mtime_ns
    _module(root)
    assert cache.stat().st_mtime_ns == first_write  # reused
    time.sleep(0.01)
    new_arrays = cifar_writer(root, seed=1)
    data = _module(root, val_size=0)
    assert torch.equal(data.train_set.images, torch.from_numpy(new_arrays["train_images"]))


def test_corrupt_cache_is_rebuilt_not_trusted(cifar_python):
    root, arrays = cifar_python
    _module(root)
    cache = next((root / CACHE_DIR).glob("cifar10_python_*.npz"))
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated
    data = _module(root, val_size=0)
    assert torch.equal(data.train_set.images, torch.from_numpy(arrays["train_images"]))
    stats = next((root / CACHE_DIR).glob("*_stats.json"))
    stats.write_text("{not json")
    assert _module(root).mean == pytest.approx(data.mean, rel=0.5)  # recomputed, not a crash


def test_missing_data_says_where_to_put_which_files(tmp_path):
    data = CIFAR10DataModule(data_dir=str(tmp_path / "nothing"), download=False)
    with pytest.raises(FileNotFoundError) as error:
        data.prepare_data()
    message = str(error.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "--data.download true" in message


def test_unreadable_image_is_named(tmp_path, image_folder_writer):
    image_folder_writer(tmp_path, per_class=2)
    bad = tmp_path / "train" / "bird" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        _module(tmp_path, val_size=0)


@pytest.mark.parametrize("option, value", [("batch_size", "0"), ("val_size", "-1"), ("eval_batch_size", "0")])
def test_bad_arguments_are_refused(option, value):
    message = option_error(CIFAR10DataModule, f"--data.{option}", value, key="data")  # by the parser, naming them
    assert f"data.{option}" in message and f"'{value}'" in message


def test_val_size_larger_than_the_train_set(cifar_python):
    root, _ = cifar_python
    with pytest.raises(ValueError, match="train set has 100"):
        _module(root, val_size=100)


def test_checkpoint_state_carries_what_prediction_needs(cifar_python):
    root, _ = cifar_python
    data = _module(root)
    state = data.state_dict()
    fresh = CIFAR10DataModule(data_dir="/nonexistent")
    fresh.load_state_dict(state)
    assert fresh.mean == data.mean and fresh.std == data.std and fresh.class_names == data.class_names
    batch = fresh.on_after_batch_transfer((torch.full((1, 3, 32, 32), 255, dtype=torch.uint8), torch.zeros(1)), 0)
    expected = (1 - torch.tensor(data.mean)) / torch.tensor(data.std)
    torch.testing.assert_close(batch[0][0, :, 0, 0], expected.float())


REAL_DATA = Path(__file__).resolve().parents[2] / "data"


@pytest.mark.real
def test_real_cifar10_jpeg_split_and_statistics():
    if not (REAL_DATA / "cifar10-jpeg").is_dir():
        pytest.skip("run `make data` to unpack ../shared/datasets/cifar10-jpeg.tar.gz")
    data = CIFAR10DataModule(data_dir=str(REAL_DATA))
    data.setup("fit")
    assert [len(part) for part in (data.train_set, data.val_set, data.test_set)] == [40000, 10000, 10000]
    assert data.class_names == [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    assert torch.bincount(data.test_set.labels).tolist() == [1000] * 10
    # The shared README gives the statistics over all 50k train images; the 40k part is within ~1e-3.
    np.testing.assert_allclose(data.mean, [0.49125, 0.48209, 0.44652], atol=1.5e-3)
    np.testing.assert_allclose(data.std, [0.24523, 0.24278, 0.26063], atol=1.5e-3)
    # And over all 50k (val_size=0) they are the README's to its five digits.
    full = CIFAR10DataModule(data_dir=str(REAL_DATA), val_size=0)
    np.testing.assert_allclose(full.stats()[0], [0.49125, 0.48209, 0.44652], atol=6e-6)
    np.testing.assert_allclose(full.stats()[1], [0.24523, 0.24278, 0.26063], atol=6e-6)


def test_class_names_from_the_cache_are_plain_str(tmp_path, image_folder_writer):
    """numpy strings would make checkpoints fail to load with torch.load(weights_only=True)."""
    image_folder_writer(tmp_path, per_class=2)
    _module(tmp_path, val_size=0)
    data = _module(tmp_path, val_size=0)  # second time: from the .npz cache
    assert all(type(name) is str for name in data.state_dict()["class_names"])


def test_cache_with_flipped_bytes_is_rebuilt(cifar_python):
    root, arrays = cifar_python
    _module(root)
    cache = next((root / CACHE_DIR).glob("cifar10_python_*.npz"))
    raw = bytearray(cache.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # inside the image array: the zip CRC no longer matches
    cache.write_bytes(bytes(raw))
    data = _module(root, val_size=0)
    assert torch.equal(data.train_set.images, torch.from_numpy(arrays["train_images"]))


def test_cache_does_not_depend_on_how_data_dir_is_spelled(cifar_python, monkeypatch):
    root, _ = cifar_python
    monkeypatch.chdir(root.parent)
    _module(root)  # absolute path
    cache = next((root / CACHE_DIR).glob("cifar10_python_*.npz"))
    written = cache.stat().st_mtime_ns
    stats = next((root / CACHE_DIR).glob("*_stats.json")).stat().st_mtime_ns
    _module(root.name)  # relative path: same files, no rebuild
    _module(f"./{root.name}/")
    assert cache.stat().st_mtime_ns == written
    assert next((root / CACHE_DIR).glob("*_stats.json")).stat().st_mtime_ns == stats


def test_folder_cache_lives_under_data_dir(tmp_path, image_folder_writer):
    image_folder_writer(tmp_path / "mine", per_class=2)
    _module(tmp_path / "mine", val_size=0)  # data_dir is the folder holding train/ and test/
    assert list((tmp_path / "mine" / CACHE_DIR).glob("cifar10_folder_mine.npz"))


def test_incomplete_release_names_the_missing_files(cifar_python):
    root, _ = cifar_python
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete: data_batch_3 missing"):
        CIFAR10DataModule(data_dir=str(root)).prepare_data()


def test_corrupt_release_batch_is_named(cifar_python):
    root, _ = cifar_python
    batch = root / "cifar-10-batches-py" / "data_batch_2"
    batch.write_bytes(batch.read_bytes()[:500])
    with pytest.raises(ValueError, match="data_batch_2"):
        _module(root)


def test_image_folder_without_test_split(tmp_path, image_folder_writer):
    image_folder_writer(tmp_path, per_class=1)
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(FileNotFoundError, match="has train/ but no test/"):
        CIFAR10DataModule(data_dir=str(tmp_path)).prepare_data()


def test_image_folder_without_images(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split / "cat").mkdir(parents=True)
    with pytest.raises(ValueError, match="No image files"):
        _module(tmp_path, val_size=0)


def test_truncated_jpeg_is_named(tmp_path, image_folder_writer):
    written = image_folder_writer(tmp_path, per_class=2, suffix=".jpg")
    path = written["test"][1][0]
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=path.name):
        _module(tmp_path, val_size=0)


def test_grayscale_and_rgba_files_become_rgb(tmp_path, image_folder_writer):
    written = image_folder_writer(tmp_path, per_class=1)
    gray = np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)
    Image.fromarray(gray, mode="L").save(written["train"][0][0])
    rgba = np.full((32, 32, 4), 77, dtype=np.uint8)
    Image.fromarray(rgba, mode="RGBA").save(written["train"][1][0])
    images = _module(tmp_path, val_size=0).train_set.images
    assert torch.equal(images[0], torch.from_numpy(gray).expand(3, 32, 32))
    assert (images[1] == 77).all()


def test_release_batch_with_wrong_row_length_is_named(cifar_python):
    root, _ = cifar_python
    with open(root / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((4, 1024), dtype=np.uint8), b"labels": [0, 1, 2, 3]}, f)
    with pytest.raises(ValueError, match=r"test_batch: expected N x 3072 bytes"):
        _module(root)


def _serve(monkeypatch, archive_bytes: bytes | None) -> list[str]:
    """Stands in for the network in torchvision's downloader: every URL returns ``archive_bytes``."""
    import urllib.error

    from torchvision.datasets import utils

    fetched = []

    def urlretrieve(url, filename, chunk_size=1024 * 32):
        fetched.append(url)
        if archive_bytes is None:
            raise urllib.error.URLError("no network")
        Path(filename).write_bytes(archive_bytes)

    monkeypatch.setattr(utils, "_get_redirect_url", lambda url, max_hops=3: url)
    monkeypatch.setattr(utils, "_urlretrieve", urlretrieve)
    return fetched


def _release_archive(tmp_path, cifar_writer) -> tuple[bytes, dict]:
    import tarfile

    source = tmp_path / "source"
    arrays = cifar_writer(source)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive.read_bytes(), arrays


def test_download_checks_the_archive_and_extracts_the_release(tmp_path, monkeypatch, cifar_writer):
    import hashlib

    import zoo_lightning.data.cifar10 as cifar10

    archive, arrays = _release_archive(tmp_path, cifar_writer)
    monkeypatch.setattr(cifar10, "MD5", hashlib.md5(archive).hexdigest())
    fetched = _serve(monkeypatch, archive)
    data = _module(tmp_path / "data", download=True, val_size=0)
    assert fetched == [cifar10.URL]
    assert np.array_equal(data.train_set.images, arrays["train_images"])
    data.prepare_data()  # the release is there now: nothing fetched again
    assert fetched == [cifar10.URL]


def test_download_with_the_wrong_checksum_is_refused_and_not_extracted(tmp_path, monkeypatch, cifar_writer):
    archive, _ = _release_archive(tmp_path, cifar_writer)  # a valid tar.gz, just not the official one
    _serve(monkeypatch, archive)
    root = tmp_path / "data"
    with pytest.raises(ValueError, match="does not have the official MD5 c58f30108f718f92721af3b95e9a4b55"):
        CIFAR10DataModule(data_dir=str(root), download=True).prepare_data()
    assert not root.exists()  # nothing kept, nothing extracted; the folder the download made is gone too


def test_download_without_network_says_where_to_put_the_archive(tmp_path, monkeypatch):
    _serve(monkeypatch, None)
    root = tmp_path / "data"
    with pytest.raises(FileNotFoundError, match=f"put it at {root / 'cifar-10-python.tar.gz'}"):
        CIFAR10DataModule(data_dir=str(root), download=True).prepare_data()
