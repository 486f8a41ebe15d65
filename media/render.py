"""Decrypted recording records to a stereo WAV file (16-bit PCM, 8 kHz); sans-IO.

Channel 0 (the party of the first leg) is the left track, channel 1 the right. Each
packet is placed by its RTP timestamp, anchored to its arrival time at the first packet
of a stream and again whenever the SSRC changes or the timestamps stop matching the
arrival times by more than half a second (a new stream after a re-INVITE, hold,
a timestamp jump), so silence suppression, hold and packet loss leave silence
where they were, and both tracks stay aligned to the wall clock.

G.711 µ-law (PCMU) and A-law (PCMA) are decoded. Comfort noise (CN) and gaps are
written as silence, telephone-events are skipped (they are not audio). Any other codec
cannot be decoded here (ansim carries no codec library): its packets are counted in
:class:`RenderReport.undecoded` by codec name and left as silence, and ``ansim
recordings decrypt --format rtpdump`` writes the packets themselves (rtpdump, which
Wireshark and rtptools read) so they can be decoded elsewhere.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from media.g711 import decode
from media.recording import REC_META, REC_RTP, Record
from media.rtp import RtpError, parse_rtp

__all__ = ["RenderReport", "codec_names", "render_wav", "write_rtpdump"]

RATE = 8000
_STATIC = {0: "PCMU", 8: "PCMA", 13: "CN", 3: "GSM", 4: "G723", 9: "G722", 18: "G729"}


@dataclass
class RenderReport:
    """What a render wrote and what it could not decode."""

    samples: int = 0
    packets: Counter[int] = field(default_factory=Counter)
    undecoded: Counter[str] = field(default_factory=Counter)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.samples / RATE


def codec_names(meta: dict[str, Any], channel: int) -> dict[int, str]:
    """Payload type to codec name for a channel, from the META records (and static types)."""
    names = dict(_STATIC)
    chan = (meta.get("channels") or {}).get(str(channel)) or {}
    for pt, spec in (chan.get("codecs") or {}).items():
        names[int(pt)] = str(spec).split("/")[0].upper()
    return names


class _Track:
    __slots__ = ("anchor", "pcm")

    def __init__(self) -> None:
        self.pcm = bytearray()
        self.anchor: tuple[int, int, int] | None = None  # ssrc, timestamp, sample position

    def place(self, ssrc: int, ts: int, arrival: int) -> int:
        anchor = self.anchor
        if anchor is not None and anchor[0] == ssrc:
            delta = (ts - anchor[1]) & 0xFFFFFFFF
            if delta < 0x80000000:
                pos = anchor[2] + delta
                if abs(pos - arrival) <= RATE // 2:
                    return pos
        self.anchor = (ssrc, ts, arrival)
        return arrival

    def write(self, pos: int, pcm: bytes | bytearray) -> None:
        start = 2 * pos
        end = start + len(pcm)
        if end > len(self.pcm):
            self.pcm.extend(bytes(end - len(self.pcm)))
        self.pcm[start:end] = pcm


def _wav_header(frames: int, channels: int = 2) -> bytes:
    data = frames * channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, RATE, RATE * channels * 2, channels * 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def render_wav(records: Iterable[Record], out: BinaryIO) -> RenderReport:
    """Write the records as a stereo WAV to ``out``; return what was rendered."""
    report = RenderReport()
    tracks = (_Track(), _Track())
    names: dict[int, dict[int, str]] = {}
    for rec in records:
        if rec.kind == REC_META and rec.meta is not None:
            _merge(report.meta, rec.meta)
            names.clear()
            continue
        if rec.kind != REC_RTP or rec.channel > 1:
            continue
        try:
            hdr = parse_rtp(rec.packet)
        except RtpError:
            continue
        chan_names = names.get(rec.channel)
        if chan_names is None:
            chan_names = names[rec.channel] = codec_names(report.meta, rec.channel)
        codec = chan_names.get(hdr.payload_type, f"PT{hdr.payload_type}")
        report.packets[rec.channel] += 1
        if codec in ("TELEPHONE-EVENT", "CN"):
            continue
        if codec not in ("PCMU", "PCMA"):
            report.undecoded[codec] += 1
            continue
        track = tracks[rec.channel]
        pos = track.place(hdr.ssrc, hdr.timestamp, rec.ms * (RATE // 1000))
        track.write(pos, decode(codec, rec.packet[hdr.payload_start : hdr.payload_end]))
    left, right = tracks[0].pcm, tracks[1].pcm
    size = max(len(left), len(right))
    left.extend(bytes(size - len(left)))
    right.extend(bytes(size - len(right)))
    frames = size // 2
    stereo = bytearray(4 * frames)
    stereo[0::4] = left[0::2]
    stereo[1::4] = left[1::2]
    stereo[2::4] = right[0::2]
    stereo[3::4] = right[1::2]
    out.write(_wav_header(frames))
    out.write(stereo)
    report.samples = frames
    return report


def _merge(into: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def write_rtpdump(records: Iterable[Record], out: BinaryIO, channel: int) -> int:
    """Write one channel's packets as an rtpdump file (rtptools format); return the count.

    The file header names 127.0.0.1 port ``5004 + 2 * channel`` as the source, and each
    packet is stamped with its arrival offset, so Wireshark or ``rtpplay`` replay it
    in time.
    """
    out.write(b"#!rtpplay1.0 127.0.0.1/%d\n" % (5004 + 2 * channel))
    out.write(struct.pack(">IIIHH", 0, 0, 0x7F000001, 5004 + 2 * channel, 0))
    count = 0
    for rec in records:
        if rec.kind == REC_RTP and rec.channel == channel:
            out.write(struct.pack(">HHI", len(rec.packet) + 8, len(rec.packet), rec.ms))
            out.write(rec.packet)
            count += 1
    return count
