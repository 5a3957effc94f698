"""Nothing of the user's is lost: resume after a hard kill, and every bad input ends in one clear line."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _fit_args(data_dir: Path, logs: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "zoo_lightning", "fit", "--config", "cnn_cifar.yaml", "--data.data_dir", str(data_dir),
            "--data.val_size", "20", "--data.batch_size", "16", "--trainer.max_epochs", "4",
            "--trainer.enable_progress_bar", "false", "--trainer.logger.init_args.save_dir", str(logs), *extra]


def test_resume_after_sigkill_matches_an_uninterrupted_run(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    straight = subprocess.run(_fit_args(data_dir, tmp_path / "a"), env=_env(), cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]

    logs = tmp_path / "b"
    run = logs / "cnn_cifar" / "version_0"
    process = subprocess.Popen(_fit_args(data_dir, logs), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.is_file(), "the first run ended before writing a checkpoint"
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert killed_at < 20  # killed before the end (4 epochs x 5 steps)

    resumed = subprocess.run(_fit_args(data_dir, logs, "--ckpt_path", "last"), env=_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [p.name for p in (logs / "cnn_cifar").iterdir()] == ["version_0"]  # continued in place
    assert (run / "config.yaml").is_file() and (run / "config.resume-1.yaml").is_file()

    a = torch.load(tmp_path / "a" / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (20, 3), (straight.stderr[-3000:], resumed.stderr[-3000:])
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    lr = lambda ckpt: ckpt["lr_schedulers"][0]["_last_lr"]  # noqa: E731
    assert lr(a) == pytest.approx(lr(b))


def test_a_run_killed_before_its_first_checkpoint_keeps_its_folder_and_config(cifar_python, tmp_path):
    import yaml

    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    run = logs / "cnn_cifar" / "version_0"
    process = subprocess.Popen(_fit_args(data_dir, logs), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "config.yaml").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoints").exists(), "the run got to a checkpoint before it was killed"
    written = (run / "config.yaml").read_text()
    assert yaml.safe_load(written)["model"]["backbone"] == "cnn"

    resumed = subprocess.run(_fit_args(data_dir, logs, "--ckpt_path", "last"), env=_env(), cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 2 and "has no checkpoints/last.ckpt: it stopped before its first" in resumed.stderr
    again = subprocess.run(_fit_args(data_dir, logs, "--trainer.max_epochs", "1"), env=_env(), cwd=tmp_path,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in (logs / "cnn_cifar").iterdir()) == ["version_0", "version_1"]  # a new run beside it
    assert (run / "config.yaml").read_text() == written


def test_resume_with_nothing_to_resume_says_so(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    result = subprocess.run(_fit_args(data_dir, tmp_path / "logs", "--ckpt_path", "last"), env=_env(), cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and "No run under" in result.stderr and "Traceback" not in result.stderr
