"""The types of the options users set: numbers with bounds and the choices of a word.

Constructors that the CLI reaches (the classifier, DataModules, pipelines, objectives, callbacks,
schedulers) annotate their arguments with these, and jsonargparse checks a value when it parses it:
the error names the option, and ``--help`` shows the type or lists the choices. A bounded number
parses to a plain ``int`` or ``float``, so the values that end up in a checkpoint's hyper-parameters
are ones ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

from jsonargparse.typing import register_type

__all__ = [
    "PositiveInt",
    "NonNegativeInt",
    "PositiveFloat",
    "NonNegativeFloat",
    "UnitInterval",
    "Fraction",
    "OpenUnitInterval",
    "ImageSide",
    "EpochSides",
    "AreaRange",
    "AspectRange",
    "Stem",
    "TTAMode",
    "PaddingMode",
    "MixMode",
    "PseudoLabelMode",
    "PretrainedWeights",
    "pretrained_kind",
    "WEIGHT_FILE_SUFFIXES",
    "PrunerName",
]


class OptionValueError(argparse.ArgumentTypeError, ValueError):
    """A value an option's type refuses: a ValueError, whose message argparse shows too."""


def _bounded(name: str, base: type[int] | type[float], meaning: str, accepts: Callable[[float], bool]) -> type:
    """A type named ``name`` for the parser whose values are plain ``base`` numbers for which ``accepts`` holds."""

    # Any: whatever the parser read (a YAML null, list or mapping too); int() and float() refusing it is the check.
    def parse(value: Any) -> int | float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number {meaning}")
        try:
            number = base(value)
        except (TypeError, ValueError):
            raise ValueError(f"{value!r} is not {'a whole number' if base is int else 'a number'} {meaning}") from None
        if base is int and isinstance(value, float) and value != number:
            raise ValueError(f"{value!r} is not a whole number")
        if not (math.isfinite(number) and accepts(number)):
            raise ValueError(f"{value!r} is not {meaning}")
        return number

    def is_value(value: object, _: type) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and accepts(value)

    def called(cls: type, value: object) -> int | float:
        try:
            return parse(value)
        except ValueError as error:
            raise OptionValueError(str(error)) from None

    # Called, the type parses too (``PositiveInt("3")`` is the plain 3), so argparse takes it as ``type=``.
    kind = type(
        name, (base,), {"__doc__": f"{'An integer' if base is int else 'A number'} {meaning}.", "__new__": called}
    )
    register_type(kind, serializer=base, deserializer=parse, type_check=is_value)
    return kind


def _epoch_sides(value: object) -> dict[int, int]:
    if not isinstance(value, dict):
        raise ValueError(f"{value!r} is not a mapping of first epochs to image sides, e.g. {{0: 24, 30: 32}}")
    return {NonNegativeInt(first): ImageSide(side) for first, side in value.items()}


def _is_epoch_sides(value: object, _: type) -> bool:
    return isinstance(value, dict) and all(
        type(k) is int and k >= 0 and type(v) is int and v >= 8 for k, v in value.items()
    )


def _ordered_pair(value: object, meaning: str, accepts: Callable[[float], bool]) -> tuple[float, float]:
    pair = list(value) if isinstance(value, (list, tuple)) else None
    if pair is None or len(pair) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{value!r} is not two numbers [smallest, largest] {meaning}")
    low, high = float(pair[0]), float(pair[1])
    if not (accepts(low) and accepts(high) and low <= high):
        raise ValueError(f"{value!r} is not two numbers [smallest, largest] {meaning}")
    return low, high


def _area_range(value: object) -> tuple[float, float]:
    return _ordered_pair(value, "in (0, 1]", lambda v: 0 < v <= 1)


def _aspect_range(value: object) -> tuple[float, float]:
    return _ordered_pair(value, "> 0", lambda v: 0 < v < math.inf)


def _checks(parse: Callable[[object], tuple[float, float]]) -> Callable[[object, type], bool]:
    def check(value: object, _: type) -> bool:
        try:
            return isinstance(value, tuple) and parse(value) == value
        except ValueError:
            return False

    return check


Stem = Literal["cifar", "imagenet"]  # no early downsampling (32x32, 96x96 inputs), or the paper's stem
TTAMode = Literal["flip", "flip_translate", "flip_shift"]
PaddingMode = Literal["zeros", "reflect"]
MixMode = Literal["mixup", "cutmix", "mixup_cutmix"]
PseudoLabelMode = Literal["soft", "hard"]
PrunerName = Literal["median", "hyperband", "none"]  # how a sweep stops trials that fall behind


