"""What a user sees: the common commands print only lines of a short, known list.

A line outside the list (a library's warning, a notice that says nothing to act on) fails the test,
so a new library release that prints something new is noticed here rather than by users.
"""

from __future__ import annotations

import re

import numpy as np
from PIL import Image

from tests.helpers import run_cli

BOX = set("━┃│┏┡└┗┌├┓┩┘┛┐┤┼╇╋┳┻┠┨─═║╔╗╚╝╞╡╤╧╪ ")
ALLOWED = [
    re.compile(pattern)
    for pattern in (
        r"Run folder: \S+",  # where the run (or the evaluation) is filed
        r"Continuing the run in \S+",
        r"Precision auto: \S+, as .+\.",
        r"Restoring states from the checkpoint path at \S+",
        r"Restored all states from the checkpoint at \S+",
        r"Loaded model weights from the checkpoint at \S+",
        r"`Trainer\.fit` stopped: `max_epochs=\d+` reached\.",
        # Lightning's model summary: the network's size and cost.
        r"(Trainable|Non-trainable|Total) params: [\d.]+( [KMG])?",
        r"Total estimated model params size \(MB\): [\d.]+",
        r"Modules in (train|eval) mode: \d+",
        r"Total FLOPs: [\d.]+( [KMGT])?",
        # The evaluation's tables and its one line of metrics.
        r"(Validation|Test) accuracy per class",
        r"Test-time augmentation \w+: \d views of every image, \dx the time of one\.",
        r"((val|test)/\w+ [\d.]+%?\s*)+",
        r"The first \d+ of \d+ predictions",
        r"Wrote \d+ predictions to \S+/predictions\.csv",
        r"wrote \S+ \([\d.]+ MB\): uint8 NCHW images in, logits out",
        r"\w+DataModule at \S+ \(training part of the split, per channel R, G, B\):",
        r"(mean|std) += \([\d., ]+\)",
        r"zoo_lightning models matching '\S+' \(\d+ classes; 1 multiply-add = 2 FLOPs\)",
    )
]


def _is_table(line: str) -> bool:
    """A line of a rich table (the model summary, the per-class table, the registry): its border or a row."""
    return bool(line) and (set(line) <= BOX or line[0] in "┃│┡┏└")


def _unexpected(output: str) -> list[str]:
    lines = [line.strip() for line in output.splitlines()]
    return [line for line in lines if line and not _is_table(line) and not any(p.fullmatch(line) for p in ALLOWED)]


def test_the_readme_commands_print_nothing_a_user_cannot_act_on(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(
            photos / f"{i}.png"
        )
    data = ["--data.data_dir", str(data_dir), "--data.val_size", "20", "--data.batch_size", "16"]
    logs = ["--trainer.logger.init_args.save_dir", str(tmp_path / "logs"), "--trainer.enable_progress_bar", "false"]
    best = str(tmp_path / "logs" / "cnn_cifar" / "version_0" / "checkpoints" / "best.ckpt")
    commands = [
        ["fit", "--config", "cnn_cifar.yaml", *data, *logs, "--trainer.max_epochs", "2"],
        ["fit", "--config", "cnn_cifar.yaml", *data, *logs, "--trainer.max_epochs", "3", "--ckpt_path", "last"],
        ["test", "--config", "cnn_cifar.yaml", *data, *logs, "--ckpt_path", "best", "--model.tta", "flip_shift"],
        ["predict", "--ckpt_path", best, "--data.predict_dir", str(photos), "--trainer.enable_progress_bar", "false"],
        ["export", "--ckpt_path", best],
        ["stats", "--config", "cnn_cifar.yaml", *data],
        ["models", "resnet2*"],
    ]
    for args in commands:
        result = run_cli(args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-3000:]
        assert not _unexpected(result.stdout + result.stderr), (args[0], _unexpected(result.stdout + result.stderr))
