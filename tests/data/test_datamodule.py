"""The DataModule contract: delegation to the pipeline, rank shards, checkpoint state, hyper-parameters, CLI."""

from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.plugins.precision import Precision
from torch import nn

from tests.helpers import option_error
from zoo_lightning.checkpoints import datamodule_state
from zoo_lightning.data import CIFAR10DataModule, DevicePipeline, ImageDataModule


def _module(root, **kwargs) -> CIFAR10DataModule:
    kwargs.setdefault("val_size", 20)
    data = CIFAR10DataModule(data_dir=str(root), batch_size=8, **kwargs)
    data.setup("fit")
    return data


def _attach(data, training: bool, epoch: int = 0, rank: int = 0, world_size: int = 1) -> None:
    """A stand-in for the parts of the Trainer the DataModule reads."""
    data.trainer = SimpleNamespace(
        precision_plugin=Precision(),
        training=training,
        current_epoch=epoch,
        global_rank=rank,
        world_size=world_size,
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def test_eval_batches_are_only_normalized(cifar_python):
    root, _ = cifar_python
    data = _module(root)
    images, labels = next(iter(data.val_dataloader()))
    expected = (images.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(
        1, 3, 1, 1
    )
    for training in (None, False):  # no trainer (tests, scripts), and a trainer validating
        if training is not None:
            _attach(data, training)
        out, out_labels = data.on_after_batch_transfer((images, labels), 0)
        assert out.dtype == torch.float32 and out.shape == (8, 3, 32, 32) and out_labels is labels
        torch.testing.assert_close(out, expected)


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
    everything = sorted(bytes(row) for row in getattr(data, f"{split}_set").images.flatten(1).numpy())
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
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    assert model.dtypes == {torch.float32}
    first, second = model.labels[0], model.labels[1]
    assert len(first) == len(second) == 24 and sorted(first) == sorted(second) and first != second
    assert sorted(first) == sorted(data.train_set.labels.tolist())
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
    stored = data.test_set.labels
    assert stored.tolist() == sorted(stored.tolist())  # class-sorted on disk
    first = next(iter(data.test_dataloader()))[1]
    assert len(set(first.tolist())) > 1 and first.tolist() != stored[:6].tolist()
    orders = []
    for epoch, rank, world_size in [(0, 0, 1), (3, 0, 1), (0, 0, 2), (0, 1, 2)]:
        _attach(data, training=False, epoch=epoch, rank=rank, world_size=world_size)
        orders.append(torch.cat([b[1] for b in data.test_dataloader()]))
        if world_size == 1:
            loader = data.test_dataloader()
            assert sorted(loader.indices().tolist()) == list(range(80))  # every image once
    torch.testing.assert_close(orders[0], orders[1])  # the same order every epoch
    # Two ranks share it without overlap: their counts per class add up to the whole set.
    assert (torch.bincount(orders[2], minlength=10) + torch.bincount(orders[3], minlength=10)).tolist() == [8] * 10


def test_the_normalize_attribute_is_the_pipelines_and_inverts_batches(cifar_python):
    root, _ = cifar_python
    assert CIFAR10DataModule(data_dir=str(root)).normalize is None  # statistics unknown before setup
    data = _module(root)
    assert data.normalize is data.pipeline.normalize
    images, labels = next(iter(data.val_dataloader()))
    out = data.on_after_batch_transfer((images, labels), 0)[0]
    torch.testing.assert_close(data.normalize.inverse(out), images.float() / 255)
    # A checkpoint's statistics replace them, and the next batch is normalized with those.
    fresh = CIFAR10DataModule(data_dir="/nonexistent")
    fresh.load_state_dict({**data.state_dict(), "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    torch.testing.assert_close(fresh.on_after_batch_transfer((images, labels), 0)[0], images.float() / 255)
    torch.testing.assert_close(fresh.normalize.mean.flatten(), torch.zeros(3))
    with pytest.raises(RuntimeError, match="statistics are unknown"):
        CIFAR10DataModule(data_dir="/nonexistent").on_after_batch_transfer((images, labels), 0)


def test_a_plain_python_checkpoint_holds_no_module_and_names_its_state_by_class(cifar_writer, tmp_path):
    cifar_writer(tmp_path, per_batch=8)
    data = CIFAR10DataModule(data_dir=str(tmp_path), batch_size=8, val_size=16, pipeline=DevicePipeline(mix="mixup"))
    assert "pipeline" not in data.hparams
    model = _Recorder()  # cross_entropy takes MixUp's soft targets too
    trainer = L.Trainer(
        max_steps=1,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(model, datamodule=data)
    path = tmp_path / "run.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # would fail on a pickled module instance
    assert "pipeline" not in checkpoint["datamodule_hyper_parameters"]
    state = datamodule_state(checkpoint)  # found by the class name Lightning files it under
    assert state == checkpoint["CIFAR10DataModule"] and state["mean"] == data.mean
    assert set(state) == {"mean", "std", "class_names", "image_size", "class_path", "train_position"}
    assert state["class_path"] == "zoo_lightning.data.cifar10.CIFAR10DataModule"


def test_a_pipeline_that_is_not_a_device_pipeline_is_refused():
    message = option_error(CIFAR10DataModule, "--data.pipeline", "torch.nn.Identity", key="data")
    assert "data.pipeline" in message and "torch.nn.Identity" in message


@pytest.mark.parametrize(
    "option, value, says",
    [
        ("batch_size", "0", "'0' is not >= 1"),
        ("batch_size", "-8", "'-8' is not >= 1"),
        ("val_size", "-1", "'-1' is not >= 0"),
        ("image_size", "4", "'4' is not >= 8"),
    ],
)
def test_sizes_out_of_range_are_refused_by_the_parser(option, value, says):
    message = option_error(CIFAR10DataModule, f"--data.{option}", value, key="data")
    assert f"data.{option}" in message and says in message


@pytest.mark.parametrize("val_size", [0, 13, 20])
def test_the_three_sets_hold_the_split_the_options_ask_for(cifar_python, val_size):
    """100 train images (the fixture's release) and 20 test: val_size of the first for validation, the rest trains."""
    root, _ = cifar_python
    data = _module(root, val_size=val_size)
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (100 - val_size, val_size, 20)
    assert len(data.train_set.images) == len(data.train_set.labels) == 100 - val_size
    assert data.train_set.labels.dtype == torch.int64 and data.val_set.images.dtype == torch.uint8
    pool = {bytes(row) for row in torch.cat([data.train_set.images, data.val_set.images]).flatten(1).numpy()}
    assert len(pool) == 100  # disjoint, and together the whole train part
    assert CIFAR10DataModule(data_dir=str(root)).train_set is None  # not read before setup


def test_the_command_line_sets_pipeline_options_in_the_short_spelling(cifar_python):
    """As LightningCLI's subclass mode parses --data: no init_args needed at either level."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(ImageDataModule, "data")
    spellings = [
        ["--data.pipeline.mix", "cutmix", "--data.pipeline.crop_padding", "2"],
        ["--data.init_args.pipeline.init_args.mix", "cutmix", "--data.init_args.pipeline.init_args.crop_padding", "2"],
        ["--data.pipeline", '{"mix": "cutmix", "crop_padding": 2}'],
    ]
    for spelling in spellings:
        config = parser.parse_args(["--data", "zoo_lightning.data.CIFAR10DataModule", *spelling])
        data = parser.instantiate_classes(config).data
        assert type(data) is CIFAR10DataModule and type(data.pipeline) is DevicePipeline
        assert (data.pipeline.mix, data.pipeline.crop_padding, data.pipeline.flip) == ("cutmix", 2, True)
    with pytest.raises(Exception, match="crop_padding"):
        parser.parse_args(["--data", "zoo_lightning.data.CIFAR10DataModule", "--data.pipeline.crop_padding", "wide"])
