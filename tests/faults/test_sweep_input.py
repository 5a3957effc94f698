"""Sweeps refused before anything is written: a space that cannot be searched, options fit would refuse, a storage
that cannot be used, and a study that searched something else."""

from __future__ import annotations

import optuna
import pytest

from tests.faults.cases import Case
from tests.faults.conftest import check_case, fit, run_main

LR = "model.optimizer.init_args.lr"


def sweep(w, *options: str) -> list[str]:
    """A sweep of the world's tiny fits, its runs (and default storage) under ``sweeps``."""
    return ["sweep", *fit(w, "--trainer.logger.init_args.save_dir", str(w / "sweeps"))[1:], *options]


def _stored(w) -> str:
    """A storage holding study cnn_cifar, which searched lr over 0.1 and 0.05."""
    folder = w / "stored"
    folder.mkdir(exist_ok=True)
    url = f"sqlite:///{folder / 'studies.db'}"
    if "cnn_cifar" not in optuna.study.get_all_study_names(url):
        study = optuna.create_study(study_name="cnn_cifar", storage=url, direction="maximize")
        study.set_user_attr("space", {LR: "choice(0.1,0.05)"})
    return url


def _sweep_file(w, text: str) -> str:
    path = w / "bad_sweep.yaml"
    path.write_text(text)
    return str(path)


CASES = [
    Case(
        "a --space item that is not KEY=SPEC",
        lambda w: sweep(w, "--space", f"{LR}=loguniform(0.1)"),
        "loguniform takes two bounds",
    ),
    Case(
        "a --space of an unknown kind",
        lambda w: sweep(w, "--space", f"{LR}=normal(0,1)"),
        "write KEY=choice(a,b), uniform(lo,hi), loguniform(lo,hi) or int(lo,hi)",
    ),
    Case(
        "a swept key fit does not have", lambda w: sweep(w, "--grid", "model.optimizer.init_args.lrr=0.1,0.05"), "lrr"
    ),
    Case("a swept value fit refuses", lambda w: sweep(w, "--grid", f"{LR}=0.1,fast"), "fast"),
    Case(
        "--sampler grid with a range to draw from",
        lambda w: sweep(w, "--space", f"{LR}=uniform(0.01,0.1)", "--sampler", "grid"),
        "--sampler grid takes choices only",
    ),
    Case(
        "more --trials than a grid has combinations",
        lambda w: sweep(w, "--grid", f"{LR}=0.1,0.05", "--trials", "3"),
        "more than the grid's 2 combinations",
    ),
    Case("a search without --trials", lambda w: sweep(w, "--space", f"{LR}=loguniform(0.01,0.1)"), "needs --trials N"),
    Case(
        "a --pruner that does not exist",
        lambda w: sweep(w, "--grid", f"{LR}=0.1", "--pruner", "early"),
        "argument --pruner: invalid choice: 'early'",
    ),
    Case(
        "a --storage URL of no known database",
        lambda w: sweep(w, "--grid", f"{LR}=0.1", "--storage", "nosuch://x/y"),
        "is not a database URL SQLAlchemy knows",
    ),
    Case(
        "a --storage database that cannot be opened",
        lambda w: sweep(w, "--grid", f"{LR}=0.1", "--storage", f"sqlite:///{w / 'nowhere' / 'studies.db'}"),
        "cannot open the database",
    ),
    Case(
        "a --storage journal file in a folder that does not exist",
        lambda w: sweep(w, "--grid", f"{LR}=0.1", "--storage", str(w / "nowhere" / "study.log")),
        "does not exist. Give a journal file in an existing folder",
    ),
    Case(
        "a study in the storage that searched another space",
        lambda w: sweep(w, "--grid", f"{LR}=0.1,0.02", "--storage", _stored(w)),
        "give another --study NAME",
    ),
    Case(
        "a sweep file with an option sweep does not take",
        lambda w: sweep(w, "--config", _sweep_file(w, "sweep: {config: cnn_cifar.yaml, trails: 3}")),
        "unknown option(s) trails",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    check_case(case, world, capsys, monkeypatch)


def test_a_refused_sweep_writes_nothing(world, capsys, monkeypatch):
    monkeypatch.chdir(world.root)
    stored = _stored(world)
    for case in CASES:
        code, _ = run_main(case.argv(world), capsys)
        assert code == 2, case.what
        assert not (world / "sweeps").exists(), case.what  # no experiment folder, no studies.db, no run
        assert not (world / "nowhere").exists()
    study = optuna.load_study(study_name="cnn_cifar", storage=stored)
    assert study.trials == [] and study.user_attrs == {"space": {LR: "choice(0.1,0.05)"}}
