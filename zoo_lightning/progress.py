"""Progress of a step that takes more than a few seconds: what it does, how far, how fast, how long still."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["progress", "tracked"]

T = TypeVar("T")
SHOWN_FROM = 2_000  # items below which a step ends too soon for a bar to help


@contextmanager
def progress(
    description: str, total: int, unit: str = "images", shown_from: int = SHOWN_FROM
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (done/total, items per second, time left); ``advance(n)`` moves it.

    Yields a function of one argument; steps of fewer than ``shown_from`` items show nothing.
    """
    if total < shown_from:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        Task,
        TaskProgressColumn,
        TextColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Task) -> Text:
            return Text(f"{task.speed or 0:,.0f} {unit}/s")

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(file=sys.stderr), transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def tracked(
    items: Iterable[T], description: str, total: int, unit: str = "images", shown_from: int = SHOWN_FROM
) -> Iterator[T]:
    """``items``, one by one, with :func:`progress` over them."""
    with progress(description, total, unit, shown_from) as advance:
        for item in items:
            yield item
            advance(1)
