"""Checkpoints: one validated read per file, what they carry, and writes that cannot leave half a file.

Running out of disk is simulated with the kernel's per-process file-size limit (RLIMIT_FSIZE): the
write fails part-way with EFBIG exactly as a full disk fails it with ENOSPC.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from zoo_lightning import checkpoints
from zoo_lightning.callbacks import HparamsSession
from zoo_lightning.checkpoints import (
    AtomicCheckpointIO,
    callback_state,
    datamodule_args,
    datamodule_state,
    load_backbone,
    read_checkpoint,
    rebuild_backbone,
)
from zoo_lightning.models import create_model

ROOT = Path(__file__).resolve().parent.parent

needs_rlimit = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs RLIMIT_FSIZE")

LIMIT_SCRIPT = """
import resource, signal, sys, torch
from zoo_lightning.checkpoints import AtomicCheckpointIO, CheckpointWriteError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # turn the size-limit signal into a failing write (EFBIG)
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
try:
    AtomicCheckpointIO().save_checkpoint({"weight": torch.arange(1_000_000.0)}, sys.argv[1])
except CheckpointWriteError as error:
    print(error)
    sys.exit(3)
"""


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@needs_rlimit
def test_a_write_that_runs_out_of_space_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weight": torch.ones(3), "epoch": 4}, target)
    before = target.read_bytes()

    result = subprocess.run(
        [sys.executable, "-c", LIMIT_SCRIPT, str(target)], env=_env(), capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 3, result.stderr[-2000:]
    assert "disk is full" in result.stdout and "previous last.ckpt is untouched" in result.stdout
    assert target.read_bytes() == before
    assert torch.load(target, weights_only=True)["epoch"] == 4
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # the partial file was removed


def test_the_write_goes_through_a_file_beside_the_target(tmp_path, monkeypatch):
    """The staging file lives in the checkpoint's own folder, so the final rename never crosses filesystems."""
    replaced = []
    monkeypatch.setattr(os, "replace", lambda src, dst: replaced.append((Path(src), Path(dst))) or os.rename(src, dst))
    target = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 7}, target)
    ((source, destination),) = replaced
    assert (
        source.parent == destination.parent == tmp_path
        and source.name.startswith(".last.")
        and source.name.endswith(".tmp.ckpt")
    )
    assert torch.load(target, weights_only=True) == {"step": 7}


@needs_rlimit
def test_fit_that_fills_the_disk_stops_with_one_line_and_last_ckpt_intact(cifar_python, tmp_path):
    """A real CLI fit: epoch 0 checkpoints, then the file-size limit makes epoch 1's writes fail."""
    data_dir, _ = cifar_python
    (tmp_path / "fill_disk.py").write_text(
        textwrap.dedent("""
        import resource, signal
        from lightning.pytorch.callbacks import Callback

        class FillDiskAfterFirstEpoch(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == 1:
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    """)
    )
    logs = tmp_path / "logs"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "zoo_lightning",
            "fit",
            "--config",
            "cnn_cifar.yaml",
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "20",
            "--data.batch_size",
            "16",
            "--trainer.max_epochs",
            "3",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--trainer.callbacks+=fill_disk.FillDiskAfterFirstEpoch",
        ],
        env={**_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: Could not write checkpoint" in result.stderr and "disk is full" in result.stderr
    assert "Traceback" not in result.stderr
    checkpoints = logs / "cnn_cifar" / "version_0" / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["best.ckpt", "last.ckpt"]
    last = torch.load(checkpoints / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["global_step"] == 5  # epoch 0's checkpoint, whole
    assert (logs / "cnn_cifar" / "version_0" / "config.yaml").is_file()


def _classifier_checkpoint(path: Path, **hparams) -> dict:
    """A checkpoint as `fit` writes it: backbone weights, hyper-parameters, DataModule and callback state."""
    hparams = {
        "backbone": "cnn",
        "num_classes": 7,
        "stem": "cifar",
        "backbone_kwargs": {"widths": [4, 8, 8]},
        **hparams,
    }
    backbone = create_model("cnn", num_classes=7, widths=[4, 8, 8])
    checkpoint = {
        "state_dict": {f"backbone.{k}": v for k, v in backbone.state_dict().items()},
        "hyper_parameters": hparams,
        "epoch": 2,
        "datamodule_hyper_parameters": {"_class_path": "zoo_lightning.data.CIFAR10DataModule", "batch_size": 16},
        "CIFAR10DataModule": {
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "class_names": list("abcdefg"),
            "image_size": 32,
            "class_path": "zoo_lightning.data.cifar10.CIFAR10DataModule",
        },
        "callbacks": {"HparamsSession": {"best_val_top1": 0.5, "hparams": {"lr": 0.1}}},
    }
    torch.save(checkpoint, path)
    return checkpoint


def test_a_checkpoint_is_read_once_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "a.ckpt"
    _classifier_checkpoint(path)
    loads = []
    load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(a[0]) or load(*a, **k))
    first = read_checkpoint(path)
    assert read_checkpoint(str(path)) is first and len(loads) == 1
    _classifier_checkpoint(path, num_classes=7, stem="imagenet")
    os.utime(path, ns=(1, 1))  # a rewritten file: its size or time differs
    assert read_checkpoint(path)["hyper_parameters"]["stem"] == "imagenet" and len(loads) == 2


def test_what_a_checkpoint_carries_is_found_by_name(tmp_path):
    path = tmp_path / "a.ckpt"
    saved = _classifier_checkpoint(path)
    checkpoint = read_checkpoint(path)
    assert datamodule_state(checkpoint) == saved["CIFAR10DataModule"]
    assert datamodule_state({"Other": {"mean": [0.1], "std": [0.2]}}) is None  # mean/std alone do not make one
    assert datamodule_args(checkpoint) == {
        "class_path": "zoo_lightning.data.CIFAR10DataModule",
        "init_args": {"batch_size": 16, "class_names": list("abcdefg")},
    }
    assert callback_state(checkpoint, HparamsSession) == {"best_val_top1": 0.5, "hparams": {"lr": 0.1}}
    model, _ = load_backbone(path)
    x = torch.randn(2, 3, 32, 32)
    reference = rebuild_backbone(saved["hyper_parameters"])
    reference.load_state_dict({k.removeprefix("backbone."): v for k, v in saved["state_dict"].items()})
    assert not model.training
    torch.testing.assert_close(model(x), reference.eval()(x))


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda p: p.mkdir(), IsADirectoryError, "is a folder; pass a .ckpt file in it"),
        (lambda p: None, FileNotFoundError, "does not exist"),
        (lambda p: p.write_bytes(b"PK\x03\x04 truncated"), ValueError, "Cannot read checkpoint .* truncated"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), ValueError, "not a checkpoint written by"),
        (lambda p: torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, p), ValueError, "name no backbone"),
    ],
)
def test_bad_files_get_one_line_errors(tmp_path, make, error, match):
    path = tmp_path / "x.ckpt"
    make(path)
    with pytest.raises(error, match=match):
        read_checkpoint(path)


def test_weights_that_do_not_fit_the_backbone_are_refused(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint = _classifier_checkpoint(path)
    checkpoint["hyper_parameters"]["backbone_kwargs"] = {"widths": [8, 8, 8]}
    torch.save(checkpoint, path)
    checkpoints._cache.clear()
    with pytest.raises(ValueError, match="do not fit its backbone 'cnn'"):
        load_backbone(path)
