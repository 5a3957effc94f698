"""The libraries' pretrained weights: torchvision's ImageNet weights and timm's tagged weights.

What ``--model.pretrained torchvision`` (registered families with a torchvision twin, and
``torchvision:`` names) and ``--model.pretrained <tag>`` (``timm:`` names) need to know: which
weights a backbone has, the network options they were trained with, the normalization they expect
(read from the weights' metadata, nothing downloaded) and their state dict. torchvision's weights
are fetched through its own weights API into torch's hub cache (``$TORCH_HOME/hub/checkpoints``) and
read from there once they are in it, so a machine without network needs only the file put there.

Reading this project's own checkpoints as pretrained weights is :mod:`zoo_lightning.pretrained`'s.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = [
    "TORCHVISION",
    "library_of",
    "torchvision_weights",
    "torchvision_cache_file",
    "build_options",
    "library_normalization",
    "library_state_dict",
    "LibraryWeights",
]

TORCHVISION = "torchvision"

# Network options torchvision's weights were trained with, where ours differ from the builder's defaults:
# the ImageNet GoogLeNet was trained (in TensorFlow) on inputs in [-1, 1], which transform_input recreates.
_TORCHVISION_OPTIONS = {"googlenet": {"transform_input": True}, "inception_v3": {"transform_input": True}}
# State-dict entries a family's file holds that a network may lack: GoogLeNet's auxiliary classifiers, which
# torchvision's file carries untrained (its own builder drops them unless asked for them).
_OPTIONAL_PREFIXES = {"googlenet": ("aux1.", "aux2.")}
# DenseNet files from before torchvision named layers norm1/conv1 spell them norm.1/conv.1. torchvision's
# builder renames them in a private function, so loading the file into our DenseNet applies the rule here.
_LEGACY_DENSENET_KEY = re.compile(r"^(.*\.denselayer\d+\.(?:norm|conv))\.([12]\.\w+)$")


class LibraryWeights(dict):
    """A state dict from a library, with what loading it needs to know.

    Attributes:
        description: the weights in words, for messages ("torchvision's ResNet18_Weights.IMAGENET1K_V1").
        optional: prefixes of entries a network may lack (loaded where it has them, skipped where not).
    """

    def __init__(self, state: dict[str, torch.Tensor], description: str, optional: tuple[str, ...] = ()) -> None:
        super().__init__(state)
        self.description, self.optional = description, optional


def _library_name(backbone: str) -> tuple[str, str]:
    """("torchvision" | "timm" | "registry", the name within it)."""
    prefix, sep, name = backbone.partition(":")
    return (prefix, name) if sep else ("registry", backbone)


def library_of(pretrained: str | None, backbone: str) -> str | None:
    """Which library ``--model.pretrained`` names for ``backbone``: ``"torchvision"``, ``"timm"``, or None (a file).

    ``torchvision`` is torchvision's weights; for a ``timm:`` backbone any value that is no existing file is a
    timm tag (``a1_in1k``; ``timm`` for the model's default tag).
    """
    if not pretrained:
        return None
    if pretrained == TORCHVISION:
        return TORCHVISION
    if _library_name(backbone)[0] == "timm" and not Path(pretrained).exists() and "/" not in pretrained:
        return "timm"
    return None


def torchvision_weights(backbone: str) -> WeightsEnum:
    """The default ImageNet weights enum of ``backbone`` in torchvision (``ResNet50_Weights.IMAGENET1K_V2``)."""
    import torchvision.models

    library, name = _library_name(backbone)
    if library == "timm":
        raise ValueError(
            f"--model.pretrained torchvision is for registered and torchvision: backbones; {backbone!r} is "
            "timm's: give a timm tag (e.g. --model.pretrained a1_in1k, or timm for its default)."
        )
    try:
        return torchvision.models.get_model_weights(name).DEFAULT
    except ValueError:
        known = torchvision.models.list_models(module=torchvision.models)
        twins = ", ".join(sorted(n for n in known if _has_weights(n) and n in _registered()))
        raise ValueError(
            f"torchvision has no pretrained weights for {name!r}. The registered backbones it has ImageNet "
            f"weights for: {twins}; torchvision:<name> takes any of its own. Or pass a state dict or "
            "checkpoint file to --model.pretrained."
        ) from None


def _has_weights(name: str) -> bool:
    import torchvision.models

    try:
        torchvision.models.get_model_weights(name)
        return True
    except ValueError:
        return False


def _registered() -> set[str]:
    from zoo_lightning.models.registry import list_models

    return set(list_models())


def torchvision_cache_file(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps ``weights``' file: ``$TORCH_HOME/hub/checkpoints/<name in the URL>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def build_options(pretrained: str | None, backbone: str) -> dict[str, Any]:
    """Builder options the pretrained weights need (``{"transform_input": True}`` for torchvision's GoogLeNet)."""
    if library_of(pretrained, backbone) != TORCHVISION:
        return {}
    return dict(_TORCHVISION_OPTIONS.get(_library_name(backbone)[1], {}))


def _timm_name(backbone: str, tag: str) -> str:
    name = _library_name(backbone)[1]
    return name if tag == "timm" or "." in name else f"{name}.{tag}"


def library_normalization(pretrained: str | None, backbone: str) -> dict[str, Any] | None:
    """``{"mean", "std", "source"}`` the library's weights were trained with, from their metadata; None for a file.

    Raises:
        ValueError: the library has no such weights.
    """
    library = library_of(pretrained, backbone)
    if library == TORCHVISION:
        weights = torchvision_weights(backbone)
        preset = weights.transforms()
        return {"mean": list(preset.mean), "std": list(preset.std), "source": f"torchvision's {weights}"}
    if library == "timm":
        timm = _import_timm()
        name = _timm_name(backbone, str(pretrained))
        config = timm.models.get_pretrained_cfg(name)
        if config is None:
            raise ValueError(
                f"timm has no pretrained weights {name!r}: `timm.list_pretrained('{name.split('.')[0]}*')` "
                "lists the tags."
            )
        return {"mean": list(config.mean), "std": list(config.std), "source": f"timm's {name}"}
    return None


def library_state_dict(pretrained: str, backbone: str) -> LibraryWeights:
    """The library's state dict for ``backbone``, from torch's hub cache (timm: Hugging Face's), fetched there first.

    Raises:
        FileNotFoundError: the weights are not in the cache and cannot be downloaded (the message says where to put
            the file).
        ValueError: the cached file cannot be read.
    """
    library = library_of(pretrained, backbone)
    if library == "timm":
        return _timm_state_dict(backbone, pretrained)
    weights = torchvision_weights(backbone)
    cached = torchvision_cache_file(weights)
    was_cached = cached.is_file()
    try:
        state = weights.get_state_dict(progress=False, map_location="cpu", weights_only=True)
    except Exception as error:  # urllib, socket and torch.load each raise their own kinds
        if not was_cached:
            raise FileNotFoundError(
                f"Cannot download torchvision's {weights} ({type(error).__name__}: {error}). Without network, download "
                f"{weights.url} elsewhere and put it at {cached} (torch's hub cache; TORCH_HOME moves it)."
            ) from None
        raise ValueError(
            f"Cannot read the cached weights {cached} ({type(error).__name__}): the file is damaged. "
            "Delete it to download it again."
        ) from None
    name = _library_name(backbone)[1]
    if name.startswith("densenet"):
        state = {_LEGACY_DENSENET_KEY.sub(r"\1\2", key): value for key, value in state.items()}
    return LibraryWeights(state, f"torchvision's {weights}", _OPTIONAL_PREFIXES.get(name, ()))


def _import_timm() -> ModuleType:
    try:
        import timm
    except ImportError as error:
        raise ValueError(
            f"timm's pretrained weights need timm, which failed to import ({error}). Install it with "
            "`.venv/bin/pip install -e '.[timm]'`."
        ) from None
    return timm


def _timm_state_dict(backbone: str, tag: str) -> LibraryWeights:
    timm = _import_timm()
    name = _timm_name(backbone, tag)
    try:  # timm's own download into the Hugging Face cache (HF_HUB_OFFLINE=1 reads it without network)
        model = timm.create_model(name, pretrained=True)
    except RuntimeError as error:
        raise ValueError(f"timm cannot load pretrained {name!r}: {error}") from None
    except OSError as error:
        raise FileNotFoundError(
            f"Cannot download timm's {name!r} weights ({error}). Without network, fill the Hugging "
            "Face cache on another machine and set HF_HUB_OFFLINE=1."
        ) from None
    return LibraryWeights(model.state_dict(), f"timm's {name}")
