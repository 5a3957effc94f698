"""Which run a checkpoint belongs to: resume the newest run only, evaluate trained weights only, and
refuse a resume that contradicts its checkpoint; last.ckpt is there to resume from after every epoch."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import time
import warnings

import pytest
import torch

from tests.faults.cases import Case
from tests.faults.conftest import check_case, fit, run_main
from tests.helpers import cli_command, cli_env


def _fit(data_dir, logs, *extra: str) -> list[str]:
    return cli_command(
        "fit",
        "--config",
        "cnn_cifar.yaml",
        "--data.data_dir",
        str(data_dir),
        "--data.val_size",
        "20",
        "--data.batch_size",
        "16",
        "--trainer.max_epochs",
        "4",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(logs),
        *extra,
    )


def _evaluate(w, verb: str, *extra: str) -> list[str]:
    return [
        verb,
        "--config",
        "cnn_cifar.yaml",
        "--data.data_dir",
        str(w / "data"),
        "--data.val_size",
        "20",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(w / "runs"),
        *extra,
    ]


def _died_young(w) -> str:
    """An experiment whose finished version_0 is followed by a version_1 that died before its first checkpoint."""
    experiment = w / "young" / "cnn_cifar"
    if not experiment.is_dir():
        shutil.copytree(w.ckpt.parent.parent, experiment / "version_0")
        (experiment / "version_1").mkdir()
        (experiment / "version_1" / "config.yaml").write_text("model: {backbone: cnn}\n")
    return str(w / "young")


def _truncated_last(w) -> str:
    run = w / "cut" / "cnn_cifar" / "version_0" / "checkpoints"
    if not run.is_dir():
        run.mkdir(parents=True)
        (run / "last.ckpt").write_bytes(w.ckpt.read_bytes()[:4000])
        (run.parent / "config.yaml").write_text((w.ckpt.parent.parent / "config.yaml").read_text())
    return str(w / "cut")


CASES = [
    Case("`test` without --ckpt_path", lambda w: _evaluate(w, "test"), "test needs trained weights: pass --ckpt_path"),
    Case("`validate` without --ckpt_path", lambda w: _evaluate(w, "validate"), "validate needs trained weights"),
    Case(
        "`test --ckpt_path last` before any fit",
        lambda w: _evaluate(w, "test", "--ckpt_path", "last", "--trainer.logger.init_args.name", "none"),
        "No training run under",
    ),
    Case(
        "`fit --ckpt_path last` with nothing to resume",
        lambda w: fit(w, "--ckpt_path", "last", "--trainer.logger.init_args.name", "fresh"),
        "No training run under",
    ),
    Case(
        "`fit --ckpt_path last` when the newest run stopped before its first checkpoint",
        lambda w: fit(w, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", _died_young(w)),
        "has no checkpoints/last.ckpt: it stopped before its first checkpoint",
    ),
    Case(
        "a truncated last.ckpt",
        lambda w: fit(w, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", _truncated_last(w)),
        "Cannot read checkpoint",
    ),
    Case(
        "a truncated --ckpt_path",
        lambda w: ["test", "--ckpt_path", str(w / "truncated.ckpt")],
        "Cannot read checkpoint",
    ),
    Case(
        "a --ckpt_path that is no checkpoint of this project",
        lambda w: ["test", "--ckpt_path", str(w / "foreign.ckpt")],
        "not a checkpoint written by",
    ),
    Case("a --ckpt_path that is a folder", lambda w: ["test", "--ckpt_path", str(w / "data")], "is a folder"),
    Case(
        "a resume with another backbone",
        lambda w: fit(w, "--ckpt_path", str(w.ckpt), "--model.backbone", "resnet20"),
        "was trained with model.backbone 'cnn' (here 'resnet20')",
    ),
    Case(
        "a resume with another val_size (validation images would be trained on)",
        lambda w: fit(w, "--ckpt_path", str(w.ckpt), "--data.val_size", "30"),
        "was trained with data.val_size 20 (here 30)",
    ),
    Case(
        "a resume with another split_seed",
        lambda w: fit(w, "--ckpt_path", str(w.ckpt), "--data.split_seed", "5"),
        "was trained with data.split_seed 0 (here 5)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    check_case(case, world, capsys, monkeypatch)


def _digests(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_refused_resume_leaves_the_older_run_as_it_was(world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    save_dir = _died_young(world)
    older = world / "young" / "cnn_cifar" / "version_0"
    before = _digests(older)
    code, _ = run_main(fit(world, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", save_dir), capsys)
    assert code == 2 and _digests(older) == before
    assert sorted(p.name for p in (world / "young" / "cnn_cifar").iterdir()) == ["version_0", "version_1"]


def test_last_ckpt_is_written_each_epoch_without_validation_and_best_only_after_one(world, capsys, monkeypatch):
    """Validation every 5 epochs: a 1-epoch fit still leaves last.ckpt (to resume), no best.ckpt and no warning."""
    monkeypatch.chdir(world.root)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, err = run_main(
            fit(
                world,
                "--trainer.max_steps",
                "-1",
                "--trainer.max_epochs",
                "1",
                "--trainer.check_val_every_n_epoch",
                "5",
                "--trainer.logger.init_args.name",
                "sparse",
            ),
            capsys,
        )
    assert code == 0, err[-2000:]
    assert not [w for w in caught if "could not find the monitored key" in str(w.message)]
    checkpoints = next((world / "runs" / "sparse").glob("version_*")) / "checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
    assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == 5


def test_a_fit_shorter_than_an_epoch_leaves_its_last_step(world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    code, err = run_main(fit(world, "--trainer.max_steps", "2", "--trainer.logger.init_args.name", "short"), capsys)
    assert code == 0, err[-2000:]
    last = next((world / "runs" / "short").rglob("last.ckpt"))
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_resume_after_sigkill_matches_an_uninterrupted_run(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    straight = subprocess.run(
        _fit(data_dir, tmp_path / "a"), env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert straight.returncode == 0, straight.stderr[-2000:]

    logs = tmp_path / "b"
    run = logs / "cnn_cifar" / "version_0"
    process = subprocess.Popen(
        _fit(data_dir, logs), env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert last.is_file(), "the first run ended before writing a checkpoint"
    killed_at = torch.load(last, weights_only=True)["global_step"]
    assert killed_at < 20  # killed before the end (4 epochs x 5 steps)

    resumed = subprocess.run(
        _fit(data_dir, logs, "--ckpt_path", "last"),
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert [p.name for p in (logs / "cnn_cifar").iterdir()] == ["version_0"]  # continued in place
    assert (run / "config.yaml").is_file() and (run / "config.resume-1.yaml").is_file()

    a = torch.load(tmp_path / "a" / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(last, weights_only=True)
    assert (a["global_step"], a["epoch"]) == (b["global_step"], b["epoch"]) == (20, 3), (
        straight.stderr[-3000:],
        resumed.stderr[-3000:],
    )
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=1e-5, atol=1e-6)
    lr = lambda ckpt: ckpt["lr_schedulers"][0]["_last_lr"]  # noqa: E731
    assert lr(a) == pytest.approx(lr(b))


def test_a_run_killed_before_its_first_checkpoint_keeps_its_folder_and_config(cifar_python, tmp_path):
    import yaml

    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    run = logs / "cnn_cifar" / "version_0"
    process = subprocess.Popen(
        _fit(data_dir, logs), env=cli_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while not (run / "config.yaml").is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (run / "checkpoints").exists(), "the run got to a checkpoint before it was killed"
    written = (run / "config.yaml").read_text()
    assert yaml.safe_load(written)["model"]["backbone"] == "cnn"

    resumed = subprocess.run(
        _fit(data_dir, logs, "--ckpt_path", "last"),
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 2 and "has no checkpoints/last.ckpt: it stopped before its first" in resumed.stderr
    again = subprocess.run(
        _fit(data_dir, logs, "--trainer.max_epochs", "1"),
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert sorted(p.name for p in (logs / "cnn_cifar").iterdir()) == ["version_0", "version_1"]  # a new run beside it
    assert (run / "config.yaml").read_text() == written


def _experiment_with(w, name: str, runs: list[tuple[str, str]]):
    """An experiment whose runs (oldest first) are copies of the world's trained run, each recorded as trained on
    the given DataModule class; their config.yaml times give their order."""
    import os

    import yaml

    experiment = w / name / "cnn_cifar"
    if not experiment.is_dir():
        for i, (version, data_class) in enumerate(runs):
            shutil.copytree(w.ckpt.parent.parent, experiment / version, ignore=shutil.ignore_patterns("evaluations"))
            config = experiment / version / "config.yaml"
            content = yaml.safe_load(config.read_text())
            content["data"]["class_path"] = data_class
            config.write_text(yaml.safe_dump(content))
            os.utime(config, ns=(10**18 + i, 10**18 + i))
    return str(w / name)


FOLDER = "zoo_lightning.data.FolderDataModule"
CIFAR = "zoo_lightning.data.CIFAR10DataModule"


def test_last_means_the_newest_run_trained_on_the_data_asked_for(world, capsys, monkeypatch):
    """A folder run filed under a CIFAR-10 config's experiment is not what `fit --config ... --ckpt_path last` on
    CIFAR-10 continues: the newest run that trained CIFAR-10 is, and with none, one line names the difference."""
    monkeypatch.chdir(world.root)
    only_folder = _experiment_with(world, "folder_only", [("version_0", FOLDER)])
    code, err = run_main(fit(world, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", only_folder), capsys)
    assert code == 2 and "Traceback" not in err
    assert "the newest, version_0, has data.class_path 'zoo_lightning.data.FolderDataModule'" in err
    assert "(here 'zoo_lightning.data.CIFAR10DataModule')" in err

    mixed = _experiment_with(world, "mixed", [("version_0", CIFAR), ("version_1", FOLDER)])
    code, err = run_main(
        fit(world, "--ckpt_path", "last", "--trainer.max_steps", "3", "--trainer.logger.init_args.save_dir", mixed),
        capsys,
    )
    assert code == 0, err[-2000:]
    runs = world / "mixed" / "cnn_cifar"
    assert torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 3
    assert torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]  # continued in place


def test_evaluations_are_filed_in_the_run_and_last_still_means_the_training(world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    save_dir = _experiment_with(world, "evaluated", [("version_0", CIFAR)])
    run = world / "evaluated" / "cnn_cifar" / "version_0"
    for verb in ("validate", "test", "test"):
        code, err = run_main(
            [
                verb,
                "--config",
                "cnn_cifar.yaml",
                "--ckpt_path",
                "last",
                "--data.data_dir",
                str(world / "data"),
                "--data.val_size",
                "20",
                "--trainer.enable_progress_bar",
                "false",
                "--trainer.logger.init_args.save_dir",
                save_dir,
            ],
            capsys,
        )
        assert code == 0, err[-2000:]
    assert sorted(p.name for p in (world / "evaluated" / "cnn_cifar").iterdir()) == ["version_0"]
    assert sorted(p.name for p in (run / "evaluations").iterdir()) == ["test_0", "test_1", "validate_0"]


def test_an_evaluation_refuses_a_network_option_that_contradicts_the_checkpoint(world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    before = _digests(world.ckpt.parent.parent)
    code, err = run_main(
        [
            "test",
            "--config",
            "resnet56_cifar.yaml",
            "--model.backbone",
            "resnet56",
            "--ckpt_path",
            str(world.ckpt),
            "--data.data_dir",
            str(world / "data"),
        ],
        capsys,
    )
    assert code == 2 and "Traceback" not in err
    assert f"{world.ckpt} was trained with model.backbone 'cnn' (here 'resnet56')" in err
    assert _digests(world.ckpt.parent.parent) == before  # nothing filed under the run


def test_a_resume_rewrites_last_ckpt_in_place(world, tmp_path, capsys, monkeypatch):
    """The resumed run writes the last.ckpt it continued from, never a last-v1.ckpt beside a stale one."""
    monkeypatch.chdir(world.root)
    logs = tmp_path / "logs"
    code, err = run_main(fit(world, "--trainer.logger.init_args.save_dir", str(logs)), capsys)
    assert code == 0, err[-2000:]
    checkpoints = logs / "cnn_cifar" / "version_0" / "checkpoints"
    for steps in ("3", "4"):
        code, err = run_main(
            fit(
                world,
                "--trainer.logger.init_args.save_dir",
                str(logs),
                "--ckpt_path",
                "last",
                "--trainer.max_steps",
                steps,
            ),
            capsys,
        )
        assert code == 0, err[-2000:]
        assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]
        assert torch.load(checkpoints / "last.ckpt", weights_only=True)["global_step"] == int(steps)


def test_a_resume_in_mid_epoch_ends_with_the_weights_of_an_uninterrupted_run(world, tmp_path, capsys, monkeypatch):
    """Ctrl-C at step 7 of 5-step epochs (the second epoch's second batch), then `--ckpt_path last`: the batches,
    their augmentation and so the weights at step 12 are those of a run that was never stopped."""
    monkeypatch.chdir(world.root)

    def fit_to(logs, *extra: str, code: int = 0) -> dict:
        status, err = run_main(
            fit(world, "--trainer.max_steps", "12", "--trainer.logger.init_args.save_dir", str(logs), *extra), capsys
        )
        assert status == code, err[-2000:]
        assert "not resumable" not in err and "Traceback" not in err
        return torch.load(logs / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)

    straight = fit_to(tmp_path / "straight")
    stopped = fit_to(
        tmp_path / "stopped",
        "--trainer.callbacks+=tests.helpers.SignalAtStep",
        "--trainer.callbacks.step",
        "7",
        code=130,
    )
    assert stopped["global_step"] == 7 and stopped["CIFAR10DataModule"]["train_position"] == {"epoch": 1, "batches": 2}
    resumed = fit_to(tmp_path / "stopped", "--ckpt_path", "last")
    assert resumed["global_step"] == straight["global_step"] == 12
    for key, value in straight["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=0, atol=0, msg=key)


def test_fit_from_best_starts_a_new_run_with_those_weights(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    logs = tmp_path / "logs"
    code, err = run_main(
        fit(
            world,
            "--trainer.max_steps",
            "-1",
            "--trainer.max_epochs",
            "1",
            "--trainer.logger.init_args.save_dir",
            str(logs),
        ),
        capsys,
    )
    assert code == 0, err[-2000:]
    code, err = run_main(
        fit(
            world,
            "--trainer.max_steps",
            "-1",
            "--trainer.max_epochs",
            "2",
            "--ckpt_path",
            "best",
            "--trainer.logger.init_args.save_dir",
            str(logs),
        ),
        capsys,
    )
    assert code == 0, err[-2000:]
    runs = logs / "cnn_cifar"
    assert sorted(p.name for p in runs.iterdir()) == ["version_0", "version_1"]
    first = torch.load(runs / "version_0" / "checkpoints" / "last.ckpt", weights_only=True)
    second = torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert (first["global_step"], second["global_step"]) == (5, 10)  # went on from best.ckpt's step 5