WEIGHT_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".pth.tar", ".bin")  # a checkpoint of this project, or a state dict


def pretrained_kind(value: str) -> tuple[Literal["torchvision", "timm", "file"], str]:
    """What a ``--model.pretrained`` value names: ``("torchvision", "")``, ``("timm", tag)`` (``""``: the model's
    default tag) or ``("file", path)``; a ValueError for anything else.

    The kind is in the spelling, never guessed from what exists: a mistyped file name stays a file (and is reported
    missing when the weights load), and a checkpoint evaluated on another machine parses as it did where it was made.
    """
    text = str(value)
    if text == "torchvision":
        return "torchvision", ""
    if text == "timm" or (text.startswith("timm:") and len(text) > len("timm:")):
        return "timm", text.partition(":")[2]
    if text.lower().endswith(WEIGHT_FILE_SUFFIXES):
        return "file", text
    raise ValueError(
        f"{value!r} names no pretrained weights: give torchvision, timm (its default tag), timm:TAG, or a "
        f"file ({', '.join(WEIGHT_FILE_SUFFIXES)})"
    )


def _is_pretrained(value: object, _: type) -> bool:
    try:
        return isinstance(value, str) and bool(pretrained_kind(value))
    except ValueError:
        return False


def _parse_pretrained(value: object) -> str:
    pretrained_kind(str(value))
    return str(value)  # a plain str, as the checkpoint's hyper-parameters keep it


if TYPE_CHECKING:
    # To a type checker an option is the plain value it parses to; the classes below are the parser's, which
    # checks the bounds and shows them in --help.
    PositiveInt: TypeAlias = int
    NonNegativeInt: TypeAlias = int
    PositiveFloat: TypeAlias = float
    NonNegativeFloat: TypeAlias = float
    UnitInterval: TypeAlias = float
    Fraction: TypeAlias = float
    OpenUnitInterval: TypeAlias = float
    ImageSide: TypeAlias = int
    EpochSides: TypeAlias = dict[int, int]
    AreaRange: TypeAlias = tuple[float, float]
    AspectRange: TypeAlias = tuple[float, float]
    PretrainedWeights: TypeAlias = str
else:
    PositiveInt = _bounded("PositiveInt", int, ">= 1", lambda v: v >= 1)
    NonNegativeInt = _bounded("NonNegativeInt", int, ">= 0", lambda v: v >= 0)
    PositiveFloat = _bounded("PositiveFloat", float, "> 0", lambda v: v > 0)
    NonNegativeFloat = _bounded("NonNegativeFloat", float, ">= 0", lambda v: v >= 0)
    UnitInterval = _bounded("UnitInterval", float, "in [0, 1]", lambda v: 0 <= v <= 1)
    Fraction = _bounded("Fraction", float, "in [0, 1)", lambda v: 0 <= v < 1)  # a share that leaves something over
    OpenUnitInterval = _bounded("OpenUnitInterval", float, "in (0, 1)", lambda v: 0 < v < 1)  # a point strictly inside
    ImageSide = _bounded("ImageSide", int, ">= 8 (pixels)", lambda v: v >= 8)

    class EpochSides(dict):
        """``{first_epoch: side}``: epochs >= 0 mapped to image sides >= 8 pixels, e.g. ``{0: 24, 30: 32}``.

        A type of its own, as jsonargparse checks a dict's values against their type but not its keys; keys
        that a YAML or JSON round trip made strings are ints again.
        """

    register_type(EpochSides, serializer=dict, deserializer=_epoch_sides, type_check=_is_epoch_sides)

    class AreaRange(tuple):
        """``[smallest, largest]``: shares of an image's area, ``0 < smallest <= largest <= 1``, e.g. ``[0.08, 1.0]``.

        A type of its own (as :class:`AspectRange`): the parser checks both bounds and their order, which a
        ``tuple[float, float]`` of bounded numbers cannot say. Parses to a plain tuple of two floats.
        """

    class AspectRange(tuple):
        """``[smallest, largest]``: width / height ratios, ``0 < smallest <= largest``, e.g. ``[0.75, 1.3333]``."""

    register_type(AreaRange, serializer=list, deserializer=_area_range, type_check=_checks(_area_range))
    register_type(AspectRange, serializer=list, deserializer=_aspect_range, type_check=_checks(_aspect_range))

    PretrainedWeights = type(
        "PretrainedWeights", (str,), {"__doc__": "torchvision, timm, timm:TAG, or a weights file."}
    )
    register_type(PretrainedWeights, serializer=str, deserializer=_parse_pretrained, type_check=_is_pretrained)
