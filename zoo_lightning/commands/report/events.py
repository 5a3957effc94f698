"""A run folder's TensorBoard event files read one after another: scalars, wall time and the HPARAMS session.

Each event file is read with TensorBoard's own reader (``EventAccumulator``), one file (one session
of the run) at a time, so a resumed run's steps join up and its downtime is not counted as wall time.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, NamedTuple

from zoo_lightning.callbacks.hparams_session import read_session

__all__ = ["EVENT_GLOB", "Events", "read_events"]

EVENT_GLOB = "events.out.tfevents.*"


class Events(NamedTuple):
    """What a run's event files hold."""

    scalars: dict[str, list[tuple[int, float]]]  # tag -> [(step, value)], resumed sessions joined
    wall_seconds: float  # summed over the run's sessions
    session: dict[str, Any]  # the HPARAMS session's values, a later session's over an earlier one's
    status: str | None  # DONE, FAILED or INTERRUPTED once the HparamsSession callback has closed the session
    unread: dict[Path, str]  # event file -> why it was skipped or read only in part


def _event_file_order(path: Path) -> tuple[int, str]:
    # events.out.tfevents.<unix time>.<host>.<pid>.<n>: the time orders a resumed run's sessions.
    parts = path.name.split(".")
    return (int(parts[3]) if len(parts) > 3 and parts[3].isdigit() else 0, path.name)


def _incomplete_tail(path: Path) -> str | None:
    """What keeps TensorBoard's reader from the end of ``path``, or None when every record in it is whole.

    An event file is a TFRecord file: each record is an 8-byte length, a 4-byte checksum of it, the
    data and a 4-byte checksum of the data. The reader stops without a word at a record cut short (a
    writer killed mid-write, a copy cut off, a full disk); walking the lengths shows where that is.
    The checksums are not verified (that means reading every byte a second time), so a record
    garbled inside a file whose lengths still add up goes unnoticed here.
    """
    size = path.stat().st_size
    if size == 0:
        return "empty"
    offset = 0
    with path.open("rb") as file:
        while offset + 12 <= size:
            (length,) = struct.unpack("<Q", file.read(8))
            if offset + 12 + length + 4 > size:
                break
            offset += 12 + length + 4
            file.seek(offset)
    if offset == size:
        return None
    if offset == 0:
        return "not an event file, or cut off within its first record"
    return f"truncated (its last {size - offset:,} of {size:,} bytes are an incomplete record)"


def read_events(run_dir: Path) -> Events:
    """Scalars, wall seconds, HPARAMS session and status of a run, one event file (session) at a time."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars: dict[str, list[tuple[int, float]]] = {}
    wall, session, status, unread = 0.0, {}, None, {}
    files = sorted((p for p in run_dir.glob(EVENT_GLOB) if p.is_file()), key=_event_file_order)
    for path in files:
        damage = None
        try:
            damage = _incomplete_tail(path)
            accumulator = EventAccumulator(
                str(path), size_guidance={"scalars": 0, "images": 1, "histograms": 1, "tensors": 1, "audio": 1}
            )
            accumulator.Reload()
            first = accumulator.FirstEventTimestamp()
        except ValueError:  # FirstEventTimestamp: not one event could be read
            unread[path] = f"{damage or 'no event could be read'}; skipped"
            continue
        except Exception as error:  # unreadable: permissions, I/O errors, whatever the reader raises
            unread[path] = f"{type(error).__name__}: {error}; skipped"
            continue
        if damage:
            unread[path] = f"{damage}; read up to there"
        last = first
        for tag in accumulator.Tags()["scalars"]:
            events = accumulator.Scalars(tag)
            if not events:
                continue
            # A resumed session logs again from its checkpoint's step: what the killed one logged past it goes.
            kept = [p for p in scalars.get(tag, []) if p[0] < events[0].step]
            scalars[tag] = kept + [(e.step, e.value) for e in events]
            last = max(last, events[-1].wall_time)
        wall += last - first
        params, ended = read_session(accumulator)
        session.update(params)
        if ended:
            status = ended
        elif params and not damage:
            # A session that started again (resumed) and has not ended is open. A damaged file's missing
            # end may be what was cut off: it leaves the status the earlier files gave.
            status = None
    return Events(scalars, wall, session, status, unread)
