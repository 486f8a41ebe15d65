"""The syntax SDP field values are checked against before ansim writes them (sans-IO):
character classes, bounded integers, tokens, and media addresses.

A value that passes is re-serialized from what was parsed (an integer as ``%d``, a word
from a fixed set in its registered spelling); one that does not is left out.
"""

from __future__ import annotations

import ipaddress

DIGITS = b"0123456789"
ALPHA = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
TOKEN = ALPHA + DIGITS + b"-_."
BASE64 = ALPHA + DIGITS + b"+/="
HEX = b"0123456789abcdefABCDEF"
_HOST = ALPHA + DIGITS + b"-"
_WORD = ALPHA + b"-/_."
# A telephone number has at least this many digits (E.164 subscriber numbers: 7 or more).
NUMBER_DIGITS = 7


def only(value: bytes, chars: bytes) -> bool:
    """Whether ``value`` is non-empty and made of ``chars`` only."""
    return bool(value) and not value.translate(None, chars)


def uint(value: bytes, limit: int) -> int:
    """``value`` as a decimal integer in 0..limit, or -1."""
    if len(value) > 20 or not value.isdigit():  # bytes.isdigit: ASCII digits only
        return -1
    n = int(value)
    return n if n <= limit else -1


def is_token(value: bytes, max_len: int = 32) -> bool:
    return len(value) <= max_len and only(value, TOKEN)


def is_word(value: bytes, max_len: int = 32) -> bool:
    """A name of letters (and '-', '/', '_', '.'), starting with a letter: it cannot
    hold digits, so cannot hold a number."""
    return len(value) <= max_len and only(value, _WORD) and value[0:1].isalpha()


def digit_count(value: bytes) -> int:
    return len(value) - len(value.translate(None, DIGITS))


# -- addresses -------------------------------------------------------------------------

IP4 = b"IP4"
IP6 = b"IP6"
Address = tuple[bytes, bytes]  # (IP4 | IP6, address)
_IP6_KNOWN: dict[bytes, bool] = {}


def _ip4(value: bytes) -> bool:
    parts = value.split(b".")
    if len(parts) != 4:
        return False
    return all(len(part) <= 3 and part.isdigit() and int(part) <= 255 for part in parts)


def _ip6(value: bytes) -> bool:
    known = _IP6_KNOWN.get(value)
    if known is None:
        known = len(value) <= 45 and only(value, HEX + b":.")
        if known:
            try:
                ipaddress.IPv6Address(value.decode("ascii"))
            except ValueError:
                known = False
        if len(_IP6_KNOWN) < 4096:
            _IP6_KNOWN[value] = known
    return known


def _hostname(value: bytes) -> bool:
    """A strict RFC 1123 host name (letter-digit-hyphen labels, the last not numeric)
    with fewer digits than a telephone number: with media end to end the far party is
    sent the name as written, and a name can be made of anything."""
    if len(value) > 253 or digit_count(value) >= NUMBER_DIGITS:
        return False
    labels = value.split(b".")
    for label in labels:
        if not label or len(label) > 63 or not only(label, _HOST):
            return False
        if label[0] == 0x2D or label[-1] == 0x2D:
            return False
    return not only(labels[-1], DIGITS)


def valid_address(addrtype: bytes, address: bytes) -> bool:
    """Whether ``address`` may be written as a unicast media address of ``addrtype``."""
    if addrtype == IP4:
        return _ip4(address) or (not only(address, DIGITS + b".") and _hostname(address))
    if addrtype == IP6:
        return _ip6(address) or (address.find(b":") < 0 and _hostname(address))
    return False


def parse_connection(value: bytes) -> Address | None:
    """``IN IP4 192.0.2.1`` parsed, or None (multicast TTL/count suffixes are refused)."""
    parts = value.split()
    if len(parts) != 3 or parts[0] != b"IN":
        return None
    addrtype = parts[1].upper()
    address = parts[2]
    if not valid_address(addrtype, address):
        return None
    return (addrtype, address)


def address_type(address: bytes) -> bytes:
    """IP6 for an address with a colon, IP4 otherwise (an IPv4 literal or a host name)."""
    return IP6 if address.find(b":") >= 0 else IP4
