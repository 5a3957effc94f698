import functools
import math

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import option_error
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.objectives import CrossEntropy
from zoo_lightning.optimization import build_scheduler, parameter_groups, takes_total_steps
from zoo_lightning.schedulers import WarmupCosineLR


def _loader(n: int = 24, num_classes: int = 5, batch_size: int = 8, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n, 3, 32, 32, generator=g)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size)


def _trainer(tmp_path, **kwargs) -> L.Trainer:
    defaults = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    return L.Trainer(**{**defaults, **kwargs})


def test_parameter_groups_keep_decay_off_norms_and_biases():
    model = ImageClassifier("cnn", num_classes=5)
    decay, norms, biases = parameter_groups(model.backbone)
    assert all(p.ndim > 1 for p in decay["params"]) and decay.get("weight_decay") is None
    assert norms["weight_decay"] == 0.0 and biases["weight_decay"] == 0.0
    bn = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert [id(p) for p in norms["params"]] == [id(p) for m in bn for p in (m.weight, m.bias)]
    linear = [m for m in model.backbone.modules() if isinstance(m, torch.nn.Linear)]
    assert {id(p) for p in biases["params"]} == {id(m.bias) for m in linear}
    total = sum(len(g["params"]) for g in (decay, norms, biases))
    assert total == len(list(model.backbone.parameters()))


def test_frozen_parameters_are_in_no_group():
    model = ImageClassifier("airbench94", num_classes=10)
    grouped = {id(p) for g in parameter_groups(model.backbone) for p in g["params"]}
    frozen = [p for p in model.backbone.parameters() if not p.requires_grad]
    assert len(frozen) == 6 and not grouped & {id(p) for p in frozen}  # the BatchNorm scales


def test_default_recipe_is_nesterov_sgd_with_per_step_warmup_cosine(tmp_path):
    model = ImageClassifier("cnn", num_classes=5)
    trainer = _trainer(tmp_path, max_steps=6)
    trainer.fit(model, _loader())
    optimizer = trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.defaults["nesterov"] and optimizer.defaults["momentum"] == 0.9
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0, 0.0]
    config = trainer.lr_scheduler_configs[0]
    assert config.interval == "step" and isinstance(config.scheduler, WarmupCosineLR)
    assert config.scheduler.total_steps == 6  # taken from the Trainer, not from a config
    assert isinstance(model.objective, CrossEntropy) and model.objective.label_smoothing == 0.1


def test_the_default_optimizer_and_schedule_are_the_recipe_files(tmp_path, monkeypatch):
    """configs/defaults.yaml is the one source: another recipe there is what a model built in Python trains with."""
    from zoo_lightning import optimization

    recipe = tmp_path / "defaults.yaml"
    recipe.write_text(
        "model:\n"
        "  optimizer: {class_path: torch.optim.AdamW, init_args: {lr: 0.003, weight_decay: 0.02}}\n"
        "  lr_scheduler: {class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 4}}\n"
    )
    monkeypatch.setattr(optimization, "RECIPE", recipe)
    model = ImageClassifier("cnn", num_classes=5)
    trainer = _trainer(tmp_path, max_steps=2)
    trainer.fit(model, _loader())
    optimizer, scheduler = trainer.optimizers[0], trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["lr"] == 0.003
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.02, 0.0, 0.0]
    assert isinstance(scheduler, torch.optim.lr_scheduler.StepLR) and scheduler.step_size == 4


def test_norm_lr_scale_multiplies_the_no_decay_group_through_the_schedule(tmp_path):
    class RecordLRs(L.Callback):
        def __init__(self):
            self.lrs = []

        def on_train_batch_end(self, trainer, *args):
            self.lrs.append([group["lr"] for group in trainer.optimizers[0].param_groups])

    record = RecordLRs()
    model = ImageClassifier("cnn", num_classes=5, norm_lr_scale=4.0)
    trainer = _trainer(tmp_path, max_steps=6, callbacks=[record])
    trainer.fit(model, _loader())
    assert trainer.lr_scheduler_configs[0].scheduler.base_lrs == [
        pytest.approx(0.1),
        pytest.approx(0.4),
        pytest.approx(0.1),
    ]
    # Warm-up and cosine move every group by the same factor, so every step keeps the 1:4 ratio.
    assert len({round(lr, 6) for lr, _, _ in record.lrs}) > 2
    assert all(
        norm_lr == pytest.approx(4.0 * lr) and bias_lr == pytest.approx(lr) for lr, norm_lr, bias_lr in record.lrs
    )
    message = option_error(ImageClassifier, "--model.norm_lr_scale", "0")
    assert "norm_lr_scale" in message and "'0' is not > 0" in message


def test_total_steps_is_injected_only_when_missing():
    assert takes_total_steps(functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=0.1))
    assert not takes_total_steps(functools.partial(torch.optim.lr_scheduler.OneCycleLR, total_steps=5))
    assert not takes_total_steps(functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3))
    assert takes_total_steps(WarmupCosineLR) and not takes_total_steps(torch.optim.lr_scheduler.StepLR)


