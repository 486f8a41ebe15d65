"""RTP packet parsing and building (RFC 3550), sans-IO.

Only what the relay, the DTMF detector and the recording renderer need: the fixed
header, CSRC list, header extension and padding, and the RFC 5761 test that tells RTCP
from RTP on a multiplexed port. The relay's forwarding path does not call these: it
looks at the second byte of the packet in place and forwards the buffer untouched.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

__all__ = [
    "RtpError",
    "RtpHeader",
    "build_rtp",
    "is_rtcp",
    "parse_rtp",
]

_FIXED = struct.Struct(">BBHII")


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet."""


class RtpHeader(NamedTuple):
    """The fields of an RTP header; ``payload_start``/``payload_end`` index the packet."""

    payload_type: int
    marker: bool
    seq: int
    timestamp: int
    ssrc: int
    payload_start: int
    payload_end: int


def is_rtcp(second_byte: int) -> bool:
    """RFC 5761 section 4: on a multiplexed port, RTCP packet types are 192-223."""
    return 192 <= second_byte <= 223


def parse_rtp(data: bytes | bytearray | memoryview) -> RtpHeader:
    """Parse an RTP packet's header; raise :class:`RtpError` if it is not one."""
    size = len(data)
    if size < 12:
        raise RtpError("shorter than an RTP header")
    b0, b1, seq, ts, ssrc = _FIXED.unpack_from(data, 0)
    if b0 >> 6 != 2:
        raise RtpError("not RTP version 2")
    start = 12 + 4 * (b0 & 0x0F)
    if b0 & 0x10:
        if size < start + 4:
            raise RtpError("header extension cut short")
        words = (data[start + 2] << 8) | data[start + 3]
        start += 4 + 4 * words
    end = size
    if b0 & 0x20:
        pad = data[size - 1]
        if pad == 0:
            raise RtpError("padding of zero bytes")
        end -= pad
    if start > end:
        raise RtpError("header longer than the packet")
    return RtpHeader(b1 & 0x7F, bool(b1 & 0x80), seq, ts, ssrc, start, end)


def build_rtp(
    payload_type: int, seq: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    """A version 2 RTP packet with no CSRC, extension or padding."""
    return (
        _FIXED.pack(
            0x80,
            (0x80 if marker else 0) | (payload_type & 0x7F),
            seq & 0xFFFF,
            timestamp & 0xFFFFFFFF,
            ssrc & 0xFFFFFFFF,
        )
        + payload
    )
