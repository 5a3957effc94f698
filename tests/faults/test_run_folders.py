"""Run folders: claimed before anything is written, never shared, never left empty, never written by a
command that was refused; runs without a logger still get a folder of their own."""

from __future__ import annotations

import hashlib
import os
import subprocess

import pytest

from tests.faults.cases import Case
from tests.faults.conftest import check_case, fit, run_main
from tests.helpers import cli_command, cli_env


def _locked(w) -> str:
    """The finished run, as if another process (this test's own, alive) were resuming it right now."""
    (w.ckpt.parent.parent / ".resume.lock").write_text(str(os.getpid()))
    return str(w / "logs")


CASES = [
    Case(
        "an explicit --trainer.logger.init_args.version that exists",
        lambda w: fit(
            w, "--trainer.logger.init_args.save_dir", str(w / "logs"), "--trainer.logger.init_args.version", "version_0"
        ),
        "already exists: another run's",
    ),
    Case(
        "a second resume of a run that is being resumed",
        lambda w: fit(w, "--ckpt_path", "last", "--trainer.logger.init_args.save_dir", _locked(w)),
        "is being resumed by process",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    try:
        check_case(case, world, capsys, monkeypatch)
    finally:
        (world.ckpt.parent.parent / ".resume.lock").unlink(missing_ok=True)


def _digests(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_a_refused_run_writes_nothing_into_the_run_it_named(world, capsys, monkeypatch):
    from zoo_lightning.commands.report import load_runs

    monkeypatch.chdir(world.root)
    run = world.ckpt.parent.parent
    before = _digests(run)
    for case in CASES:
        run_main(case.argv(world), capsys)
        (run / ".resume.lock").unlink(missing_ok=True)
    assert _digests(run) == before
    (only,) = [r for r in load_runs(world / "logs", warn=lambda line: None) if r.name == "cnn_cifar/version_0"]
    assert only.status == "done"


@pytest.mark.parametrize(
    "bad",
    [
        ("--data.data_dir", "empty", "--data.download", "false"),
        ("--data.val_size", "100"),
        ("--data.data_dir", "empty"),
    ],
)
def test_a_fit_that_fails_before_training_leaves_no_folder(bad, world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    extra = [str(world / b) if b == "empty" else b for b in bad]
    code, _ = run_main(fit(world, *extra, "--trainer.logger.init_args.name", "failing"), capsys)
    assert code == 2
    assert not (world / "runs" / "failing").exists() or not any((world / "runs" / "failing").iterdir())


def test_two_fits_started_together_get_two_folders(world, tmp_path):
    logs = tmp_path / "logs"
    args = fit(world, "--trainer.logger.init_args.save_dir", str(logs))
    processes = [
        subprocess.Popen(
            cli_command(*args),
            env=cli_env(),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    runs = sorted((logs / "cnn_cifar").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    assert all(
        len(list(r.glob("events.out.tfevents.*"))) == 1 and (r / "checkpoints" / "last.ckpt").is_file() for r in runs
    )


def test_two_sweeps_over_one_grid_share_its_study_and_never_a_folder(world, tmp_path):
    """The same sweep started twice at once (two shells): one study, each combination trained once, each in a
    folder of its own."""
    import optuna

    logs = tmp_path / "logs"
    args = [
        "sweep",
        "--config",
        "cnn_cifar.yaml",
        "--grid",
        "model.optimizer.init_args.lr=0.1,0.05",
        *fit(
            world,
            "--trainer.logger.init_args.save_dir",
            str(logs),
            "--trainer.max_steps",
            "-1",
            "--trainer.max_epochs",
            "1",
            "--trainer.limit_train_batches",
            "2",
        )[3:],
    ]
    processes = [
        subprocess.Popen(
            cli_command(*args),
            env=cli_env(),
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=600)[1] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], errors
    experiment = logs / "cnn_cifar"
    names = sorted(p.name for p in experiment.iterdir() if p.is_dir())
    assert names == ["lr=0.05", "lr=0.1"]
    assert all((experiment / n / "sweep.json").is_file() and not (experiment / n / ".claim").exists() for n in names)
    study = optuna.load_study(study_name="cnn_cifar", storage=f"sqlite:///{experiment / 'studies.db'}")
    assert sorted(t.params["model.optimizer.init_args.lr"] for t in study.trials) == ["0.05", "0.1"]


def test_without_a_logger_a_fit_still_gets_its_own_folder_and_evaluation_writes_nothing(
    world, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        code, err = run_main(fit(world, "--trainer.logger", "false"), capsys)
        assert code == 0, err[-2000:]
    runs = sorted((tmp_path / "lightning_logs" / "cnn_cifar").iterdir())
    assert [r.name for r in runs] == ["version_0", "version_1"]
    assert all((r / "checkpoints" / "last.ckpt").is_file() and (r / "config.yaml").is_file() for r in runs)
    for _ in range(2):
        code, err = run_main(
            [
                "test",
                "--ckpt_path",
                str(runs[0] / "checkpoints" / "last.ckpt"),
                "--trainer.logger",
                "false",
                "--trainer.enable_progress_bar",
                "false",
                "--data.data_dir",
                str(world / "data"),
            ],
            capsys,
        )
        assert code == 0, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lightning_logs"]


def test_a_fit_refused_for_its_pretrained_weights_leaves_no_folder(world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    code, err = run_main(
        fit(world, "--model.pretrained", str(world / "gone.pth"), "--trainer.logger.init_args.name", "pretrained"),
        capsys,
    )
    assert code == 2 and "gone.pth" in err
    assert not (world / "runs" / "pretrained").exists()


def test_a_logs_folder_that_cannot_be_made_is_one_line(world, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, err = run_main(fit(world, "--trainer.logger.init_args.save_dir", str(blocker / "logs")), capsys)
    assert code == 2 and "Traceback" not in err
    assert f"Cannot make the run folder's parent {blocker / 'logs' / 'cnn_cifar'}" in err
    assert "writable --trainer.logger.init_args.save_dir" in err
