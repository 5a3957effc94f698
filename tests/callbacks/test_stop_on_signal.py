"""Ctrl-C while a Trainer runs stops it at the next batch boundary, even when the signal lands in a destructor."""

import os
import signal

import pytest

from zoo_lightning.callbacks.stop_on_signal import StopOnSignal
from zoo_lightning.signals import StopSignals


class _DrawsOnDelete:
    """Stands for a figure whose clean-up runs when Ctrl-C arrives: an exception raised in __del__ is swallowed."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_in_a_destructor_is_not_swallowed_while_a_trainer_runs():
    with StopSignals() as stop:
        callback = StopOnSignal(stop)
        callback.setup(None, None, "fit")
        _DrawsOnDelete()  # deleted at once; the handler runs inside __del__
        assert stop.received == signal.SIGINT and stop.exit_status == 130
        with pytest.raises(KeyboardInterrupt):
            callback.on_train_batch_end(None, None, None, None, 0)
        callback.teardown(None, None, "fit")
        assert not stop.deferred


def test_before_a_trainer_runs_ctrl_c_stops_at_once():
    with StopSignals() as stop:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            signal.pthread_sigmask(signal.SIG_BLOCK, [])  # a bytecode boundary for the handler to run at
    assert stop.received == signal.SIGINT


def test_signals_are_forwarded_to_a_child_and_the_handlers_restored():
    import subprocess
    import sys

    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as stop:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        stop.forward_to(child)
        os.kill(os.getpid(), signal.SIGTERM)
        assert child.wait(timeout=30) == -signal.SIGTERM
        assert stop.name == "SIGTERM" and stop.exit_status == 143
    assert signal.getsignal(signal.SIGTERM) is before
