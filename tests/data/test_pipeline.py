"""DevicePipeline: seeded augmentation, evaluation left alone, crop padding by image side, progressive
resizing, MixUp/CutMix, and a new augmentation as a subclass that any DataModule takes as it is."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from lightning.pytorch.plugins.precision import Precision
from torch import Tensor, nn

from tests.helpers import check_option_type
from zoo_lightning.batch import TwoStreamBatch
from zoo_lightning.data import CIFAR10DataModule, DevicePipeline, STL10DataModule
from zoo_lightning.data.transforms import CenterCrop, RandomCrop, RandomHorizontalFlip, RandomResizedCrop

MEAN, STD = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]


def _attached(
    pipeline: DevicePipeline | None = None,
    native_size: int = 32,
    image_size: int | None = None,
    seed: int = 0,
    margin: bool = False,
) -> DevicePipeline:
    pipeline = pipeline or DevicePipeline()
    pipeline.attach(
        mean=MEAN,
        std=STD,
        image_size=image_size or native_size,
        native_size=native_size,
        num_classes=10,
        seed=seed,
        margin=margin,
    )
    return pipeline


def _batch(n: int = 16, side: int = 32, seed: int = 0) -> Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _normalized(images: Tensor) -> Tensor:
    return (images.float() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _module(root, **kwargs) -> CIFAR10DataModule:
    kwargs.setdefault("val_size", 20)
    data = CIFAR10DataModule(data_dir=str(root), batch_size=8, **kwargs)
    data.setup("fit")
    return data


def _attach(data, training: bool, epoch: int = 0, rank: int = 0) -> None:
    """A stand-in for the parts of the Trainer the DataModule reads."""
    data.trainer = SimpleNamespace(
        precision_plugin=Precision(), training=training, current_epoch=epoch, global_rank=rank, world_size=1
    )


# --- the pipeline on its own ----------------------------------------------------------------------


def test_evaluation_only_normalizes_and_keeps_the_targets():
    pipeline = _attached(DevicePipeline(mix="cutmix"))
    images, targets = _batch(), torch.arange(16)
    out, out_targets = pipeline(images, targets)
    assert out.dtype == torch.float32 and out_targets is targets
    torch.testing.assert_close(out, _normalized(images))
    assert pipeline(images)[1] is None  # an unlabeled batch: no targets in, none out


@pytest.mark.parametrize("native_size, padding", [(32, 4), (96, 12), (24, 3)])
def test_crop_padding_defaults_to_an_eighth_of_the_native_side(native_size, padding):
    pipeline = _attached(native_size=native_size)
    assert pipeline.padding == padding
    assert [type(m) for m in pipeline.spatial] == [RandomCrop, RandomHorizontalFlip]
    assert pipeline.spatial[0].padding == padding
    assert _attached(DevicePipeline(crop_padding=2), native_size=native_size).padding == 2  # an explicit value wins


def test_the_datamodules_get_their_default_padding(cifar_python, stl10):
    assert _module(cifar_python[0]).pipeline.padding == 4
    data = STL10DataModule(data_dir=str(stl10[0]), batch_size=4, val_size=5)
    data.setup("fit")
    assert data.pipeline.padding == 12


def test_augmentation_is_seeded_by_seed_rank_epoch_and_batch():
    images = _batch()
    pipeline = _attached(seed=7)
    state = torch.get_rng_state()
    first = pipeline(images, training=True, epoch=2, rank=1)[0]
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is left as it was
    # By hand: the first batch of epoch 2 on rank 1 draws from SeedSequence([seed, rank, epoch, 0]).
    seed = int(np.random.SeedSequence([7, 1, 2, 0]).generate_state(1, np.uint64)[0] >> 1)
    torch.manual_seed(seed)
    expected = pipeline.normalize(nn.Sequential(RandomCrop(4), RandomHorizontalFlip())(images))
    torch.testing.assert_close(first, expected, rtol=0, atol=0)
    second = pipeline(images, training=True, epoch=2, rank=1)[0]
    assert not torch.equal(first, second)  # the next batch of the epoch draws other crops
    other_rank = _attached(seed=7)(images, training=True, epoch=2, rank=0)[0]
    assert not torch.equal(first, other_rank)
    again = _attached(seed=7)  # a resumed run: a fresh pipeline repeats the epoch exactly
    torch.testing.assert_close(again(images, training=True, epoch=2, rank=1)[0], first, rtol=0, atol=0)
    # A new epoch restarts the batch counter.
    pipeline(images, training=True, epoch=3, rank=1)
    torch.testing.assert_close(pipeline(images, training=True, epoch=2, rank=1)[0], first, rtol=0, atol=0)


@pytest.mark.parametrize(
    "option, bad, good, expected",
    [
        ("crop_padding", "-1", "0", 0),
        ("mix", "mosaic", "cutmix", "cutmix"),
        ("mix", "mosaic", "null", None),
        ("mix_alpha", "0", "0.4", 0.4),
        ("padding_mode", "mirror", "reflect", "reflect"),
        ("cutout", "-1", "8", 8),
        ("train_sizes", "{0: 4}", "{'0': 24, 30: 32}", {0: 24, 30: 32}),  # a string key, as YAML may leave it, made int
        ("train_sizes", "{-1: 24}", "{0: 24}", {0: 24}),  # the first epochs are checked too, not only the sides
        ("scale", "[1.0, 0.5]", "[0.08, 1.0]", (0.08, 1.0)),  # the smaller share first
        ("scale", "[0, 1]", "[0.25, 1]", (0.25, 1.0)),  # a box of no area is no crop
        ("scale", "[0.5, 1.5]", "[0.5, 0.5]", (0.5, 0.5)),  # no more than the whole image
    ],
)
def test_the_parser_checks_each_option_against_its_type(option, bad, good, expected):
    check_option_type(DevicePipeline, option, bad, good, expected)


def test_a_negative_first_epoch_is_refused_in_one_line_naming_the_option(capsys):
    from zoo_lightning.cli import main

    with pytest.raises(SystemExit) as stop:
        main(["fit", "--config", "cnn_cifar.yaml", "--data.pipeline.train_sizes", "{-1: 24}"])
    assert stop.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: --data.pipeline.train_sizes: ") and "-1 is not >= 0" in line


def test_the_help_lists_the_choices(capsys):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(DevicePipeline)
    parser.print_help()
    shown = " ".join(capsys.readouterr().out.split())
    assert "--padding_mode {zeros,reflect}" in shown and "Literal['mixup', 'cutmix', 'mixup_cutmix']" in shown


def test_a_batch_before_attach_is_refused():
    with pytest.raises(RuntimeError, match="attach"):
        DevicePipeline()(_batch())


def test_resize_to_image_size_in_evaluation_and_training():
    pipeline = _attached(native_size=32, image_size=48)
    assert pipeline(_batch())[0].shape == (16, 3, 48, 48)
    assert pipeline(_batch(), training=True)[0].shape == (16, 3, 48, 48)
    assert isinstance(_attached(native_size=32).resize, nn.Identity)  # native size: nothing to resize


def test_images_stored_with_a_margin_are_cropped_within_it_in_training_and_centred_in_evaluation():
    images = _batch(n=32, side=37)
    pipeline = _attached(DevicePipeline(flip=False), native_size=37, image_size=32, margin=True)
    assert pipeline.padding == 0 and [type(m) for m in pipeline.spatial] == [RandomCrop]  # no padding: real pixels
    trained = pipeline(images, training=True)[0]
    assert trained.shape == (32, 3, 32, 32)
    normalize = pipeline.normalize
    assert normalize is not None

    def window(image: Tensor, dy: int, dx: int) -> Tensor:
        return image[None, :, dy : dy + 32, dx : dx + 32]

    windows = [
        [(dy, dx) for dy in range(6) for dx in range(6) if torch.equal(t[None], normalize(window(images[i], dy, dx)))]
        for i, t in enumerate(trained)
    ]
    assert all(len(w) == 1 for w in windows) and len({w[0] for w in windows}) > 10
    evaluated = pipeline(images)[0]  # the centre, as torchvision evaluates (256 -> centre 224)
    torch.testing.assert_close(evaluated, normalize(images[:, :, 2:34, 2:34]), rtol=0, atol=0)
    assert isinstance(pipeline.center, CenterCrop) and isinstance(_attached().center, nn.Identity)


@pytest.mark.parametrize("native_size, image_size, margin", [(37, 32, True), (32, 48, False)])
def test_the_scale_augmentation_gives_training_batches_of_the_input_size(native_size, image_size, margin):
    pipeline = _attached(
        DevicePipeline(scale=(0.08, 1.0)), native_size=native_size, image_size=image_size, margin=margin
    )
    assert [type(m) for m in pipeline.spatial] == [RandomResizedCrop, RandomHorizontalFlip]
    assert pipeline.spatial[0].scale == (0.08, 1.0) and pipeline.spatial[0].ratio == (3 / 4, 4 / 3)
    assert pipeline.spatial[0].size == image_size  # straight to the input size: one resampling
    images = _batch(side=native_size)
    first = pipeline(images, training=True, epoch=0)[0]
    assert first.shape == (16, 3, image_size, image_size)
    again = _attached(DevicePipeline(scale=(0.08, 1.0)), native_size=native_size, image_size=image_size, margin=margin)
    torch.testing.assert_close(again(images, training=True, epoch=0)[0], first, rtol=0, atol=0)  # seeded
    assert pipeline(images)[0].shape == (16, 3, image_size, image_size)  # evaluation: the centre, or resized


def test_the_scale_augmentation_replaces_the_crop_and_takes_its_ratio_with_it():
    assert _attached(DevicePipeline(scale=(0.5, 1.0), ratio=(1.0, 2.0))).spatial[0].ratio == (1.0, 2.0)
    with pytest.raises(ValueError, match="scale draws the crop itself: leave --data.pipeline.crop_padding out"):
        DevicePipeline(scale=(0.08, 1.0), crop_padding=4)
    with pytest.raises(ValueError, match="ratio shapes the scale augmentation: set --data.pipeline.scale too"):
        DevicePipeline(ratio=(0.5, 2.0))
    DevicePipeline(scale=(0.08, 1.0), crop_padding=0)  # no padding asked for: nothing to contradict


# --- through the DataModule -----------------------------------------------------------------------


def test_training_batches_are_augmented_reproducibly(cifar_python):
    root, _ = cifar_python
    data = _module(root)
    images, labels = next(iter(data.train_dataloader()))
    plain = data.on_after_batch_transfer((images, labels), 0)[0]
    _attach(data, training=True)
    first = data.on_after_batch_transfer((images, labels), 0)[0]
    assert first.dtype == torch.float32 and first.shape == plain.shape and not torch.equal(first, plain)
    second = data.on_after_batch_transfer((images, labels), 0)[0]
    assert not torch.equal(first, second)  # the next batch draws other crops
    # Seeded by (shuffle_seed, rank, epoch, batch): a rerun of the epoch repeats it exactly, another epoch differs,
    # and the global RNG is left as it was.
    state = torch.get_rng_state()
    data.pipeline._epoch = -1
    torch.testing.assert_close(data.on_after_batch_transfer((images, labels), 0)[0], first, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)
    _attach(data, training=True, epoch=1)
    assert not torch.equal(data.on_after_batch_transfer((images, labels), 0)[0], first)


def test_crop_and_flip_can_be_turned_off(cifar_python):
    root, _ = cifar_python
    data = _module(root, pipeline=DevicePipeline(crop_padding=0, flip=False))
    assert len(data.pipeline.spatial) == 0
    batch = next(iter(data.train_dataloader()))
    _attach(data, training=True)
    augmented = data.on_after_batch_transfer(batch, 0)[0]
    data.trainer = None
    torch.testing.assert_close(augmented, data.on_after_batch_transfer(batch, 0)[0])


def test_train_sizes_resize_training_batches_from_their_epoch_on(cifar_python):
    root, _ = cifar_python
    # A string key, as a YAML round trip may leave it.
    data = _module(root, pipeline=DevicePipeline(train_sizes={1: 16, "3": 24}))
    images, labels = next(iter(data.train_dataloader()))
    sides = {}
    for epoch in range(5):
        _attach(data, training=True, epoch=epoch)
        out = data.on_after_batch_transfer((images, labels), 0)[0]
        assert out.shape[:2] == (8, 3) and out.shape[2] == out.shape[3]
        sides[epoch] = out.shape[-1]
    assert sides == {0: 32, 1: 16, 2: 16, 3: 24, 4: 24}  # before the first key: the native size
    _attach(data, training=False, epoch=2)
    assert data.on_after_batch_transfer((images, labels), 0)[0].shape[-1] == 32  # evaluation keeps the full size
    # A 16-pixel batch is the antialiased shrink of the augmented 32-pixel one, not a crop of it.
    _attach(data, training=True, epoch=1)
    data.pipeline._epoch = -1
    small = data.on_after_batch_transfer((images, labels), 0)[0]
    data.pipeline.train_sizes = {}
    data.pipeline._epoch = -1
    full = data.on_after_batch_transfer((images, labels), 0)[0]
    expected = nn.functional.interpolate(full, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(small, expected)


@pytest.mark.parametrize("mode", ["mixup", "cutmix", "mixup_cutmix"])
def test_mix_keeps_shapes_and_makes_soft_labels_that_sum_to_one(cifar_python, mode):
    root, _ = cifar_python
    data = CIFAR10DataModule(data_dir=str(root), val_size=20, batch_size=16, pipeline=DevicePipeline(mix=mode))
    data.setup("fit")
    images, labels = next(iter(data.train_dataloader()))
    data.trainer = SimpleNamespace(precision_plugin=Precision(), training=True, current_epoch=0, global_rank=0)
    mixed, soft = data.on_after_batch_transfer((images, labels), 0)
    assert mixed.shape == images.shape and mixed.dtype == torch.float32
    assert soft.shape == (16, 10) and torch.allclose(soft.sum(1), torch.ones(16))
    assert (soft.max(1).values < 1).any()  # some labels really are mixtures
    data.trainer = SimpleNamespace(precision_plugin=Precision(), training=False)
    assert data.on_after_batch_transfer((images, labels), 0)[1] is labels  # evaluation keeps hard labels


def test_the_unlabeled_stream_is_augmented_but_never_mixed():
    pipeline = _attached(DevicePipeline(mix="mixup"))
    images = _batch()
    out, targets = pipeline(images, None, training=True)
    assert targets is None and out.shape == images.shape
    # One seeded crop-and-flip draw, no blend: every value is a normalized pixel value or the padding's zero.
    levels = pipeline.normalize(torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256))[0, :, 0]
    for c in range(3):
        assert torch.isin(out[:, c], levels[c]).all()


# --- a new augmentation: a DevicePipeline subclass, the DataModule as it is -----------------------------


class Cutout(DevicePipeline):
    """Zeroes one ``size`` x ``size`` square per image, at a random place, after the crop and flip.

    Args:
        size: side of the square, in pixels.
        **kwargs: the options of DevicePipeline.
    """

    def __init__(self, size: int = 8, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = size

    def augment(self, images: Tensor) -> Tensor:
        images = super().augment(images).clone()
        n, _, h, w = images.shape
        top = torch.randint(0, h - self.size + 1, (n,), device=images.device)
        left = torch.randint(0, w - self.size + 1, (n,), device=images.device)
        rows = torch.arange(h, device=images.device).view(1, h, 1)
        cols = torch.arange(w, device=images.device).view(1, 1, w)
        inside = (
            (rows >= top.view(n, 1, 1))
            & (rows < (top + self.size).view(n, 1, 1))
            & (cols >= left.view(n, 1, 1))
            & (cols < (left + self.size).view(n, 1, 1))
        )
        return images.masked_fill(inside.unsqueeze(1), 0)


def test_a_pipeline_subclass_adds_an_augmentation_without_a_datamodule_subclass(cifar_python):
    root, _ = cifar_python
    data = _module(root, pipeline=Cutout(size=8, crop_padding=0, flip=False))
    assert type(data) is CIFAR10DataModule
    images, labels = next(iter(data.train_dataloader()))
    images = images.clamp(min=1)  # no zero pixels of its own: zeros are the cutout
    _attach(data, training=True)
    out = data.on_after_batch_transfer((images, labels), 0)[0]
    zero = (-torch.tensor(data.mean) / torch.tensor(data.std)).view(1, 3, 1, 1)  # a 0 pixel, normalized
    cut = torch.isclose(out, zero.expand_as(out), atol=1e-5).all(1)  # (N, H, W): where the square is
    for mask in cut:
        rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
        assert mask.sum() == 64 and rows.max() - rows.min() == 7 and cols.max() - cols.min() == 7
    torch.testing.assert_close(
        out[~cut.unsqueeze(1).expand_as(out)], _normalized_like(data, images)[~cut.unsqueeze(1).expand_as(out)]
    )
    # The subclass's draws are seeded like the built-in ones: a rerun of the epoch repeats them.
    data.pipeline._epoch = -1
    torch.testing.assert_close(data.on_after_batch_transfer((images, labels), 0)[0], out, rtol=0, atol=0)
    # Evaluation never cuts.
    data.trainer = None
    assert not torch.isclose(data.on_after_batch_transfer((images, labels), 0)[0], zero.expand_as(out)).all(1).any()


def _normalized_like(data, images: Tensor) -> Tensor:
    mean, std = torch.tensor(data.mean).view(1, 3, 1, 1), torch.tensor(data.std).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def test_the_stream_pair_goes_through_one_seeded_augmentation(stl10):
    root, _ = stl10
    data = STL10DataModule(
        data_dir=str(root), batch_size=4, val_size=5, unlabeled=True, pipeline=DevicePipeline(mix="cutmix")
    )
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    _attach(data, training=True, epoch=4)
    out = data.on_after_batch_transfer(batch, 0)
    assert isinstance(out, TwoStreamBatch) and out.labeled[1].shape == (4, 10)  # labeled: mixed, soft targets
    # The unlabeled images: the batch after the labeled one in the epoch's seeded sequence, not mixed.
    reference = _attached(DevicePipeline(), native_size=96, seed=0)
    reference.normalize = data.pipeline.normalize
    reference(batch.labeled[0], training=True, epoch=4)
    torch.testing.assert_close(out.unlabeled, reference(batch.unlabeled, training=True, epoch=4)[0], rtol=0, atol=0)


def test_the_command_line_chooses_a_pipeline_subclass_by_class_path():
    from jsonargparse import ArgumentParser

    from zoo_lightning.data import ImageDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageDataModule, "data")
    config = parser.parse_args(
        [
            "--data",
            "zoo_lightning.data.CIFAR10DataModule",
            "--data.pipeline",
            f"{Cutout.__module__}.Cutout",
            "--data.pipeline.size",
            "4",
            "--data.pipeline.flip",
            "false",
        ]
    )
    pipeline = parser.instantiate_classes(config).data.pipeline
    assert type(pipeline).__name__ == "Cutout" and (pipeline.size, pipeline.flip, pipeline.mix) == (4, False, None)


def test_alternating_flip_mirrors_every_image_in_odd_epochs_against_even_ones():
    images = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8)
    pipeline = DevicePipeline(crop_padding=0, alternating_flip=True)
    pipeline.attach(mean=[0.5] * 3, std=[0.25] * 3, image_size=8, native_size=8, num_classes=10, seed=3)
    even = pipeline._seeded_augment(images, epoch=0, rank=0)
    odd = pipeline._seeded_augment(images, epoch=1, rank=0)
    again = pipeline._seeded_augment(images, epoch=2, rank=0)
    assert torch.equal(odd, even.flip(3)) and torch.equal(again, even)  # every image, each epoch
    flipped = (even != images).flatten(1).any(1).float().mean().item()
    assert 0.3 < flipped < 0.7  # about half mirrored to begin with


def test_reflect_padding_shifts_without_a_black_edge():
    from zoo_lightning.data.transforms import RandomCrop

    images = torch.full((32, 3, 8, 8), 200, dtype=torch.uint8)
    images[:, :, :, 0] = 100  # a left column that reflection repeats and zero padding would not
    shifted = RandomCrop(2, "reflect")(images)
    assert shifted.min() >= 100  # no zeros came in
    assert (RandomCrop(2)(images) == 0).any()


def test_cutout_fills_a_square_with_the_mean_colour():
    pipeline = DevicePipeline(crop_padding=0, flip=False, cutout=4)
    pipeline.attach(mean=[0.2, 0.4, 0.6], std=[0.25] * 3, image_size=16, native_size=16, num_classes=10, seed=0)
    images = torch.full((50, 3, 16, 16), 255, dtype=torch.uint8)
    out = pipeline._seeded_augment(images, epoch=0, rank=0)
    filled = out[:, 0] == 51  # round(0.2 * 255)
    assert torch.equal(filled, out[:, 2] == 153) and filled.flatten(1).sum(1).max() == 16  # a 4x4 square at most
    normalized, _ = pipeline(images, training=True)
    assert normalized.abs().min() < 0.01  # the mean colour normalizes to zero
