"""RFC 4733 telephone-events: detection on a stream, and packets to send digits; sans-IO.

Detection (:class:`DtmfDetector`, one per received stream): an event is identified by
its RTP timestamp (and SSRC). Its first packet, whatever it is, reports the digit
(``end=False``); its first packet with the E bit reports it once more with its final
duration (``end=True``); the retransmitted end packets (RFC 4733 2.5.1.4: sent three
times) and any late packet of an ended event are ignored. An event whose end packets
were all lost is ended by the first packet of the next event, or by :meth:`tick` once
no packet of it has come for ``stale_ms``. Durations beyond 0xFFFF units (about 8 s at
8 kHz) are reported as RFC 4733's separate segments.

Generation (:func:`digit_packets`): the packets of one digit, each with its offset from
the start of the event in milliseconds, in the usual shape: a first packet with the
marker bit, an update every ``interval_ms`` with the growing duration, and three end
packets. The relay numbers them into the stream they join.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import NamedTuple

__all__ = [
    "DIGITS",
    "DtmfDetector",
    "DtmfEvent",
    "DtmfPacket",
    "digit_packets",
    "event_code",
    "parse_event",
]

# RFC 4733 section 3.2: event codes 0-15 are the DTMF digits; 16 is flash.
DIGITS = "0123456789*#ABCD"
_EVENT = struct.Struct(">BBH")


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit (``0-9 * # A-D``, case-insensitive)."""
    code = DIGITS.find(digit.upper()) if len(digit) == 1 else -1
    if code < 0:
        raise ValueError(f"not a DTMF digit: {digit!r}")
    return code


def parse_event(payload: bytes | bytearray | memoryview) -> tuple[int, bool, int, int]:
    """(event code, end bit, volume, duration) of a telephone-event payload."""
    if len(payload) < 4:
        raise ValueError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = _EVENT.unpack_from(payload, 0)
    return event, bool(flags & 0x80), flags & 0x3F, duration


class DtmfEvent(NamedTuple):
    """A digit seen on a stream; ``end`` is False on its first packet, True once at its end."""

    digit: str
    duration_ms: int
    end: bool
    volume: int


class DtmfDetector:
    """Telephone-event detection for one received stream (see the module docstring)."""

    __slots__ = ("_clock_khz", "_current", "_ended", "_last_seen", "_stale_ms", "_state")

    def __init__(self, clock_rate: int = 8000, stale_ms: int = 1000) -> None:
        self._clock_khz = clock_rate / 1000
        self._stale_ms = stale_ms
        # (ssrc, timestamp) of the event in progress, its code, duration and volume.
        self._current: tuple[int, int] | None = None
        self._state = (0, 0, 0)
        self._last_seen = 0.0
        self._ended: deque[tuple[int, int]] = deque(maxlen=8)

    def _digit(self, code: int) -> str:
        return DIGITS[code] if code < 16 else "F" if code == 16 else f"event-{code}"

    def _close_current(self) -> DtmfEvent | None:
        if self._current is None:
            return None
        code, duration, volume = self._state
        self._ended.append(self._current)
        self._current = None
        return DtmfEvent(self._digit(code), round(duration / self._clock_khz), True, volume)

    def feed(
        self, ssrc: int, timestamp: int, payload: bytes | bytearray | memoryview, now_ms: float
    ) -> list[DtmfEvent]:
        """Events reported by one telephone-event packet (none for a repeat)."""
        try:
            code, end, volume, duration = parse_event(payload)
        except ValueError:
            return []
        key = (ssrc, timestamp)
        if key in self._ended:
            return []
        out: list[DtmfEvent] = []
        if key != self._current:
            closed = self._close_current()
            if closed is not None:
                out.append(closed)
            self._current = key
            self._state = (code, duration, volume)
            out.append(
                DtmfEvent(self._digit(code), round(duration / self._clock_khz), False, volume)
            )
        else:
            self._state = (code, max(duration, self._state[1]), volume)
        self._last_seen = now_ms
        if end:
            closed = self._close_current()
            if closed is not None:
                out.append(closed)
        return out

    def tick(self, now_ms: float) -> list[DtmfEvent]:
        """End an event whose end packets never came once ``stale_ms`` have passed."""
        if self._current is not None and now_ms - self._last_seen >= self._stale_ms:
            closed = self._close_current()
            return [closed] if closed is not None else []
        return []


class DtmfPacket(NamedTuple):
    """One packet of a generated digit: when to send it (ms after the event starts)."""

    offset_ms: int
    marker: bool
    payload: bytes


def digit_packets(
    digit: str,
    duration_ms: int = 100,
    clock_rate: int = 8000,
    interval_ms: int = 20,
    volume: int = 10,
) -> list[DtmfPacket]:
    """The RFC 4733 packets of one digit (all carry the event's start timestamp)."""
    code = event_code(digit)
    if not 40 <= duration_ms <= 8000:
        raise ValueError("DTMF duration must be 40-8000 ms")
    units_per_ms = clock_rate // 1000
    volume &= 0x3F
    packets: list[DtmfPacket] = []
    t = interval_ms
    first = True
    while t < duration_ms:
        packets.append(
            DtmfPacket(t - interval_ms, first, _EVENT.pack(code, volume, t * units_per_ms))
        )
        first = False
        t += interval_ms
    final = _EVENT.pack(code, 0x80 | volume, duration_ms * units_per_ms)
    for repeat in range(3):
        packets.append(DtmfPacket(duration_ms - interval_ms + repeat * interval_ms, first, final))
        first = False
    return packets
