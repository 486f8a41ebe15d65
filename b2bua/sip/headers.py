"""Header names: compact forms, canonical spellings, and splitting of comma-separated values."""

from __future__ import annotations

# RFC 3261 §7.3.3 and later RFCs' compact forms, mapped to lower-case full names.
COMPACT: dict[bytes, bytes] = {
    b"v": b"via",
    b"f": b"from",
    b"t": b"to",
    b"i": b"call-id",
    b"m": b"contact",
    b"l": b"content-length",
    b"c": b"content-type",
    b"k": b"supported",
    b"s": b"subject",
    b"e": b"content-encoding",
    b"o": b"event",
    b"r": b"refer-to",
    b"u": b"allow-events",
    b"x": b"session-expires",
    b"y": b"identity",
    b"b": b"referred-by",
    b"a": b"accept-contact",
    b"d": b"request-disposition",
    b"j": b"reject-contact",
}

# Spellings used when ansim writes a header itself.
_CANONICAL: dict[bytes, bytes] = {
    n.lower(): n
    for n in (
        b"Call-ID",
        b"CSeq",
        b"WWW-Authenticate",
        b"RAck",
        b"RSeq",
        b"P-Asserted-Identity",
        b"P-Preferred-Identity",
        b"Min-SE",
        b"MIME-Version",
        b"SIP-ETag",
        b"SIP-If-Match",
    )
}

# Headers that may appear at most once in a request (RFC 3261 §7.3.1 / §20).
SINGLE_VALUED: tuple[bytes, ...] = (
    b"from",
    b"to",
    b"call-id",
    b"cseq",
    b"max-forwards",
    b"content-length",
    b"content-type",
)


def canonical(name: bytes) -> bytes:
    """The spelling ansim uses on the wire for lower-case header name ``name``."""
    spelled = _CANONICAL.get(name)
    if spelled is None:
        spelled = b"-".join([part.capitalize() for part in name.split(b"-")])
        _CANONICAL[name] = spelled
    return spelled


def split_values(value: bytes) -> list[bytes]:
    """Split a header value on commas that are outside quotes and angle brackets."""
    if value.find(b",") < 0:
        return [value.strip()]
    out: list[bytes] = []
    start = 0
    quoted = False
    angle = False
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if quoted:
            if ch == 0x5C:  # backslash escapes the next char inside quotes
                i += 1
            elif ch == 0x22:
                quoted = False
        elif ch == 0x22:
            quoted = True
        elif ch == 0x3C:
            angle = True
        elif ch == 0x3E:
            angle = False
        elif ch == 0x2C and not angle:
            out.append(value[start:i].strip())
            start = i + 1
        i += 1
    out.append(value[start:].strip())
    return out
