"""The types of the options users set: numbers with bounds and the choices of a word.

Constructors that the CLI reaches (the classifier, DataModules, pipelines, objectives, callbacks,
schedulers) annotate their arguments with these, and jsonargparse checks a value when it parses it:
the error names the option, and ``--help`` shows the type or lists the choices. A bounded number
parses to a plain ``int`` or ``float``, so the values that end up in a checkpoint's hyper-parameters
are ones ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import math
from typing import Literal

from jsonargparse.typing import register_type

__all__ = ["PositiveInt", "NonNegativeInt", "PositiveFloat", "NonNegativeFloat", "UnitInterval", "Fraction",
           "OpenUnitInterval", "ImageSide", "Stem", "TTAMode", "PaddingMode", "MixMode", "PseudoLabelMode",
           "PrunerName"]


def _bounded(name: str, base: type, meaning: str, accepts) -> type:
    """A type named ``name`` for the parser whose values are plain ``base`` numbers for which ``accepts`` holds."""
    kind = type(name, (base,), {"__doc__": f"{'An integer' if base is int else 'A number'} {meaning}."})

    def parse(value: object) -> int | float:
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

    register_type(kind, serializer=base, deserializer=parse, type_check=is_value)
    return kind


PositiveInt = _bounded("PositiveInt", int, ">= 1", lambda v: v >= 1)
NonNegativeInt = _bounded("NonNegativeInt", int, ">= 0", lambda v: v >= 0)
PositiveFloat = _bounded("PositiveFloat", float, "> 0", lambda v: v > 0)
NonNegativeFloat = _bounded("NonNegativeFloat", float, ">= 0", lambda v: v >= 0)
UnitInterval = _bounded("UnitInterval", float, "in [0, 1]", lambda v: 0 <= v <= 1)
Fraction = _bounded("Fraction", float, "in [0, 1)", lambda v: 0 <= v < 1)  # a share that leaves something over
OpenUnitInterval = _bounded("OpenUnitInterval", float, "in (0, 1)", lambda v: 0 < v < 1)  # a point strictly inside
ImageSide = _bounded("ImageSide", int, ">= 8 (pixels)", lambda v: v >= 8)

Stem = Literal["cifar", "imagenet"]  # no early downsampling (32x32, 96x96 inputs), or the paper's stem
TTAMode = Literal["flip", "flip_translate", "flip_shift"]
PaddingMode = Literal["zeros", "reflect"]
MixMode = Literal["mixup", "cutmix", "mixup_cutmix"]
PseudoLabelMode = Literal["soft", "hard"]
PrunerName = Literal["median", "hyperband", "none"]  # how a sweep stops trials that fall behind
