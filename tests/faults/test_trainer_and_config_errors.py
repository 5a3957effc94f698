"""Trainer, model, objective and config mistakes: one line that says what to change, exit status 2."""

from __future__ import annotations

import pytest

from tests.faults.cases import Case
from tests.faults.conftest import check_case, fit


def distill(w, *extra: str) -> list[str]:
    return fit(w, "--model.objective", "zoo_lightning.objectives.Distillation", *extra)


def selftrain(w, *extra: str) -> list[str]:
    return [
        "selftrain",
        "--config",
        "cnn_cifar.yaml",
        *extra,
        "--data.data_dir",
        str(w / "data"),
        "--data.val_size",
        "20",
        "--data.batch_size",
        "16",
        "--trainer.max_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(w / "runs"),
    ]


CASES = [
    Case("a config file that does not exist", lambda w: ["fit", "--config", "no_such.yaml"], "no_such.yaml"),
    Case("an empty config file", lambda w: fit(w, "--config", str(w / "empty.yaml")), "empty.yaml is empty"),
    Case(
        "a config file that is a list, not sections",
        lambda w: fit(w, "--config", str(w / "list.yaml")),
        "holds a list, not a mapping",
    ),
    Case(
        "a YAML error in a config file",
        lambda w: fit(w, "--config", str(w / "broken.yaml")),
        "broken.yaml is not valid YAML at line 2",
    ),
    Case("a misspelled trainer option", lambda w: fit(w, "--trainer.max_epoch", "3"), "max_epoch"),
    Case("a misspelled data option", lambda w: fit(w, "--data.batchsize", "3"), "batchsize"),
    Case("a value of the wrong type", lambda w: fit(w, "--data.batch_size", "many"), "batch_size"),
    Case(
        "`--trainer.accelerator gpu` on a machine without a GPU",
        lambda w: fit(w, "--trainer.accelerator", "gpu"),
        "no CUDA GPU that torch can use. Use --trainer.accelerator auto",
    ),
    Case(
        "`--trainer.devices 0`",
        lambda w: fit(w, "--trainer.devices", "0"),
        "`Trainer(devices='0')` value is not a valid input",
    ),
    Case(
        "`--trainer.max_steps -5`",
        lambda w: fit(w, "--trainer.max_steps", "-5"),
        "`max_steps` must be a non-negative integer or -1",
    ),
    Case(
        "a run without an end (`--trainer.max_epochs -1 --trainer.max_steps -1`) and a schedule that needs its length",
        lambda w: fit(w, "--trainer.max_epochs", "-1", "--trainer.max_steps", "-1"),
        "this run has no end: give --trainer.max_epochs or --trainer.max_steps",
    ),
    Case(
        "`--trainer.accumulate_grad_batches 0`",
        lambda w: fit(w, "--trainer.accumulate_grad_batches", "0"),
        "--trainer.accumulate_grad_batches: '0' is not >= 1",
    ),
    Case(
        "`--trainer.check_val_every_n_epoch 0`",
        lambda w: fit(w, "--trainer.check_val_every_n_epoch", "0"),
        "--trainer.check_val_every_n_epoch: '0' is not >= 1",
    ),
    Case(
        "`--trainer.limit_train_batches 0`",
        lambda w: fit(w, "--trainer.limit_train_batches", "0"),
        "--trainer.limit_train_batches: '0' is not >= 1 (PositiveInt) and '0' is not > 0 (PositiveFloat)",
    ),
    Case("an unknown precision", lambda w: fit(w, "--trainer.precision", "17"), "precision"),
    Case("a batch size of 0", lambda w: fit(w, "--data.batch_size", "0"), "'0' is not >= 1"),
    Case("a negative batch size", lambda w: fit(w, "--data.batch_size", "-8"), "'-8' is not >= 1"),
    Case(
        "a batch larger than the training set",
        lambda w: fit(w, "--data.batch_size", "40000"),
        "batch_size 40000 is larger than the 80 training images: use --data.batch_size 80 or less",
    ),
    Case("a negative val_size", lambda w: fit(w, "--data.val_size", "-1"), "'-1' is not >= 0"),
    Case(
        "a val_size that leaves no training images",
        lambda w: fit(w, "--data.val_size", "100"),
        "leaves no training images",
    ),
    Case("an unknown backbone", lambda w: fit(w, "--model.backbone", "resnet2O"), "Did you mean 'resnet20'"),
    Case(
        "an unknown torchvision model",
        lambda w: fit(w, "--model.backbone", "torchvision:resnet_18"),
        "torchvision.models",
    ),
    Case(
        "a `timm:` backbone without timm installed",
        lambda w: fit(w, "--model.backbone", "timm:resnet18"),
        "`timm:` models need timm, which failed to import",
    ),
    Case(
        "a backbone option the backbone does not have",
        lambda w: fit(w, "--model.backbone_kwargs", "{wdth: 3}"),
        "Backbone 'cnn' takes no option 'wdth' (backbone_kwargs); its options: widths",
    ),
    Case("an unknown stem", lambda w: fit(w, "--model.stem", "tiny"), "'cifar', 'imagenet'"),
    Case(
        "an unknown test-time augmentation",
        lambda w: fit(w, "--model.tta", "rotate"),
        "'flip', 'flip_translate', 'flip_shift'",
    ),
    Case(
        "an unknown batch mix",
        lambda w: fit(w, "--data.pipeline.mix", "mosaic"),
        "--data.pipeline.mix: Expected a typing.Literal['mixup', 'cutmix', 'mixup_cutmix']. Got value: mosaic",
    ),
    Case(
        "an unknown crop padding mode",
        lambda w: fit(w, "--data.pipeline.padding_mode", "mirror"),
        "--data.pipeline.padding_mode: Expected a typing.Literal['zeros', 'reflect']. Got value: mirror",
    ),
    Case(
        "a learning rate so high the loss diverges",
        lambda w: fit(w, "--model.optimizer.init_args.lr", "1e12", "--trainer.max_steps", "30"),
        "Non-finite loss",
    ),
    Case(
        "a teacher checkpoint that does not exist",
        lambda w: distill(w, "--model.objective.teacher", str(w / "gone.ckpt")),
        "gone.ckpt",
    ),
    Case(
        "a truncated teacher checkpoint",
        lambda w: distill(w, "--model.objective.teacher", str(w / "truncated.ckpt")),
        "Cannot read the teacher checkpoint",
    ),
    Case(
        "a teacher trained on other classes",
        lambda w: distill(
            w,
            "--model.objective.teacher",
            "cnn",
            "--model.objective.teacher_weights",
            str(w / "cnn7.pt"),
            "--model.objective.teacher_kwargs",
            "{num_classes: 7}",
        ),
        "teacher predicts 7 classes but the student 10",
    ),
    Case(
        "a distillation temperature <= 0",
        lambda w: distill(w, "--model.objective.teacher", str(w.ckpt), "--model.objective.temperature", "0"),
        "temperature",
    ),
    Case(
        "a distillation alpha outside [0, 1]",
        lambda w: distill(w, "--model.objective.teacher", str(w.ckpt), "--model.objective.alpha", "1.5"),
        "alpha",
    ),
    Case(
        "a label smoothing of 1 or more",
        lambda w: fit(w, "--model.objective.init_args.label_smoothing", "1.5"),
        "label_smoothing",
    ),
    Case(
        "`--trainer.sync_batchnorm true` without GPUs",
        lambda w: fit(w, "--trainer.sync_batchnorm", "true"),
        "sync_batchnorm true needs GPUs",
    ),
    Case(
        "`--model.pretrained torchvision` with the CIFAR stem",
        lambda w: fit(w, "--model.backbone", "resnet18", "--model.pretrained", "torchvision"),
        "torchvision's ImageNet weights are for the ImageNet stem: add --model.stem imagenet",
    ),
    Case(
        "`--model.pretrained torchvision` for a backbone torchvision has no weights for",
        lambda w: fit(w, "--model.stem", "imagenet", "--model.pretrained", "torchvision"),
        "torchvision has no pretrained weights for 'cnn'",
    ),
    Case(
        "`--model.pretrained torchvision` for a CIFAR backbone torchvision has no weights for (no stem advice first)",
        lambda w: fit(w, "--model.backbone", "resnet20", "--model.pretrained", "torchvision"),
        "torchvision has no pretrained weights for 'resnet20'",
    ),
    Case(
        "torchvision's weights neither in torch's hub cache nor downloadable (no network)",
        lambda w: fit(
            w, "--model.backbone", "resnet18", "--model.stem", "imagenet", "--model.pretrained", "torchvision"
        ),
        "Cannot download torchvision's ResNet18_Weights.IMAGENET1K_V1",
    ),
    Case(
        "a `--model.pretrained` file that does not exist",
        lambda w: fit(w, "--model.pretrained", str(w / "gone.pth")),
        "gone.pth' is no file: give the path",
    ),
    Case(
        "a misspelled `--model.pretrained`",
        lambda w: fit(w, "--model.pretrained", "torchvison"),
        "'torchvison' names no pretrained weights: give torchvision, timm (its default tag), timm:TAG, or a file",
    ),
    Case(
        "timm's weights for a backbone that is not timm's",
        lambda w: fit(w, "--model.pretrained", "timm:a1_in1k"),
        "is timm's weights, for timm: backbones; 'cnn' is not one",
    ),
    Case(
        "`--model.pretrained` weights of another network",
        lambda w: fit(w, "--model.backbone", "resnet20", "--model.pretrained", str(w / "cnn7.pt")),
        "do not fit resnet20: missing: conv1.weight",
    ),
    Case(
        "`--model.unfreeze_at_epoch` without `--model.freeze_backbone true`",
        lambda w: fit(w, "--model.unfreeze_at_epoch", "2"),
        "needs --model.freeze_backbone true",
    ),
    Case(
        "a negative learning rate",
        lambda w: fit(w, "--model.optimizer.init_args.lr", "-0.1"),
        "--model.optimizer: Invalid learning rate: -0.1",
    ),
    Case(
        "`--model.unfreeze_at_epoch` at or past `--trainer.max_epochs`",
        lambda w: fit(
            w, "--model.freeze_backbone", "true", "--model.unfreeze_at_epoch", "40", "--trainer.max_epochs", "30"
        ),
        "would stay frozen the whole run",
    ),
    Case("`--model.backbone_lr_scale 0`", lambda w: fit(w, "--model.backbone_lr_scale", "0"), "'0' is not > 0"),
    Case(
        "`--model.unfreeze_at_epoch 0`",
        lambda w: fit(w, "--model.freeze_backbone", "true", "--model.unfreeze_at_epoch", "0"),
        "'0' is not >= 1",
    ),
    Case(
        "`selftrain` on data without unlabeled images",
        lambda w: selftrain(w, "--teacher", str(w.ckpt)),
        "CIFAR10DataModule has no unlabeled images. CIFAR10DataModule has them with --data.labeled_per_class N",
    ),
    Case(
        "a `selftrain --teacher` that does not exist",
        lambda w: selftrain(w, "--teacher", str(w / "gone.ckpt")),
        "--teacher",
    ),
    Case("`selftrain --rounds 0`", lambda w: selftrain(w, "--rounds", "0"), "argument --rounds: '0' is not >= 1"),
    Case(
        "`selftrain --threshold 1`",
        lambda w: selftrain(w, "--threshold", "1"),
        "argument --threshold: '1' is not in [0, 1)",
    ),
    Case("a `models` pattern that matches nothing", lambda w: ["models", "zzz*"], "No registered model matches"),
    Case("an unknown command", lambda w: ["fitt"], "unknown command 'fitt'"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    check_case(case, world, capsys, monkeypatch)


@pytest.mark.parametrize("precision", ["16-true", "bf16-true", "64-true"])
def test_true_precision_trains_with_batches_cast_after_normalization(precision, world, capsys, monkeypatch):
    import torch

    monkeypatch.chdir(world.root)
    from tests.faults.conftest import run_main

    code, err = run_main(
        fit(world, "--trainer.precision", precision, "--trainer.logger.init_args.name", precision), capsys
    )
    assert code == 0, err[-2000:]
    checkpoint = torch.load(next((world / "runs" / precision).rglob("last.ckpt")), weights_only=True)
    dtype = {"16-true": torch.float16, "bf16-true": torch.bfloat16, "64-true": torch.float64}[precision]
    assert checkpoint["state_dict"]["backbone.stem.0.weight"].dtype == dtype
    assert checkpoint["global_step"] == 1


def test_the_non_finite_message_names_the_precision_only_where_it_can_be_the_cause():
    from zoo_lightning.callbacks.nonfinite import _likely_cause

    assert "16-mixed" in _likely_cause("16-mixed") and "bf16-mixed or 32-true" in _likely_cause("16-mixed")
    assert "precision" not in _likely_cause("32-true") and "precision" not in _likely_cause("bf16-mixed")
    assert "bf16-true" in _likely_cause("bf16-true")
