"""ImageDataModule: the contract every dataset fulfils, from uint8 arrays in memory to device batches.

A subclass reads its release files into uint8 (N, 3, H, W) arrays (:meth:`load_splits`); this base
splits off a seeded validation part (:meth:`split_train`), takes the normalization statistics of the
training part (:meth:`stats`, cached beside the data), serves whole batches with :class:`BatchLoader`,
and after the transfer hands each batch to its :class:`DevicePipeline`, which augments it only
while the Trainer trains. What a prediction needs later (statistics, class names, input size) is
the DataModule's checkpoint state. A dataset with unlabeled images (:meth:`ImageDataModule.unlabeled_images`)
can serve them as a second stream, or train on them with a teacher's pseudo-labels (``pseudo_labels``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.data.folder import load_folder
from zoo_lightning.data.loader import BatchLoader, TwoStreamLoader, as_tensor
from zoo_lightning.data.pipeline import DevicePipeline
from zoo_lightning.data.stats import cached_channel_stats
from zoo_lightning.data.transforms import Normalize
from zoo_lightning.files import fingerprint

__all__ = ["ImageDataModule", "Splits", "CACHE_DIR", "PSEUDO_LABEL_MODES", "images_digest"]

CACHE_DIR = ".zoo_cache"
EVAL_ORDER_SEED = 1234  # the fixed order of validation and test images (see ImageDataModule._loader)
PSEUDO_LABEL_MODES = ("soft", "hard")


def images_digest(images: Tensor) -> str:
    """A short digest of a uint8 image array: its shape and 64 rows spread over it (a memmap reads only those).

    Pseudo-labels carry the digest of the unlabeled images they were made for, so a student whose data
    options select other images is stopped instead of learning from labels of the wrong pictures.
    """
    rows = torch.linspace(0, len(images) - 1, min(64, len(images))).long() if len(images) else torch.zeros(0).long()
    sample = torch.index_select(images, 0, rows).contiguous()
    return hashlib.sha1(repr(tuple(images.shape)).encode() + sample.numpy().tobytes()).hexdigest()[:16]


@dataclass
class Splits:
    """What a dataset's release holds, as uint8 (N, 3, H, W) arrays and int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: Sequence[str]


