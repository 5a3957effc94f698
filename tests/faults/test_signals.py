"""Ctrl-C and SIGTERM: the run stops with status 130 / 143, its last.ckpt holds the step it reached and
resumes from there, `report` shows it interrupted, and a sweep stops or goes on as it should."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.faults.cases import Case
from tests.helpers import cli_command, cli_env


def _long_fit(w, logs: Path, *extra: str) -> list[str]:
    return [
        "fit",
        "--config",
        "cnn_cifar.yaml",
        "--data.data_dir",
        str(w / "data"),
        "--data.val_size",
        "20",
        "--data.batch_size",
        "8",
        "--trainer.max_epochs",
        "200",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(logs),
        *extra,
    ]


# The command lines here are stopped by the signal of each case once their first epoch has ended.
CASES = [
    Case("a fit stopped with Ctrl-C (SIGINT)", lambda w, logs: _long_fit(w, logs), "Stopped by SIGINT", code=130),
    Case(
        "a fit stopped with SIGTERM (a scheduler's time limit)",
        lambda w, logs: _long_fit(w, logs),
        "Stopped by SIGTERM",
        code=143,
    ),
]
SIGNALS = {130: signal.SIGINT, 143: signal.SIGTERM}


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not path.is_file() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    assert path.is_file(), "the run ended before its first checkpoint"


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, tmp_path):
    from zoo_lightning.commands.report import load_runs

    logs = tmp_path / "logs"
    process = subprocess.Popen(
        cli_command(*case.argv(world, logs)),
        env=cli_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    last = logs / "cnn_cifar" / "version_0" / "checkpoints" / "last.ckpt"
    _wait_for(last, process)
    process.send_signal(SIGNALS[case.code])
    _, err = process.communicate(timeout=300)
    assert process.returncode == case.code, err[-2000:]
    assert case.says in err and "Traceback" not in err, err[-2000:]
    stopped_at = torch.load(last, weights_only=True)["global_step"]
    assert 10 <= stopped_at < 200 * 10  # at least the first epoch, far from the end
    (run,) = load_runs(logs, warn=lambda line: None)
    assert run.status == "interrupted"

    resume = _long_fit(world, logs, "--trainer.max_steps", str(stopped_at + 1), "--ckpt_path", "last")
    resumed = subprocess.run(
        cli_command(*resume), env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Restored all states from the checkpoint at {last}" in resumed.stdout + resumed.stderr
    assert torch.load(last, weights_only=True)["global_step"] == stopped_at + 1  # went on from where it stopped


def _first_checkpoint(experiment: Path, process: subprocess.Popen, skip: set[str]) -> str:
    """The name of the next run of a sweep (not in ``skip``) to write its last.ckpt."""
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        written = [p.parent.parent.name for p in experiment.glob("*/checkpoints/last.ckpt")]
        if set(written) - skip:
            return (set(written) - skip).pop()
        time.sleep(0.05)
    raise AssertionError("the sweep ended before its run's first checkpoint")


def test_a_sweep_records_a_killed_run_and_goes_on_but_stops_on_ctrl_c(world, tmp_path):
    import optuna

    logs = tmp_path / "logs"
    args = [
        "sweep",
        "--config",
        "cnn_cifar.yaml",
        "--grid",
        "model.optimizer.init_args.lr=0.1,0.05,0.02",
        *_long_fit(world, logs)[3:],
    ]
    sweep = subprocess.Popen(
        cli_command(*args), env=cli_env(), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    experiment = logs / "cnn_cifar"
    first = _first_checkpoint(experiment, sweep, set())
    fit = subprocess.run(["pgrep", "-f", f"version {first} "], capture_output=True, text=True).stdout.split()
    subprocess.run(["kill", "-TERM", *fit])  # the run alone, as an out-of-memory killer or a user would
    second = _first_checkpoint(experiment, sweep, {first})
    sweep.send_signal(signal.SIGINT)  # Ctrl-C in the sweep's terminal
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 130, err[-2000:]
    assert f"trial 0 failed: cnn_cifar/{first}: its fit exited with code 143; going on" in err
    # The stopped fit names its own run to continue, not the experiment's newest.
    assert (
        "continue that run with `python -m zoo_lightning fit ... --ckpt_path "
        f"{experiment}/{second}/checkpoints/last.ckpt`" in err
    )
    assert f"stopped by SIGINT during trial 1 (cnn_cifar/{second}): it is queued to run again" in err
    assert sorted(p.name for p in experiment.iterdir() if p.is_dir()) == sorted([first, second])
    # The killed fit's trial failed; the stopped one's is queued again, for the same command to continue.
    study = optuna.load_study(study_name="cnn_cifar", storage=f"sqlite:///{experiment / 'studies.db'}")
    states = [t.state.name for t in study.trials]
    assert states == ["FAIL", "FAIL", "WAITING"] and study.trials[2].params == study.trials[1].params
    assert f"| 0 | fail | {first.removeprefix('lr=')} |" in out
    assert f"| 2 | waiting | {second.removeprefix('lr=')} |" in out
