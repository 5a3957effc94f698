"""Loading a distillation teacher: a checkpoint of this project, or a registry name with a state dict."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo_lightning.checkpoints import load_backbone
from zoo_lightning.models import create_model, list_models

__all__ = ["load_teacher"]


def _is_registry_name(name: str) -> bool:
    if Path(name).exists():
        return False
    prefix, sep, _ = name.partition(":")
    return name in list_models() or (bool(sep) and prefix in ("torchvision", "timm"))


def _missing_teacher(teacher: str) -> FileNotFoundError:
    hint = ""
    if Path(teacher).suffix not in (".ckpt", ".pt", ".pth") and "/" not in teacher:
        close = ", ".join(difflib.get_close_matches(teacher, list_models(), n=3))
        hint = " nor a registered model name" + (f" (closest: {close})" if close else "")
    return FileNotFoundError(
        f"Teacher {teacher!r} is no existing checkpoint file{hint}. Train the teacher first "
        "(python -m zoo_lightning fit --config ...) and pass its run's checkpoints/best.ckpt, "
        "or give a registered model name with teacher_weights."
    )


def _from_registry(name: str, weights: str | None, kwargs: dict[str, Any]) -> tuple[nn.Module, int]:
    if weights is None:
        raise ValueError(
            f"Teacher {name!r} is a model name: give its trained weights with teacher_weights (a file of "
            "torch.save(model.state_dict())); a randomly initialized teacher has nothing to teach."
        )
    num_classes = int(kwargs.pop("num_classes", 10))
    model = create_model(name, num_classes=num_classes, **kwargs)
    if not Path(weights).is_file():
        raise FileNotFoundError(f"Teacher weights {weights!r} do not exist.")
    try:
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except Exception as error:
        raise ValueError(
            f"Cannot load teacher weights {weights!r} into {name!r} with num_classes={num_classes} "
            f"({type(error).__name__}: {error}); check teacher_kwargs (num_classes, stem, ...)."
        ) from None
    return model, num_classes


def load_teacher(teacher: str, weights: str | None = None, **kwargs: Any) -> tuple[nn.Module, int]:
    """A frozen, eval-mode backbone and its class count, from a checkpoint of this project or a registry name.

    Args:
        teacher: path to a ``.ckpt`` written by ``fit`` (its backbone is rebuilt from the saved
            hyper-parameters), or a registered model name (``torchvision:``/``timm:`` names too).
        weights: with a registry name, a state-dict file (``torch.save(model.state_dict(), f)``).
        **kwargs: with a registry name, ``create_model`` arguments (num_classes, stem, ...).
    """
    if _is_registry_name(teacher):
        model, num_classes = _from_registry(teacher, weights, kwargs)
    else:
        if weights is not None or kwargs:
            raise ValueError(
                "teacher_weights and teacher_kwargs apply to a teacher given by model name; a checkpoint teacher "
                "is rebuilt from its own saved hyper-parameters and weights: leave them out."
            )
        if not Path(teacher).is_file():
            raise _missing_teacher(teacher)
        model, checkpoint = load_backbone(teacher, what="the teacher checkpoint")
        num_classes = int(checkpoint["hyper_parameters"]["num_classes"])
    model.eval().requires_grad_(False)
    return model, num_classes
