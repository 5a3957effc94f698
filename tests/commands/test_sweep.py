"""sweep on Optuna: the space and run names, the study's slots, workers' environments, and whole studies of tiny fits
(grids with seeds, two workers, pruning, a killed worker, a second command that continues the study)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState

from tests.helpers import cli_command, cli_env, run_cli
from zoo_lightning.commands.search_space import combinations, parse_space, run_name, trial_run_name
from zoo_lightning.commands.sweep import parse
from zoo_lightning.commands.sweep_worker import worker_env
from zoo_lightning.studies import SURPLUS, counted_trials

LR = "model.optimizer.init_args.lr"


def sweep_args(data_dir: Path, logs: Path, *extra: str, batches: int = 2) -> list[str]:
    """A sweep of tiny fits on the 100-image CIFAR-10 release of the ``cifar_python`` fixture: one epoch of
    ``batches`` steps (of 5) and a validation, unless ``extra`` says otherwise."""
    return [
        "sweep",
        "--config",
        "cnn_cifar.yaml",
        "--data.data_dir",
        str(data_dir),
        "--data.val_size",
        "20",
        "--data.batch_size",
        "16",
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        str(batches),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.logger.init_args.save_dir",
        str(logs),
        *extra,
    ]


def load_study(logs: Path, name: str = "cnn_cifar") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{logs / 'cnn_cifar' / 'studies.db'}")


def run_folders(experiment: Path) -> list[str]:
    return sorted(p.name for p in experiment.iterdir() if p.is_dir())


def record(folder: Path) -> dict:
    return json.loads((folder / "sweep.json").read_text())


# --- the space -------------------------------------------------------------------------------------------------


def test_grid_and_space_items_parse_into_dimensions():
    space = parse_space(
        [f"{LR}=0.1,0.05", "--data.init_args.batch_size=128,256"],
        [
            "model.optimizer.init_args.weight_decay=loguniform(1e-5, 1e-3)",
            "a.depth=int(2,8)",
            "a.width=uniform(0.5,1.5)",
            "a.stem=choice(cifar,imagenet)",
        ],
    )
    assert [(d.key, d.kind, d.values) for d in space.values()] == [
        (LR, "choice", ("0.1", "0.05")),
        ("data.init_args.batch_size", "choice", ("128", "256")),
        ("model.optimizer.init_args.weight_decay", "loguniform", (1e-5, 1e-3)),
        ("a.depth", "int", (2, 8)),
        ("a.width", "uniform", (0.5, 1.5)),
        ("a.stem", "choice", ("cifar", "imagenet")),
    ]
    assert space["model.optimizer.init_args.weight_decay"].spec == "loguniform(1e-05,0.001)"


def test_a_two_by_two_grid_gives_four_runs_named_as_before():
    combos = combinations(parse_space(["a.lr=0.1,0.05", "b.batch_size=128,256"], None))
    assert len(combos) == 4 and len({run_name(c) for c in combos}) == 4
    assert "lr=0.1,batch_size=128" in {run_name(c) for c in combos}
    assert run_name({"model.lr": "1", "other.lr": "2"}) == "model.lr=1,other.lr=2"
    assert trial_run_name(3, {"x.lr": 0.0123456, "x.depth": 4}) == "trial_3,lr=0.01235,depth=4"


@pytest.mark.parametrize(
    "grid, space, says",
    [
        (["lr"], None, "write KEY=V1,V2"),
        (["=1,2"], None, "write KEY=V1,V2"),
        (["lr="], None, "write KEY=V1,V2"),
        (["a=1", "a=2"], None, "searched twice"),
        (None, None, "needs what to search"),
        (None, ["lr=normal(0,1)"], "choice(a,b), uniform(lo,hi)"),
        (None, ["lr=loguniform(0,1)"], "above 0"),
        (None, ["lr=uniform(1,0.5)"], "low bound must be below"),
        (None, ["lr=int(1.5,4)"], "not a whole number"),
        (None, ["lr=uniform(0.1)"], "two bounds"),
        (None, ["lr=choice(a,a)"], "distinct values"),
        (None, ["lr=uniform(a,b)"], "not a number"),
        (["a=1"], ["a=choice(2)"], "searched twice"),
    ],
)
def test_bad_items_are_refused(grid, space, says):
    with pytest.raises(ValueError, match=None) as refused:
        parse_space(grid, space)
    assert says in str(refused.value)


def test_the_help_shows_its_example_commands_with_their_line_continuations(capsys):
    # a plain docstring would join each "\\" line with the next, leaving commands nobody can paste
    with pytest.raises(SystemExit) as done:
        parse(["--help"])
    assert done.value.code == 0
    help_text = capsys.readouterr().out
    assert "--config resnet20_cifar.yaml \\\n        --grid model.optimizer.init_args.lr=0.1,0.05" in help_text


def test_a_sweep_file_gives_defaults_the_command_line_overrides():
    args, fit_options = parse(
        ["--config", "sweeps/efficientnet_scaling_cifar.yaml", "--trials", "5", "--trainer.max_epochs", "2"]
    )
    assert args.config.name == "efficientnet_scaling_cifar.yaml" and args.config.parent.name == "configs"
    assert args.trials == 5 and args.sampler == "tpe" and args.pruner == "median"
    space = parse_space(args.grid, args.space)
    assert {d.key for d in space.values()} == {
        "model.backbone_kwargs.width_mult",
        "model.backbone_kwargs.depth_mult",
        "data.init_args.image_size",
    }
    assert fit_options[-2:] == ["--trainer.max_epochs", "2"]  # after the file's own fit options: it wins


def test_the_shipped_search_parses_with_fits_parser():
    """Every value the shipped EfficientNet search can draw is accepted by fit's parser (the width and depth
    multipliers are the backbone's options: a dict key here)."""
    from zoo_lightning.commands.fit_runner import FitRunner
    from zoo_lightning.commands.sweep import _check_fits, _checked_settings
    from zoo_lightning.signals import StopSignals

    args, fit_options = parse(["--config", "sweeps/efficientnet_scaling_cifar.yaml"])
    space = parse_space(args.grid, args.space)
    _checked_settings(args, space)
    runner = FitRunner(args.config, fit_options, StopSignals())
    args.study = runner.experiment.name
    _check_fits(runner, space, args, "sqlite:///unused.db")
    config = runner.cli.config
    assert config.model.backbone == "efficientnet_b0" and runner.experiment.name == "efficientnet_scaling_cifar"


