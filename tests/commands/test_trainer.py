"""fit, validate, test, predict through the CLI: run folders, checkpoints, configs, the recipe defaults."""

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import fit_args, run_cli
from zoo_lightning.cli import main
from zoo_lightning.parsing import CONFIG_DIR


def test_fit_then_test_from_the_checkpoint(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    fit = run_cli(fit_args(data_dir, logs), cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = logs / "cnn_cifar" / "version_0"
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["backbone"] == "cnn"
    assert config["data"]["init_args"]["val_size"] == 20
    best, last = run / "checkpoints" / "best.ckpt", run / "checkpoints" / "last.ckpt"
    assert best.is_file() and last.is_file()
    checkpoint = torch.load(best, map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 5  # 80 train images / 16
    assert checkpoint["hyper_parameters"]["backbone"] == "cnn"
    assert checkpoint["hyper_parameters"]["num_classes"] == 10  # linked from the DataModule
    events = EventAccumulator(str(run)).Reload()
    tags = events.Tags()["scalars"]
    assert {"train/loss", "val/top1", "val/loss"} <= set(tags) and any(t.startswith("lr-") for t in tags)

    test = run_cli(
        [
            "test",
            "--config",
            "cnn_cifar.yaml",
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "20",
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--ckpt_path",
            str(best),
        ],
        cwd=tmp_path,
    )
    assert test.returncode == 0, test.stderr[-3000:]
    assert "test/top1" in test.stdout
    # The evaluation is filed inside the run it scored, never as a training run beside it, and leaves the run's
    # own files as they were.
    assert sorted(p.name for p in (logs / "cnn_cifar").iterdir()) == ["version_0"]
    assert (run / "evaluations" / "test_0" / "config.yaml").is_file()
    assert any((run / "evaluations" / "test_0").glob("events.out.tfevents.*"))
    assert (run / "checkpoints" / "best.ckpt").stat().st_mtime_ns == best.stat().st_mtime_ns

    # The checkpoint teaches a student of another family through the distillation config.
    distill = run_cli(
        [
            "fit",
            "--config",
            "distill_resnet56_to_resnet20_cifar.yaml",
            *fit_args(data_dir, logs)[3:],
            "--model.objective.init_args.teacher",
            str(best),
        ],
        cwd=tmp_path,
    )
    assert distill.returncode == 0, distill.stderr[-3000:]
    student_run = logs / "distill_resnet56_to_resnet20_cifar" / "version_0"
    student = torch.load(student_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert student["hyper_parameters"]["backbone"] == "resnet20"
    assert all(k.startswith("backbone.") for k in student["state_dict"])  # no teacher weights inside
    tags = EventAccumulator(str(student_run)).Reload().Tags()["scalars"]
    assert {"train/kd", "train/ce", "val/agreement", "val/teacher_top1"} <= set(tags)


def test_checkpoint_fixes_the_network_and_the_command_line_how_to_run_it(cifar_python, tmp_path, monkeypatch, capsys):
    """Lightning lays a checkpoint's hyper-parameters over the command line; tta/channels_last stay the user's."""
    import functools

    import lightning as L

    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    main([*fit_args(data_dir, logs, "--trainer.max_steps", "1")])  # trained with tta None, channels_last False
    ckpt = next(logs.rglob("last.ckpt"))
    tested = []
    # wraps: LightningCLI builds the subcommand's options (ckpt_path) from Trainer.test's signature
    capture = functools.wraps(L.Trainer.test)(lambda trainer, model, *args, **kwargs: tested.append(model))
    monkeypatch.setattr(L.Trainer, "test", capture)
    main(
        [
            "test",
            "--config",
            "resnet20_cifar.yaml",
            "--ckpt_path",
            str(ckpt),
            "--model.tta",
            "flip",
            "--model.tta_confidence",
            "0.7",
            "--model.channels_last",
            "true",
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "20",
            "--trainer.logger.init_args.save_dir",
            str(logs),
        ]
    )
    (model,) = tested
    assert model.hparams.backbone == "cnn"  # from the checkpoint, over the config's resnet20
    assert model.hparams.tta == "flip" and model.hparams.channels_last is True  # from the command line
    assert model.hparams.tta_confidence == 0.7
    out = capsys.readouterr().out
    assert "Test-time augmentation flip: 2 views of each image whose top class has probability < 0.7, one view" in out


def test_unknown_backbone_is_one_line_with_the_closest_match(cifar_python, tmp_path, capsys):
    data_dir, _ = cifar_python
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(data_dir, tmp_path, "--model.backbone", "resnet2O"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Unknown model 'resnet2O'" in err and "'resnet20'" in err and "Traceback" not in err


def test_missing_data_says_what_to_do(tmp_path, capsys):
    """Offline, the default download fails at once and says where to put the archive; without it, which files."""
    with pytest.raises(SystemExit):
        main(fit_args(tmp_path / "empty", tmp_path))
    err = capsys.readouterr().err
    assert f"The data folder {tmp_path / 'empty'} did not exist, so its download was tried" in err
    assert "could not download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in err
    assert f"put it at {tmp_path / 'empty' / 'cifar-10-python.tar.gz'}" in err and "Traceback" not in err
    assert not (tmp_path / "empty").exists()  # the failed download leaves no folder behind
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(SystemExit):
        main(fit_args(tmp_path / "a_file", tmp_path))
    err = capsys.readouterr().err
    assert f"--data.data_dir {tmp_path / 'a_file'} is a file" in err and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(fit_args(tmp_path / "empty", tmp_path, "--data.download", "false"))
    err = capsys.readouterr().err
    assert "No CIFAR-10 under" in err and "--data.download true" in err and "Traceback" not in err


def test_mistyped_config_key_gets_jsonargparses_message(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # were the key accepted, nothing would train on real data
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "cnn_cifar.yaml", "--trainer.max_epoch", "3"])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err
    assert "max_epoch" in err and "Traceback" not in err


def test_every_config_parses_and_names_a_registered_backbone():
    from zoo_lightning.commands.trainer import ZooCLI
    from zoo_lightning.models import list_models

    configs = sorted(CONFIG_DIR.glob("*.yaml"))
    assert len(configs) >= 3
    for config in configs:
        backbone = ZooCLI("fit", ["--config", str(config)], build=False).config.model.backbone
        assert backbone in list_models() or ":" in backbone, f"{config.name}: unknown backbone {backbone}"


def test_a_backbone_registered_in_user_code_trains_through_the_cli(cifar_python, tmp_path):
    """The README's "Add your own backbone": one function, one decorator, nothing else edited."""
    from torch import nn

    from zoo_lightning.models import list_models, register_model
    from zoo_lightning.models.registry import _REGISTRY

    @register_model
    def readme_tiny_net(num_classes: int = 10, stem: str = "cifar", width: int = 8) -> nn.Module:
        """A two-layer test net."""
        return nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, num_classes),
        )

    try:
        assert "readme_tiny_net" in list_models()
        data_dir, _ = cifar_python
        main(
            fit_args(
                data_dir,
                tmp_path / "logs",
                "--model.backbone",
                "readme_tiny_net",
                "--model.backbone_kwargs",
                "{width: 4}",
                "--trainer.max_epochs",
                "1",
            )
        )
        checkpoint = torch.load(next((tmp_path / "logs").rglob("last.ckpt")), weights_only=True)
        assert checkpoint["state_dict"]["backbone.0.weight"].shape == (4, 3, 3, 3)
        assert checkpoint["global_step"] == 5
    finally:
        del _REGISTRY["readme_tiny_net"]


def test_train_sizes_from_the_command_line_resize_what_fit_trains_on(cifar_python, tmp_path, monkeypatch):
    from zoo_lightning.data import DevicePipeline, transforms

    sides: list[int] = []
    resize = transforms.Resize.forward
    monkeypatch.setattr(
        transforms.Resize, "forward", lambda self, images: sides.append(self.size) or resize(self, images)
    )
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    main(
        fit_args(
            data_dir,
            logs,
            "--data.pipeline.train_sizes",
            "{0: 16, 1: 32}",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "2",
            "--trainer.limit_val_batches",
            "1",
        )
    )
    assert sides == [16, 16, 32, 32]  # two training batches per epoch; validation is never resized
    # The saved config (jsonargparse writes the epochs as string keys) rebuilds the same schedule.
    saved = yaml.safe_load(next(logs.rglob("config.yaml")).read_text())["data"]["init_args"]
    assert DevicePipeline(**saved["pipeline"]["init_args"]).train_sizes == {0: 16, 1: 32}


def test_evaluating_without_a_logger_writes_nothing_and_can_be_repeated(cifar_python, tmp_path, monkeypatch, capsys):
    """`test --trainer.logger false` has no run folder to file a config.yaml in; a second one must not abort."""
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    main([*fit_args(data_dir, logs, "--trainer.max_steps", "1")])
    ckpt = next(logs.rglob("last.ckpt"))
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    for _ in range(2):
        main(
            [
                "test",
                "--config",
                "cnn_cifar.yaml",
                "--ckpt_path",
                str(ckpt),
                "--data.data_dir",
                str(data_dir),
                "--data.val_size",
                "20",
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
            ]
        )
        assert "test/top1" in capsys.readouterr().out
    assert list(workdir.iterdir()) == []


def test_the_airbench_recipe_fits_on_every_training_image_then_tests(cifar_python, tmp_path, caplog):
    """val_size 0: no validation, no best.ckpt, last.ckpt written, the test in the fit's own run; precision auto."""
    from zoo_lightning.hardware import auto_precision

    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    main(
        [
            "fit",
            "--config",
            "airbench94_cifar.yaml",
            "--data.data_dir",
            str(data_dir),
            "--data.batch_size",
            "16",
            "--data.eval_batch_size",
            "20",
            "--trainer.max_steps",
            "7",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--model.backbone_kwargs",
            "{widths: [8, 16, 16]}",
        ]
    )
    (run,) = (logs / "airbench94_cifar").iterdir()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]
    checkpoint = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 7  # 100 training images in batches of 16: 6 an epoch, 7 steps in all
    tags = EventAccumulator(str(run)).Reload().Tags()["scalars"]
    assert "test/top1" in tags and not any(t.startswith("val/") for t in tags)
    precision, _ = auto_precision("auto")
    assert f"Precision auto: {precision}" in caplog.text


def test_help_lists_the_choices_of_tta_precision_and_the_pipelines_padding(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--help"])
    assert stop.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps long lines
    assert "--model.tta TTA" in out and "'flip', 'flip_translate', 'flip_shift'" in out
    assert "--trainer.precision PRECISION" in out and "'auto', '32-true', 'bf16-mixed'" in out
    assert "--data.pipeline.padding_mode {zeros,reflect}" in out and "'zeros', 'reflect'" in out
