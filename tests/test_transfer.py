"""Feature extraction and fine-tuning: a frozen backbone stays as it was while the head learns, the
optimizer holds only what trains, and the backbone's learning rate keeps its ratio to the head's."""

import lightning as L
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.cli import main

HEAD = ("classifier.2.weight", "classifier.2.bias")  # cnn's head


def _loader(n: int = 32, batch_size: int = 8) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(n, 3, 16, 16, generator=g), torch.randint(0, 5, (n,), generator=g)),
        batch_size=batch_size,
    )


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


class Record(L.Callback):
    """Per training step: the learning rate of every group, and which backbone BatchNorm layers were training."""

    def __init__(self):
        self.lrs, self.bn_training = [], []

    def on_train_batch_start(self, trainer, module, *args):
        norms = [m for m in module.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        self.bn_training.append((trainer.current_epoch, [m.training for m in norms]))

    def on_train_batch_end(self, trainer, *args):
        self.lrs.append([(group.get("name"), group["lr"]) for group in trainer.optimizers[0].param_groups])


def _state(model: ImageClassifier) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.backbone.state_dict().items()}


def test_a_frozen_backbone_is_unchanged_while_the_head_trains(tmp_path):
    L.seed_everything(0)
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True)
    before = _state(model)
    record = Record()
    _trainer(tmp_path, max_steps=8, callbacks=[record]).fit(model, _loader())
    after = _state(model)
    backbone = [k for k in before if not k.startswith("classifier.2.")]
    # Weights, BatchNorm running statistics and step counters alike: weight decay and BN updates included.
    assert all(torch.equal(before[k], after[k]) for k in backbone)
    assert all(not torch.equal(before[k], after[k]) for k in HEAD)
    assert all(not any(training) for _, training in record.bn_training)  # frozen BN in eval mode throughout
    assert model.backbone.training  # the rest of the network trains as usual


