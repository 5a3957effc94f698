"""Ctrl-C and SIGTERM for one command: which signal asked it to stop, and the exit status that says so."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["StopSignals"]

STOPPING = (signal.SIGINT, signal.SIGTERM)
# What signal.signal() takes and returns: a function, SIG_DFL or SIG_IGN, or None (a handler not set from Python).
Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class StopSignals:
    """While active, Ctrl-C (SIGINT) and SIGTERM are recorded in :attr:`received` and acted on.

    In this process, before a Trainer runs, either signal raises KeyboardInterrupt at once: there is
    nothing to save. While a Trainer runs (:attr:`deferred`, set by the
    :class:`~zoo_lightning.callbacks.stop_on_signal.StopOnSignal` callback), SIGINT is only recorded and
    that callback raises KeyboardInterrupt at the next batch boundary, which Lightning turns into an
    orderly stop with the run's last.ckpt at the step reached; raised from the handler itself it could
    land in a destructor (drawing a figure frees many) and be swallowed there. SIGTERM is stopped by
    Lightning's own handler, which it installs beside this one, at the end of the step. With
    :meth:`forward_to` a child process gets the signal instead (a terminal's Ctrl-C reaches both, a
    ``kill`` only this one), and this process goes on to read the child's exit.

    Use as a context manager; the previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.deferred = False  # a Trainer runs: stop it at its next batch boundary rather than here
        self.child: subprocess.Popen | None = None
        self.previous: dict[int, Handler] = {}

    def __enter__(self) -> StopSignals:
        self.previous = {number: signal.signal(number, self.handle) for number in STOPPING}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def forward_to(self, child: subprocess.Popen | None) -> None:
        """Passes the signals to ``child`` from now on (None: handle them in this process again)."""
        self.child = child

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum
        if self.child is not None:
            if self.child.poll() is None:
                self.child.send_signal(signum)
            return
        if self.deferred:
            return
        if signum == signal.SIGINT or signal.getsignal(signal.SIGTERM) == self.handle:
            raise KeyboardInterrupt

    @property
    def exit_status(self) -> int | None:
        """128 + the signal's number once one was received (130 for Ctrl-C, 143 for SIGTERM), else None."""
        return None if self.received is None else 128 + self.received

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received is not None else ""
