"""The world the fault tests run in: tiny real-format data, a trained checkpoint, and broken files."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_cifar_python_release, write_image_folder, write_stl10_release
from tests.helpers import fit_args


@dataclass
class World:
    root: Path
    ckpt: Path  # a cnn trained two steps on `data`

    def __truediv__(self, name: str) -> Path:
        return self.root / name


def fit(world: World, *extra: str, data: str = "data") -> list[str]:
    """A fit of a tiny cnn on one of the world's data folders, logged under ``runs``."""
    return [
        "fit",
        "--config",
        "cnn_cifar.yaml",
        "--data.data_dir",
        str(world / data),
        "--data.val_size",
        "20",
        "--data.batch_size",
        "16",
        "--trainer.max_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(world / "runs"),
        *extra,
    ]


def _pickled_release(root: Path, change) -> None:
    """A CIFAR-10 python release with ``change(batch_dict)`` applied to data_batch_1."""
    write_cifar_python_release(root)
    path = root / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    change(batch)
    with open(path, "wb") as f:
        pickle.dump(batch, f)


@pytest.fixture(scope="package")
def world(tmp_path_factory) -> World:
    from zoo_lightning.cli import main
    from zoo_lightning.models import create_model

    root = tmp_path_factory.mktemp("world")
    write_cifar_python_release(root / "data")
    main(fit_args(root / "data", root / "logs", "--trainer.max_steps", "2"))
    ckpt = root / "logs" / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt"
    write_image_folder(root / "folder", per_class=2)
    (root / "folder" / "train" / "bird" / "broken.png").write_bytes(b"not a png")
    write_image_folder(root / "three" / "set", per_class=2, classes=["a", "b", "c"])
    for name in ("empty", "photos"):
        (root / name).mkdir()
    (root / "truncated.ckpt").write_bytes(ckpt.read_bytes()[:5000])
    torch.save({"weights": torch.zeros(3)}, root / "foreign.ckpt")
    torch.save(create_model("cnn", num_classes=7).state_dict(), root / "cnn7.pt")  # a 7-class teacher
    (root / "empty.yaml").write_text("")
    (root / "list.yaml").write_text("- trainer\n- model\n")
    (root / "broken.yaml").write_text("trainer: {max_epochs: [\n")
    _pickled_release(root / "label10", lambda b: b[b"labels"].__setitem__(0, 10))
    _pickled_release(root / "label-1", lambda b: b[b"labels"].__setitem__(3, -1))
    _pickled_release(root / "float", lambda b: b.__setitem__(b"data", b[b"data"].astype(np.float32) / 255))
    _pickled_release(root / "int16", lambda b: b.__setitem__(b"data", b[b"data"].astype(np.int16) * 200))
    write_stl10_release(root / "stl")
    return World(root, ckpt)


@pytest.fixture(autouse=True)
def empty_hub_cache(monkeypatch, tmp_path):
    """torch's hub cache of the machine is not the tests': pretrained weights are never found there."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """``python -m zoo_lightning ARGV`` in this process: (exit status, what it printed to stderr)."""
    from zoo_lightning.cli import main

    capsys.readouterr()
    try:
        main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    return code, capsys.readouterr().err


def check_case(case, world: World, capsys, monkeypatch) -> str:
    """Runs one case; asserts its exit status, one clear line with its words, and no traceback."""
    monkeypatch.chdir(world.root)
    code, err = run_main(case.argv(world), capsys)
    assert code == case.code, err[-2000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors and case.says in errors[0], err[-2000:]
    assert "Traceback" not in err
    return err
