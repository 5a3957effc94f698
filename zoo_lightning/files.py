"""Writing and recognizing files: the one place that writes atomically and fingerprints sources."""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["atomic_write", "write_cache", "read_array_cache", "write_array_cache", "fingerprint"]


def atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    """Calls ``write(tmp)`` on a hidden file beside ``path``, then renames it over ``path``.

    The rename is atomic within one filesystem, so a crash or a full disk never leaves half a file
    where a good one was; the temporary file is removed whatever happens. It keeps the target's
    suffix (``.best.1234.tmp.pt2``), for writers that check the name of what they write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):  # a cleanup that fails must not hide why the write failed
            tmp.unlink(missing_ok=True)


def write_cache(path: Path, write: Callable[[Path], object], what: str) -> bool:
    """:func:`atomic_write` for a file that only saves time: a read-only folder or a full disk is one
    warning, not an error. Returns whether the file was written."""
    try:
        atomic_write(path, write)
        return True
    except OSError as error:
        warnings.warn(
            f"Could not write the {what} cache {path} ({error.strerror or error}); going on without it, "
            "so the work is redone on the next run. Make the folder writable, or free space, to keep it.",
            stacklevel=2,
        )
        return False


def read_array_cache(path: Path, key: str) -> dict | None:
    """The arrays :func:`write_array_cache` saved under ``key``; None when the file is absent,
    truncated, foreign or was saved under another key (the caller rebuilds it)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return {name: stored[name] for name in stored.files if name != "key"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        pass
    return None


def write_array_cache(path: Path, key: str, arrays: dict, what: str) -> bool:
    """``arrays`` saved as one ``.npz`` under ``key`` through :func:`write_cache`."""
    import numpy as np

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, key=key, **arrays)

    return write_cache(path, write, what)


def fingerprint(paths: Sequence[Path], root: Path | None = None) -> str:
    """Changes whenever a file is added, removed, resized or rewritten.

    Paths enter relative to ``root``, so ``data``, ``./data`` and ``/abs/data`` give one fingerprint.
    """
    digest = hashlib.sha1()
    for path in sorted(paths):
        stat = os.stat(path)
        name = os.path.relpath(path, root) if root is not None else str(path)
        digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()
