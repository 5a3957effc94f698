"""The shared DataModule path: device-side preparation, rank shards, augmentation only in training, Lightning."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

from zoo_lightning.data import CIFAR10DataModule


def _module(root, **kwargs) -> CIFAR10DataModule:
    kwargs.setdefault("val_size", 20)
    data = CIFAR10DataModule(data_dir=str(root), batch_size=8, **kwargs)
    data.setup("fit")
    return data


def _attach(data, training: bool, epoch: int = 0, rank: int = 0, world_size: int = 1) -> None:
    """A stand-in for the parts of the Trainer the DataModule reads."""
    data.trainer = SimpleNamespace(training=training, current_epoch=epoch, global_rank=rank, world_size=world_size,
                                   strategy=SimpleNamespace(root_device=torch.device("cpu")))


def test_eval_batches_are_only_normalized(cifar_python):
    root, _ = cifar_python
    data = _module(root)
    images, labels = next(iter(data.val_dataloader()))
    expected = (images.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    for training in (None, False):  # no trainer (tests, scripts), and a trainer validating
        if training is not None:
            _attach(data, training)
        out, out_labels = data.on_after_batch_transfer((images, labels), 0)
        assert out.dtype == torch.float32 and out.shape == (8, 3, 32, 32) and out_labels is labels
        torch.testing.assert_close(out, expected)


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
    data._augment_epoch = -1
    torch.testing.assert_close(data.on_after_batch_transfer((images, labels), 0)[0], first, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), state)
    _attach(data, training=True, epoch=1)
    assert not torch.equal(data.on_after_batch_transfer((images, labels), 0)[0], first)


def test_crop_and_flip_can_be_turned_off(cifar_python):
    root, _ = cifar_python
    data = _module(root, crop_padding=0, flip=False)
    assert len(data.augment) == 0
    batch = next(iter(data.train_dataloader()))
    _attach(data, training=True)
    augmented = data.on_after_batch_transfer(batch, 0)[0]
    data.trainer = None
    torch.testing.assert_close(augmented, data.on_after_batch_transfer(batch, 0)[0])
    with pytest.raises(ValueError, match="crop_padding"):
        CIFAR10DataModule(crop_padding=-1)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_each_rank_gets_its_own_shard_from_the_trainer(cifar_python, split):
    root, _ = cifar_python
    data = _module(root, val_size=21)
    shards = []
    for rank in range(2):
        _attach(data, training=split == "train", rank=rank, world_size=2)
        loader = getattr(data, f"{split}_dataloader")()
        assert loader.rank == rank and loader.world_size == 2
        shards.append([bytes(row) for x, _ in loader for row in x.flatten(1).numpy()])
    everything = sorted(bytes(row) for row in data._splits[split][0].flatten(1).numpy())
    assert not set(shards[0]) & set(shards[1])
    if split == "train":  # 79 images: 39 per rank, 4 full batches of 8 each
        assert len(shards[0]) == len(shards[1]) == 32 and set(shards[0] + shards[1]) <= set(everything)
    else:  # every image exactly once over both ranks
        assert sorted(shards[0] + shards[1]) == everything


def test_num_classes_and_class_names_before_setup():
    data = CIFAR10DataModule(data_dir="/nonexistent")
    assert data.num_classes == 10 and data.class_names[3] == "cat" and data.image_size == 32


class _Recorder(L.LightningModule):
    """Records what the training loop receives."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3 * 32 * 32, 10)
        self.labels: dict[int, list[int]] = {}
        self.dtypes: set[torch.dtype] = set()

    def training_step(self, batch, batch_idx):
        images, labels = batch
        self.dtypes.add(images.dtype)
        self.labels.setdefault(self.current_epoch, []).extend(labels.tolist())
        return nn.functional.cross_entropy(self.layer(images.flatten(1)), labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_fit_sees_a_new_permutation_every_epoch_and_the_checkpoint_keeps_the_statistics(cifar_writer, tmp_path):
    arrays = cifar_writer(tmp_path, per_batch=8)  # 40 train images: 24 train, 16 val
    data = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=8, val_size=16)
    model = _Recorder()
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    assert model.dtypes == {torch.float32}
    first, second = model.labels[0], model.labels[1]
    assert len(first) == len(second) == 24 and sorted(first) == sorted(second) and first != second
    assert sorted(first) == sorted(data._splits["train"][1].tolist())
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    state = torch.load(path, weights_only=True)[type(data).__qualname__]
    assert state["mean"] == data.mean and state["class_names"][0] == "airplane" and state["image_size"] == 32
    assert len(arrays["train_labels"]) == 40


def test_eval_order_mixes_the_classes_and_is_fixed(tmp_path, image_folder_writer):
    """The release stores test images class by class; a `limit_test_batches` subset must not be one class."""
    image_folder_writer(tmp_path, per_class=8)
    data = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=4, eval_batch_size=6, val_size=0)
    data.setup("test")
    stored = data._splits["test"][1]
    assert stored.tolist() == sorted(stored.tolist())  # class-sorted on disk
    first = next(iter(data.test_dataloader()))[1]
    assert len(set(first.tolist())) > 1 and first.tolist() != stored[:6].tolist()
    orders = []
    for epoch, rank, world_size in [(0, 0, 1), (3, 0, 1), (0, 0, 2), (0, 1, 2)]:
        _attach(data, training=False, epoch=epoch, rank=rank, world_size=world_size)
        orders.append(torch.cat([b[1] for b in data.test_dataloader()]))
        if world_size == 1:
            loader = data.test_dataloader()
            assert sorted(loader.indices().tolist()) == list(range(24))  # every image once
    torch.testing.assert_close(orders[0], orders[1])  # the same order every epoch
    # Two ranks share it without overlap: their counts per class add up to the whole set.
    assert (torch.bincount(orders[2], minlength=3) + torch.bincount(orders[3], minlength=3)).tolist() == [8, 8, 8]


def test_train_sizes_resize_training_batches_from_their_epoch_on(cifar_python):
    root, _ = cifar_python
    data = _module(root, train_sizes={1: 16, "3": 24})  # a string key, as a YAML round trip may leave it
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
    data._augment_epoch = -1
    small = data.on_after_batch_transfer((images, labels), 0)[0]
    data.train_sizes = {}
    data._augment_epoch = -1
    full = data.on_after_batch_transfer((images, labels), 0)[0]
    expected = nn.functional.interpolate(full, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    torch.testing.assert_close(small, expected)
    for bad in ({-1: 24}, {0: 4}):
        with pytest.raises(ValueError, match="train_sizes"):
            CIFAR10DataModule(train_sizes=bad)
