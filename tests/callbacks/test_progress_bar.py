"""The fit's progress: rich's bar on a terminal; where the output is a file, lines that say how far and how fast."""

from __future__ import annotations

import io
import re
import sys
from functools import partial

import lightning as L
import torch

from tests.helpers import TINY_NET, TinyData
from zoo_lightning.callbacks.progress_bar import LoggedProgressBar, RunProgressBar, run_progress_bar
from zoo_lightning.classifier import ImageClassifier


def _fit_and_test(bar: LoggedProgressBar, epochs: int = 2) -> None:
    L.seed_everything(0, verbose=False)
    model = ImageClassifier(TINY_NET, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[bar],
    )
    data = TinyData()  # 48 training images and 30 validation images in batches of 8: 6 and 4 batches
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)


def test_every_batch_gets_a_line_when_the_interval_is_zero(tiny_net, capsys):
    _fit_and_test(LoggedProgressBar(every_s=0))
    out, err = capsys.readouterr()
    lines = err.splitlines()
    for epoch in (1, 2):
        train = [line for line in lines if line.startswith(f"Epoch {epoch} of 2: ")]
        assert [re.search(r": (\d+/\d+) batches", line)[1] for line in train] == [f"{b}/6" for b in range(1, 7)]
        assert train[0].endswith(" s left; train/loss " + train[0].rsplit("train/loss ", 1)[1])
        assert " s in all" in train[-1] and "(100%)" in train[-1]
        (done,) = [line for line in lines if line.startswith(f"Epoch {epoch} of 2 done in ")]
        assert "val/top1 " in done and "v_num" not in done  # the epoch's validation, after it
    # validation twice (no line for the sanity check's batches), the test once, 4 batches each
    assert sum(line.startswith("Validating: 4/4 batches (100%)") for line in lines) == 2
    assert len([line for line in lines if line.startswith("Validating: ")]) == 8
    assert [line.split(" batches")[0] for line in lines if line.startswith("Testing")] == [
        f"Testing: {b}/4" for b in range(1, 5)
    ]
    assert out == ""  # stdout stays the command's own


def test_lines_are_at_most_every_interval_and_at_each_end(tiny_net, capsys):
    _fit_and_test(LoggedProgressBar(every_s=3600))
    lines = capsys.readouterr().err.splitlines()
    # within the hour, the last batch of each stage alone, then each epoch's summary
    assert [line.split(" (")[0] for line in lines if re.match(r"[\w ]+: \d+/\d+ batches", line)] == [
        "Epoch 1 of 2: 6/6 batches",
        "Validating: 4/4 batches",
        "Epoch 2 of 2: 6/6 batches",
        "Validating: 4/4 batches",
        "Testing: 4/4 batches",
    ]
    assert len([line for line in lines if " done in " in line]) == 2


def test_the_rich_bar_on_a_terminal_and_lines_elsewhere(monkeypatch):
    assert isinstance(run_progress_bar(), LoggedProgressBar)  # pytest's stdout is no terminal

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    assert isinstance(run_progress_bar(), RunProgressBar)
