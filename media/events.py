"""What the relay reports to the engine on its own: the events of the control protocol.

Each is a small immutable record; :mod:`media.control` encodes them as msgpack maps
with an ``ev`` key naming the type, and decodes them back on the engine's side.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["DtmfDigit", "Event", "MediaTimeout", "RecordingClosed", "StatsReport"]


class MediaTimeout(NamedTuple):
    """No RTP in either direction of ``call`` for ``idle_s`` seconds.

    Reported once per silence (again only after packets came back and stopped again).
    The engine ends the call: BYE on both legs, CDR reason ``media_timeout``.
    """

    call: str
    idle_s: float


class DtmfDigit(NamedTuple):
    """An RFC 4733 digit received from the party of ``leg``.

    ``end`` False: the event's first packet; True: its end (once, with the duration).
    """

    call: str
    leg: str
    digit: str
    duration_ms: int
    end: bool


class StatsReport(NamedTuple):
    """Per-leg counters of ``call``, sent every ``stats_interval`` seconds when asked for."""

    call: str
    legs: dict[str, dict[str, Any]]


class RecordingClosed(NamedTuple):
    """A recording of ``call`` ended: ``error`` is empty when it closed with its end marker."""

    call: str
    recording_id: str
    path: str
    packets: int
    error: str


Event = MediaTimeout | DtmfDigit | StatsReport | RecordingClosed
