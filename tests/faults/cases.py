"""The case tables of the fault tests, and the troubleshooting page written from them.

Each ``test_*`` module of this package holds the cases of one kind of bad input or fault as a
``CASES`` list: what the user did, the command line, and the words of the message they get. The
table test runs every case through the CLI as typed; ``python -m tests.faults.cases`` writes
``docs/troubleshooting.md`` from the same lists, and a test checks the page is up to date.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "troubleshooting.md"

# Module of each kind, in the order the page lists them, and the page's heading for it.
KINDS = {
    "test_run_ownership": "Which run a checkpoint belongs to",
    "test_run_folders": "Run folders",
    "test_signals": "Stopping a run",
    "test_data_checks": "Data that cannot be trained on",
    "test_caches": "Caches",
    "test_trainer_and_config_errors": "Trainer, model and config settings",
    "test_file_safety": "Files you already have",
    "test_predict_per_file": "Prediction on your own images",
    "test_sweep_input": "Sweeps",
}


@dataclass(frozen=True)
class Case:
    """One bad input: what was wrong, the command line (built from the test's world), the message."""

    what: str
    argv: Callable[..., list[str]]
    says: str  # words of the one-line message, as the user reads them after "error: "
    code: int = 2


def all_cases() -> dict[str, list[Case]]:
    return {name: importlib.import_module(f"tests.faults.{name}").CASES for name in KINDS}


def page() -> str:
    """docs/troubleshooting.md: every case of every kind, with the message it gets."""
    lines = [
        "# Troubleshooting",
        "",
        "What goes wrong most often, and what the command says. A mistake ends with one line starting",
        "`error:` that says what to change, and exit status 2, never a Python traceback (`ZOO_DEBUG=1`",
        "shows one); a stopped run says so and exits 130 (Ctrl-C) or 143 (SIGTERM); a cache that cannot",
        "be written is a warning. None of them changes your runs, checkpoints or files. The right column",
        "gives words of the message. This page is written from the test suite's case list",
        "(`tests/faults/`, `make docs`), so every line here is checked on every test run.",
        "",
    ]
    for name, cases in all_cases().items():
        lines += [f"## {KINDS[name]}", "", "| what was wrong | exit | what the message says |", "|---|--:|---|"]
        lines += [f"| {case.what} | {case.code} | {case.says.replace('|', '&#124;')} |" for case in cases]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    PAGE.write_text(page())
    print(f"wrote {PAGE}", file=sys.stderr)
