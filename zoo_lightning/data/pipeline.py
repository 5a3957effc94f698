"""DevicePipeline: everything done to a uint8 batch once it is on the device, as one configurable object.

A DataModule hands each batch to its pipeline after the transfer. In training the pipeline draws
the spatial augmentation (:meth:`DevicePipeline.augment`, seeded so every machine and every resumed
run repeats it), normalizes, resizes (progressive resizing) and mixes (MixUp/CutMix); in evaluation
it only normalizes and resizes. A new augmentation is a subclass overriding ``augment``, or a new
option here; configs choose it with ``class_path``/``init_args``::

    data:
      class_path: zoo_lightning.data.CIFAR10DataModule
      init_args:
        pipeline:
          class_path: zoo_lightning.data.DevicePipeline
          init_args: {mix: cutmix, train_sizes: {0: 24, 30: 32}}

The class path may be left out for DevicePipeline itself (``pipeline: {mix: cutmix}``), and on the
command line an option is ``--data.pipeline.mix cutmix``, another class ``--data.pipeline CLASS_PATH``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from zoo_lightning.data.transforms import (
    AlternatingFlip,
    CenterCrop,
    Cutout,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
)
from zoo_lightning.options import (
    AreaRange,
    AspectRange,
    EpochSides,
    MixMode,
    NonNegativeInt,
    PaddingMode,
    PositiveFloat,
)

__all__ = ["DevicePipeline"]


class DevicePipeline(nn.Module):
    """The on-device transform of every batch: seeded augmentation, normalization, resizing, mixing.

    Args:
        crop_padding: zero padding of the random crop, in pixels (0 turns the crop off); None takes
            one eighth of the dataset's native image side: 4 at 32x32 (CIFAR-10), 12 at 96x96 (STL-10).
            Images stored with a margin around the input size (FolderDataModule's ``margin``) are cropped
            within their own pixels instead, with no padding unless this asks for some.
        scale: the scale augmentation of ImageNet recipes (torchvision's ``RandomResizedCrop``), e.g.
            ``[0.08, 1.0]``: each training image is a random box of this share of the stored image's area,
            with an aspect ratio drawn from ``ratio``, resized to the input size. It replaces the crop.
            None: no scale augmentation.
        ratio: the range of the boxes' width / height with ``scale``; None: ``[3/4, 4/3]``.
        flip: random horizontal flips.
        alternating_flip: instead of independent flips, each image is mirrored or not at random in
            even epochs and the other way in odd ones (airbench), so two epochs show both views.
        padding_mode: how the crop fills the border: ``"zeros"``, or ``"reflect"`` (a mirror of the
            image: a translation with no black edge).
        cutout: side of a square set to the mean colour in every training image (0: none).
        train_sizes: progressive resizing, ``{first_epoch: side}``: from that epoch on, training batches
            are resized to ``side`` x ``side`` pixels, e.g. ``{0: 24, 30: 32}`` trains the first 30
            epochs at 24 pixels (about twice the images/s of 32 on a CIFAR ResNet) and the rest at
            full size. Epochs before the first key train at the DataModule's ``image_size``;
            validation, test and prediction always run at ``image_size``.
        mix: batch mixing in training, torchvision.transforms.v2's ``"mixup"``, ``"cutmix"`` or
            ``"mixup_cutmix"`` (one of the two per batch); targets become soft (N, C) labels,
            which every objective accepts.
        mix_alpha: the Beta(alpha, alpha) parameter of the mixing ratio.
    """

    def __init__(
        self,
        crop_padding: NonNegativeInt | None = None,
        flip: bool = True,
        train_sizes: EpochSides | None = None,
        mix: MixMode | None = None,
        mix_alpha: PositiveFloat = 1.0,
        alternating_flip: bool = False,
        padding_mode: PaddingMode = "zeros",
        cutout: NonNegativeInt = 0,
        scale: AreaRange | None = None,
        ratio: AspectRange | None = None,
    ) -> None:
        super().__init__()
        # Each option is right alone (its type says so); these relations are wrong together, which no type says.
        if scale is not None and crop_padding:
            raise ValueError("--data.pipeline.scale draws the crop itself: leave --data.pipeline.crop_padding out.")
        if ratio is not None and scale is None:
            raise ValueError("--data.pipeline.ratio shapes the scale augmentation: set --data.pipeline.scale too.")
        # int keys again: a YAML or JSON round trip of the hyper-parameters (logger, config) may make them strings
        sizes = {int(first): int(side) for first, side in (train_sizes or {}).items()}
        self.crop_padding, self.flip = crop_padding, flip
        self.alternating_flip, self.padding_mode, self.cutout = alternating_flip, padding_mode, cutout
        self.train_sizes = sizes
        self.mix, self.mix_alpha = mix, mix_alpha
        self.scale = None if scale is None else (float(scale[0]), float(scale[1]))
        self.ratio = (3 / 4, 4 / 3) if ratio is None else (float(ratio[0]), float(ratio[1]))
        self.margin = False
        # Set by attach(), once the DataModule knows them.
        self.normalize: Normalize | None = None
        self.image_size = 0
        self.padding = 0
        self.seed = 0
        self.spatial = nn.Sequential()  # no augmentation until attach() knows the padding and the mean colour
        self.center: nn.Module = nn.Identity()  # what evaluation sees of a stored image
        self.mixer: nn.Module | None = None
        self.resize: nn.Module = nn.Identity()
        self._train_resize: tuple[int, nn.Module] | None = None  # (side, its Resize), rebuilt when the side changes
        self._epoch, self._calls = -1, 0  # the epoch being augmented and its batches so far (the seed's counter)

    # --- set up by the DataModule -----------------------------------------------------------------

    def attach(
        self,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        native_size: int,
        num_classes: int,
        seed: int,
        margin: bool = False,
    ) -> None:
        """Fixes what depends on the dataset: its statistics, sizes, class count and the augmentation seed.

        Args:
            mean, std: per-channel statistics of the training images in [0, 1] units.
            image_size: the side batches leave the pipeline with (outside ``train_sizes`` epochs).
            native_size: the side of the dataset's images; sets the default ``crop_padding``.
            num_classes: the length of MixUp/CutMix's soft targets.
            seed: base of the augmentation seeds (the DataModule's ``shuffle_seed``).
            margin: the ``native_size`` images hold a margin around the ``image_size`` view (a store at 1.15x):
                training crops ``image_size`` windows out of them instead of padding, evaluation takes their
                centre, as torchvision's ImageNet evaluation does (resize to 256, centre 224).
        """
        self.normalize = Normalize(mean, std)
        self.image_size, self.seed, self.margin = image_size, seed, margin and native_size > image_size
        default_padding = 0 if self.margin or self.scale is not None else native_size // 8
        self.padding = default_padding if self.crop_padding is None else self.crop_padding
        self.center = CenterCrop(image_size) if self.margin else nn.Identity()
        self.spatial = self._crop_and_flip(mean)
        self.mixer = self._batch_mix(num_classes)
        self.resize = Resize(image_size) if image_size != native_size else nn.Identity()
        self._train_resize = None

    def _crop_and_flip(self, mean: Sequence[float]) -> nn.Sequential:
        mean_colour = [int(round(255 * m)) for m in mean]
        if self.scale is not None:
            crop: list[nn.Module] = [RandomResizedCrop(self.image_size, self.scale, self.ratio)]
        elif self.margin:
            crop = [RandomCrop(self.padding, self.padding_mode, size=self.image_size)]
        else:
            crop = [RandomCrop(self.padding, self.padding_mode)] if self.padding else []
        return nn.Sequential(
            *([AlternatingFlip(self.seed)] if self.alternating_flip else []),
            *crop,
            *([RandomHorizontalFlip()] if self.flip and not self.alternating_flip else []),
            *([Cutout(self.cutout, mean_colour)] if self.cutout else []),
        )

    def _batch_mix(self, num_classes: int) -> nn.Module | None:
        """torchvision's batched MixUp/CutMix on (images, targets), or None."""
        if self.mix is None:
            return None
        from torchvision.transforms import v2

        kwargs = dict(alpha=self.mix_alpha, num_classes=num_classes)
        options = {
            "mixup": [v2.MixUp(**kwargs)],
            "cutmix": [v2.CutMix(**kwargs)],
            "mixup_cutmix": [v2.MixUp(**kwargs), v2.CutMix(**kwargs)],
        }[self.mix]
        return options[0] if len(options) == 1 else v2.RandomChoice(options)

    # --- per batch --------------------------------------------------------------------------------

    def augment(self, images: Tensor) -> Tensor:
        """The spatial augmentation of a uint8 (N, C, H, W) training batch; override to add one.

        Its random draws are seeded (see :meth:`_seeded_augment`); it runs before normalization and
        returns uint8 images, of the input size or cut to the ``image_size`` view (a margin, ``scale``).
        The default is the flip, crop (or scale augmentation) and cutout of the options (the alternating
        flip first, as it depends on the untouched image).
        """
        for transform in self.spatial:
            images = transform(images, self._epoch) if isinstance(transform, AlternatingFlip) else transform(images)
        return images

    def resume_at(self, epoch: int, batches: int) -> None:
        """Continues ``epoch``'s seeds after its first ``batches`` batches, as a run resumed mid-epoch must."""
        self._epoch, self._calls = epoch, batches

    def _seeded_augment(self, images: Tensor, epoch: int, rank: int) -> Tensor:
        """Runs :meth:`augment` with its random draws seeded by (seed, rank, epoch, batch).

        The same crops and flips on every machine, independent of the global RNG, and a run resumed
        from an end-of-epoch checkpoint repeats the uninterrupted run's augmentation.
        """
        if epoch != self._epoch:
            self._epoch, self._calls = epoch, 0
        entropy = [self.seed, rank, epoch, self._calls]
        seed = int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> 1)
        self._calls += 1
        device = images.device
        if device.type not in ("cpu", "cuda"):
            return self.augment(images)  # other backends: their global generator, unseeded
        cuda = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda, device_type="cuda"):
            torch.random.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.default_generators[device.index or 0].manual_seed(seed)
            return self.augment(images)

    def training_side(self, epoch: int) -> int:
        """The side training batches have in ``epoch``: the last ``train_sizes`` entry at or before it."""
        started = [first for first in self.train_sizes if first <= epoch]
        return self.train_sizes[max(started)] if started else self.image_size

    def training_resize(self, epoch: int) -> nn.Module:
        if not self.train_sizes:
            return self.resize
        side = self.training_side(epoch)
        if self._train_resize is None or self._train_resize[0] != side:
            rank_zero_info(f"Training batches are {side}x{side} pixels from epoch {epoch} (train_sizes).")
            self._train_resize = (side, Resize(side))
        return self._train_resize[1]

    def forward(
        self, images: Tensor, targets: Tensor | None = None, *, training: bool = False, epoch: int = 0, rank: int = 0
    ) -> tuple[Tensor, Tensor | None]:
        """A uint8 batch (and its targets) ready for the model: float32, normalized, at the right size.

        Args:
            images: uint8 (N, C, H, W) on the device.
            targets: int64 labels, or None (an unlabeled stream: augmented the same way, never mixed).
            training: augment, resize to the epoch's ``train_sizes`` side, mix; otherwise only take the centre
                of an image stored with a margin, normalize and resize to ``image_size``.
            epoch, rank: the Trainer's current epoch and global rank, which seed the augmentation.
        """
        if self.normalize is None:
            raise RuntimeError("DevicePipeline.attach() was not called: the normalization statistics are unknown.")
        if training:
            images = self._seeded_augment(images, epoch, rank)
        else:
            images = self.center(images)
        images = self.normalize.to(images.device)(images)
        images = (self.training_resize(epoch) if training else self.resize)(images)
        if training and self.mixer is not None and targets is not None:
            images, targets = self.mixer(images, targets)
        return images, targets

    def extra_repr(self) -> str:
        return (
            f"crop_padding={self.crop_padding}, flip={self.flip}, train_sizes={self.train_sizes}, "
            f"mix={self.mix}, mix_alpha={self.mix_alpha}, alternating_flip={self.alternating_flip}, "
            f"padding_mode={self.padding_mode}, cutout={self.cutout}, scale={self.scale}, ratio={self.ratio}"
        )
