"""The folder data path: decode throughput into the store, and training from a store larger than the memory allowed.

    python -m benchmarks.store photos DIR --count 2000              # photo-sized JPEGs (500x375) in 10 classes
    python -m benchmarks.store decode DIR --image-size 224          # decode DIR into its cache, timed
    python -m benchmarks.store synthetic DIR --count 200000 --image-size 128   # a store written directly
    python -m benchmarks.store train DIR --image-size 128 --steps 60 --batch 64   # a bounded fit, peak memory
    python -m benchmarks.store upsized data/cifar10-jpeg DIR --classes dog,frog,horse,ship,truck --count 100
                                                                    # a small real folder for fine-tuning, at 64 px

``decode`` and ``train`` run against whichever checkout is on PYTHONPATH: this one (the store) or an older one
(its single-process decode into an in-memory ``.npz`` cache), so the two are timed by the same code.
``synthetic`` writes the cache that checkout reads (a store, or the older ``.npz``) with generated pixels: decoding
200,000 JPEGs on 2 cores would take hours and measures nothing ``decode`` does not. Numbers, never assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np

CLASSES = [f"class_{i}" for i in range(10)]


def photos(root: Path, count: int, width: int = 500, height: int = 375, seed: int = 0) -> None:
    """``count`` JPEGs (quality 90) of smooth random scenes with texture, as photos compress, in 10 class folders."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        folder = root / "train" / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
            (width, height), Image.BICUBIC
        )
        pixels = np.asarray(coarse).astype(np.int16) + rng.normal(0, 12, (height, width, 3)).astype(np.int16)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)


def upsized(source: Path, root: Path, classes: list[str], per_class: int, side: int = 64) -> dict:
    """The first ``per_class`` train images of each class of an image-folder release (the shared CIFAR-10 JPEGs),
    and all its test images of those classes, upsized (bicubic) to ``side`` pixels: a small real folder of photos
    larger than CIFAR's, for fine-tuning."""
    from PIL import Image

    written = {}
    for split, count in (("train", per_class), ("test", None)):
        for name in classes:
            files = sorted((source / split / name).glob("*.jpg"))[:count]
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for path in files:
                with Image.open(path) as image:
                    image.convert("RGB").resize((side, side), Image.BICUBIC).save(
                        root / split / name / path.name, quality=95
                    )
            written[f"{split}/{name}"] = len(files)
    return written


def decode(root: Path, image_size: int) -> dict:
    """Times reading ``root`` from nothing: the decode into the cache (and the statistics, a small part)."""
    from zoo_lightning.data import FolderDataModule

    shutil.rmtree(root / ".zoo_cache", ignore_errors=True)
    files = sum(1 for _ in (root / "train").rglob("*.jpg"))
    start, cpu = time.perf_counter(), _cpu_seconds()
    data = FolderDataModule(data_dir=str(root), image_size=image_size, val_size=0, batch_size=32)
    data.prepare_data()
    data.setup("fit")
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
    cache = sum(f.stat().st_size for f in (root / ".zoo_cache").rglob("*") if f.is_file())
    return {
        "images": files,
        "seconds": round(seconds, 2),
        "images_per_s": round(files / seconds, 1),
        "cpu_seconds": round(cpu, 2),  # this process's and its workers': what the decode costs on a busy machine
        "images_per_cpu_s": round(files / cpu, 1),
        "load_average": os.getloadavg()[0],
        "cache_bytes": cache,
        "stored_side": int(data.train_set.images.shape[-1]),
        "processes": len(os.sched_getaffinity(0)),
    }


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def synthetic(root: Path, count: int, image_size: int) -> dict:
    """Empty files as the folder's images (what the cache key is made from), and the cache of generated pixels
    written as the checkout on PYTHONPATH would write it; its pages are then dropped from the page cache."""
    from zoo_lightning.data import FolderDataModule

    for i in range(count):
        folder = root / "train" / CLASSES[i % len(CLASSES)]
        if i < len(CLASSES):
            folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").touch()
    data = FolderDataModule(data_dir=str(root), image_size=image_size, val_size=0, batch_size=32)
    labels = np.array([i % len(CLASSES) for i in range(count)], dtype=np.int64)
    order = np.argsort(np.array([f"{CLASSES[i % len(CLASSES)]}/{i:07d}" for i in range(count)]), kind="stable")
    labels = labels[order]  # the store's rows are in file order: class folder by class folder
    rng = np.random.default_rng(0)
    try:
        from zoo_lightning.data.store import FORMAT
    except ImportError:  # an older checkout: one .npz cache, read whole into memory
        return _synthetic_npz(root, data, labels, image_size, rng)
    side = data.native_size
    key = {"source": data.source_fingerprint(), "side": side, "classes": data.class_names}
    store = root / ".zoo_cache" / f"folder_{side}px"
    store.mkdir(parents=True, exist_ok=True)
    images = np.lib.format.open_memmap(store / "images.npy", mode="w+", dtype=np.uint8, shape=(count, 3, side, side))
    for start in range(0, count, 1000):
        block = labels[start : start + 1000]
        pixels = rng.integers(0, 200, (len(block), 3, side, side), dtype=np.uint8)
        images[start : start + len(block)] = pixels + (block * 5).astype(np.uint8)[:, None, None, None]
    images.flush()
    del images
    np.save(store / "labels.npy", labels)
    index = {"format": FORMAT, "key": key, "side": side, "counts": {"train": count}, "labeled": ["train"]}
    (store / "index.json").write_text(json.dumps(index))
    _drop_from_page_cache(store / "images.npy")
    return {"images": count, "side": side, "bytes": (store / "images.npy").stat().st_size}


