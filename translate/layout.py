"""Byte layout of keys and values in the translation store (see translate.store).

Kept apart from the store so the layout can be read, tested and benchmarked on its own.
Numbers are E.164 text encoded as ASCII; ids are UTF-8; values are msgpack arrays with
trailing ``None`` fields dropped, so the common binding costs three fields.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from translate.bindings import KINDS, Binding, Hours

__all__ = [
    "DIRECTIONS",
    "DIRECTION_SHIFT",
    "FLAG_PRESENT_CALLER",
    "FLAG_RECORD",
    "FORMAT",
    "HEAD_MARK",
    "KIND_MASK",
    "MEDIA_CODES",
    "MEDIA_SHIFT",
    "SEP",
    "decode_binding",
    "encode_binding",
    "expiry_key",
    "expiry_key_parts",
    "head_key",
    "party_key",
    "route_value",
    "source_key",
]

FORMAT: Final = b"ansim-translate/2"
SEP: Final = b"\x00"  # never in E.164 text, so X\0C sorts right after X and before X0...
# Ends a head key: X\1 sorts after every X\0C and before X0..., so one seek to X\0C
# lands on the party route or, when there is none for C, usually on the head itself.
HEAD_MARK: Final = b"\x01"
KIND_MASK: Final = 0b0011
FLAG_RECORD: Final = 0b0100
FLAG_PRESENT_CALLER: Final = 0b1000
# Bits 4-5: who calls whom through the entry, in the binding's terms (an index of
# DIRECTIONS); 0 in entries written before the direction was recorded.
DIRECTION_SHIFT: Final = 4
DIRECTIONS: Final = ("", "N->A", "A->B", "B->A")
# Bits 6-7: the binding's media mode (an index of MEDIA_CODES); 0: none named.
MEDIA_SHIFT: Final = 6
MEDIA_CODES: Final = ("", "passthrough", "relay", "rtpengine")
_KIND_CODE: Final[dict[str, int]] = {kind: code for code, kind in enumerate(KINDS)}
_MS: Final = struct.Struct(">Q")


def head_key(virtual: str) -> bytes:
    return virtual.encode("ascii") + HEAD_MARK


def party_key(virtual: str, caller: str) -> bytes:
    return virtual.encode("ascii") + SEP + caller.encode("ascii")


def source_key(source: str, binding_id: str) -> bytes:
    return source.encode() + SEP + binding_id.encode()


def expiry_key(expires: float, kind: str, binding_id: str) -> bytes:
    """Milliseconds since the epoch (big-endian, so keys sort by time), kind code, id."""
    return _MS.pack(int(expires * 1000)) + bytes((_KIND_CODE[kind],)) + binding_id.encode()


def expiry_key_parts(key: bytes | memoryview) -> tuple[float, str, str]:
    """(expires, kind, binding id) of an expiry key."""
    (ms,) = _MS.unpack_from(key)
    return ms / 1000, KINDS[key[8]], bytes(key[9:]).decode()


def route_value(binding: Binding, callee: str) -> bytes:
    """The routes value for one caller-specific or head entry of ``binding``.

    ``[flags, callee, binding_id, expires, max_seconds, calls_per_hour, hours, tenant]`` where
    flags = kind code | record << 2 | present-caller << 3 | direction << 4 | media << 6 and hours =
    [start, end, tz]. The direction follows from whom the entry reaches: B is reached from
    A (axb, axn), A from B in an axb, and from anyone else in an ax or axn.
    """
    flags = _KIND_CODE[binding.kind]
    if callee == binding.b:
        direction = 2
    elif binding.kind == "axb":
        direction = 3
    else:
        direction = 1
    flags |= direction << DIRECTION_SHIFT
    if binding.record:
        flags |= FLAG_RECORD
    if binding.present == "caller":
        flags |= FLAG_PRESENT_CALLER
    if binding.media is not None:
        flags |= MEDIA_CODES.index(binding.media) << MEDIA_SHIFT
    hours = binding.hours
    fields: list[Any] = [
        flags,
        callee,
        binding.id,
        binding.expires,
        binding.max_seconds,
        binding.calls_per_hour,
        None if hours is None else [hours.start, hours.end, hours.timezone],
        binding.tenant,
    ]
    while fields[-1] is None:
        fields.pop()
    packed: bytes = msgpack.packb(fields)
    return packed


def encode_binding(binding: Binding, source: str) -> bytes:
    """The bindings-table value: every field and the source, for unbinding, diffing, showing.

    The owner fields (tenant, out_id) follow only when one is set, so a map's bindings
    encode as they did before owners existed (reloads compare these bytes).
    """
    hours = binding.hours
    fields: list[Any] = [
        binding.kind,
        binding.virtual,
        binding.a,
        binding.b,
        binding.present == "caller",
        binding.record,
        binding.expires,
        binding.max_seconds,
        binding.calls_per_hour,
        None if hours is None else [hours.start, hours.end, hours.timezone],
        source,
    ]
    # Owner and media mode follow only when set, so map bindings stay as short as before.
    if binding.tenant is not None or binding.out_id is not None or binding.media is not None:
        fields += (binding.tenant, binding.out_id, binding.media)
    packed: bytes = msgpack.packb(fields)
    return packed


def decode_binding(binding_id: str, raw: bytes | memoryview) -> tuple[Binding, str]:
    """(binding, source) from a bindings-table value."""
    fields = msgpack.unpackb(raw)
    kind, virtual, a, b, caller, record, expires, max_seconds, per_hour, hours, source = fields[:11]
    tenant, out_id = fields[11:13] if len(fields) > 11 else (None, None)
    media = fields[13] if len(fields) > 13 else None
    binding = Binding(
        id=binding_id,
        kind=kind,
        virtual=virtual,
        a=a,
        b=b,
        present="caller" if caller else "virtual",
        record=record,
        expires=expires,
        max_seconds=max_seconds,
        calls_per_hour=per_hour,
        hours=None if hours is None else Hours(*hours),
        tenant=tenant,
        out_id=out_id,
        media=media,
    )
    return binding, source
