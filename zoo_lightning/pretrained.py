"""Pretrained weights for a backbone, from a library or a file, loaded strictly except for the head.

``--model.pretrained`` says its kind in its spelling (:func:`~zoo_lightning.options.pretrained_kind`):
``torchvision`` (torchvision's ImageNet weights), ``timm`` or ``timm:TAG`` (timm's weights of a
``timm:`` backbone), or a file: a checkpoint of this project (``.ckpt``, read through
:func:`~zoo_lightning.checkpoints.read_checkpoint`) or a state dict (``.pt``/``.pth``, as
``torch.save(model.state_dict(), f)`` writes). Every entry must match the network's by name and
shape, except those of the classifier head (:func:`head_modules`), which keep their fresh
initialization for the run's classes. :func:`expected_normalization` says which mean/std the
weights were trained with, so the data can normalize the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo_lightning.checkpoints import backbone_state_dict, datamodule_state, read_checkpoint
from zoo_lightning.models.weights import LibraryWeights, library_normalization, library_state_dict
from zoo_lightning.options import pretrained_kind

__all__ = [
    "pretrained_state_dict",
    "load_pretrained",
    "expected_normalization",
    "head_modules",
    "library_value",
    "current_spelling",
]

_SHOWN = 4  # keys a mismatch message lists of each kind


def _is_state_dict(content: object) -> bool:
    return (
        isinstance(content, Mapping)
        and bool(content)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in content.items())
    )


def head_modules(head: Sequence[str]) -> list[str]:
    """The modules that hold the head parameters ``head`` (``fc.weight`` -> ``fc``), sorted."""
    return sorted({name.rpartition(".")[0] for name in head})


def library_value(source: str) -> str | None:
    """What :mod:`~zoo_lightning.models.weights` takes for library weights (``torchvision``, a timm tag, or ``timm``
    for the default tag), or None for a file."""
    kind, detail = pretrained_kind(source)
    return None if kind == "file" else detail or kind


def current_spelling(pretrained: str | None, backbone: str) -> str | None:
    """``pretrained`` as it is spelled now: checkpoints from before the kinds were spelled out recorded a timm tag
    bare (``a1_in1k`` for ``timm:a1_in1k``), which loads as what it meant then."""
    if not pretrained:
        return pretrained
    try:
        pretrained_kind(pretrained)
        return pretrained
    except ValueError:
        if backbone.startswith("timm:") and "/" not in pretrained and not Path(pretrained).exists():
            return f"timm:{pretrained}"
        return pretrained  # anything else stays as given, to be refused as the command line would refuse it


def pretrained_state_dict(source: str, backbone: str) -> LibraryWeights:
    """The state dict ``--model.pretrained source`` names, with a description for messages.

    Raises:
        FileNotFoundError: a file that does not exist, or library weights that cannot be fetched.
        ValueError: a file that holds no state dict, or a library without such weights.
    """
    library = library_value(source)
    if library is not None:
        return library_state_dict(library, backbone)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(
            f"--model.pretrained {source!r} is no file: give the path of a .ckpt, .pt or .pth "
            "file (or torchvision, timm:TAG for library weights)."
        )
    if path.suffix == ".ckpt":
        checkpoint = read_checkpoint(path, "the pretrained checkpoint")
        trained = checkpoint["hyper_parameters"]["backbone"]
        return LibraryWeights(backbone_state_dict(checkpoint), f"the {trained} weights of {source}")
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated, pickled objects, not torch at all: torch raises many kinds
        raise ValueError(
            f"Cannot read --model.pretrained {source!r} ({type(error).__name__}): it is no file of tensors "
            "that torch.load(weights_only=True) reads. Save one with torch.save(model.state_dict(), f)."
        ) from None
    if isinstance(content, Mapping) and _is_state_dict(content.get("state_dict")):
        content = content["state_dict"]  # other training code's checkpoints keep the weights there
    if not _is_state_dict(content):
        raise ValueError(
            f"--model.pretrained {source!r} holds no state dict (a mapping of parameter names to tensors, "
            "as torch.save(model.state_dict(), f) writes)."
        )
    # DistributedDataParallel's wrapper prefixes every name with `module.`.
    state = {k.removeprefix("module."): v for k, v in content.items()}
    return LibraryWeights(state, f"the weights in {source}")


def _listed(keys: Sequence[str]) -> str:
    more = f" (+{len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
    return ", ".join(keys[:_SHOWN]) + more


def load_pretrained(model: nn.Module, source: str, backbone: str, head: Sequence[str]) -> str:
    """Loads the weights ``source`` names into ``model``, all but its head; returns what was done, in words.

    Args:
        model: the freshly built backbone (ImageNet stem for ImageNet weights).
        source: the ``--model.pretrained`` value.
        backbone: the model's name (``resnet50``, ``torchvision:convnext_tiny``, ...).
        head: the model's head parameters (:func:`~zoo_lightning.models.registry.head_parameter_names`):
            the source's entries of those modules are left out, whatever their shape.

    Raises:
        ValueError: an entry is missing, left over or of another shape: one line listing them.
    """
    weights = pretrained_state_dict(source, backbone)
    own = model.state_dict()
    new = head_modules(head)

    def in_head(key: str) -> bool:
        return key.rpartition(".")[0] in new

    def optional(key: str) -> bool:
        return bool(weights.optional) and key.startswith(weights.optional)

    given = {k: v for k, v in weights.items() if not in_head(k) and (k in own or not optional(k))}
    # A layer may name parameters that keep their own initialization when the weights lack them: a deformable
    # conv's offsets (zero: it starts as the plain conv), so a plain network's weights load into its DCN version.
    own_init = {
        f"{module_name}.{name}".lstrip(".")
        for module_name, module in model.named_modules()
        for name in getattr(module, "initialized_when_missing", ())
    }
    # BatchNorm fills in a missing step counter itself (files older than the counter lack it).
    missing = [
        k
        for k in own
        if k not in given
        and not in_head(k)
        and not optional(k)
        and k not in own_init
        and not k.endswith("num_batches_tracked")
    ]
    unexpected = [k for k in given if k not in own]
    wrong = [
        f"{k} {tuple(v.shape)} vs the network's {tuple(own[k].shape)}"
        for k, v in given.items()
        if k in own and v.shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        problems = [
            f"{what}: {_listed(keys)}"
            for what, keys in (("missing", missing), ("not in the network", unexpected), ("other shape", wrong))
            if keys
        ]
        raise ValueError(
            f"{weights.description} do not fit {backbone}: {'; '.join(problems)}. Give the backbone, "
            "--model.stem (imagenet for ImageNet weights) and --model.backbone_kwargs they were trained with."
        )
    model.load_state_dict(given, strict=False)
    return (
        f"Loaded {weights.description} into {backbone} ({len(given)} tensors); its head "
        f"({', '.join(new)}) starts new for this run's classes."
    )


def expected_normalization(source: str | None, backbone: str) -> dict[str, Any] | None:
    """``{"mean", "std", "source"}`` the weights ``source`` names were trained with, or None when unknown.

    Library weights say so in their metadata, a checkpoint of this project in its DataModule state; a
    plain state dict does not say. Nothing is downloaded, and a file that is not there (an evaluation
    on another machine) or a name without weights gives None: loading the weights is what reports those.
    """
    if not source:
        return None
    try:
        library = library_value(source)
        if library is not None:
            return library_normalization(library, backbone)
        if Path(source).suffix == ".ckpt" and Path(source).is_file():
            state = datamodule_state(read_checkpoint(source, "the pretrained checkpoint")) or {}
            if state.get("mean") and state.get("std"):
                return {"mean": list(state["mean"]), "std": list(state["std"]), "source": f"the checkpoint {source}"}
    except (ValueError, ImportError, OSError):
        return None
    return None
