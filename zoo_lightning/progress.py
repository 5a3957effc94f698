"""Progress of a step that takes more than a few seconds: what it does, how far, how fast, how long still."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

__all__ = ["LOGGED_EVERY_S", "progress", "progress_line", "tracked"]

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


def progress_line(
    description: str, done: int, total: float, unit: str, elapsed: float, timed: int | None = None
) -> str:
    """``description: done/total unit (percent), rate, time left`` (or the time in all, once done); a ``total`` that
    is not finite (a loader without a length) gives the count and rate alone. The rate is ``timed`` items (by default
    ``done``) over ``elapsed`` seconds: a resumed epoch's rate counts only the batches since it resumed."""
    elapsed = max(elapsed, 1e-9)
    rate = (done if timed is None else timed) / elapsed
    speed = f"{rate:,.0f} {unit}/s" if rate >= 10 else f"{rate:.2f} {unit}/s"  # batches of a big model: 0.45/s
    if not math.isfinite(total) or total <= 0:
        return f"{description}: {done} {unit}, {speed}, {elapsed:.0f} s so far"
    when = f"{elapsed:.0f} s in all" if done >= total else f"about {(total - done) / max(rate, 1e-9):.0f} s left"
    return f"{description}: {done}/{total:.0f} {unit} ({100 * done / total:.0f}%), {speed}, {when}"


def _logged(description: str, total: int, unit: str, every_s: float) -> Callable[[int], None]:
    """An ``advance(n)`` that writes :func:`progress_line` to stderr at most every ``every_s`` s and at the end."""
    start = last = time.monotonic()
    done = 0

    def advance(count: int) -> None:
        nonlocal done, last
        done += count
        now = time.monotonic()
        if now - last < every_s and done < total:
            return
        last = now
        print(progress_line(description, done, total, unit, now - start), file=sys.stderr, flush=True)

    return advance


def tracked(
    items: Iterable[T], description: str, total: int, unit: str = "images", shown_from: int = SHOWN_FROM
) -> Iterator[T]:
    """``items``, one by one, with :func:`progress` over them."""
    with progress(description, total, unit, shown_from) as advance:
        for item in items:
            yield item
            advance(1)
