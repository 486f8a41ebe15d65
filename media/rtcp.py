"""RTCP compound packets (RFC 3550 section 6), rebuilt for the far leg; sans-IO.

RTCP crosses the relay rebuilt from what ansim understands, never filtered from what
arrived: sender and receiver reports (SSRCs, counters and timing only) and RTP/payload
feedback messages (RFC 4585: SSRCs and FCI) are copied; every SDES chunk is rebuilt with
one CNAME item, the opaque value the receiving leg was given (softphones such as
baresip and linphone put the user's address of record, with the real number, in
CNAME, and NAME, EMAIL, PHONE, LOC, TOOL, NOTE and PRIV items carry more); BYE keeps its
SSRC list and loses its reason text; APP, XR and any unknown packet type are dropped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "RTCP_BYE",
    "RTCP_RR",
    "RTCP_SDES",
    "RTCP_SR",
    "RtcpError",
    "RtcpPacket",
    "iter_compound",
    "rewrite_compound",
    "sdes_items",
]

RTCP_SR = 200
RTCP_RR = 201
RTCP_SDES = 202
RTCP_BYE = 203
RTCP_APP = 204
RTCP_RTPFB = 205
RTCP_PSFB = 206
RTCP_XR = 207

SDES_CNAME = 1

_COPIED = frozenset((RTCP_SR, RTCP_RR, RTCP_RTPFB, RTCP_PSFB))
_WORD = struct.Struct(">I")


class RtcpError(ValueError):
    """A datagram that is not a well-formed RTCP compound packet."""


class RtcpPacket(NamedTuple):
    """One packet of a compound: its type, count field and the bytes after the 4-byte header."""

    packet_type: int
    item_count: int  # the header's 5-bit count field (reports, chunks, SSRCs)
    body: bytes


def iter_compound(data: bytes | bytearray | memoryview) -> Iterator[RtcpPacket]:
    """Yield the packets of a compound; raise :class:`RtcpError` on a malformed one."""
    view = memoryview(data)
    offset = 0
    size = len(view)
    if size < 4:
        raise RtcpError("shorter than an RTCP header")
    while offset < size:
        if size - offset < 4:
            raise RtcpError("trailing bytes after the last packet")
        b0 = view[offset]
        if b0 >> 6 != 2:
            raise RtcpError("not RTCP version 2")
        length = 4 * (((view[offset + 2] << 8) | view[offset + 3]) + 1)
        end = offset + length
        if end > size:
            raise RtcpError("packet longer than the datagram")
        body_end = end
        if b0 & 0x20:
            # Padding is only allowed on the last packet of a compound (RFC 3550 6.4.1).
            pad = view[end - 1]
            if end != size or pad == 0 or pad > length - 4:
                raise RtcpError("bad padding")
            body_end -= pad
        yield RtcpPacket(view[offset + 1], b0 & 0x1F, bytes(view[offset + 4 : body_end]))
        offset = end


def _header(packet_type: int, count: int, body_len: int) -> bytes:
    return struct.pack(">BBH", 0x80 | count, packet_type, body_len // 4)


def _sdes_chunks(body: bytes, count: int) -> list[tuple[int, list[tuple[int, bytes]]]]:
    chunks: list[tuple[int, list[tuple[int, bytes]]]] = []
    pos = 0
    for _ in range(count):
        if pos + 4 > len(body):
            raise RtcpError("SDES chunk cut short")
        (ssrc,) = _WORD.unpack_from(body, pos)
        pos += 4
        items: list[tuple[int, bytes]] = []
        while True:
            if pos >= len(body):
                raise RtcpError("SDES item list not terminated")
            kind = body[pos]
            if kind == 0:
                pos = (pos + 4) & ~3  # the null item, then padding to the next word
                break
            if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                raise RtcpError("SDES item cut short")
            length = body[pos + 1]
            items.append((kind, body[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        chunks.append((ssrc, items))
    return chunks


def sdes_items(data: bytes | bytearray | memoryview) -> list[tuple[int, int, bytes]]:
    """Every SDES item of a compound as (ssrc, item type, value): for tests and diagnostics."""
    out: list[tuple[int, int, bytes]] = []
    for packet in iter_compound(data):
        if packet.packet_type == RTCP_SDES:
            for ssrc, items in _sdes_chunks(packet.body, packet.item_count):
                out.extend((ssrc, kind, value) for kind, value in items)
    return out


def _sdes(ssrcs: list[int], cname: bytes) -> bytes:
    # Each chunk: SSRC, CNAME item, null item, padding to a 32-bit boundary.
    item = bytes((SDES_CNAME, len(cname))) + cname
    pad = 4 - (len(item) % 4)
    tail = item + bytes(pad)
    body = b"".join(_WORD.pack(s) + tail for s in ssrcs)
    return _header(RTCP_SDES, len(ssrcs), len(body)) + body


def rewrite_compound(data: bytes | bytearray | memoryview, cname: bytes) -> bytes | None:
    """The compound to send to the far leg, or None when nothing in it may cross.

    ``cname`` (1-255 bytes) replaces every SDES chunk's items. Raises :class:`RtcpError`
    on a malformed compound (the relay drops it).
    """
    parts: list[bytes] = []
    for packet in iter_compound(data):
        kind = packet.packet_type
        if kind in _COPIED:
            body = packet.body
            if len(body) % 4:
                raise RtcpError("packet body not a whole number of words")
            parts.append(_header(kind, packet.item_count, len(body)) + body)
        elif kind == RTCP_SDES:
            chunks = _sdes_chunks(packet.body, packet.item_count)
            if chunks:
                parts.append(_sdes([ssrc for ssrc, _ in chunks][:31], cname))
        elif kind == RTCP_BYE:
            n = packet.item_count
            if len(packet.body) < 4 * n:
                raise RtcpError("BYE SSRC list cut short")
            body = packet.body[: 4 * n]
            parts.append(_header(RTCP_BYE, n, len(body)) + body)
        # APP, XR and unknown types: dropped.
    if not parts:
        return None
    return b"".join(parts)