def _synthetic_npz(root: Path, data, labels: np.ndarray, image_size: int, rng: np.random.Generator) -> dict:
    from zoo_lightning.files import write_array_cache

    count = len(labels)
    pixels = rng.integers(0, 200, (count, 3, image_size, image_size), dtype=np.uint8)
    pixels += (labels * 5).astype(np.uint8)[:, None, None, None]
    key = json.dumps({"source": data.source_fingerprint(), "size": image_size, "classes": data.class_names})
    empty = np.empty((0, 3, image_size, image_size), np.uint8)
    arrays = {
        "train_images": pixels,
        "train_labels": labels,
        "val_count": np.asarray(-1),
        "test_images": empty,
        "test_labels": np.empty(0, np.int64),
        "unlabeled": empty,
    }
    cache = root / ".zoo_cache" / f"folder_{image_size}px.npz"
    write_array_cache(cache, key, arrays, "resized images")
    _drop_from_page_cache(cache)
    return {"images": count, "side": image_size, "bytes": cache.stat().st_size}


def _drop_from_page_cache(file: Path) -> None:
    """Writes ``file`` out and drops its pages from the page cache, so the next reader reads the disk."""
    descriptor = os.open(file, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(descriptor)


def _memory() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def train(root: Path, image_size: int, steps: int, batch: int, backbone: str, warmup: int = 5) -> dict:
    """A bounded fit of ``backbone`` on the folder's cache: images/s after ``warmup`` steps, peak memory."""
    import lightning as L
    import torch

    from zoo_lightning.classifier import ImageClassifier
    from zoo_lightning.data import FolderDataModule

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    peaks = {"RssAnon": 0, "RssFile": 0, "VmRSS": 0}
    times: list[float] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch_, batch_idx) -> None:
            times.append(time.perf_counter())
            for name, value in _memory().items():
                if name in peaks:
                    peaks[name] = max(peaks[name], value)

    # Known statistics: the one-time pass that computes them is not what is timed here.
    normalization = {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "source": "benchmark"}
    start = time.perf_counter()
    data = FolderDataModule(
        data_dir=str(root), image_size=image_size, val_size=0, batch_size=batch, normalization=normalization
    )
    model = ImageClassifier(backbone=backbone, num_classes=10, stem="imagenet", lr_scheduler=None)
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Clock()],
        accelerator="cpu",
        devices=1,
    )
    trainer.fit(model, datamodule=data)
    timed = np.diff(times[warmup:])
    result = {
        "images": len(data.train_set),
        "stored": list(data.train_set.images.shape[1:]),
        "train_set_is_rows_of_a_store": getattr(data.train_set, "rows", None) is not None,
        "steps": len(times),
        "seconds_to_first_step": round(times[0] - start, 1),
        "images_per_s": round(batch / float(np.mean(timed)), 1) if len(timed) else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        **{f"peak_{name.lower()}_mb": round(value / 2**20) for name, value in peaks.items()},
    }
    cgroup = os.environ.get("BENCH_CGROUP")
    if cgroup:
        for name in ("memory.limit_in_bytes", "memory.max_usage_in_bytes", "memory.failcnt"):
            value = int(Path(cgroup, name).read_text())
            result[name] = round(value / 2**20) if "bytes" in name else value
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["photos", "decode", "synthetic", "train", "upsized"])
    parser.add_argument("root", type=Path)
    parser.add_argument("target", type=Path, nargs="?", help="upsized: the folder to write")
    parser.add_argument("--classes", default="dog,frog,horse,ship,truck")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--backbone", default="resnet18")
    args = parser.parse_args()
    if args.what == "photos":
        photos(args.root, args.count)
        return
    if args.what == "upsized":
        print(json.dumps(upsized(args.root, args.target, args.classes.split(","), args.count)))
        return
    result = {
        "decode": lambda: decode(args.root, args.image_size),
        "synthetic": lambda: synthetic(args.root, args.count, args.image_size),
        "train": lambda: train(args.root, args.image_size, args.steps, args.batch, args.backbone),
    }[args.what]()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
