"""What a sweep tries: ``--grid KEY=V1,V2`` and ``--space KEY=SPEC`` as Optuna distributions, and the runs' names.

A key is a ``fit`` option without its dashes (``model.optimizer.init_args.lr``,
``model.backbone_kwargs.width_mult``, ``data.init_args.image_size``). A SPEC is one of

- ``choice(a,b,c)``: one of the values, passed to ``fit`` as written (``--grid KEY=a,b,c`` says the same);
- ``uniform(lo,hi)``: a number between lo and hi;
- ``loguniform(lo,hi)``: a number between lo and hi, drawn uniformly in its logarithm (lo > 0);
- ``int(lo,hi)``: a whole number from lo to hi, both included.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

__all__ = ["Dimension", "parse_space", "combinations", "run_name", "trial_run_name", "KINDS"]

KINDS = ("choice", "uniform", "loguniform", "int")
SPEC = re.compile(r"^(\w+)\((.*)\)$")
EXAMPLE = "model.optimizer.init_args.lr=loguniform(1e-3,0.3)"


@dataclass(frozen=True)
class Dimension:
    """One searched fit option: its key, its kind (:data:`KINDS`) and its choices or (low, high)."""

    key: str
    kind: str
    values: tuple[str, ...] | tuple[float, ...]  # the choices as written, or (low, high): ints for int(lo,hi)

    @property
    def spec(self) -> str:
        """The SPEC as the study records it: ``loguniform(0.001,0.3)``."""
        return f"{self.kind}({','.join(str(v) for v in self.values)})"

    def suggest(self, trial: optuna.Trial) -> str | float:
        """The trial's value of this option (drawn by the study's sampler, or the one it already has)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, [str(v) for v in self.values])  # choices are as written
        low, high = self.values
        if self.kind == "int":
            return trial.suggest_int(self.key, int(low), int(high))
        return trial.suggest_float(self.key, float(low), float(high), log=self.kind == "loguniform")

    def examples(self) -> list[str]:
        """Values that ``fit``'s parser must accept for every trial to be accepted: each choice, or the bounds."""
        return [fit_value(v) for v in self.values]


def fit_value(value: str | float) -> str:
    """A value as ``fit`` is given it on the command line (a float in full, so the run trains what was drawn)."""
    return repr(value) if isinstance(value, float) else str(value)


def _number(text: str, item: str, whole: bool) -> float | int:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"Bad --space item {item!r}: {text!r} is not {kind}.") from None
    if not math.isfinite(value):
        raise ValueError(f"Bad --space item {item!r}: {text!r} is not a finite number.")
    return value


def _dimension(key: str, spec: str, item: str) -> Dimension:
    match = SPEC.match(spec.replace(" ", ""))
    if match is None or match.group(1) not in KINDS:
        raise ValueError(
            f"Bad --space item {item!r}: write KEY=choice(a,b), uniform(lo,hi), loguniform(lo,hi) or "
            f"int(lo,hi), e.g. {EXAMPLE}."
        )
    kind, inside = match.groups()
    parts = [p for p in inside.split(",") if p]
    if kind == "choice":
        if not parts or len(set(parts)) != len(parts):
            raise ValueError(
                f"Bad --space item {item!r}: choice needs one or more distinct values, e.g. choice(64,128)."
            )
        return Dimension(key, kind, tuple(parts))
    if len(parts) != 2:
        raise ValueError(f"Bad --space item {item!r}: {kind} takes two bounds, ({kind}(lo,hi)), e.g. {EXAMPLE}.")
    low, high = (_number(p, item, whole=kind == "int") for p in parts)
    if not low < high:
        raise ValueError(f"Bad --space item {item!r}: the low bound must be below the high one.")
    if kind == "loguniform" and low <= 0:
        raise ValueError(f"Bad --space item {item!r}: loguniform needs bounds above 0 (it draws their logarithm).")
    return Dimension(key, kind, (low, high))


def _split(item: str, option: str) -> tuple[str, str]:
    key, sep, rest = item.partition("=")
    key = key.strip().removeprefix("--")
    if not sep or not key or not rest.strip():
        example = "model.optimizer.init_args.lr=0.1,0.05" if option == "--grid" else EXAMPLE
        raise ValueError(
            f"Bad {option} item {item!r}: write KEY={'V1,V2' if option == '--grid' else 'SPEC'} (e.g. {example})."
        )
    return key, rest.strip()


def parse_space(grid: list[str] | None, space: list[str] | None) -> dict[str, Dimension]:
    """``--grid`` and ``--space`` items as dimensions, in the order given (``--grid KEY=a,b`` is
    ``--space KEY=choice(a,b)``).

    Raises:
        ValueError: an item is malformed, a key comes twice, or there is none.
    """
    dimensions: dict[str, Dimension] = {}
    items = [(item, "--grid") for item in grid or []] + [(item, "--space") for item in space or []]
    for item, option in items:
        key, rest = _split(item, option)
        if key in dimensions:
            raise ValueError(f"{key!r} is searched twice (--grid and --space name each key once).")
        if option == "--grid":
            values = tuple(v.strip() for v in rest.split(",") if v.strip())
            dimensions[key] = _dimension(key, f"choice({','.join(values)})", item)
        else:
            dimensions[key] = _dimension(key, rest, item)
    if not dimensions:
        raise ValueError(
            f"sweep needs what to search: --grid KEY=V1,V2 or --space KEY=SPEC (e.g. --space '{EXAMPLE}')."
        )
    return dimensions


def combinations(dimensions: dict[str, Dimension]) -> list[dict[str, str | float]]:
    """Every combination of a space of choices (a grid), in the order of the keys."""
    keys = list(dimensions)
    choices: list[tuple[str | float, ...]] = [dimensions[k].values for k in keys]
    return [dict(zip(keys, values)) for values in itertools.product(*choices)]


def _short_key(key: str) -> str:
    return key.rsplit(".", 1)[-1]


def run_name(combo: dict[str, str]) -> str:
    """A run folder's name from the values it trains with, e.g. ``lr=0.1,batch_size=128``."""
    short = [_short_key(k) for k in combo]
    # Two keys with the same last part (model...lr, other...lr) keep their full path.
    names = [s if short.count(s) == 1 else k for s, k in zip(short, combo)]
    return ",".join(f"{n}={v}".replace("/", "_") for n, v in zip(names, combo.values()))


def trial_run_name(number: int, values: dict[str, str | float]) -> str:
    """A searched trial's run name: its number, then its values to 4 digits (the exact ones are in sweep.json)."""
    shown = {k: f"{v:.4g}" if isinstance(v, float) else str(v) for k, v in values.items()}
    return f"trial_{number}," + run_name(shown)
