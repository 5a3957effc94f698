"""benchmarks/gpu_check.py without a GPU: one line and exit 0; every row's code on the CPU in a dry run."""

from __future__ import annotations

import re

import torch

from benchmarks import gpu_check


def _rows(out: str) -> list[list[str]]:
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in out.splitlines()[6:]]


def test_without_a_gpu_it_says_so_in_one_line_and_succeeds(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["gpu-check: skipped, no CUDA GPU on this machine (torch.cuda.is_available() is False)."]
    assert err == ""


def test_the_dry_run_fills_every_row_of_the_table_on_the_cpu(cifar_python, capsys):
    data_dir, _ = cifar_python
    assert gpu_check.main(["--dry-run", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# GPU check (dry run") and "# machine: " in out and "# command: " in out
    rows = _rows(out)
    assert [row[0] for row in rows] == [
        "data",
        "ddp",
        "airbench94",
        "cnn",  # ResNet-50's rows, with the small plain CNN
        "cnn",
        "pipeline",
        "pipeline",
        "compile",
        "compile",
    ], out
    assert not any("FAILED" in row[2] or "skipped" in row[2] for row in rows), out
    by_check = {row[0]: row[2] for row in rows}
    assert by_check["data"].startswith("100 training images")  # the fixture's 5 x 20
    assert re.match(r"ok: exit 0 in \d+ s, last\.ckpt at step 2, no traceback", by_check["ddp"])
    assert re.search(r"training [\d.]+ s \([\d.]+x the published\), test top-1 [\d.]+%", by_check["airbench94"])
    assert "16-mixed" in rows[3][1] and "bf16-mixed" in rows[4][1]
    assert all(re.search(r"% of its [\d.]+ ms training step", row[2]) for row in rows[5:7])
    assert rows[7][1].endswith("eager") and re.search(r"compiled in \d+ s, [\d.]+x eager", rows[8][2])


def test_a_check_that_fails_is_one_row_and_the_others_still_run(cifar_python, capsys, monkeypatch):
    def broken(plan: gpu_check.Plan) -> list[gpu_check.Row]:
        raise RuntimeError("CUDA error: out of memory\nmore detail")

    monkeypatch.setattr(gpu_check, "CHECKS", [broken, gpu_check.check_data])
    data_dir, _ = cifar_python
    assert gpu_check.main(["--dry-run", "--data-dir", str(data_dir)]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows[0] == ["broken", "-", "FAILED: RuntimeError: CUDA error: out of memory", ""]
    assert rows[1][0] == "data" and rows[1][2].startswith("100 training images")


def test_missing_data_is_one_line_naming_make_data(tmp_path, capsys):
    assert gpu_check.main(["--dry-run", "--data-dir", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"gpu-check: no CIFAR-10 at {tmp_path / 'nowhere'}: run `make data` (or give --data-dir)."


def test_checks_runs_the_named_rows_alone(cifar_python, capsys):
    data_dir, _ = cifar_python
    assert gpu_check.main(["--dry-run", "--data-dir", str(data_dir), "--checks", "data", "pipeline"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert [row[0] for row in rows] == ["data", "pipeline", "pipeline"]
    assert all(row[2].endswith(" ms a batch") for row in rows[1:])  # no training step measured to share
