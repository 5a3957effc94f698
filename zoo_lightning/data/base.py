"""ImageDataModule: the contract every dataset fulfils, from uint8 arrays in memory to device batches.

A subclass reads its release files into uint8 (N, 3, H, W) arrays (:meth:`load_splits`); this base
splits off a seeded validation part (:meth:`split_train`) into the public :attr:`train_set`,
:attr:`val_set` and :attr:`test_set`, takes the normalization statistics of the training part
(:meth:`stats`, cached beside the data), serves whole batches with :class:`BatchLoader`, and after
the transfer hands each batch to its :class:`DevicePipeline`, which augments it only while the
Trainer trains. What a prediction needs later (statistics, class names, input size) is the
DataModule's checkpoint state. A dataset with unlabeled images (:meth:`ImageDataModule.unlabeled_images`)
can serve them as a second stream, or train on them with a teacher's pseudo-labels
(``pseudo_labels``: a :class:`~zoo_lightning.data.pseudo_labels.PseudoLabeledSet`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from zoo_lightning.data.device import prepare_batch
from zoo_lightning.data.folder import load_folder
from zoo_lightning.data.loader import BatchLoader, TrainPosition, TwoStreamLoader, trainer_loader
from zoo_lightning.data.pipeline import DevicePipeline
from zoo_lightning.data.pseudo_labels import PseudoLabeledSet
from zoo_lightning.data.splits import SPLIT_OPTIONS, TRAINING_SET_OPTIONS, ImageSet, Splits, seeded_split, split_release
from zoo_lightning.data.stats import cached_channel_stats
from zoo_lightning.data.transforms import Normalize
from zoo_lightning.files import fingerprint
from zoo_lightning.options import Fraction, ImageSide, NonNegativeInt, PositiveInt, PseudoLabelMode

__all__ = [
    "ImageDataModule",
    "Splits",
    "ImageSet",
    "CACHE_DIR",
    "SPLIT_OPTIONS",
    "TRAINING_SET_OPTIONS",
    "trainer_datamodule",
    "image_datamodule",
]

CACHE_DIR = ".zoo_cache"


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
        pseudo_labels: a file of a teacher's class probabilities for :meth:`unlabeled_images` (``selftrain`` writes
            them): those images join the training set with its targets (a :class:`PseudoLabeledSet`).
        pseudo_label_mode: ``"soft"`` trains on the probabilities (labeled images get one-hot ones),
            ``"hard"`` on the most likely class.
        pseudo_label_threshold: only unlabeled images whose top probability reaches it are used.
        unlabeled: add :meth:`unlabeled_images` as a second training stream, shuffled every epoch, for
            objectives that teach on images without labels (Distillation's soft targets).
        unlabeled_batch_size: images per unlabeled batch (defaults to ``batch_size``).

    Attributes:
        train_set, val_set, test_set: each split's :class:`ImageSet` once :meth:`setup` has read them; None before.
    """

    num_classes: int = 0
    class_names: Sequence[str] = ()
    native_size: int = 0
    default_val_size: int = 0
    # Whether the native_size images hold a margin around the image_size view (a store of photos): crops are cut
    # from them, and evaluation and prediction take their centre (see DevicePipeline.attach).
    stored_with_margin: bool = False
    # Whether the sets are read from a store on disk (a memory map): the loaders then read the next batch ahead.
    stored_on_disk: bool = False

    def __init__(
        self,
        data_dir: str = "data",
        batch_size: PositiveInt = 128,
        val_size: NonNegativeInt | None = None,
        split_seed: int = 0,
        download: bool = True,
        image_size: ImageSide | None = None,
        eval_batch_size: PositiveInt | None = None,
        shuffle_seed: int = 0,
        predict_dir: str | None = None,
        pipeline: DevicePipeline | None = None,
        class_names: list[str] | None = None,
        normalization: dict[str, Any] | None = None,
        pseudo_labels: str | None = None,
        pseudo_label_mode: PseudoLabelMode = "soft",
        pseudo_label_threshold: Fraction = 0.0,
        unlabeled: bool = False,
        unlabeled_batch_size: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        _check_relations(pseudo_labels, pseudo_label_mode, unlabeled, pipeline)
        val_size = self.default_val_size if val_size is None else val_size
        # A module instance in the hyper-parameters would be pickled into checkpoints, which load weights-only;
        # under LightningCLI the run's config.yaml records the pipeline.
        self.save_hyperparameters(ignore=["pipeline"])
        self.hparams["val_size"] = val_size
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.image_size = image_size or self.native_size
        self.mean: list[float] | None = None  # per-channel statistics: the training images', or the weights'
        self.std: list[float] | None = None
        self.class_names = [str(n) for n in class_names] if class_names else list(self.class_names)
        self.num_classes = len(self.class_names) if class_names else type(self).num_classes
        self.pipeline = pipeline if pipeline is not None else DevicePipeline()
        self._attached = False  # whether the pipeline knows the current statistics and image size
        # Resumed mid-epoch, the augmentation's seeds continue too (two draws a step with an unlabeled stream).
        self.train_position = TrainPosition(lambda epoch, n: self.pipeline.resume_at(epoch, n * (1 + unlabeled)))
        self.train_set: ImageSet | None = None  # each split's ImageSet, once setup has read them
        self.val_set: ImageSet | None = None
        self.test_set: ImageSet | None = None
        self._fingerprint: str | None = None
        self.predict_paths: list[Path] = []
        if normalization:
            self.mean, self.std = [float(v) for v in normalization["mean"]], [float(v) for v in normalization["std"]]
            rank_zero_info(
                f"Normalizing with the mean/std that the pretrained weights expect "
                f"({normalization.get('source', 'given')}): mean {self.mean}, std {self.std}."
            )

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
        """The dataset's unlabeled images, uint8 (N, 3, H, W) like the labeled ones; a subclass with some says so."""
        raise ValueError(
            f"{type(self).__name__} has no unlabeled images. CIFAR10DataModule has them with --data."
            "labeled_per_class N, STL10DataModule its unlabeled split, FolderDataModule root/unlabeled/."
        )

    def source_fingerprint(self) -> str:
        """:func:`fingerprint` of :meth:`source_files`, once per instance (60k files take a moment to list)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.source_files(), self.data_dir)
        return self._fingerprint

    def split_train(self, splits: Splits) -> tuple[np.ndarray, np.ndarray]:
        """Indices of the training and validation parts of the train set: a seeded random split."""
        return seeded_split(len(splits.train_labels), self.hparams["val_size"], self.hparams["split_seed"])

    # --- Lightning hooks --------------------------------------------------------------------------

    def prepare_data(self) -> None:
        if self.trainer is None or not self.trainer.predicting:  # prediction reads predict_dir and the checkpoint
            self.find_or_download()

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None or stage == "predict":  # prediction needs only what the checkpoint carries
            return
        self._load()
        if self.mean is None:  # a checkpoint's statistics win over recomputing them
            self.mean, self.std = self.stats()
        self._attach_pipeline()

    def _load(self) -> ImageSet:
        """Reads the release (or its cache) and splits the train set; statistics stay untouched. Returns
        :attr:`train_set`."""
        splits = self.load_splits()
        read = [str(name) for name in splits.class_names]  # plain str: checkpoints load weights-only
        expected = self.hparams.get("class_names")
        if expected and list(expected) != read:
            raise ValueError(
                f"The checkpoint was trained on {len(expected)} classes ({', '.join(expected)}); the "
                f"data under {self.data_dir} has {len(read)} ({', '.join(read)}). Evaluate it on the "
                "data it was trained on."
            )
        self.class_names = read
        self.train_set, self.val_set, self.test_set = split_release(splits, *self.split_train(splits))
        hparams = self.hparams
        if hparams.get("pseudo_labels"):
            self.train_set = PseudoLabeledSet.from_file(
                hparams["pseudo_labels"],
                self.train_set,
                self.unlabeled_images(),
                read,
                hparams["pseudo_label_mode"],
                hparams["pseudo_label_threshold"],
            )
            rank_zero_info(f"Training on {self.train_set}.")
        return self.train_set

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean/std of the training part, in [0, 1] units (float64, one pass over the uint8 pixels).

        Cached in ``<data_dir>/.zoo_cache/<module>_stats.json`` under the source files' fingerprint and
        the split, so a changed file or another split recomputes them; a damaged file is ignored.
        """
        key = {"source": self.source_fingerprint(), "split": self._split_key()}
        cache = self.data_dir / CACHE_DIR / f"{type(self).__name__.lower()}_stats.json"
        return cached_channel_stats(cache, key, self._train_images)

    def _train_images(self) -> ImageSet:
        train_set = self._load() if self.train_set is None else self.train_set
        return train_set.labeled  # pseudo-labeled: a student normalizes as its teacher did

    def _split_key(self) -> dict[str, Any]:
        """The :data:`SPLIT_OPTIONS` this DataModule has, with their values (None, their default, left out)."""
        return {name: self.hparams[name] for name in SPLIT_OPTIONS if self.hparams.get(name) is not None}

    def _read_sets(self, stage: str | None = None) -> tuple[ImageSet, ImageSet, ImageSet]:
        """:attr:`train_set`, :attr:`val_set` and :attr:`test_set`, read by :meth:`setup` first when it has not run."""
        if self.train_set is None:
            self.setup(stage)
        if self.train_set is None or self.val_set is None or self.test_set is None:  # a subclass's own setup
            raise RuntimeError(
                f"{type(self).__name__}.setup() read no data: a DataModule's setup must call ImageDataModule.setup."
            )
        return self.train_set, self.val_set, self.test_set

    def _loader(self, split: Literal["train", "val", "test"]) -> BatchLoader:
        """The loader of ``split``; the data is read first when setup has not run."""
        train_set, val_set, test_set = self._read_sets()
        part, train = {"train": train_set, "val": val_set, "test": test_set}[split], split == "train"
        loader = trainer_loader(
            part.images,
            part.labels,
            self.batch_size if train else self.eval_batch_size,
            self.trainer,
            train,
            self.hparams["shuffle_seed"],
            rows=part.rows,
            prefetch=self.stored_on_disk,
        )
        return self.train_position.track(loader) if train else loader

    def training_images(self, count: int, seed: int = 0) -> Tensor:
        """``count`` training images drawn at random (seeded), as the network sees them before any
        augmentation: float32 (N, C, H, W) on the CPU, normalized and at ``image_size``.

        For callbacks that fit something to the data, such as patch whitening, without knowing the dataset.
        """
        train_set = self._read_sets("fit")[0]
        self._attach_pipeline()
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))[:count]
        return self.pipeline(train_set.take(order.sort().values))[0]

    def train_dataloader(self) -> BatchLoader | TwoStreamLoader:
        loader = self._loader("train")
        images = loader.num_samples // loader.world_size
        if self.batch_size > images:
            raise ValueError(
                f"batch_size {self.batch_size} is larger than the {images} training images"
                f"{' of each process' if loader.world_size > 1 else ''}: use --data.batch_size "
                f"{min(128, images)} or less."
            )
        if not self.hparams["unlabeled"]:
            return loader
        # Paired with shuffled batches of the unlabeled images (semi-supervised objectives); an epoch is one pass
        # over the labeled images, and the unlabeled stream is reshuffled every epoch.
        unlabeled = trainer_loader(
            self.unlabeled_images,
            None,
            self.hparams["unlabeled_batch_size"] or self.batch_size,
            self.trainer,
            True,
            self.hparams["shuffle_seed"] + 1,
        )
        return TwoStreamLoader(loader, unlabeled)

    def val_dataloader(self) -> BatchLoader | list[BatchLoader]:
        return self._loader("val") if self.hparams["val_size"] > 0 else []

    def test_dataloader(self) -> BatchLoader:
        return self._loader("test")

    def predict_dataloader(self) -> BatchLoader:
        """The images under ``predict_dir``, batched with their index into :attr:`predict_paths`."""
        if not self.hparams["predict_dir"]:
            raise ValueError("predict needs images: pass --data.predict_dir DIR (a folder of .jpg/.png files).")
        # Framed as evaluation sees the stored images: shorter side to the stored size, then the centre.
        resized = self.native_size if self.stored_with_margin else None
        images, self.predict_paths = load_folder(self.hparams["predict_dir"], self.image_size, resized)
        return BatchLoader(images, torch.arange(len(images)), batch_size=self.eval_batch_size)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Prepares a batch on the device with :attr:`pipeline` (:func:`~zoo_lightning.data.device.prepare_batch`):
        float, normalized, augmented in training, in the network's precision."""
        self._attach_pipeline()
        return prepare_batch(batch, self.pipeline, self.trainer)

    def _attach_pipeline(self) -> None:
        """Tells the pipeline the statistics and sizes once they are known (after setup or a checkpoint); until
        then the pipeline refuses uint8 batches."""
        if self._attached or self.mean is None or self.std is None:
            return
        self.pipeline.attach(
            mean=self.mean,
            std=self.std,
            image_size=self.image_size,
            native_size=self.native_size,
            num_classes=self.num_classes,
            seed=self.hparams["shuffle_seed"],
            margin=self.stored_with_margin,
        )
        self._attached = True

    @property
    def normalize(self) -> Normalize | None:
        """The pipeline's :class:`Normalize` (``inverse``: back to [0, 1] images); None until the statistics are
        known."""
        self._attach_pipeline()
        return self.pipeline.normalize if self._attached else None

    def state_dict(self) -> dict[str, Any]:
        """What prediction needs (statistics, classes, size) and where training is in its epoch."""
        return {
            "mean": self.mean,
            "std": self.std,
            "class_names": list(self.class_names),
            "image_size": self.image_size,
            "class_path": f"{type(self).__module__}.{type(self).__qualname__}",
            "train_position": self.train_position.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_position.load_state_dict(state_dict.get("train_position"))
        self.mean, self.std = state_dict["mean"], state_dict["std"]
        self.class_names = list(state_dict["class_names"])
        self.image_size = state_dict["image_size"]
        self._attached = False  # the next batch attaches the pipeline to these statistics


def trainer_datamodule(trainer: L.Trainer) -> L.LightningDataModule | None:
    """The DataModule ``trainer`` runs with; None when it was given dataloaders instead."""
    # Lightning's DataConnector sets trainer.datamodule (None at first), but the Trainer class does not declare it.
    return trainer.datamodule  # type: ignore[attr-defined]


def image_datamodule(trainer: L.Trainer, user: str) -> ImageDataModule:
    """The :class:`ImageDataModule` ``trainer`` runs with; a ValueError naming ``user`` (what needs it) otherwise."""
    datamodule = trainer_datamodule(trainer)
    if not isinstance(datamodule, ImageDataModule):
        raise ValueError(
            f"{user} needs one of zoo_lightning.data's DataModules (an ImageDataModule); this run has "
            f"{type(datamodule).__name__ if datamodule is not None else 'none'}."
        )
    return datamodule


def _check_relations(pseudo_labels: str | None, mode: str, unlabeled: bool, pipeline: DevicePipeline | None) -> None:
    """Options each right alone (their types say so) but wrong together: checked here, not by the parser."""
    if unlabeled and pseudo_labels:
        raise ValueError("--data.pseudo_labels trains on the unlabeled images already; leave --data.unlabeled out.")
    if pseudo_labels and mode == "soft" and getattr(pipeline, "mix", None):
        raise ValueError(
            "--data.pipeline.mix mixes class indices, and soft pseudo-labels are probabilities: use "
            "--data.pseudo_label_mode hard with mixing, or leave mix out."
        )
