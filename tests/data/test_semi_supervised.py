"""Few labels and many unlabeled images: CIFAR-10's labeled_per_class split, its unlabeled stream, training on a
teacher's pseudo-labels, and RandAugment drawn per image on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import write_cifar_python_release
from tests.helpers import check_option_type, option_error, set_up
from zoo_lightning.data import CIFAR10DataModule, DevicePipeline, RandAugmentPipeline
from zoo_lightning.data.pseudo_labels import PseudoLabeledSet, images_digest, read_pseudo_labels
from zoo_lightning.data.splits import ImageSet


@pytest.fixture
def release(tmp_path):
    write_cifar_python_release(tmp_path, per_batch=60)  # 300 training images, about 30 a class
    return tmp_path


def _cifar(root, **kwargs) -> CIFAR10DataModule:
    return set_up(CIFAR10DataModule, root, val_size=50, batch_size=10, download=False, **kwargs)


def test_labeled_per_class_keeps_that_many_labels_of_each_class_and_the_rest_is_unlabeled(release):
    data = _cifar(release, labeled_per_class=4)
    images, labels = data.train_set.images, data.train_set.labels
    assert torch.bincount(labels, minlength=10).tolist() == [4] * 10
    unlabeled = data.unlabeled_images()
    assert len(unlabeled) == 300 - 50 - 40 and unlabeled.dtype == torch.uint8
    # Labeled, unlabeled and validation images are three disjoint parts of the training set.
    rows = {tuple(x.flatten()[:64].tolist()) for x in torch.cat([images, unlabeled, data.val_set.images])}
    assert len(rows) == 300
    again = _cifar(release, labeled_per_class=4)
    assert torch.equal(again.train_set.images, images)  # seeded
    other = _cifar(release, labeled_per_class=4, split_seed=1)
    assert not torch.equal(other.train_set.images, images)
    assert data.stats() != _cifar(release).stats()  # the statistics of the labeled part, cached apart


def test_the_unlabeled_stream_pairs_every_labeled_batch(release):
    data = _cifar(release, labeled_per_class=3, unlabeled=True, unlabeled_batch_size=7)
    batches = list(data.train_dataloader())
    assert len(batches) == 3 and all(b.unlabeled.shape == (7, 3, 32, 32) for b in batches)


@pytest.mark.parametrize(
    "kwargs, says",
    [
        ({"unlabeled": True}, "needs --data.labeled_per_class N"),
        ({"labeled_per_class": 2, "unlabeled": True, "pseudo_labels": "x.pt"}, "leave --data.unlabeled out"),
        ({"pseudo_labels": "x.pt", "pipeline": DevicePipeline(mix="mixup")}, "use --data.pseudo_label_mode hard"),
    ],
)
def test_option_mistakes(tmp_path, kwargs, says):
    with pytest.raises(ValueError, match=says):
        CIFAR10DataModule(data_dir=str(tmp_path), **kwargs)


@pytest.mark.parametrize(
    "cls, option, bad, good, expected",
    [
        (CIFAR10DataModule, "labeled_per_class", "0", "400", 400),
        (RandAugmentPipeline, "num_ops", "-1", "0", 0),
        (RandAugmentPipeline, "magnitude", "-1", "30", 30),
        (RandAugmentPipeline, "num_magnitude_bins", "0", "11", 11),
    ],
)
def test_the_parser_checks_each_option_against_its_type(cls, option, bad, good, expected):
    check_option_type(cls, option, bad, good, expected)


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("pseudo_label_mode", "fuzzy", "hard"),  # the choices
        ("pseudo_label_threshold", "1.0", "'1.0' is not in [0, 1)"),
        ("unlabeled_batch_size", "0", "'0' is not >= 1"),
    ],
)
def test_pseudo_label_options_out_of_range_are_refused_by_the_parser(option, value, says):
    message = option_error(CIFAR10DataModule, f"--data.{option}", value, key="data")
    assert f"data.{option}" in message and value in message and says in message


def test_a_class_with_too_few_images_is_named(release):
    with pytest.raises(
        ValueError, match=r"class '\w+' has \d+ training images .* use --data.labeled_per_class \d+ or less"
    ):
        _cifar(release, labeled_per_class=100)


def _pseudo_labels(data: CIFAR10DataModule, path, confident: int = 0, **change) -> torch.Tensor:
    """A teacher's file for the data's unlabeled images: uniform probabilities but for the first ``confident``."""
    unlabeled = data.unlabeled_images()
    probabilities = torch.full((len(unlabeled), 10), 0.1)
    probabilities[:confident] = torch.nn.functional.one_hot(torch.arange(confident) % 10, 10) * 0.91 + 0.01
    torch.save(
        {
            "probabilities": probabilities.half(),
            "class_names": data.class_names,
            "digest": images_digest(unlabeled),
            **change,
        },
        path,
    )
    return probabilities


def test_soft_pseudo_labels_join_the_training_set_as_probabilities(release, tmp_path):
    teacher = _cifar(release, labeled_per_class=4)
    probabilities = _pseudo_labels(teacher, tmp_path / "labels.pt")
    student = _cifar(release, labeled_per_class=4, pseudo_labels=str(tmp_path / "labels.pt"))
    images, targets = student.train_set.images, student.train_set.labels
    assert len(images) == 40 + 210 and targets.shape == (250, 10) and targets.dtype == torch.float32
    assert torch.equal(targets[:40].argmax(1), teacher.train_set.labels) and (targets[:40].max(1).values == 1).all()
    torch.testing.assert_close(targets[40:], probabilities.half().float())
    assert torch.equal(images[40:], teacher.unlabeled_images())
    assert student.stats() == teacher.stats()  # normalized as the teacher was, by the labeled images alone
    x, y = student.on_after_batch_transfer(next(iter(student.train_dataloader())), 0)
    assert y.shape == (10, 10) and x.dtype == torch.float32


def test_hard_pseudo_labels_keep_the_confident_images_and_their_top_class(release, tmp_path):
    teacher = _cifar(release, labeled_per_class=4)
    _pseudo_labels(teacher, tmp_path / "labels.pt", confident=25)
    student = _cifar(
        release,
        labeled_per_class=4,
        pseudo_labels=str(tmp_path / "labels.pt"),
        pseudo_label_mode="hard",
        pseudo_label_threshold=0.5,
    )
    images, targets = student.train_set.images, student.train_set.labels
    assert len(images) == len(targets) == 40 + 25 and targets.dtype == torch.int64
    assert targets[40:].tolist() == [i % 10 for i in range(25)]
    with pytest.raises(ValueError, match="No unlabeled image reaches pseudo_label_threshold 0.95"):
        _cifar(release, labeled_per_class=4, pseudo_labels=str(tmp_path / "labels.pt"), pseudo_label_threshold=0.95)


def test_pseudo_labels_of_other_images_are_refused(release, tmp_path):
    teacher = _cifar(release, labeled_per_class=4)
    _pseudo_labels(teacher, tmp_path / "labels.pt")
    with pytest.raises(ValueError, match="were made for 210 other unlabeled images than these 220"):
        _cifar(release, labeled_per_class=3, pseudo_labels=str(tmp_path / "labels.pt"))
    with pytest.raises(ValueError, match="other unlabeled images"):  # as many images, but others
        _cifar(release, labeled_per_class=4, split_seed=5, pseudo_labels=str(tmp_path / "labels.pt"))
    with pytest.raises(FileNotFoundError, match="selftrain"):
        _cifar(release, labeled_per_class=4, pseudo_labels=str(tmp_path / "none.pt"))


def _randaugment(**kwargs) -> RandAugmentPipeline:
    pipeline = RandAugmentPipeline(crop_padding=0, flip=False, **kwargs)
    pipeline.attach(mean=[0.5] * 3, std=[0.25] * 3, image_size=32, native_size=32, num_classes=10, seed=0)
    return pipeline


def test_randaugment_draws_its_operations_per_image_seeded():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.integers(0, 256, (1, 3, 32, 32), dtype=np.uint8)).expand(64, -1, -1, -1)
    out = _randaugment(magnitude=15)._seeded_augment(image.contiguous(), epoch=0, rank=0)
    assert out.dtype == torch.uint8 and out.shape == (64, 3, 32, 32)
    distinct = {o.numpy().tobytes() for o in out}
    assert len(distinct) > 20  # one image, 64 copies: each copy drew its own operations
    again = _randaugment(magnitude=15)._seeded_augment(image.contiguous(), epoch=0, rank=0)
    assert torch.equal(out, again)  # the same seed (shuffle seed, rank, epoch, batch), the same draws
    plain = _randaugment(num_ops=0)._seeded_augment(image.contiguous(), epoch=0, rank=0)
    assert torch.equal(plain, image)
    images, _ = _randaugment()(image.contiguous(), torch.zeros(64, dtype=torch.long), training=True)
    assert images.dtype == torch.float32
    with pytest.raises(ValueError, match="magnitude must be in 0..30"):  # a relation of two options, checked by hand
        RandAugmentPipeline(magnitude=31)
    one_bin = _randaugment(magnitude=0, num_magnitude_bins=1)._seeded_augment(image.contiguous(), epoch=0, rank=0)
    assert one_bin.shape == image.shape and one_bin.dtype == torch.uint8  # a scale of one bin: magnitude 0 only


def test_the_pseudo_labeled_set_keeps_the_confident_images_after_the_labeled_ones():
    labeled = ImageSet(torch.zeros(3, 3, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 1]))
    unlabeled = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    probabilities = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.65, 0.35]])
    hard = PseudoLabeledSet(labeled, unlabeled, probabilities, "hard", threshold=0.6)
    assert len(hard) == 3 + 3 and hard.kept.tolist() == [0, 2, 3] and hard.labeled is labeled
    assert hard.labels.tolist() == [0, 1, 1, 0, 1, 0] and hard.images[3:, 0, 0, 0].tolist() == [0, 2, 3]
    image, label = hard[4]  # a map-style dataset of (image, target) pairs
    assert torch.equal(image, unlabeled[2]) and label == 1
    soft = PseudoLabeledSet(labeled, unlabeled, probabilities, "soft", threshold=0.0)
    assert len(soft) == 7 and soft.labels.shape == (7, 2)
    assert soft.labels[:3].tolist() == [[1, 0], [0, 1], [0, 1]] and torch.equal(soft.labels[3:], probabilities)
    assert str(soft) == "3 labeled and 4 of 4 pseudo-labeled images (soft labels, confidence >= 0.0)"


def test_a_pseudo_label_file_is_checked_against_the_digest_of_the_images(tmp_path):
    unlabeled = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    probabilities = torch.full((5, 2), 0.5)
    torch.save(
        {"probabilities": probabilities, "class_names": ["a", "b"], "digest": images_digest(unlabeled)},
        tmp_path / "labels.pt",
    )
    torch.testing.assert_close(read_pseudo_labels(tmp_path / "labels.pt", unlabeled, ["a", "b"]), probabilities)
    other = unlabeled.clone()
    other[4] = 255 - other[4]  # as many images, one of them another
    with pytest.raises(ValueError, match="were made for 5 other unlabeled images than these 5") as error:
        read_pseudo_labels(tmp_path / "labels.pt", other, ["a", "b"])
    assert "data_dir, val_size, split_seed, fold, labeled_per_class" in str(error.value)
    with pytest.raises(ValueError, match="other unlabeled images"):  # the classes are part of what must match
        read_pseudo_labels(tmp_path / "labels.pt", unlabeled, ["b", "a"])