def test_an_endless_run_is_refused_by_a_schedule_that_takes_total_steps(tmp_path):
    # Trainer(max_epochs=-1) estimates infinitely many optimizer steps: no total_steps to give the schedule.
    model = ImageClassifier(backbone="cnn", num_classes=5)
    with pytest.raises(ValueError, match="this run has no end: give --trainer.max_epochs or --trainer.max_steps"):
        _trainer(tmp_path, max_epochs=-1).fit(model, _loader())
    # A schedule without total_steps never asks for them.
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    step_lr = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=3)
    assert isinstance(build_scheduler(step_lr, optimizer, lambda: math.inf), torch.optim.lr_scheduler.StepLR)


@pytest.mark.parametrize(
    "scheduler, given, takes",
    [
        ("zoo_lightning.schedulers.WarmupCosineLR", {}, True),
        ("zoo_lightning.schedulers.WarmupCosineLR", {"total_steps": 7}, False),
        ("torch.optim.lr_scheduler.OneCycleLR", {"max_lr": 0.1}, True),
        ("torch.optim.lr_scheduler.StepLR", {"step_size": 3}, False),
    ],
)
def test_total_steps_is_injected_into_the_schedulers_the_command_line_builds(tmp_path, scheduler, given, takes):
    """The scheduler as LightningCLI hands it over (parsed from --model.lr_scheduler), against the installed versions;
    fit then gives it the Trainer's step count when it takes one and none was given."""
    import json

    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(ImageClassifier, "model")
    config = parser.parse_args(
        [
            "--model.backbone",
            "cnn",
            "--model.num_classes",
            "5",
            "--model.lr_scheduler",
            json.dumps({"class_path": scheduler, "init_args": given}),
        ]
    )
    model = parser.instantiate(config).model
    assert takes_total_steps(model.lr_scheduler_factory) == takes
    trainer = _trainer(tmp_path, max_steps=6)
    trainer.fit(model, _loader())
    built = trainer.lr_scheduler_configs[0].scheduler
    assert getattr(built, "total_steps", None) == (6 if takes else given.get("total_steps"))


def test_training_lowers_the_loss_on_a_fixed_batch(tmp_path):
    L.seed_everything(0)
    loader = _loader(n=16, batch_size=16)
    model = ImageClassifier("cnn", num_classes=5, lr_scheduler=None)
    images, labels = next(iter(loader))

    def loss() -> float:  # batch statistics: the running ones lag behind after a few steps
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(model.train()(images), labels).item()

    before = loss()
    _trainer(tmp_path, max_steps=15).fit(model, loader)
    assert loss() < before * 0.5