class ImageDataModule(L.LightningDataModule):
    """Base of the image-classification DataModules.

    Args:
        data_dir: folder holding the dataset (see the subclass for the layouts it reads).
        batch_size: images per batch (per device under DDP).
        val_size: images of the train set held out for validation, drawn with ``split_seed``;
            None takes the dataset's default (10,000 for CIFAR-10).
        split_seed: seed of the train/val split; the same seed gives the same split everywhere.
        download: fetch the official archive in ``prepare_data`` when it is not there.
        image_size: resize batches on the device to this size (e.g. 224 for ImageNet stems);
            None keeps the native size.
        eval_batch_size: batch size of validation and test (defaults to ``batch_size``).
        shuffle_seed: base seed of the per-epoch training shuffle and of the augmentation.
        predict_dir: a folder of one's own images for ``predict`` (any size and format).
        pipeline: what is done to batches on the device (crop, flip, progressive resizing,
            MixUp/CutMix, normalization); None is :class:`DevicePipeline` with its defaults. On the
            command line: ``--data.pipeline.mix cutmix``, or ``--data.pipeline my.Pipeline``.
        class_names: the classes, when they are known before the data is read: the CLI passes a
            checkpoint's for validate/test/predict, so the network has the checkpoint's outputs even
            where the dataset is not there (predict); the data read must then have these classes.
        normalization: ``{"mean": [...], "std": [...], "source": "..."}`` to normalize with instead of
            the training images' own statistics: the CLI links it from ``--model.pretrained``, whose
            weights expect the statistics they were trained with (ImageNet's for torchvision's).
        pseudo_labels: a file of a teacher's class probabilities for :meth:`unlabeled_images`
            (``selftrain`` writes them): those images join the training set with these targets.
        pseudo_label_mode: ``"soft"`` trains on the probabilities (labeled images get one-hot ones),
            ``"hard"`` on the most likely class.
        pseudo_label_threshold: only unlabeled images whose top probability reaches it are used.
        unlabeled: add :meth:`unlabeled_images` as a second training stream, shuffled every epoch, for
            objectives that teach on images without labels (Distillation's soft targets).
        unlabeled_batch_size: images per unlabeled batch (defaults to ``batch_size``).
    """

    num_classes: int = 0
    class_names: Sequence[str] = ()
    native_size: int = 0
    default_val_size: int = 0

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: int = 128,
        val_size: int | None = None,
        split_seed: int = 0,
        download: bool = True,
        image_size: int | None = None,
        eval_batch_size: int | None = None,
        shuffle_seed: int = 0,
        predict_dir: str | None = None,
        pipeline: DevicePipeline | None = None,
        class_names: list[str] | None = None,
        normalization: dict[str, Any] | None = None,
        pseudo_labels: str | None = None,
        pseudo_label_mode: str = "soft",
        pseudo_label_threshold: float = 0.0,
        unlabeled: bool = False,
        unlabeled_batch_size: int | None = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        if eval_batch_size is not None and eval_batch_size < 1:
            raise ValueError(f"eval_batch_size must be >= 1, got {eval_batch_size}.")
        val_size = self.default_val_size if val_size is None else val_size
        if val_size < 0:
            raise ValueError(f"val_size must be >= 0, got {val_size}.")
        if image_size is not None and image_size < 8:
            raise ValueError(f"image_size must be >= 8 pixels, got {image_size}.")
        if pipeline is not None and not isinstance(pipeline, DevicePipeline):
            raise TypeError(f"pipeline must be a DevicePipeline (on the command line: --data.pipeline.mix cutmix, "
                            f"or --data.pipeline CLASS_PATH), got {type(pipeline).__name__}.")
        _check_pseudo_label_options(pseudo_labels, pseudo_label_mode, pseudo_label_threshold, pipeline)
        if unlabeled and pseudo_labels:
            raise ValueError("--data.pseudo_labels trains on the unlabeled images already; leave --data.unlabeled out.")
        if unlabeled_batch_size is not None and unlabeled_batch_size < 1:
            raise ValueError(f"unlabeled_batch_size must be >= 1, got {unlabeled_batch_size}.")
        # A module instance in the hyper-parameters would be pickled into checkpoints, which load weights-only;
        # under LightningCLI the run's config.yaml records the pipeline.
        self.save_hyperparameters(ignore=["pipeline"])
        self.hparams.val_size = val_size
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.image_size = image_size or self.native_size
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        self.class_names = [str(n) for n in class_names] if class_names else list(self.class_names)
        self.num_classes = len(self.class_names) if class_names else type(self).num_classes
        self.pipeline = pipeline if pipeline is not None else DevicePipeline()
        self._attached = False  # whether the pipeline knows the current statistics and image size
        self._splits: dict[str, tuple[Tensor, Tensor]] = {}
        self._fingerprint: str | None = None
        self.predict_paths: list[Path] = []
        if normalization:
            self.mean, self.std = [float(v) for v in normalization["mean"]], [float(v) for v in normalization["std"]]
            rank_zero_info(f"Normalizing with the mean/std that the pretrained weights expect "
                           f"({normalization.get('source', 'given')}): mean {self.mean}, std {self.std}.")

    # --- what a subclass provides ---------------------------------------------------------------

    def find_or_download(self) -> None:
        """Checks the release files are there, downloads them if allowed, or says what to put where."""
        raise NotImplementedError

    def load_splits(self) -> Splits:
        """Reads (or loads the decoded cache of) the release files."""
        raise NotImplementedError

    def source_files(self) -> list[Path]:
        """The files the data is read from; their fingerprint keys the statistics cache."""
        raise NotImplementedError

    def unlabeled_images(self) -> Tensor:
        """The dataset's unlabeled images, uint8 (N, 3, H, W) like the labeled ones; a subclass that has some says so."""
        raise ValueError(f"{type(self).__name__} has no unlabeled images. CIFAR10DataModule has them with "
                         "--data.labeled_per_class N, STL10DataModule its unlabeled split, FolderDataModule root/unlabeled/.")

    def source_fingerprint(self) -> str:
        """:func:`fingerprint` of :meth:`source_files`, once per instance (60k files take a moment to list)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.source_files(), self.data_dir)
        return self._fingerprint

    def split_train(self, splits: Splits) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the training and validation parts of the train set: a seeded random split."""
        n = len(splits.train_labels)
        val_size = self.hparams.val_size
        if val_size >= n:
            raise ValueError(f"val_size={val_size} leaves no training images: the train set has {n}; use val_size < {n}.")
        order = np.random.default_rng(self.hparams.split_seed).permutation(n)
        return np.sort(order[val_size:]), np.sort(order[:val_size])

    # --- Lightning hooks --------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.trainer is not None and self.trainer.predicting:
            return  # prediction reads predict_dir and the checkpoint, never the dataset
        self.find_or_download()

    def setup(self, stage: str | None = None) -> None:
        if self._splits or stage == "predict":  # prediction needs only what the checkpoint carries
            return
        self._load()
        if self.mean is None:  # a checkpoint's statistics win over recomputing them
            self.mean, self.std = self.stats()
        self._attach_pipeline()

    def _load(self) -> None:
        """Reads the release (or its cache) and splits the train set; statistics stay untouched."""
        splits = self.load_splits()
        read = [str(name) for name in splits.class_names]  # plain str: checkpoints load weights-only
        expected = self.hparams.get("class_names")
        if expected and list(expected) != read:
            raise ValueError(f"The checkpoint was trained on {len(expected)} classes ({', '.join(expected)}); the "
                             f"data under {self.data_dir} has {len(read)} ({', '.join(read)}). Evaluate it on the "
                             "data it was trained on.")
        self.class_names = read
        train_idx, val_idx = self.split_train(splits)
        images, labels = splits.train_images, splits.train_labels
        self._splits = {
            "train": (as_tensor(images[train_idx]), as_tensor(labels[train_idx])),
            "val": (as_tensor(images[val_idx]), as_tensor(labels[val_idx])),
            "test": (as_tensor(splits.test_images), as_tensor(splits.test_labels)),
        }
        if self.hparams.get("pseudo_labels"):
            # The statistics stay those of the labeled images, the teacher's, which its pseudo-labels were made with.
            self._splits["labeled"] = self._splits["train"]
            self._splits["train"] = self._with_pseudo_labels(*self._splits["train"])

    def _with_pseudo_labels(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """The labeled training part plus the unlabeled images that pass the threshold, with the teacher's targets."""
        path = Path(self.hparams.pseudo_labels)
        if not path.is_file():
            raise FileNotFoundError(f"--data.pseudo_labels {str(path)!r} does not exist; `python -m zoo_lightning "
                                    "selftrain` writes them (pseudo_labels.pt in a student round's run folder).")
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
            probabilities = content["probabilities"].float()
        except Exception as error:  # truncated, foreign, or a dict without the entry
            raise ValueError(f"Cannot read pseudo-labels from {path} ({type(error).__name__}): write them again with "
                             "`python -m zoo_lightning selftrain`.") from None
        unlabeled = self.unlabeled_images()
        same = (tuple(probabilities.shape) == (len(unlabeled), self.num_classes)
                and content.get("digest") == images_digest(unlabeled)
                and list(content.get("class_names") or []) == list(self.class_names))
        if not same:
            raise ValueError(f"The pseudo-labels in {path} were made for {probabilities.shape[0]} other unlabeled images "
                             f"than these {len(unlabeled)} ({self.num_classes} classes): give the data options "
                             "(labeled_per_class, val_size, split_seed, data_dir) the teacher was trained with.")
        confidence, predicted = probabilities.max(dim=1)
        keep = torch.nonzero(confidence >= self.hparams.pseudo_label_threshold).flatten()
        if not len(keep):
            raise ValueError(f"No unlabeled image reaches pseudo_label_threshold {self.hparams.pseudo_label_threshold} "
                             f"(the teacher's highest confidence is {confidence.max():.3f}): lower it.")
        extra = torch.index_select(unlabeled, 0, keep)
        if self.hparams.pseudo_label_mode == "hard":
            targets = predicted[keep]
        else:  # one kind of target per batch: the labeled images' as one-hot probabilities
            targets = probabilities[keep]
            labels = torch.nn.functional.one_hot(labels, self.num_classes).float()
        rank_zero_info(f"Training on {len(images)} labeled and {len(keep)} of {len(unlabeled)} pseudo-labeled images "
                       f"({self.hparams.pseudo_label_mode} labels, confidence >= {self.hparams.pseudo_label_threshold}).")
        return torch.cat([images, extra]), torch.cat([labels, targets])

    def _with_unlabeled_stream(self, labeled: BatchLoader, batch_size: int | None) -> TwoStreamLoader:
        """``labeled`` paired with shuffled batches of :meth:`unlabeled_images` (semi-supervised objectives)."""
        rank, world_size = self._rank_and_world()
        unlabeled = BatchLoader(
            self.unlabeled_images, None, batch_size=batch_size or self.batch_size,
            shuffle=True, drop_last=True, seed=self.hparams.shuffle_seed + 1, rank=rank, world_size=world_size,
            epoch=lambda: self.trainer.current_epoch if self.trainer is not None else 0,
        )
        # An epoch is one pass over the labeled images; the unlabeled stream is reshuffled every epoch.
        return TwoStreamLoader(labeled, unlabeled)

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean/std of the training part, in [0, 1] units (float64, one pass over the uint8 pixels).

        Cached in ``<data_dir>/.zoo_cache/<module>_stats.json`` under the source files' fingerprint and
        the split, so a changed file or another split recomputes them; a damaged file is ignored.
        """
        key = {"source": self.source_fingerprint(), "split": self._split_key()}
        cache = self.data_dir / CACHE_DIR / f"{type(self).__name__.lower()}_stats.json"
        return cached_channel_stats(cache, key, self._train_images)

    def _train_images(self) -> Tensor:
        if "train" not in self._splits:
            self._load()
        return self._splits.get("labeled", self._splits["train"])[0]

    def _split_key(self) -> dict[str, Any]:
        return {"val_size": self.hparams.val_size, "split_seed": self.hparams.split_seed}

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def _pin_memory(self) -> bool:
        trainer = self.trainer
        return trainer is not None and trainer.strategy.root_device.type == "cuda"

    def _loader(self, split: str, train: bool) -> BatchLoader:
        if not self._splits:
            self.setup()
        images, labels = self._splits[split]
        rank, world_size = self._rank_and_world()
        if train:
            # Read when each epoch's iteration starts, so every epoch gets its own permutation.
            seed, epoch = self.hparams.shuffle_seed, lambda: self.trainer.current_epoch if self.trainer is not None else 0
        else:
            # One fixed permutation, the same every epoch and on every machine: releases and splits are
            # stored class by class, and `limit_val_batches` / `limit_test_batches` would otherwise
            # evaluate the first class or two alone. Full-set metrics do not depend on the order.
            seed, epoch = EVAL_ORDER_SEED, lambda: 0
        return BatchLoader(
            images, labels,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=True, drop_last=train, seed=seed, rank=rank, world_size=world_size, epoch=epoch,
            pin_memory=self._pin_memory(),
        )

    def training_images(self, count: int, seed: int = 0) -> Tensor:
        """``count`` training images drawn at random (seeded), as the network sees them before any
        augmentation: float32 (N, C, H, W) on the CPU, normalized and at ``image_size``.

        For callbacks that fit something to the data, such as patch whitening, without knowing the dataset.
        """
        if not self._splits:
            self.setup("fit")
        self._attach_pipeline()
        images = self._splits["train"][0]
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:count]
        return self.pipeline(torch.index_select(images, 0, order.sort().values))[0]

    def train_dataloader(self) -> BatchLoader | TwoStreamLoader:
        loader = self._loader("train", train=True)
        images = loader.num_samples // loader.world_size
        if self.batch_size > images:
            raise ValueError(f"batch_size {self.batch_size} is larger than the {images} training images"
                             f"{' of each process' if loader.world_size > 1 else ''}: use --data.batch_size "
                             f"{min(128, images)} or less.")
        if self.hparams.unlabeled:
            return self._with_unlabeled_stream(loader, self.hparams.unlabeled_batch_size)
        return loader

    def val_dataloader(self) -> BatchLoader | list:
        return self._loader("val", train=False) if self.hparams.val_size > 0 else []

    def test_dataloader(self) -> BatchLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> BatchLoader:
        """The images under ``predict_dir``, batched with their index into :attr:`predict_paths`."""
        if not self.hparams.predict_dir:
            raise ValueError("predict needs images: pass --data.predict_dir DIR (a folder of .jpg/.png files).")
        images, self.predict_paths = load_folder(self.hparams.predict_dir, self.image_size)
        return BatchLoader(images, torch.arange(len(images)), batch_size=self.eval_batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Prepares a batch on the device with :attr:`pipeline`: float32, normalized, augmented in training."""
        if isinstance(batch, TwoStreamBatch):
            labeled = self.on_after_batch_transfer(batch.labeled, dataloader_idx)
            # The unlabeled images get the same augmentation, with no targets to mix.
            return TwoStreamBatch(labeled, self._prepare(batch.unlabeled, None)[0])
        images, *rest = batch if isinstance(batch, (tuple, list)) else (batch,)
        if images.dtype != torch.uint8:  # already prepared (the model summary's example input, a caller's floats)
            return self._to_precision(batch)
        images, targets = self._prepare(images, rest[0] if rest else None)
        return (images, targets, *rest[1:]) if rest else images

    def _prepare(self, images: Tensor, targets: Tensor | None) -> tuple[Tensor, Tensor | None]:
        trainer = self.trainer
        training = trainer is not None and trainer.training
        self._attach_pipeline()
        if training:
            images, targets = self.pipeline(images, targets, training=True, epoch=trainer.current_epoch,
                                            rank=trainer.global_rank)
        else:
            images, targets = self.pipeline(images, targets)
        return self._to_precision((images, targets))

    def _to_precision(self, batch: Any) -> Any:
        """Floating tensors in the network's dtype under --trainer.precision 16-true / bf16-true / 64-true.

        Lightning casts a batch before the transfer, while ours is still uint8; mixed and 32-bit
        precision leave it float32. Soft (MixUp/CutMix) targets follow the images.
        """
        return batch if self.trainer is None else self.trainer.precision_plugin.convert_input(batch)

    def _attach_pipeline(self) -> None:
        """Tells the pipeline the statistics and sizes, once they are known (after setup or a checkpoint)."""
        if self._attached:
            return
        if self.mean is None or self.std is None:
            raise RuntimeError("Normalization statistics are unknown: call setup() or load a checkpoint first.")
        self.pipeline.attach(mean=self.mean, std=self.std, image_size=self.image_size, native_size=self.native_size,
                             num_classes=self.num_classes, seed=self.hparams.shuffle_seed)
        self._attached = True

    @property
    def normalize(self) -> Normalize | None:
        """The pipeline's :class:`Normalize` (``inverse`` turns batches back into [0, 1] images), or None
        while the statistics are unknown."""
        if not self._attached and self.mean is not None:
            self._attach_pipeline()
        return self.pipeline.normalize if self._attached else None

    # --- what a checkpoint carries for prediction -------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "class_names": list(self.class_names), "image_size": self.image_size,
                "class_path": f"{type(self).__module__}.{type(self).__qualname__}"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.mean, self.std = state_dict["mean"], state_dict["std"]
        self.class_names = list(state_dict["class_names"])
        self.image_size = state_dict["image_size"]
        self._attached = False  # the next batch attaches the pipeline to these statistics


def _check_pseudo_label_options(path: str | None, mode: str, threshold: float, pipeline: DevicePipeline | None) -> None:
    if mode not in PSEUDO_LABEL_MODES:
        raise ValueError(f"Unknown pseudo_label_mode {mode!r}: choose one of {', '.join(PSEUDO_LABEL_MODES)}.")
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"pseudo_label_threshold must be in [0, 1) (the teacher's top probability an unlabeled image "
                         f"needs), got {threshold}.")
    if path and mode == "soft" and getattr(pipeline, "mix", None):
        raise ValueError("--data.pipeline.mix mixes class indices, and soft pseudo-labels are probabilities: use "
                         "--data.pseudo_label_mode hard with mixing, or leave mix out.")
