"""The speedrun recipes beyond airbench94 through the CLI: the Muon recipes (airbench94_muon_cifar.yaml,
airbench95_muon_cifar.yaml) and airbench95_cifar.yaml train a few steps on tiny data, test at the end, and the Muon
recipe resumes as if never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import fit_args
from zoo_lightning.cli import main
from zoo_lightning.parsing import resolve_config

TINY_WIDTHS = "{widths: [8, 16, 16]}"  # airbench's layout at a width that trains in seconds


def _fit(config: str, data_dir: Path, logs: Path, *extra: str) -> list[str]:
    """A few steps of ``config`` at tiny widths, on all 100 training images of the fixture (the config's val_size 0)."""
    tiny = ("--model.backbone_kwargs", TINY_WIDTHS, "--data.val_size", "0", "--data.eval_batch_size", "20")
    return fit_args(data_dir, logs, *tiny, *extra, epochs=2, config=config)


def _last(logs: Path, experiment: str) -> dict:
    (run,) = (logs / experiment).iterdir()
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("backbone", ["airbench94", "airbench95"])
def test_the_muon_recipe_trains_filters_with_muon_and_the_rest_with_sgd(cifar_python, tmp_path, backbone):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    experiment = f"{backbone}_muon_cifar"
    main(_fit(f"{experiment}.yaml", data_dir, logs, "--trainer.max_steps", "4"))
    (run,) = (logs / experiment).iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["optimizer"]["class_path"] == "zoo_lightning.optimizers.MuonSGD"
    assert config["model"]["backbone"] == backbone
    assert yaml.safe_load(resolve_config(f"{experiment}.yaml").read_text())["trainer"]["max_epochs"] == 7
    assert config["data"]["init_args"]["val_size"] == 0
    checkpoint = _last(logs, experiment)
    assert checkpoint["global_step"] == 4
    groups = checkpoint["optimizer_states"][0]["param_groups"]
    # SGD: the head at 0.828125 (decayed), the BatchNorm biases at 64x (no decay), the whitening bias; Muon: the 6
    # trained filter banks (the whitening conv's are frozen). The LR falls linearly to 0 over the run's 4 steps.
    shapes = [(g["muon"], len(g["params"]), g["weight_decay"]) for g in groups]
    assert shapes == [(False, 1, 2.415e-3), (True, 6, 0.0), (False, 6, 0.0), (False, 1, 0.0)]
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.828125, 0.17, 53, 0.828125])
    assert [g["lr"] for g in groups] == pytest.approx([0, 0, 0, 0])
    assert all(g["ns_steps"] == 3 and g["normalize_filters"] and g["ns_dtype"] == "auto" for g in groups)
    assert "test/top1" in EventAccumulator(str(run)).Reload().Tags()["scalars"]


def test_the_muon_recipe_resumed_mid_epoch_ends_as_an_uninterrupted_run(cifar_python, tmp_path, monkeypatch):
    """The optimizer's state (both parts' momentum) is in last.ckpt: Ctrl-C at step 4, `--ckpt_path last`, step 8."""
    data_dir, _ = cifar_python
    monkeypatch.chdir(tmp_path)
    steps = ("--trainer.max_steps", "8", "--test_after_fit", "false")
    main(_fit("airbench94_muon_cifar.yaml", data_dir, tmp_path / "straight", *steps))
    stopped = tmp_path / "stopped"
    with pytest.raises(SystemExit) as interrupted:
        main(
            _fit(
                "airbench94_muon_cifar.yaml",
                data_dir,
                stopped,
                *steps,
                "--trainer.callbacks+=tests.helpers.SignalAtStep",
                "--trainer.callbacks.step",
                "4",
            )
        )
    assert interrupted.value.code == 130 and _last(stopped, "airbench94_muon_cifar")["global_step"] == 4
    main(_fit("airbench94_muon_cifar.yaml", data_dir, stopped, *steps, "--ckpt_path", "last"))
    straight, resumed = _last(tmp_path / "straight", "airbench94_muon_cifar"), _last(stopped, "airbench94_muon_cifar")
    assert resumed["global_step"] == straight["global_step"] == 8
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_the_airbench95_recipe_trains_the_wide_network_with_lookahead(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    main(_fit("airbench95_cifar.yaml", data_dir, logs, "--trainer.max_steps", "3"))
    (run,) = (logs / "airbench95_cifar").iterdir()
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["backbone"] == "airbench95"
    callbacks = [c["class_path"] for c in config["trainer"]["callbacks"]]
    assert "zoo_lightning.callbacks.LookaheadAveraging" in callbacks
    checkpoint = _last(logs, "airbench95_cifar")
    assert checkpoint["global_step"] == 3
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["initial_lr"] == pytest.approx(1.30435)
