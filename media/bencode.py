"""Bencoding (the rtpengine ng protocol's dictionary format); sans-IO.

Small enough to keep here: the PyPI packages for it are unmaintained, and the ng
protocol needs only dictionaries, lists, integers and byte strings. Strings are
encoded as UTF-8; decoded byte strings come back as ``str`` (UTF-8, with undecodable
bytes kept by ``surrogateescape``), dictionary keys always as ``str``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["BencodeError", "decode", "encode"]


class BencodeError(ValueError):
    """Bytes that are not a bencoded value."""


def encode(value: Any) -> bytes:
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Any, out: list[bytes]) -> None:
    if isinstance(value, bool):
        raise TypeError("bencode has no booleans: use 'yes'/'no' or 1/0")
    if isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        out.append(b"%d:" % len(data))
        out.append(data)
    elif isinstance(value, str):
        _encode(value.encode("utf-8", "surrogateescape"), out)
    elif isinstance(value, (list, tuple)):
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")
    elif isinstance(value, dict):
        out.append(b"d")
        for key in sorted(value, key=lambda k: k.encode() if isinstance(k, str) else bytes(k)):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        raise TypeError(f"cannot bencode {type(value).__name__}")


def decode(data: bytes) -> Any:
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} trailing byte(s)")
    return value


def _decode(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    if depth > 64:
        raise BencodeError("nested too deeply")
    if pos >= len(data):
        raise BencodeError("unexpected end")
    c = data[pos]
    if c == 0x69:  # i
        end = data.find(b"e", pos)
        if end < 0:
            raise BencodeError("unterminated integer")
        try:
            return int(data[pos + 1 : end]), end + 1
        except ValueError:
            raise BencodeError("bad integer") from None
    if c == 0x6C:  # l
        items = []
        pos += 1
        while pos < len(data) and data[pos] != 0x65:
            item, pos = _decode(data, pos, depth + 1)
            items.append(item)
        if pos >= len(data):
            raise BencodeError("unterminated list")
        return items, pos + 1
    if c == 0x64:  # d
        result: dict[str, Any] = {}
        pos += 1
        while pos < len(data) and data[pos] != 0x65:
            key, pos = _decode(data, pos, depth + 1)
            if not isinstance(key, str):
                raise BencodeError("dictionary key is not a string")
            result[key], pos = _decode(data, pos, depth + 1)
        if pos >= len(data):
            raise BencodeError("unterminated dictionary")
        return result, pos + 1
    if 0x30 <= c <= 0x39:
        colon = data.find(b":", pos)
        if colon < 0:
            raise BencodeError("bad string length")
        try:
            length = int(data[pos:colon])
        except ValueError:
            raise BencodeError("bad string length") from None
        start = colon + 1
        if start + length > len(data):
            raise BencodeError("string runs past the end")
        return data[start : start + length].decode("utf-8", "surrogateescape"), start + length
    raise BencodeError(f"unexpected byte {c:#x}")
