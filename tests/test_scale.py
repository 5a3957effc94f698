"""Scale and speed features that run without a GPU: DDP on CPU (gloo), bf16 autocast, torch.compile."""

import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from zoo_lightning.classifier import ImageClassifier

ROOT = Path(__file__).resolve().parent.parent


def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "zoo_lightning", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _val_top1(stdout: str) -> float:
    """val/top1 from the metrics line a validation prints, as a fraction (it prints a percentage to 2 decimals)."""
    return float(re.search(r"val/top1 ([0-9.]+)%", stdout).group(1)) / 100


def test_two_process_cpu_ddp_fit_and_synced_validation(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    common = [
        "--config",
        "cnn_cifar.yaml",
        "--data.data_dir",
        str(data_dir),
        "--data.val_size",
        "21",
        "--data.batch_size",
        "8",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(logs),
    ]
    fit = _cli(
        [
            "fit",
            *common,
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
            "--trainer.max_epochs",
            "1",
        ],
        tmp_path,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    runs = list((logs / "cnn_cifar").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # rank 1 wrote no folder of its own
    checkpoint = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 79 // 2 // 8  # each rank: half of the 79 train images, batches of 8

    # 21 validation images over 2 ranks (11 + 10, none repeated): the synced metric equals one process's.
    ckpt = str(runs[0] / "checkpoints" / "last.ckpt")
    two = _cli(
        [
            "validate",
            *common,
            "--ckpt_path",
            ckpt,
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "ddp",
        ],
        tmp_path,
    )
    one = _cli(
        ["validate", *common, "--ckpt_path", ckpt, "--trainer.accelerator", "cpu", "--trainer.devices", "1"], tmp_path
    )
    assert two.returncode == 0 and one.returncode == 0, (two.stderr + one.stderr)[-3000:]
    assert _val_top1(two.stdout) == pytest.approx(_val_top1(one.stdout), abs=1e-4)  # k/21 differ by 0.048


def test_two_node_launch_with_torchrun_on_localhost(cifar_python, tmp_path):
    """`--trainer.num_nodes 2` under torchrun: Lightning's TorchElastic path, one process per "node"."""
    import socket

    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes",
                "2",
                "--nproc_per_node",
                "1",
                "--node_rank",
                str(rank),
                "--master_addr",
                "127.0.0.1",
                "--master_port",
                str(port),
                "-m",
                "zoo_lightning",
                "fit",
                "--config",
                "cnn_cifar.yaml",
                "--data.data_dir",
                str(data_dir),
                "--data.val_size",
                "21",
                "--data.batch_size",
                "8",
                "--trainer.max_epochs",
                "1",
                "--trainer.accelerator",
                "cpu",
                "--trainer.devices",
                "1",
                "--trainer.num_nodes",
                "2",
                "--trainer.strategy",
                "ddp",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.logger.init_args.save_dir",
                str(logs),
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(out[-2000:] for out in outputs)
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    runs = list((logs / "cnn_cifar").iterdir())
    assert [r.name for r in runs] == ["version_0"]  # only global rank 0 writes
    checkpoint = torch.load(runs[0] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 79 // 2 // 8  # each node trained on half of the 79 train images


def test_sync_batchnorm_on_cpu_says_it_needs_gpus(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    result = _cli(
        [
            "fit",
            "--config",
            "cnn_cifar.yaml",
            "--data.data_dir",
            str(data_dir),
            "--data.val_size",
            "21",
            "--trainer.accelerator",
            "cpu",
            "--trainer.devices",
            "1",
            "--trainer.strategy",
            "ddp",
            "--trainer.sync_batchnorm",
            "true",
            "--trainer.max_steps",
            "1",
            "--trainer.enable_progress_bar",
            "false",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path / "logs"),
        ],
        tmp_path,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "error: --trainer.sync_batchnorm true needs GPUs" in result.stderr and "Traceback" not in result.stderr


def _loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(
        TensorDataset(torch.randn(16, 3, 32, 32, generator=g), torch.randint(0, 10, (16,), generator=g)), batch_size=8
    )


def test_bf16_autocast_on_cpu_trains(tmp_path):
    """bf16-mixed runs on CPU (slowly here: no bf16 units); the loss stays finite and weights move."""
    model = ImageClassifier("cnn", num_classes=10, lr_scheduler=None)
    before = [p.detach().clone() for p in model.backbone.parameters()]
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            losses.append(outputs["loss"].detach())

    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        precision="bf16-mixed",
        max_steps=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[Record()],
    )
    trainer.fit(model, _loader())
    assert len(losses) == 2 and all(torch.isfinite(loss) for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.backbone.parameters()))
    assert all(p.dtype == torch.float32 for p in model.backbone.parameters())  # master weights stay fp32


@pytest.mark.slow
def test_compile_runs_a_training_step(tmp_path):
    model = ImageClassifier("cnn", num_classes=10, compile=True, lr_scheduler=None)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        accelerator="cpu",
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, _loader())
    assert trainer.global_step == 1
    assert all(k.startswith("backbone.") for k in model.state_dict())  # compiled wrapper not saved
