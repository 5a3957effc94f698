"""Run folders: one owner (RunLogger) names, claims, locks and finds them."""

import os
from pathlib import Path

import pytest
import yaml

from zoo_lightning.runs import (
    DEFAULT_EXPERIMENT,
    RunLogger,
    experiment_name,
    find_run,
    run_of_checkpoint,
    training_runs,
)


def test_the_given_name_wins_then_the_first_config_then_the_backbone():
    assert experiment_name("mine", ["a/resnet56_cifar.yaml"], "resnet56") == "mine"
    assert experiment_name(DEFAULT_EXPERIMENT, ["a/resnet56_cifar.yaml", "tweaks.yaml"], "resnet56") == "resnet56_cifar"
    assert experiment_name(None, [], "resnet56") == "resnet56"
    assert experiment_name(DEFAULT_EXPERIMENT, [], "timm:resnet18.a1_in1k") == "timm_resnet18.a1_in1k"


def test_the_folder_is_claimed_when_first_asked_for_and_never_shared(tmp_path):
    first, second = RunLogger(tmp_path, "exp"), RunLogger(tmp_path, "exp")
    assert not (tmp_path / "exp").exists()  # nothing on disk until the run asks where it is
    assert (first.version, second.version) == ("version_0", "version_1")
    assert Path(first.log_dir) == tmp_path / "exp" / "version_0" and (tmp_path / "exp" / "version_0").is_dir()
    assert RunLogger(tmp_path, "exp", version_prefix="test_").version == "test_0"
    with pytest.raises(FileExistsError, match="already exists: another run's"):
        _ = RunLogger(tmp_path, "exp", version="version_0").version


def test_a_reserved_folder_is_adopted_only_with_its_token(tmp_path):
    folder, token = RunLogger.reserve(tmp_path / "exp", "lr=0.1")
    again, _ = RunLogger.reserve(tmp_path / "exp", "lr=0.1")
    assert (folder.name, again.name) == ("lr=0.1", "lr=0.1_v2")
    with pytest.raises(FileExistsError):
        _ = RunLogger(tmp_path, "exp", version="lr=0.1", claim="not-the-token").version
    adopted = RunLogger(tmp_path, "exp", version="lr=0.1", claim=token)
    assert adopted.version == "lr=0.1" and not (folder / ".claim").exists()


def test_a_resumed_run_is_locked_while_it_trains_and_released_after(tmp_path):
    (tmp_path / "exp" / "version_0").mkdir(parents=True)
    logger = RunLogger(tmp_path, "exp", version="version_0", resume=True)
    assert logger.version == "version_0"
    lock = tmp_path / "exp" / "version_0" / ".resume.lock"
    assert lock.read_text() == str(os.getpid())
    with pytest.raises(FileExistsError, match=f"being resumed by process {os.getpid()}"):
        _ = RunLogger(tmp_path, "exp", version="version_0", resume=True).version
    logger.finalize("success")
    assert not lock.exists()


def test_a_read_only_logs_folder_is_one_line(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="writable --trainer.logger.init_args.save_dir"):
            _ = RunLogger(tmp_path / "logs", "exp").version
    finally:
        tmp_path.chmod(0o700)


def _run(experiment: Path, name: str, backbone: str, mtime: int) -> Path:
    folder = experiment / name
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_bytes(b"x")
    config = folder / "config.yaml"
    config.write_text(yaml.safe_dump({"model": {"backbone": backbone}, "data": {"class_path": "a.CIFAR10DataModule"}}))
    os.utime(config, ns=(mtime, mtime))
    return folder


def test_last_means_the_newest_training_run_that_matches(tmp_path):
    experiment = tmp_path / "exp"
    old = _run(experiment, "version_0", "cnn", 1_000)
    new = _run(experiment, "version_1", "resnet20", 2_000)
    (new / "evaluations" / "test_0").mkdir(parents=True)  # evaluations are no training runs
    assert [r.folder for r in training_runs(experiment)] == [new, old]

    def wants(backbone: str):
        return lambda r: [] if r.model["backbone"] == backbone else [f"model.backbone {r.model['backbone']!r}"]

    assert find_run(experiment, "last", wants("cnn")).folder == old
    assert find_run(experiment, "last", wants("resnet20")).folder == new
    with pytest.raises(ValueError, match="the newest, version_1, has model.backbone 'resnet20'"):
        find_run(experiment, "last", wants("vgg11"))
    with pytest.raises(FileNotFoundError, match="No training run under"):
        find_run(tmp_path / "none", "last", wants("cnn"))
    assert run_of_checkpoint(old / "checkpoints" / "last.ckpt") == old.resolve()
    assert run_of_checkpoint(tmp_path / "loose.ckpt") is None
