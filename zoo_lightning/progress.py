"""Progress of a step that takes more than a few seconds: what it does, how far, how fast, how long still."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["progress", "tracked"]

T = TypeVar("T")
SHOWN_FROM = 2_000  # items below which a step ends too soon for a bar to help
LOGGED_EVERY_S = 30.0  # where stderr is a file (nohup, a scheduler's log), a line at most this often


@contextmanager
def progress(
    description: str,
    total: int,
    unit: str = "images",
    shown_from: int = SHOWN_FROM,
    logged_every_s: float = LOGGED_EVERY_S,
) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr (done/total, items per second, time left); ``advance(n)`` moves it.

    Yields a function of one argument; steps of fewer than ``shown_from`` items show nothing. Where stderr is no
    terminal (a log file), a bar cannot redraw, so the same facts are written as a line every ``logged_every_s``
    seconds and once at the end.
    """
    if total < shown_from:
        yield lambda n: None
        return
    from rich.console import Console

    console = Console(file=sys.stderr)
    if not console.is_terminal:
        yield _logged(description, total, unit, logged_every_s)
        return
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
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n: bar.advance(task, n)


def _logged(description: str, total: int, unit: str, every_s: float) -> Callable[[int], None]:
    """An ``advance(n)`` that writes ``description: done/total unit (percent), rate, time left`` lines to stderr."""
    start = last = time.monotonic()
    done = 0

    def advance(count: int) -> None:
        nonlocal done, last
        done += count
        now = time.monotonic()
        if now - last < every_s and done < total:
            return
        last, elapsed = now, max(now - start, 1e-9)
        rate = done / elapsed
        when = f"{elapsed:.0f} s in all" if done >= total else f"about {(total - done) / rate:.0f} s left"
        line = f"{description}: {done}/{total} {unit} ({100 * done / total:.0f}%), {rate:,.0f} {unit}/s, {when}"
        print(line, file=sys.stderr, flush=True)

    return advance


def tracked(
    items: Iterable[T], description: str, total: int, unit: str = "images", shown_from: int = SHOWN_FROM
) -> Iterator[T]:
    """``items``, one by one, with :func:`progress` over them."""
    with progress(description, total, unit, shown_from) as advance:
        for item in items:
            yield item
            advance(1)
