"""The checkpoints ``fit`` writes: reading and validating one, what it carries, and writing it safely.

Every command and callback that looks into a ``.ckpt`` goes through :func:`read_checkpoint` (one
read per file and change, one set of error messages); the network is rebuilt from the saved
hyper-parameters by :func:`rebuild_backbone`, and the DataModule's state is found by
:func:`datamodule_state`.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

from zoo_lightning.files import atomic_write
from zoo_lightning.models import create_model
from zoo_lightning.models.weights import build_options

__all__ = [
    "read_checkpoint",
    "rebuild_backbone",
    "backbone_state_dict",
    "load_backbone",
    "datamodule_state",
    "datamodule_args",
    "callback_state",
    "CheckpointWriteError",
    "AtomicCheckpointIO",
    "RUNTIME_OPTIONS",
]

# How to run a network, not what it is: a command's choice, never taken from a checkpoint's hyper-parameters.
RUNTIME_OPTIONS = ("channels_last", "compile", "tta", "tta_confidence")

_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_cache: dict[str, Any] = {}  # the last file read: its key (path, size, mtime) and contents


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """A checkpoint written by ``fit``, or a one-line error saying what is wrong with the file.

    The last file read is kept, so the CLI, the callbacks and the objective that each look into one
    checkpoint during a command read it from disk once (a rewritten file is read again).

    Args:
        path: the ``.ckpt`` file.
        what: how the messages name it ("checkpoint", "the teacher checkpoint", ...).
    """
    file = Path(path)
    if file.is_dir():
        raise IsADirectoryError(
            f"{what.capitalize()} {str(path)!r} is a folder; pass a .ckpt file in it, e.g. <run>/checkpoints/last.ckpt."
        )
    if not file.is_file():
        raise FileNotFoundError(f"{what.capitalize()} {str(path)!r} does not exist.")
    stat = file.stat()
    key = f"{file.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    if _cache.get("key") == key:
        return _cache["checkpoint"]
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, corrupt, or not a torch file at all: torch raises many kinds
        raise ValueError(
            f"Cannot read {what} {str(path)!r} ({type(error).__name__}): the file is truncated or not a PyTorch "
            "checkpoint. Is it a complete .ckpt written by `python -m zoo_lightning fit`? Use another one, e.g. the "
            "run's checkpoints/last.ckpt."
        ) from None
    hparams = checkpoint.get("hyper_parameters") if isinstance(checkpoint, dict) else None
    if not isinstance(hparams, dict) or "state_dict" not in checkpoint or "backbone" not in hparams:
        raise ValueError(
            f"{str(path)!r} is not a checkpoint written by `python -m zoo_lightning fit`: no checkpoint of this "
            "project (it has no state_dict, or its hyper_parameters name no backbone)."
        )
    _cache.update(key=key, checkpoint=checkpoint)
    return checkpoint


def rebuild_backbone(hparams: Mapping[str, Any]) -> nn.Module:
    """The backbone that the classifier's hyper-parameters describe (random weights).

    Pretrained weights that need a network option (torchvision's GoogLeNet: ``transform_input``) get
    it here, so a checkpoint fine-tuned from them is rebuilt with it too.
    """
    backbone = str(hparams["backbone"])
    options = {**build_options(hparams.get("pretrained"), backbone), **dict(hparams.get("backbone_kwargs") or {})}
    return create_model(
        backbone, num_classes=int(hparams.get("num_classes", 10)), stem=str(hparams.get("stem") or "cifar"), **options
    )


def backbone_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The backbone's weights in a classifier checkpoint, without the ``backbone.`` prefix."""
    return {k.removeprefix("backbone."): v for k, v in checkpoint["state_dict"].items() if k.startswith("backbone.")}


def load_backbone(path: str | Path, what: str = "checkpoint") -> tuple[nn.Module, dict[str, Any]]:
    """The trained backbone of a checkpoint (eval mode, on the CPU) and the checkpoint itself."""
    checkpoint = read_checkpoint(path, what)
    hparams = checkpoint["hyper_parameters"]
    model = rebuild_backbone(hparams)
    try:
        model.load_state_dict(backbone_state_dict(checkpoint))
    except RuntimeError as error:
        first = str(error).splitlines()[0]
        raise ValueError(
            f"The weights in {str(path)!r} do not fit its backbone {hparams['backbone']!r}: {first}"
        ) from None
    return model.eval(), checkpoint


def datamodule_state(checkpoint: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the DataModule saved (mean, std, class_names, image_size, class_path), or None.

    Lightning stores a DataModule's ``state_dict`` under its class name; ours records its class
    path, whose last part is that key.
    """
    for key, value in checkpoint.items():
        if isinstance(value, dict) and str(value.get("class_path", "")).rsplit(".", 1)[-1] == key:
            return value
    return None


def datamodule_args(checkpoint: Mapping[str, Any], leave_out: Collection[str] = ()) -> dict[str, Any] | None:
    """``{"class_path": ..., "init_args": ...}`` of the DataModule a checkpoint was trained with, or None.

    ``leave_out``: options not to rebuild it with (evaluation reads none of what only made the training set,
    :data:`zoo_lightning.data.splits.TRAINING_SET_OPTIONS`).
    """
    hparams = dict(checkpoint.get("datamodule_hyper_parameters") or {})
    state = datamodule_state(checkpoint) or {}
    class_path = hparams.get("_class_path") or state.get("class_path")
    if class_path is None:
        return None
    init_args = {k: v for k, v in hparams.items() if not k.startswith("_")}  # drop the CLI's bookkeeping keys
    for key in leave_out:
        init_args.pop(key, None)
    if state.get("class_names"):  # the network's outputs are the checkpoint's, dataset there or not
        init_args["class_names"] = list(state["class_names"])
    return {"class_path": class_path, "init_args": init_args}


def callback_state(checkpoint: Mapping[str, Any], callback: type) -> dict[str, Any] | None:
    """The state a callback of this class saved in the checkpoint (Lightning keys it by class name)."""
    states = checkpoint.get("callbacks") or {}
    return next((s for k, s in states.items() if str(k).split("{", 1)[0] == callback.__qualname__), None)


class CheckpointWriteError(OSError):
    """A checkpoint could not be written; the file it would have replaced is untouched."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint beside its target and renames it into place.

    Lightning's ``TorchCheckpointIO`` stages a checkpoint in the system temp folder and moves it; when
    that is another filesystem than the run's, the move is a copy into the target path, and a disk
    that fills up during it leaves a truncated ``last.ckpt`` where the good one was.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
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
            reason = (
                "the disk is full (or a quota or file-size limit was hit)"
                if error.errno in _NO_SPACE
                else os.strerror(error.errno)
                if error.errno
                else str(error)
            )
            raise CheckpointWriteError(
                f"Could not write checkpoint {target}: {reason}; {kept}. Free some space under {target.parent} "
                "and continue with `fit ... --ckpt_path last`.",
            ) from error
