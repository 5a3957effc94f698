"""The command table: help that lists every command without loading torch, dispatch, the error policy."""

import subprocess
import sys

import pytest

from tests.helpers import cli_command, cli_env
from zoo_lightning.cli import COMMANDS, main, usage

EVERY = ["fit", "validate", "test", "predict", "models", "stats", "export", "sweep", "selftrain", "report"]


def test_help_lists_every_command_with_a_summary(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    assert list(COMMANDS) == EVERY
    for name in EVERY:
        assert any(line.split()[:1] == [name] and len(line.split()) > 2 for line in out.splitlines()), name


@pytest.mark.parametrize("argv", [[], ["--help"], ["-h"]])
def test_help_imports_neither_torch_nor_lightning(argv):
    script = (
        "import sys; from zoo_lightning.cli import main; main(sys.argv[1:]); "
        "print(sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *argv], env=cli_env(), capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("[]") and "report" in result.stdout


def test_every_command_target_exists():
    import importlib

    for name, command in COMMANDS.items():
        module, function = command.target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name


def test_an_unknown_command_is_an_error_with_the_list(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fitt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'" in err and usage() in err


def test_a_user_error_is_one_line_and_a_bug_a_traceback(monkeypatch, capsys):
    import zoo_lightning.commands.models as models

    monkeypatch.setattr(models, "main", lambda argv: (_ for _ in ()).throw(ValueError("bad pattern: use 'res*'")))
    with pytest.raises(SystemExit) as exit_info:
        main(["models", "x"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[0] == "error: bad pattern: use 'res*'"
    monkeypatch.setattr(models, "main", lambda argv: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["models", "x"])
    monkeypatch.setenv("ZOO_DEBUG", "1")
    monkeypatch.setattr(models, "main", lambda argv: (_ for _ in ()).throw(ValueError("shown with its traceback")))
    with pytest.raises(ValueError):
        main(["models", "x"])


def test_python_dash_m_runs_the_same_table():
    result = subprocess.run(cli_command("--help"), env=cli_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == usage() + "\n"