# --- the study's slots and the workers ------------------------------------------------------------------------------


def test_a_failed_trial_queued_again_and_a_surplus_trial_take_no_slot():
    study = optuna.create_study()
    for _ in range(2):
        study.add_trial(optuna.create_trial(value=0.5))
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # 2: its worker died ...
    study.add_trial(
        optuna.create_trial(state=TrialState.WAITING, system_attrs={"failed_trial": 2, "retry_history": [2]})
    )  # 3
    study.add_trial(optuna.create_trial(state=TrialState.FAIL, user_attrs={"surplus": True}))  # 4
    study.add_trial(optuna.create_trial(state=TrialState.FAIL))  # 5: a fit that failed: it took its slot
    trials = study.get_trials()
    assert counted_trials(trials) == 4  # 0, 1, 3, 5
    assert counted_trials(trials, up_to=3) == 3


def test_workers_get_a_gpu_each_or_a_share_of_the_threads(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "8")
    assert [worker_env(i, 3, [])["OMP_NUM_THREADS"] for i in range(3)] == ["2", "2", "2"]
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert worker_env(1, 2, [])["OMP_NUM_THREADS"] == "1"
    assert [worker_env(i, 3, ["4", "6"])["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["4", "6", "4"]


def test_a_journal_file_keeps_a_study_that_the_same_space_continues_and_another_is_refused(tmp_path):
    from zoo_lightning.studies import open_study

    journal = str(tmp_path / "studies.log")
    record = {"space": {LR: "loguniform(0.01,0.2)"}, "metric": "val/top1", "seeds": None}
    open_study(journal, "s", "maximize", record, None, None, heartbeat=60).add_trial(optuna.create_trial(value=0.5))
    again = open_study(journal, "s", "maximize", record, None, None, heartbeat=60)
    assert [t.value for t in again.trials] == [0.5] and again.user_attrs == record
    with pytest.raises(
        ValueError,
        match=r"has space .*loguniform\(0.01,0.2\), this command .*uniform\(0.01,0.2\): "
        "give another --study NAME",
    ):
        open_study(journal, "s", "maximize", {**record, "space": {LR: "uniform(0.01,0.2)"}}, None, None, 60)
    with pytest.raises(ValueError, match="maximizes its metric, this command would minimize it"):
        open_study(journal, "s", "minimize", record, None, None, 60)
    with pytest.raises(ValueError, match="has seeds none, this command 0"):
        open_study(journal, "s", "maximize", {**record, "seeds": [0]}, None, None, 60)


def test_the_callback_reports_each_validation_and_refuses_a_metric_the_fit_does_not_log(tiny_net, tmp_path):
    from functools import partial

    import lightning as L

    from tests.helpers import TinyData
    from zoo_lightning.callbacks import TrialPruning
    from zoo_lightning.classifier import ImageClassifier

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.ask()

    def fit(monitor: str) -> TrialPruning:
        callback = TrialPruning(url, "s", 0, monitor=monitor, pruner="none")
        model = ImageClassifier(tiny_net, num_classes=3, optimizer=partial(torch.optim.SGD, lr=0.1))
        L.Trainer(
            max_epochs=2,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=tmp_path,
            callbacks=[callback],
        ).fit(model, datamodule=TinyData())
        return callback

    with pytest.raises(ValueError, match="sweep --metric val/acc: this fit logs no such metric .*val/top1"):
        fit("val/acc")
    callback = fit("val/top1")
    (trial,) = optuna.load_study(study_name="s", storage=url).trials
    assert list(trial.intermediate_values) == [0, 1]  # two validations; the sanity check is not one
    record = trial.user_attrs[f"fit {callback.run}"]
    assert record == {"best": max(trial.intermediate_values.values()), "validations": 2, "pruned_at": None}


# --- whole studies ----------------------------------------------------------------------------------------------


def test_a_grid_with_seeds_runs_each_point_per_seed_and_a_second_command_has_nothing_left(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    args = sweep_args(data_dir, logs, "--grid", f"{LR}=0.1,0.05", "--seeds", "0", "1")
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    experiment = logs / "cnn_cifar"
    assert run_folders(experiment) == ["lr=0.05,seed=0", "lr=0.05,seed=1", "lr=0.1,seed=0", "lr=0.1,seed=1"]
    study = load_study(logs)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    for trial in study.trials:
        lr = trial.params[LR]
        runs = [experiment / f"lr={lr},seed={seed}" for seed in (0, 1)]
        assert trial.user_attrs["runs"] == [f"cnn_cifar/{r.name}" for r in runs]
        for seed, run in zip((0, 1), runs):
            assert record(run) | {"best": None} == {
                "study": "cnn_cifar",
                "trial": trial.number,
                "values": {LR: lr},
                "seed": seed,
                "storage": None,
                "grid": [LR],
                "outcome": "complete",
                "best": None,
            }
            config = (run / "config.yaml").read_text()
            assert f"seed_everything: {seed}\n" in config and f"shuffle_seed: {seed}\n" in config
        bests = [record(run)["best"] for run in runs]
        assert trial.value == pytest.approx(sum(bests) / 2)  # the trial's value: the mean over its seeds
    assert f"| 0 | complete | {study.trials[0].params[LR]} |" in result.stdout

    again = run_cli(args, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "has its 2 trials; nothing to run" in again.stdout
    assert len(run_folders(experiment)) == 4 and len(load_study(logs).trials) == 2


def test_two_workers_share_one_study_and_a_second_command_continues_it(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    space = ["--space", f"{LR}=loguniform(0.01,0.2)", "--sampler", "random"]
    result = run_cli(sweep_args(data_dir, logs, *space, "--trials", "3", "--workers", "2"), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[sweep worker 0] trial" in result.stdout and "[sweep worker 1] trial" in result.stdout
    study = load_study(logs)
    # Two workers that finish together may both ask for the last slot; the later-numbered trial is marked
    # surplus and ends before it trains (Optuna has no atomic "ask while fewer than N").
    trials = [t for t in study.trials if not t.user_attrs.get(SURPLUS)]
    surplus = [t for t in study.trials if t.user_attrs.get(SURPLUS)]
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == TrialState.COMPLETE for t in trials)
    assert all(t.number > 2 and t.state == TrialState.FAIL and "runs" not in t.user_attrs for t in surplus)
    folders = [run for t in trials for run in t.user_attrs["runs"]]
    assert len(set(folders)) == 3 and len({t.params[LR] for t in trials}) == 3
    assert sorted(f"cnn_cifar/{n}" for n in run_folders(logs / "cnn_cifar")) == sorted(folders)
    for trial in trials:
        (run,) = trial.user_attrs["runs"]
        assert run.startswith(f"cnn_cifar/trial_{trial.number},lr=")
        assert record(logs / run)["values"] == {LR: repr(trial.params[LR])}  # the drawn value, in full

    more = run_cli(sweep_args(data_dir, logs, *space, "--trials", "4"), tmp_path)
    assert more.returncode == 0, more.stderr[-3000:]
    study = load_study(logs)
    added = len(trials) + len(surplus)
    assert [t.state for t in study.trials if not t.user_attrs.get(SURPLUS)] == [TrialState.COMPLETE] * 4
    assert study.trials[-1].number == added and study.trials[-1].state == TrialState.COMPLETE
    assert f"[sweep] trial {added}: cnn_cifar/trial_{added},lr=" in more.stdout


def test_a_pruned_trial_stops_after_its_first_validation_and_keeps_last_ckpt(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    (logs / "cnn_cifar").mkdir(parents=True)
    study = optuna.create_study(
        study_name="cnn_cifar", storage=f"sqlite:///{logs / 'cnn_cifar' / 'studies.db'}", direction="maximize"
    )
    for _ in range(5):  # the median pruner waits for 5 finished trials: these did far better at every validation
        study.add_trial(optuna.create_trial(value=1.0, intermediate_values={0: 1.0, 1: 1.0, 2: 1.0}))
    args = sweep_args(
        data_dir,
        logs,
        "--space",
        f"{LR}=uniform(0.01,0.1)",
        "--sampler",
        "random",
        "--trials",
        "6",
        "--pruner",
        "median",
        "--trainer.max_epochs",
        "3",
        batches=5,
    )
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    trial = load_study(logs).trials[5]
    assert trial.state == TrialState.PRUNED and list(trial.intermediate_values) == [0]
    (run,) = trial.user_attrs["runs"]
    last = torch.load(logs / run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 5 and last["epoch"] == 0  # one epoch of the three: stopped at once
    assert record(logs / run)["outcome"] == "pruned"
    assert trial.user_attrs[f"fit {Path(run).name}"]["pruned_at"] == 0
    assert "trial 5 pruned" in result.stdout


def _fit_of(folder: Path) -> list[int]:
    """The process ids of the fit training in ``folder`` (found by its command line)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"fit" in cmdline and folder.name.encode() in cmdline and str(folder.parent.parent).encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_a_killed_workers_trial_is_run_again_and_its_folder_keeps_last_ckpt(cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    args = sweep_args(
        data_dir, logs, "--grid", f"{LR}=0.1,0.05", "--heartbeat", "1", "--trainer.max_epochs", "2", batches=5
    )
    output = tmp_path / "worker.log"  # the worker's and its fit's output, shown if the fit ends unexpectedly
    with output.open("w") as log:
        worker = subprocess.Popen(cli_command(*args), env=cli_env(), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    experiment = logs / "cnn_cifar"
    deadline = time.time() + 300
    while not any(experiment.glob("lr=*/config.yaml")) and time.time() < deadline:
        time.sleep(0.1)
    (killed,) = [p.parent for p in experiment.glob("lr=*/config.yaml")]  # its fit has started
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    last = killed / "checkpoints" / "last.ckpt"
    # The fit sees its worker gone at its next step, writes last.ckpt and exits. Both are waited for: one scan of
    # /proc that misses the fit (it is read file by file) must not end the wait before the fit has got that far.
    while (_fit_of(killed) or not last.is_file()) and time.time() < deadline:
        time.sleep(0.2)
    assert not _fit_of(killed)
    assert last.is_file(), output.read_text()[-3000:]
    time.sleep(2.5)  # two heartbeats: the trial is stale

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = load_study(logs)
    first, retry, other = study.trials
    assert first.state == TrialState.FAIL and first.user_attrs["runs"] == [f"cnn_cifar/{killed.name}"]
    assert retry.state == other.state == TrialState.COMPLETE
    assert retry.params == first.params and retry.system_attrs["failed_trial"] == 0
    assert retry.user_attrs["runs"] == [f"cnn_cifar/{killed.name}_v2"]
    assert {first.params[LR], other.params[LR]} == {"0.1", "0.05"}
    assert (killed / "checkpoints" / "last.ckpt").is_file()
    assert (
        torch.load(experiment / f"{killed.name}_v2" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
        == 10
    )


@pytest.fixture
def postgresql(tmp_path):
    """A PostgreSQL server of its own, in a temporary folder, on a free local port: its SQLAlchemy URL."""
    import shutil
    import socket
    import tempfile

    pytest.importorskip("psycopg", reason="the postgresql extra: pip install -c constraints.txt -e '.[postgresql]'")
    if not (shutil.which("initdb") and shutil.which("pg_ctl")):
        pytest.skip("PostgreSQL's initdb and pg_ctl are not on PATH (Debian: apt-get install postgresql)")
    # The server refuses to run as root, and its user must reach its folder (pytest's tmp_path is root's alone).
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="zoo-postgres-"))
    if as_server:
        shutil.chown(folder, "postgres")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run([*as_server, "initdb", "-D", str(data), "-A", "trust", "-U", "zoo"], check=True, capture_output=True)
    subprocess.run(
        [
            *as_server,
            "pg_ctl",
            "-D",
            str(data),
            "-l",
            str(folder / "server.log"),
            "-w",
            "-o",
            f"-p {port} -k {folder} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://zoo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_server, "pg_ctl", "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.real
def test_two_workers_run_one_study_on_a_postgresql_server(postgresql, cifar_python, tmp_path):
    data_dir, _ = cifar_python
    logs = tmp_path / "logs"
    args = sweep_args(
        data_dir,
        logs,
        "--storage",
        postgresql,
        "--study",
        "on_postgres",
        "--trials",
        "4",
        "--workers",
        "2",
        "--space",
        f"{LR}=loguniform(0.01,0.2)",
        "--sampler",
        "random",
    )
    started = time.perf_counter()
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    print(f"4 trials, 2 workers on PostgreSQL: {time.perf_counter() - started:.0f} s")
    study = optuna.load_study(study_name="on_postgres", storage=postgresql)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    assert len({t.params[LR] for t in study.trials}) == 4
    runs = [run for t in study.trials for run in t.user_attrs["runs"]]
    assert sorted(runs) == sorted(f"cnn_cifar/{n}" for n in run_folders(logs / "cnn_cifar")) and len(set(runs)) == 4
    assert "[sweep worker 0] trial" in result.stdout and "[sweep worker 1] trial" in result.stdout
    assert not (logs / "cnn_cifar" / "studies.db").exists()  # the study is the server's alone
    assert record(logs / runs[0])["storage"] == postgresql  # no password to hide
