"""Optional caches are never fatal: a read-only or full data folder costs a warning and a decode in memory."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from tests.conftest import write_cifar_python_release
from tests.faults.cases import Case
from tests.faults.conftest import run_main
from tests.helpers import cli_env


def _stats(w, data: str) -> list[str]:
    return [
        "stats",
        "--data.class_path",
        "zoo_lightning.data.CIFAR10DataModule",
        "--data.init_args.data_dir",
        str(w / data),
        "--data.init_args.val_size",
        "20",
    ]


# Words of the warning; the command goes on and exits 0.
CASES = [
    Case(
        "a data folder where the decoded-image cache cannot be written (read-only)",
        lambda w: _stats(w, "data"),
        "Could not write the decoded images cache",
        code=0,
    ),
    Case(
        "a data folder where the statistics cache cannot be written (read-only)",
        lambda w: _stats(w, "data"),
        "Could not write the normalization statistics cache",
        code=0,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_case(case, world, tmp_path, capsys, monkeypatch):
    import zoo_lightning.files as files

    write_cifar_python_release(tmp_path / "data")
    world_here = type(world)(tmp_path, world.ckpt)

    def read_only(*args, **kwargs):
        raise PermissionError(errno.EROFS, "Read-only file system")

    with monkeypatch.context() as patch, pytest.warns(UserWarning, match=case.says):
        patch.setattr(files.os, "replace", read_only)  # every cache write: the rename into place is refused
        code, err = run_main(case.argv(world_here), capsys)
    assert code == case.code and "Traceback" not in err
    assert not list((tmp_path / "data").rglob(".*.tmp"))  # no temporary file left behind
    assert run_main(case.argv(world_here), capsys)[0] == 0  # and the next run, with a writable folder, writes it
    assert list((tmp_path / "data" / ".zoo_cache").iterdir())


LIMIT = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG) as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (8 * 1024, resource.RLIM_INFINITY))
from zoo_lightning.cli import main
main(sys.argv[1:])
"""


@pytest.mark.skipif(not hasattr(os, "fork") or sys.platform == "win32", reason="needs RLIMIT_FSIZE")
def test_a_full_disk_while_writing_the_cache_is_a_warning_not_a_crash(world, tmp_path, capsys):
    write_cifar_python_release(tmp_path / "data")
    run = subprocess.run(
        [sys.executable, "-c", LIMIT, *_stats(type(world)(tmp_path, world.ckpt), "data")],
        env=cli_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Could not write the decoded images cache" in run.stderr and "Traceback" not in run.stderr
    assert "mean = (" in run.stdout
    assert not list((tmp_path / "data").rglob("*.npz")) and not list((tmp_path / "data").rglob(".*.tmp"))
