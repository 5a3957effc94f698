"""HparamsSession: the HPARAMS tab's session of a fit and of a later test of its checkpoint."""

from __future__ import annotations

import lightning as L
import pytest
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from tests.helpers import TINY_NET, TinyData, events, fit_tiny
from zoo_lightning.callbacks import HparamsSession
from zoo_lightning.callbacks.hparams_session import DONE, KEY_HPARAMS, read_session
from zoo_lightning.classifier import ImageClassifier


def session_hparams(acc: EventAccumulator) -> tuple[dict, list[str]]:
    """The hparams and metric names the HPARAMS tab reads from a run."""
    values, experiment = _session(acc)
    return values, [m.name.tag for m in experiment.metric_infos]


def _session(acc: EventAccumulator):
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    values = {}
    for key, value in start.session_start_info.hparams.items():
        kind = value.WhichOneof("kind")
        values[key] = getattr(value, kind)
    return values, experiment.experiment


def test_hparams_hold_the_recipe_and_the_best_val_top1(tiny_run):
    root, *_ = tiny_run
    acc = events(root / "tiny" / "version_0")
    params, metrics = session_hparams(acc)
    assert params["stage"] == "fit" and params["backbone"] == TINY_NET and params["objective"] == "CrossEntropy"
    assert params["optimizer"] == "SGD" and params["lr"] == pytest.approx(0.1)
    assert params["batch_size"] == 8 and params["max_epochs"] == 2 and params["objective.label_smoothing"] == 0.1
    assert params["parameters"] == 3 * 4 * 9 + 4 + 16 * 3 + 3
    assert {"hp/best_val_top1", "val/top1", "test/top1", "train/images_per_sec"} <= set(metrics)
    best = max(e.value for e in acc.Scalars("val/top1"))
    assert acc.Scalars("hp/best_val_top1")[-1].value == pytest.approx(best)
    # The metric columns are not logged as scalars by the session: no 0 ahead of a curve, no test/top1 in a fit.
    assert len(acc.Scalars("val/top1")) == 2 and "test/top1" not in acc.Tags()["scalars"]
    # The table opens on the key hyper-parameters: TensorBoard ticks the columns flagged as differing.
    flagged = {info.name for info in _session(acc)[1].hparam_infos if info.differs}
    assert flagged == set(KEY_HPARAMS)


def test_a_test_after_fit_in_the_same_process_writes_its_session_into_the_run(tiny_net, tmp_path):
    trainer, model, data = fit_tiny(tmp_path, "again", epochs=1)  # fit ended: Lightning closed the event writer
    trainer.test(model, datamodule=data, ckpt_path="best", verbose=False)
    files = sorted((tmp_path / "again" / "version_0").glob("events.out.tfevents.*"))
    sessions = [read_session(events(path)) for path in files]  # TensorBoard's reader keeps a tag's first content
    assert [params.get("stage") for params, _ in sessions if params] == ["fit", "test"]
    assert sessions[-1][1] == DONE and [p for p, _ in sessions if p][-1]["ckpt_path"].endswith("best.ckpt")


def test_test_takes_the_fit_hparams_and_best_val_top1_from_the_checkpoint(tiny_run):
    root, fit_trainer, _, _ = tiny_run
    best = fit_trainer.checkpoint_callback.best_model_path
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=TensorBoardLogger(root, name="tiny", default_hp_metric=False),
        callbacks=[HparamsSession()],
    )
    trainer.test(ImageClassifier(TINY_NET, num_classes=3), datamodule=TinyData(), ckpt_path=best, verbose=False)
    acc = events(root / "tiny" / "version_1")  # the test's own run folder
    params, _ = session_hparams(acc)
    assert params["lr"] == pytest.approx(0.1) and params["max_epochs"] == 2  # from the fit, via the checkpoint
    assert params["stage"] == "test" and params["ckpt_path"] == best and params["checkpoint_epoch"] >= 1
    fit_best = max(e.value for e in events(root / "tiny" / "version_0").Scalars("val/top1"))
    assert acc.Scalars("hp/best_val_top1")[-1].value == pytest.approx(fit_best)


def test_the_reader_reads_what_the_writer_wrote(tiny_run):
    root, *_ = tiny_run
    acc = events(root / "tiny" / "version_0")
    params, status = read_session(acc)
    assert status == DONE
    assert params == session_hparams(acc)[0]
