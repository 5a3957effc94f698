"""Atomic writes and source fingerprints."""

import os

import pytest

from zoo_lightning.files import atomic_write, fingerprint


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "sub" / "file.txt"
    atomic_write(target, lambda tmp: tmp.write_text("first"))
    assert target.read_text() == "first"

    def broken(tmp):
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_text() == "first" and sorted(p.name for p in target.parent.iterdir()) == ["file.txt"]


def test_fingerprint_changes_with_content_size_and_set_of_files_not_with_the_path_spelling(tmp_path, monkeypatch):
    a, b = tmp_path / "a.bin", tmp_path / "b.bin"
    a.write_bytes(b"1234")
    b.write_bytes(b"5678")
    base = fingerprint([a, b], tmp_path)
    monkeypatch.chdir(tmp_path.parent)
    assert fingerprint([a, b], tmp_path) == fingerprint(
        [tmp_path.name / a.relative_to(tmp_path), tmp_path.name / b.relative_to(tmp_path)], tmp_path.name
    )
    assert fingerprint([a], tmp_path) != base
    b.write_bytes(b"567")
    assert fingerprint([a, b], tmp_path) != base
    b.write_bytes(b"5678")
    os.utime(b, ns=(0, 0))
    assert fingerprint([a, b], tmp_path) != base