def test_validation_accuracy_matches_a_hand_count(tmp_path):
    model = ImageClassifier("cnn", num_classes=5)
    loader = _loader(n=40, batch_size=16, seed=3)
    results = _trainer(tmp_path).validate(model, loader, verbose=False)[0]
    model.eval()
    with torch.no_grad():
        correct = sum((model(x).argmax(1) == y).sum().item() for x, y in loader)
    assert results["val/top1"] == pytest.approx(correct / 40)
    assert 0.0 <= results["val/top1"] <= results["val/top5"] <= 1.0


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    plain = ImageClassifier("cnn", num_classes=5).eval()
    nhwc = ImageClassifier("cnn", num_classes=5, channels_last=True).eval()
    nhwc.load_state_dict(plain.state_dict())
    conv = next(m for m in nhwc.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(nhwc(x), plain(x), atol=1e-5, rtol=1e-4)


def test_checkpoint_rebuilds_the_backbone(tmp_path):
    model = ImageClassifier("cnn", num_classes=7, stem="cifar")
    trainer = _trainer(tmp_path, max_steps=1)
    trainer.fit(model, _loader(num_classes=7))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = ImageClassifier.load_from_checkpoint(path).eval()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(restored(x), model.eval()(x))
    assert restored.hparams.num_classes == 7 and restored.hparams.backbone == "cnn"
    assert all(key.startswith("backbone.") for key in restored.state_dict())


def test_unknown_backbone_names_the_closest_match():
    with pytest.raises(KeyError, match="resnet20"):
        ImageClassifier("resnet2O")


def test_flip_tta_is_the_mean_of_plain_and_flipped_logits():
    torch.manual_seed(0)
    model = ImageClassifier("cnn", num_classes=5, tta="flip").eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = (model.backbone(x) + model.backbone(x.flip(3))) / 2
        torch.testing.assert_close(model.evaluate_logits(x), expected)
        model.hparams.tta = "flip_translate"
        shifted = torch.nn.functional.pad(x, (1, 1, 1, 1))[:, :, :32, :32]  # content moved right and down
        assert torch.equal(shifted[:, :, 1:, 1:], x[:, :, :31, :31])
        four = torch.stack(
            [
                model.backbone(v)
                for v in (x, x.flip(3), shifted, torch.nn.functional.pad(x.flip(3), (1, 1, 1, 1))[:, :, 2:, 2:])
            ]
        ).mean(0)
        torch.testing.assert_close(model.evaluate_logits(x), four)
    message = option_error(ImageClassifier, "--model.tta", "rotate")
    assert "model.tta" in message and "rotate" in message and "flip_translate" in message  # the choices


@pytest.mark.parametrize("mode", ["flip", "flip_translate", "flip_shift"])
def test_tta_confidence_gives_the_views_only_to_the_images_the_network_is_unsure_of(mode):
    torch.manual_seed(0)
    model = ImageClassifier("cnn", num_classes=5, tta=mode).eval()
    x = torch.randn(9, 3, 32, 32)
    with torch.no_grad():
        every, plain = model.evaluate_logits(x), model.backbone(x)
        confidence = plain.softmax(dim=1).amax(dim=1)
        middle = confidence.median().item()
        unsure = confidence < middle
        assert 0 < int(unsure.sum()) < len(x)
        for threshold, expected in (
            (middle, torch.where(unsure[:, None], every, plain)),
            (1e-6, plain),
            (0.999, every),
        ):
            model.hparams.tta_confidence = threshold
            torch.testing.assert_close(model.evaluate_logits(x), expected)


def test_test_logs_the_share_of_images_that_took_the_views(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier("cnn", num_classes=5, tta="flip_shift", lr_scheduler=None).eval()
    loader = _loader(n=20, batch_size=8)  # batches of 8, 8 and 4: the share is per image, not per batch
    images = torch.cat([batch[0] for batch in loader])
    with torch.no_grad():
        confidence = model.backbone(images).softmax(dim=1).amax(dim=1)
    model.hparams.tta_confidence = confidence.median().item()
    expected = (confidence < model.hparams.tta_confidence).float().mean().item()
    assert 0 < expected < 1
    trainer = _trainer(tmp_path)
    trainer.test(model, loader, verbose=False)
    assert trainer.callback_metrics["test/tta_share"].item() == pytest.approx(expected)


def test_tta_confidence_needs_tta_and_a_probability_strictly_between_0_and_1():
    with pytest.raises(
        ValueError, match=r"^--model.tta_confidence 0.5 chooses .*: add --model.tta \(e.g. flip_shift\)"
    ):
        ImageClassifier("cnn", num_classes=5, tta_confidence=0.5)
    for bad in ("1", "0", "-0.2"):
        message = option_error(ImageClassifier, "--model.tta_confidence", bad)
        assert "model.tta_confidence" in message and "(0, 1)" in message


def test_tta_is_off_in_the_validation_inside_fit_and_on_in_validate_and_test():
    from lightning.pytorch.trainer.states import TrainerFn

    torch.manual_seed(0)
    model = ImageClassifier("cnn", num_classes=5, tta="flip").eval()
    model.trainer = L.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        plain, mirrored = model.backbone(x), model.backbone(x.flip(3))
        model.trainer.state.fn = TrainerFn.FITTING
        torch.testing.assert_close(model.evaluate_logits(x), plain)
        for fn in (TrainerFn.VALIDATING, TrainerFn.TESTING):
            model.trainer.state.fn = fn
            torch.testing.assert_close(model.evaluate_logits(x), (plain + mirrored) / 2)


def test_ema_weights_are_the_ones_evaluated(tmp_path):
    """Lightning's EMAWeightAveraging: validation and the checkpoint use the averaged weights."""
    from lightning.pytorch.callbacks import EMAWeightAveraging

    L.seed_everything(0)
    model = ImageClassifier("cnn", num_classes=5, lr_scheduler=None)
    ema = EMAWeightAveraging(decay=0.5)
    seen = {}

    class Spy(L.Callback):
        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            if not trainer.sanity_checking:
                seen["val"] = [p.detach().clone() for p in module.backbone.parameters()]

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            seen["raw"] = [p.detach().clone() for p in module.backbone.parameters()]

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[ema, Spy()],
    )
    trainer.fit(model, _loader(n=32), _loader(n=8))
    assert any(not torch.equal(a, b) for a, b in zip(seen["val"], seen["raw"]))  # averaged != raw
    # Training ends by copying the average into the module, so what was validated is what is kept.
    assert all(torch.allclose(a, b) for a, b in zip(seen["val"], model.backbone.parameters()))


def test_flip_shift_tta_is_its_weighted_formula():
    model = ImageClassifier("cnn", num_classes=4, tta="flip_shift", backbone_kwargs={"widths": (4, 8, 8)}).eval()
    x = torch.rand(2, 3, 16, 16)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
    up_left, down_right = padded[:, :, 2:, 2:], padded[:, :, :-2, :-2]
    with torch.no_grad():
        pair = lambda v: (model.backbone(v) + model.backbone(v.flip(3))) / 2  # noqa: E731
        expected = 0.5 * pair(x) + 0.25 * pair(up_left) + 0.25 * pair(down_right)
        torch.testing.assert_close(model.evaluate_logits(x), expected)  # no Trainer fitting: TTA applies
