"""A checkpoint write that runs out of space leaves the previous file whole and says what to do.

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

from zoo_lightning.checkpoints import AtomicCheckpointIO

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs RLIMIT_FSIZE")

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


def test_a_write_that_runs_out_of_space_keeps_the_previous_checkpoint(tmp_path):
    target = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"weight": torch.ones(3), "epoch": 4}, target)
    before = target.read_bytes()

    result = subprocess.run([sys.executable, "-c", LIMIT_SCRIPT, str(target)], env=_env(), capture_output=True,
                            text=True, timeout=120)

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
    (source, destination), = replaced
    assert source.parent == destination.parent == tmp_path and source.name.startswith(".last.ckpt.")
    assert torch.load(target, weights_only=True) == {"step": 7}


def test_fit_that_fills_the_disk_stops_with_one_line_and_last_ckpt_intact(cifar_python, tmp_path):
    """A real CLI fit: epoch 0 checkpoints, then the file-size limit makes epoch 1's writes fail."""
    data_dir, _ = cifar_python
    (tmp_path / "fill_disk.py").write_text(textwrap.dedent("""
        import resource, signal
        from lightning.pytorch.callbacks import Callback

        class FillDiskAfterFirstEpoch(Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                if trainer.current_epoch == 1:
                    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
    """))
    logs = tmp_path / "logs"
    result = subprocess.run(
        [sys.executable, "-m", "zoo_lightning", "fit", "--config", "cnn_cifar.yaml", "--data.data_dir", str(data_dir),
         "--data.val_size", "20", "--data.batch_size", "16", "--trainer.max_epochs", "3",
         "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(logs),
         "--trainer.callbacks+=fill_disk.FillDiskAfterFirstEpoch"],
        env={**_env(), "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"}, cwd=tmp_path, capture_output=True, text=True,
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