def test_only_the_trainable_parameters_are_in_the_optimizer(tmp_path):
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True)
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(model, _loader())
    optimized = [p for group in trainer.optimizers[0].param_groups for p in group["params"]]
    head = [p for n, p in model.backbone.named_parameters() if n in HEAD]
    assert {id(p) for p in optimized} == {id(p) for p in head} and len(optimized) == 2
    assert all(p.requires_grad for p in optimized)
    assert not any(p.requires_grad for n, p in model.backbone.named_parameters() if n not in HEAD)
    # The head's weight decays, its bias does not.
    decay = {id(p): group["weight_decay"] for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert [decay[id(p)] for p in head] == [5e-4, 0.0]


def test_the_backbone_lr_keeps_its_ratio_through_warmup_and_decay(tmp_path):
    record = Record()
    model = ImageClassifier("cnn", num_classes=5, backbone_lr_scale=0.1, norm_lr_scale=2.0)
    trainer = _trainer(tmp_path, max_steps=12, callbacks=[record])
    trainer.fit(model, _loader())
    optimizer = trainer.optimizers[0]
    names = [name for name, _ in record.lrs[0]]
    assert names[:2] == ["backbone", "backbone_pg2"] and names[-2] == "head" and len(names) == 4
    head = {id(p) for n, p in model.backbone.named_parameters() if n in HEAD}
    assert all(all(id(p) in head for p in g["params"]) == g["name"].startswith("head") for g in optimizer.param_groups)
    head_lrs = [dict(step)["head"] for step in record.lrs]
    assert len({round(lr, 8) for lr in head_lrs}) > 5  # warm-up and cosine did move it
    for step in record.lrs:
        lr = dict(step)
        assert lr["backbone"] == pytest.approx(0.1 * lr["head"])
        assert lr["backbone_pg2"] == pytest.approx(2 * lr["backbone"])  # norm_lr_scale on the BatchNorm parameters


def test_unfreezing_at_an_epoch_trains_the_backbone_from_then_on(tmp_path):
    L.seed_everything(0)
    model = ImageClassifier("cnn", num_classes=5, freeze_backbone=True, unfreeze_at_epoch=1, backbone_lr_scale=0.5)
    before = _state(model)
    record = Record()

    class Snapshot(L.Callback):
        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 0:
                self.after_first = _state(module)

    snapshot = Snapshot()
    trainer = _trainer(tmp_path, max_epochs=2, callbacks=[record, snapshot])
    trainer.fit(model, _loader())
    conv = "stem.0.weight"
    assert torch.equal(snapshot.after_first[conv], before[conv])  # epoch 0: frozen
    assert not torch.equal(_state(model)[conv], before[conv])  # epoch 1: trained
    modes = {epoch: training for epoch, training in record.bn_training}
    assert not any(modes[0]) and all(modes[1])
    # One schedule for all groups from the first step: the backbone's groups were there, idle, all along.
    for step in record.lrs:
        lr = dict(step)
        assert lr["backbone"] == pytest.approx(0.5 * lr["head"])
    assert all(p.requires_grad for p in model.parameters())


def test_fit_from_torchvision_weights_normalizes_as_they_expect_with_no_network(cifar_python, tmp_path, monkeypatch):
    """The whole path, offline: the CLI links the weights' normalization to the data, fit loads them from the hub
    cache, and the frozen backbone ends the run as torchvision's file has it."""
    import torchvision

    from tests.helpers import fit_args, run_cli
    from zoo_lightning.models.weights import torchvision_cache_file, torchvision_weights

    data_dir, _ = cifar_python
    torch.manual_seed(0)
    weights = torchvision.models.resnet18(weights=None).state_dict()
    hub = tmp_path / "torch"
    monkeypatch.setenv("TORCH_HOME", str(hub))
    file = torchvision_cache_file(torchvision_weights("resnet18"))  # where torch's hub cache keeps the download
    file.parent.mkdir(parents=True)
    torch.save(weights, file)
    result = run_cli(
        fit_args(
            data_dir,
            tmp_path / "logs",
            "--model.backbone",
            "resnet18",
            "--model.stem",
            "imagenet",
            "--model.pretrained",
            "torchvision",
            "--model.freeze_backbone",
            "true",
            "--trainer.max_steps",
            "2",
        ),
        cwd=tmp_path,
        TORCH_HOME=str(hub),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert (
        output.count(
            "Normalizing with the mean/std that the pretrained weights expect (torchvision's "
            "ResNet18_Weights.IMAGENET1K_V1)"
        )
        == 1
    )
    assert "Loaded torchvision's ResNet18_Weights.IMAGENET1K_V1 into resnet18" in output
    checkpoint = torch.load(next((tmp_path / "logs").rglob("last.ckpt")), weights_only=True)
    assert checkpoint["CIFAR10DataModule"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    trained = checkpoint["state_dict"]
    assert all(torch.equal(trained[f"backbone.{k}"], v) for k, v in weights.items() if not k.startswith("fc."))
    assert trained["backbone.fc.weight"].shape == (10, 512)


def test_a_resumed_fit_keeps_its_checkpoint_and_never_needs_the_pretrained_weights(cifar_python, tmp_path):
    from tests.helpers import fit_args
    from zoo_lightning.cli import main

    data_dir, _ = cifar_python
    source = ImageClassifier("cnn", num_classes=10).backbone.state_dict()
    torch.save(source, tmp_path / "weights.pth")
    logs = tmp_path / "logs"
    main(fit_args(data_dir, logs, "--model.pretrained", str(tmp_path / "weights.pth")))
    run = logs / "cnn_cifar" / "version_0"
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]["backbone.stem.0.weight"]
    assert not torch.equal(first, source["stem.0.weight"])  # trained on from the pretrained weights
    (tmp_path / "weights.pth").unlink()  # a resume restores its own weights: the file is not read again
    main(fit_args(data_dir, logs, "--model.pretrained", str(tmp_path / "weights.pth"), "--ckpt_path", "last", epochs=2))
    resumed = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 1
    # (The schedule of the first run had ended, so its learning rate stays 0 and the weights stay as they were.)
    assert torch.equal(resumed["state_dict"]["backbone.stem.0.weight"], first)


@pytest.mark.parametrize("config", ["resnet50_folder_finetune.yaml", "resnet18_stl10_finetune.yaml"])
def test_the_fine_tuning_configs_train_with_the_scale_augmentation(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, "--print_config"])
    assert exit_info.value.code in (0, None)
    pipeline = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["pipeline"]["init_args"]
    assert pipeline["scale"] == [0.08, 1.0] and pipeline["crop_padding"] is None


def test_the_scale_augmentation_of_a_fine_tuning_config_can_be_turned_off_as_the_docs_say(capsys):
    off = '{"init_args": {"scale": null}}'  # docs/transfer.md's spelling
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "resnet50_folder_finetune.yaml", "--data.pipeline", off, "--print_config"])
    assert exit_info.value.code in (0, None)
    pipeline = yaml.safe_load(capsys.readouterr().out)["data"]["init_args"]["pipeline"]
    assert pipeline["class_path"] == "zoo_lightning.data.DevicePipeline" and pipeline["init_args"]["scale"] is None
