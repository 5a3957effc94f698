"""Never over a user's file: export refuses an existing file unless --overwrite and writes atomically;
report and --ckpt_path say what is there when a file stands where a folder belongs, or the reverse."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from tests.faults.cases import Case
from tests.faults.conftest import check_case, run_main


def _existing(w) -> str:
    path = w / "mine.ts"
    if not path.exists():
        path.write_bytes(b"the user's own file")
    return str(path)


CASES = [
    Case(
        "`export --out` naming a file that exists",
        lambda w: ["export", "--ckpt_path", str(w.ckpt), "--out", _existing(w)],
        "exists already: pass --overwrite",
    ),
    Case(
        "`export --out` naming a folder",
        lambda w: ["export", "--ckpt_path", str(w.ckpt), "--out", str(w / "data")],
        "is a folder: give a file name",
    ),
    Case(
        "`export` of a file that is no checkpoint of this project",
        lambda w: ["export", "--ckpt_path", str(w / "foreign.ckpt")],
        "not a checkpoint written by",
    ),
    Case(
        "`report --out` naming a file",
        lambda w: ["report", str(w / "logs"), "--out", _existing(w)],
        "is a file; report writes report.md and its PNGs into a folder",
    ),
    Case("`report` on a file", lambda w: ["report", str(w.ckpt)], "is a file; report reads a folder of runs"),
    Case("`report` on a folder that does not exist", lambda w: ["report", str(w / "nowhere")], "does not exist"),
    Case("`--ckpt_path` naming a folder", lambda w: ["export", "--ckpt_path", str(w.ckpt.parent)], "is a folder"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, capsys, monkeypatch):
    check_case(case, world, capsys, monkeypatch)


def test_export_keeps_an_existing_file_creates_folders_and_replaces_only_when_asked(world, tmp_path, capsys):
    first = tmp_path / "new" / "folder" / "model.ts"
    assert run_main(["export", "--ckpt_path", str(world.ckpt), "--out", str(first)], capsys)[0] == 0
    digest = hashlib.sha256(first.read_bytes()).hexdigest()
    code, err = run_main(["export", "--ckpt_path", str(world.ckpt), "--out", str(first)], capsys)
    assert code == 2 and hashlib.sha256(first.read_bytes()).hexdigest() == digest
    first.write_bytes(b"changed")
    assert run_main(["export", "--ckpt_path", str(world.ckpt), "--out", str(first), "--overwrite"], capsys)[0] == 0
    import torch

    torch.jit.load(str(first))  # a whole model again where the changed bytes were
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.ts"]  # no temporary file left


def test_an_exported_model_runs_in_inference_mode(world, tmp_path, capsys):
    out = tmp_path / "model.ts"
    assert run_main(["export", "--ckpt_path", str(world.ckpt), "--out", str(out)], capsys)[0] == 0
    script = (
        "import torch, sys; m = torch.jit.load(sys.argv[1]); "
        "y = m(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)); "
        "print(y.requires_grad, y.detach().numpy().shape if y.requires_grad else y.numpy().shape)"
    )
    result = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False (2, 10)"
