"""The model registry: builders keyed by name, timm-style.

A family file decorates its builders with :func:`register_model`; the CLI, the ``models`` listing
and the registry-driven tests find them through :func:`list_models` and :func:`create_model`.
Names with a ``torchvision:`` or ``timm:`` prefix build those libraries' models (random init,
nothing downloaded). :func:`head_parameter_names` says which parameters of any of them are the
classifier head, by one rule.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

__all__ = [
    "ModelEntry",
    "UnknownModelError",
    "register_model",
    "create_model",
    "list_models",
    "model_entry",
    "model_options",
    "head_parameter_names",
]

STEMS = ("cifar", "imagenet")

Builder = TypeVar("Builder", bound=Callable[..., nn.Module])


@dataclass(frozen=True)
class ModelEntry:
    name: str
    family: str
    paper: str
    builder: Callable[..., nn.Module]


class UnknownModelError(KeyError):
    """A model name that neither the registry nor an external prefix knows."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0])


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(builder: Builder) -> Builder:
    """Registers ``builder`` under its function name; the family is the name of its module."""
    name = builder.__name__
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered by {_REGISTRY[name].builder.__module__}")
    doc = inspect.getdoc(builder) or ""
    _REGISTRY[name] = ModelEntry(
        name=name,
        family=builder.__module__.rsplit(".", 1)[-1],
        paper=doc.splitlines()[0] if doc else "",
        builder=builder,
    )
    return builder


def list_models(pattern: str = "*") -> list[str]:
    """Registered names matching the fnmatch ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def _unknown(name: str, known: list[str], where: str = "the registry") -> UnknownModelError:
    close = difflib.get_close_matches(name, known, n=6, cutoff=0.5)

    def distance(candidate: str) -> tuple[float, int]:
        # Equal ratios (resnet2O: resnet20 and resnet32) go to the name with fewer characters out of place.
        mismatches = sum(a != b for a, b in zip(candidate, name)) + abs(len(candidate) - len(name))
        return -difflib.SequenceMatcher(None, name, candidate).ratio(), mismatches

    close = sorted(close, key=distance)[:3]
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return UnknownModelError(
        f"Unknown model {name!r} in {where}.{hint} Known: {', '.join(known)}. "
        "`python -m zoo_lightning models` lists them; prefix `torchvision:` or `timm:` for those libraries."
    )


def model_entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise _unknown(name, list_models()) from None


def _torchvision_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    import torchvision.models

    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise _unknown(name, known, "torchvision.models")
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)


def _timm_model(name: str, num_classes: int, **kwargs: Any) -> nn.Module:
    try:
        import timm
    except ImportError as error:  # not installed, or installed but broken: say which
        raise ValueError(
            f"`timm:` models need timm, which failed to import ({type(error).__name__}: {error}). "
            "Install it with `.venv/bin/pip install -e '.[timm]'`."
        ) from None
    if not timm.is_model(name):  # is_model also accepts pretrained tags such as resnet18.a1_in1k
        raise _unknown(name, timm.list_models(), "timm")
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)


_EXTERNAL = {"torchvision": _torchvision_model, "timm": _timm_model}


def create_model(name: str, num_classes: int = 10, stem: str = "cifar", **kwargs: Any) -> nn.Module:
    """Builds the model registered as ``name``; the caller's kwargs reach the builder.

    Args:
        name: a registered name (``resnet18``), or ``torchvision:<name>`` / ``timm:<name>``.
        num_classes: size of the classifier output.
        stem: ``"cifar"`` keeps 32x32 inputs at a useful resolution; ``"imagenet"`` is the paper's
            stem. External models always use their library's own (ImageNet) stem.
        **kwargs: family options (``aux_logits``, ``dropout``, ``se``, ...).
    """
    if stem not in STEMS:
        raise ValueError(f"Unknown stem {stem!r}: choose one of {', '.join(STEMS)}.")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    prefix, sep, external_name = name.partition(":")
    if sep:
        if prefix not in _EXTERNAL:
            raise UnknownModelError(f"Unknown model prefix {prefix!r} in {name!r}: use one of {', '.join(_EXTERNAL)}.")
        return _EXTERNAL[prefix](external_name, num_classes, **kwargs)
    entry = model_entry(name)
    try:
        return entry.builder(num_classes=num_classes, stem=stem, **kwargs)
    except TypeError as error:
        wrong = re.search(r"(unexpected|multiple values for) keyword argument '(\w+)'", str(error))
        if wrong is None:
            raise
        options = ", ".join(model_options(name)) or "none"
        what = "takes no option" if wrong.group(1) == "unexpected" else "sets itself, and takes no"
        raise ValueError(
            f"Backbone {name!r} {what} {wrong.group(2)!r} (backbone_kwargs); its options: {options}."
        ) from None


def model_options(name: str) -> list[str]:
    """The keyword options a registered builder accepts (``num_classes`` and ``stem`` aside)."""
    builder = model_entry(name).builder
    names: list[str] = []
    targets: list[Callable[..., object]] = [builder]
    try:  # builders are typed `-> ResNet`: what **kwargs reaches is that class's constructor
        returned = typing.get_type_hints(builder).get("return")
    except Exception:
        returned = None
    if isinstance(returned, type):
        targets.append(returned)  # its signature is its constructor's, without self
    for target in targets:
        for param in inspect.signature(target).parameters.values():
            if param.kind in (param.KEYWORD_ONLY, param.POSITIONAL_OR_KEYWORD) and param.name not in (
                "self",
                "num_classes",
                "stem",
                *names,
            ):
                names.append(param.name)
    return names


def head_parameter_names(name: str, num_classes: int = 10, stem: str = "cifar", **kwargs: Any) -> list[str]:
    """The classifier head of a backbone: the names of the parameters whose shapes follow ``num_classes``.

    One rule for every registered family, torchvision's and timm's models and any backbone registered
    later: the model is built twice on the meta device (no memory, no initialization), with
    ``num_classes`` and ``num_classes + 1`` outputs, and the parameters whose shapes differ are the
    head. That is the last Linear layer (``fc``, ``classifier``, ``classifier.6``, ...), and also the
    output layers of GoogLeNet's auxiliary classifiers, which predict the classes too.

    Args:
        name, num_classes, stem, **kwargs: as for :func:`create_model`.
    """
    with torch.device("meta"):
        shapes = [
            {n: p.shape for n, p in create_model(name, classes, stem, **kwargs).named_parameters()}
            for classes in (num_classes, num_classes + 1)
        ]
    return [n for n, shape in shapes[0].items() if shapes[1].get(n) != shape]
