"""G.711 µ-law and A-law (ITU-T G.711) to and from 16-bit linear PCM; sans-IO.

Decoding is table driven and runs at C speed: a payload is mapped through two 256-byte
translation tables (low and high byte of each sample) and the halves are interleaved by
slice assignment, so an hour of stereo call audio decodes in well under a second.
Written here rather than taken from ``audioop``, which Python 3.13 removed.
"""

from __future__ import annotations

__all__ = ["alaw_to_linear", "decode", "linear_to_alaw", "linear_to_ulaw", "ulaw_to_linear"]


def ulaw_to_linear(code: int) -> int:
    """The 16-bit sample of one µ-law byte."""
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return (0x84 - t) if u & 0x80 else (t - 0x84)


def alaw_to_linear(code: int) -> int:
    """The 16-bit sample of one A-law byte."""
    a = code ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    elif seg == 1:
        t += 0x108
    else:
        t = (t + 0x108) << (seg - 1)
    return t if a & 0x80 else -t


def linear_to_ulaw(sample: int) -> int:
    """The µ-law byte of a 16-bit sample (for tests and generated tones)."""
    bias, clip = 0x84, 32635
    sign = 0x80 if sample < 0 else 0
    if sample < 0:
        sample = -sample
    sample = min(sample, clip) + bias
    exponent = 7
    mask = 0x4000
    while exponent > 0 and not sample & mask:
        exponent -= 1
        mask >>= 1
    mantissa = (sample >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def linear_to_alaw(sample: int) -> int:
    """The A-law byte of a 16-bit sample (for tests and generated tones)."""
    sign = 0x80 if sample >= 0 else 0
    if sample < 0:
        sample = -sample - 1
    sample = min(sample, 32767) >> 3
    if sample < 32:
        code = sample >> 1
    else:
        seg = 1
        v = sample >> 5
        while v > 1 and seg < 7:
            v >>= 1
            seg += 1
        code = (seg << 4) | ((sample >> seg) & 0x0F)
    return (code | sign) ^ 0x55


def _tables(decoder: object) -> tuple[bytes, bytes]:
    lo = bytearray(256)
    hi = bytearray(256)
    for code in range(256):
        value = decoder(code) & 0xFFFF  # type: ignore[operator]
        lo[code] = value & 0xFF
        hi[code] = value >> 8
    return bytes(lo), bytes(hi)


_TABLES = {"PCMU": _tables(ulaw_to_linear), "PCMA": _tables(alaw_to_linear)}


def decode(codec: str, payload: bytes | bytearray | memoryview) -> bytearray:
    """16-bit little-endian PCM of a PCMU or PCMA payload."""
    lo, hi = _TABLES[codec]
    data = bytes(payload)
    out = bytearray(2 * len(data))
    out[0::2] = data.translate(lo)
    out[1::2] = data.translate(hi)
    return out
