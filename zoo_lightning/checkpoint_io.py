"""Checkpoint writes that cannot leave a half-written file where ``last.ckpt`` should be.

Lightning's ``TorchCheckpointIO`` stages a local checkpoint in the system temp directory
(``tempfile.mkstemp`` through fsspec's transaction) and then ``shutil.move``s it into place. When the
temp directory is on another filesystem than the run (``/tmp`` on tmpfs, logs on a data disk), that
move is a copy into the target path: a disk that fills up during the copy leaves a truncated
``last.ckpt`` behind, having already overwritten the good one. Here the file is written next to its
target and renamed over it, which POSIX makes atomic within one filesystem.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.plugins.io import TorchCheckpointIO

from zoo_lightning.data.base import atomic_write

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the file it would have replaced is untouched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a hidden temporary file in its own folder, then renames it into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}.")
        target = Path(path)
        if not isinstance(get_filesystem(str(target)), LocalFileSystem):
            return super().save_checkpoint(checkpoint, path)  # remote stores have their own atomic uploads
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        try:
            atomic_write(target, lambda partial: partial.write_bytes(buffer.getbuffer()))
        except OSError as error:
            kept = f"the previous {target.name} is untouched" if target.exists() else f"no {target.name} was written"
            reason = "the disk is full (or a quota or file-size limit was hit)" if error.errno in _NO_SPACE else str(error)
            raise CheckpointWriteError(
                f"Could not write checkpoint {target}: {reason}; {kept}. Free some space under {target.parent} "
                "and continue with `fit ... --ckpt_path last`.",
            ) from error
