"""RFC 4733 digits sent into a stream that the relay forwards; sans-IO.

The digits join the stream toward a party as that stream's own packets: the SSRC of
the audio forwarded toward the party, sequence numbers that continue it (every packet
inserted shifts the sequence numbers of the forwarded audio after it by one, for as
long as that SSRC lasts), and an event timestamp that follows the audio's clock. With
no audio flowing toward the party (an IVR prompt not yet playing, the other party on
hold) the digits form a stream of their own with a random SSRC.
"""

from __future__ import annotations

import os
import struct
from collections import deque
from typing import NamedTuple

from media.dtmf import digit_packets, event_code
from media.rtp import build_rtp

__all__ = ["DtmfInjector"]

_SEQ_TS_SSRC = struct.Struct(">HII")
STREAM_WAIT_S = 0.06


class _Planned(NamedTuple):
    at: float
    marker: bool
    payload: bytes
    new_event: bool


class DtmfInjector:
    """Numbering and timing of generated digits in the stream toward one party."""

    __slots__ = (
        "_event_ts",
        "_queue",
        "_ssrc",
        "clock_rate",
        "last_seq",
        "last_time",
        "last_ts",
        "offset",
        "payload_type",
        "sent",
    )

    def __init__(self, payload_type: int, clock_rate: int = 8000) -> None:
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        self._ssrc: int | None = None
        self.last_seq = 0
        self.last_ts = 0
        self.last_time = 0.0
        self.offset = 0
        self.sent = 0
        self._event_ts = 0
        self._queue: deque[_Planned] = deque()

    def forwarded(self, packet: bytearray | memoryview, now: float) -> None:
        """A packet about to be forwarded toward the party: renumber it in place."""
        seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(packet, 2)
        if ssrc != self._ssrc:
            if self._ssrc is not None and not self._queue:
                self.offset = 0  # a new stream: its numbers were never shifted
            self._ssrc = ssrc
        seq = (seq + self.offset) & 0xFFFF
        struct.pack_into(">H", packet, 2, seq)
        self.last_seq, self.last_ts, self.last_time = seq, ts, now

    def queue(
        self, digits: str, now: float, duration_ms: int = 100, pause_ms: int = 100, volume: int = 10
    ) -> int:
        """Plan ``digits`` to start at ``now`` (after what is queued); return how many."""
        for digit in digits:
            event_code(digit)
        if self._queue:
            start = max(now, self._queue[-1].at + pause_ms / 1000)
        elif self._ssrc is None:
            # No packet of the stream seen yet: give it a packet time to show its SSRC.
            start = now + STREAM_WAIT_S
        else:
            start = now
        for digit in digits:
            packets = digit_packets(digit, duration_ms, self.clock_rate, 20, volume)
            for i, p in enumerate(packets):
                self._queue.append(
                    _Planned(start + p.offset_ms / 1000, p.marker, p.payload, i == 0)
                )
            start += (packets[-1].offset_ms + pause_ms) / 1000
        return len(digits)

    def next_due(self) -> float | None:
        return self._queue[0].at if self._queue else None

    def due(self, now: float) -> list[bytes]:
        """The packets to send now, numbered into the stream."""
        out: list[bytes] = []
        while self._queue and self._queue[0].at <= now:
            planned = self._queue.popleft()
            if self._ssrc is None:
                self._ssrc = int.from_bytes(os.urandom(4), "big")
                self.last_seq = int.from_bytes(os.urandom(2), "big")
                self.last_ts = int.from_bytes(os.urandom(4), "big")
                self.last_time = now
            if planned.new_event:
                elapsed = max(0.0, now - self.last_time)
                self._event_ts = (self.last_ts + int(elapsed * self.clock_rate)) & 0xFFFFFFFF
            self.last_seq = (self.last_seq + 1) & 0xFFFF
            self.offset = (self.offset + 1) & 0xFFFF
            self.sent += 1
            out.append(
                build_rtp(
                    self.payload_type,
                    self.last_seq,
                    self._event_ts,
                    self._ssrc,
                    planned.payload,
                    planned.marker,
                )
            )
        return out
