"""LookaheadAveraging: the weights reset to the average at the right steps; a resumed run ends the same."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from zoo_lightning.callbacks import LookaheadAveraging
from zoo_lightning.classifier import ImageClassifier
from zoo_lightning.data import CIFAR10DataModule

SMALL = {"widths": (4, 8, 8)}


def _fit(root, tmp_path, epochs: int, ckpt_path=None, callbacks=(), ahead=()):
    L.seed_everything(0, verbose=False)
    data = CIFAR10DataModule(data_dir=str(root), val_size=20, batch_size=16, download=False)
    model = ImageClassifier("cnn", num_classes=10, backbone_kwargs=SMALL)
    lookahead = LookaheadAveraging(start_epoch=1, every_n_steps=2)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        default_root_dir=tmp_path,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[*ahead, lookahead, *callbacks],
    )
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, model, lookahead


def test_the_decay_follows_its_schedule():
    lookahead = LookaheadAveraging()
    assert lookahead.decay_at(50, 100) == pytest.approx(0.95**5 * 0.5**3)
    assert lookahead.decay_at(100, 100) == pytest.approx(0.95**5)


@pytest.mark.parametrize(
    "option, value", [("every_n_steps", "0"), ("decay", "1.5"), ("start_epoch", "-1"), ("exponent", "-2")]
)
def test_the_parser_refuses_an_option_out_of_range(option, value):
    from jsonargparse import ArgumentError, ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(LookaheadAveraging, "lookahead")
    defaults = {"start_epoch": 3, "every_n_steps": 5, "decay": 0.95, "exponent": 3.0}
    assert vars(parser.parse_args([]).lookahead) == defaults
    with pytest.raises(ArgumentError, match=f"(?s)lookahead.{option}.*'{value}'"):
        parser.parse_args([f"--lookahead.{option}", value])


def test_updates_at_every_nth_step_from_the_start_epoch_and_the_model_holds_the_average(cifar_python, tmp_path):
    root, _ = cifar_python
    seen, before = [], {}

    class Before(L.Callback):  # runs ahead of the lookahead: the weights and the average it starts from
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            lookahead = trainer.callbacks[1]
            before["weights"] = {k: v.clone() for k, v in pl_module.named_parameters()}
            average = lookahead.average
            before["average"] = None if average is None else {k: v.clone() for k, v in average.items()}

    class After(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            lookahead, step = trainer.callbacks[1], trainer.global_step
            if lookahead.latest_update_step != step:
                return
            params = dict(pl_module.named_parameters())
            seen.append(step)
            assert all(torch.equal(lookahead.average[k], v) for k, v in params.items())  # the model holds the average
            if before["average"] is None:  # the first update takes the weights as they are
                expected = before["weights"]
            else:  # current + d * (average - current), d from the schedule of a 15-step run
                d = 0.95**2 * (step / 15) ** 3
                expected = {k: w + d * (before["average"][k] - w) for k, w in before["weights"].items()}
            for name, value in params.items():
                torch.testing.assert_close(value, expected[name], msg=name)

    _, model, lookahead = _fit(root, tmp_path, epochs=3, callbacks=[After()], ahead=[Before()])
    # 5 steps an epoch; epoch 0 never averages; from epoch 1 every second step does, then holds the average.
    assert seen == [6, 8, 10, 12, 14]
    # Step 15 (the last) trained past the average; the epoch's end put the average back.
    assert all(torch.equal(lookahead.average[k], v) for k, v in model.named_parameters())


def test_before_the_start_epoch_nothing_is_averaged(cifar_python, tmp_path):
    root, _ = cifar_python
    _, _, lookahead = _fit(root, tmp_path, epochs=1)
    assert lookahead.average is None and lookahead.latest_update_step == 0
    assert lookahead.state_dict() == {"latest_update_step": 0, "average": None}


def test_a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one(cifar_python, tmp_path):
    root, _ = cifar_python

    class StopAfterTwo(L.Callback):  # a run of 4 epochs (the decay depends on that) stopped after two
        def on_train_epoch_end(self, trainer, pl_module):
            trainer.should_stop = trainer.current_epoch == 1

    _, straight, _ = _fit(root, tmp_path / "a", epochs=4)
    first, _, _ = _fit(root, tmp_path / "b", epochs=4, callbacks=[StopAfterTwo()])
    assert first.current_epoch == 2
    ckpt = tmp_path / "b" / "mid.ckpt"
    first.save_checkpoint(ckpt)
    _, resumed, _ = _fit(root, tmp_path / "c", epochs=4, ckpt_path=ckpt)
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)
