"""BackboneFreeze, the classifier's Lightning BaseFinetuning: the backbone frozen but for its head, its normalization
layers in eval mode, unfrozen at an epoch, and a resumed run that continues as if it had never stopped."""

import copy
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import BaseFinetuning, ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from zoo_lightning.callbacks.backbone_freeze import BackboneFreeze
from zoo_lightning.classifier import ImageClassifier


def _loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)),
        batch_size=batch_size,
    )


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def _body(model: ImageClassifier) -> nn.Module:
    """cnn's backbone without its pooling and head: the features the head is trained on."""
    return nn.Sequential(model.backbone.stem, model.backbone.features)


class _Stub(L.LightningModule):
    """A backbone whose BatchNorm scale the network itself keeps fixed (as airbench does)."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
        self.backbone[1].weight.requires_grad_(False)


def test_the_classifier_hands_the_trainer_the_callback_with_its_head_and_epoch():
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True, unfreeze_at_epoch=2)
    [callback] = model.configure_callbacks()
    assert isinstance(callback, BaseFinetuning) and isinstance(callback, BackboneFreeze)
    assert callback.head == {"classifier.2"} and callback.unfreeze_at_epoch == 2
    assert ImageClassifier("cnn", num_classes=5, backbone_lr_scale=0.1).configure_callbacks() == []


def test_frozen_batchnorm_gives_the_head_the_features_evaluation_gives(tmp_path):
    """Eval mode, not Lightning's track_running_stats=False: normalized by the running statistics the weights came
    with, not by each batch's own, and those statistics left as they were."""
    L.seed_everything(0)
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True)
    for module in model.backbone.modules():
        if isinstance(module, nn.BatchNorm2d):  # statistics far from any batch's, so batch statistics would show
            module.running_mean.fill_(0.5)
            module.running_var.fill_(4.0)
    reference = copy.deepcopy(_body(model)).eval()
    same = []

    class Compare(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            with torch.no_grad():
                same.append(torch.allclose(_body(module)(batch[0]), reference(batch[0])))

    _trainer(tmp_path, max_steps=6, callbacks=[Compare()]).fit(model, _loader())
    assert same == [True] * 6
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all((m.running_mean == 0.5).all() and (m.running_var == 4.0).all() for m in norms)
    assert all(int(m.num_batches_tracked) == 0 for m in norms)


def test_unfrozen_batchnorm_trains_and_tracks_its_statistics_again(tmp_path):
    L.seed_everything(0)
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True, unfreeze_at_epoch=1)
    _trainer(tmp_path, max_epochs=2).fit(model, _loader())
    norms = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(m.training and m.track_running_stats for m in norms)
    assert all(int(m.num_batches_tracked) == 4 for m in norms)  # the 4 steps of epoch 1, none of epoch 0


def test_the_networks_own_fixed_parameters_stay_fixed_after_unfreezing():
    stub = _Stub()
    stub.backbone(torch.zeros(1, 3, 5, 5))  # materializes the lazy head
    conv, norm, _, head = stub.backbone
    callback = BackboneFreeze(head=["3"], unfreeze_at_epoch=2)
    callback.freeze_before_training(stub)
    assert [p.requires_grad for p in stub.parameters()] == [False] * 4 + [True] * 2  # conv, norm: w, b; the head
    for epoch in (0, 1):
        callback.finetune_function(stub, epoch, optimizer=None)
        assert not norm.training and not conv.weight.requires_grad
    callback.finetune_function(stub, 2, optimizer=None)
    assert conv.weight.requires_grad and conv.bias.requires_grad and norm.bias.requires_grad and norm.training
    assert not norm.weight.requires_grad  # fixed by the network, not by the freezing


def test_only_fit_freezes_and_unfreezing_later_is_refused_under_ddp():
    stub = _Stub()
    BackboneFreeze(head=["3"]).setup(SimpleNamespace(world_size=1), stub, "validate")
    assert stub.backbone[0].weight.requires_grad  # evaluation trains nothing, so nothing is frozen for it
    with pytest.raises(ValueError, match="unfreeze_at_epoch works in one process only"):
        BackboneFreeze(head=["3"], unfreeze_at_epoch=1).setup(SimpleNamespace(world_size=2), stub, "fit")
    BackboneFreeze(head=["3"]).setup(SimpleNamespace(world_size=2, strategy=None), stub, "fit")  # frozen throughout
    assert not stub.backbone[0].weight.requires_grad


def test_a_run_resumed_before_the_unfreezing_ends_as_the_uninterrupted_run(tmp_path):
    """The backbone's idle groups are in the saved optimizer, so the resumed fit restores it as it was (momentum
    included) and the one schedule goes on: the weights end exactly as in a run that never stopped."""

    def run(folder, epochs: int, ckpt_path=None) -> ImageClassifier:
        L.seed_everything(0)
        model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True, unfreeze_at_epoch=1, backbone_lr_scale=0.5)
        saving = ModelCheckpoint(dirpath=folder, filename="{epoch}", save_top_k=-1, every_n_epochs=1)
        _trainer(folder, max_epochs=epochs, enable_checkpointing=True, callbacks=[saving]).fit(
            model, _loader(), ckpt_path=ckpt_path
        )
        return model

    whole = run(tmp_path / "whole", 2)
    first = torch.load(tmp_path / "whole" / "epoch=0.ckpt", weights_only=True)
    groups = first["optimizer_states"][0]["param_groups"]
    assert [g["name"] for g in groups] == ["backbone", "backbone_pg2", "head", "head_pg3"]
    momentum = first["optimizer_states"][0]["state"]
    assert set(momentum) == set(groups[2]["params"] + groups[3]["params"])  # only the head has stepped yet
    resumed = run(tmp_path / "resumed", 2, ckpt_path=tmp_path / "whole" / "epoch=0.ckpt")
    trained = whole.backbone.state_dict()
    assert not torch.equal(trained["stem.0.weight"], first["state_dict"]["backbone.stem.0.weight"])
    assert all(torch.equal(value, resumed.backbone.state_dict()[key]) for key, value in trained.items())


def test_parameters_another_callback_fixed_stay_out_of_the_optimizer_and_fixed(tmp_path):
    """What trains is what has requires_grad when the optimizer is built, plus what this callback froze to unfreeze
    later; a parameter fixed by someone else (PatchWhitening's filters) is in neither and stays fixed."""

    class FixStem(L.Callback):
        def setup(self, trainer, pl_module, stage):
            pl_module.backbone.stem[0].weight.requires_grad_(False)

    L.seed_everything(0)
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True, unfreeze_at_epoch=1)
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[FixStem()])
    trainer.fit(model, _loader())
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    stem = model.backbone.stem[0].weight
    assert id(stem) not in optimized and not stem.requires_grad
    others = [p for n, p in model.backbone.named_parameters() if n != "stem.0.weight"]
    assert {id(p) for p in others} == optimized and all(p.requires_grad for p in others)
