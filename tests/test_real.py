"""Learning checks on the real CIFAR-10 images (``make test-real``; `make data` unpacks them)."""

import time
from pathlib import Path

import pytest

from zoo_lightning.commands.trainer import ZooCLI

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.real
@pytest.mark.parametrize("config, floor", [("cnn_cifar.yaml", 0.55), ("resnet20_cifar.yaml", 0.45)])
def test_one_epoch_reaches_the_accuracy_floor(config, floor, tmp_path):
    if not (DATA / "cifar10-jpeg").is_dir() and not (DATA / "cifar-10-batches-py").is_dir():
        pytest.skip("run `make data` to unpack ../shared/datasets/cifar10-jpeg.tar.gz into data/")
    start = time.perf_counter()
    cli = ZooCLI(
        "fit",
        [
            "--config",
            config,
            "--data.data_dir",
            str(DATA),
            "--trainer.max_epochs",
            "1",
            "--trainer.logger.init_args.save_dir",
            str(tmp_path),
            "--trainer.enable_progress_bar",
            "false",
        ],
    )
    cli.run()
    top1 = cli.trainer.callback_metrics["val/top1"].item()
    print(f"{config}: one epoch, val top-1 {top1:.4f}, {time.perf_counter() - start:.0f} s wall")
    assert top1 >= floor
