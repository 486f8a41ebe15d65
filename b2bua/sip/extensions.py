"""Option tags and session-timer headers as ansim writes them toward a leg (sans-IO).

``Supported`` toward a leg is what the other side offered and ansim implements
(``validate.IMPLEMENTED_OPTIONS``), in ansim's order; ``Require`` likewise, and in a
response only what the request being answered offered. ``Session-Expires`` and
``Min-SE`` are rebuilt from their parsed values (delta-seconds, and ``refresher=uac|uas``
only). ``RSeq`` is written from its parsed number. Nothing here copies a value as it
came: a tag is written from ansim's own list, a number from the integer parsed.
"""

from __future__ import annotations

from .headers import split_values
from .message import SipMessage
from .validate import IMPLEMENTED_OPTIONS

# What may be offered or required outside the initial INVITE: ansim maps reliable
# provisional responses (100rel) only for the initial INVITE's.
IN_DIALOG_OPTIONS = (b"timer",)
_MAX_DELTA = 2**32 - 1


def option_tags(msg: SipMessage, name: bytes) -> list[bytes]:
    """The option tags of every ``name`` header of ``msg``, in lower case."""
    out: list[bytes] = []
    for value in msg.get_all(name):
        for tag in split_values(value):
            if tag:
                out.append(tag.lower())
    return out


def _write(tags: list[bytes], allowed: tuple[bytes, ...]) -> bytes | None:
    kept = [tag for tag in allowed if tag in tags]
    return b", ".join(kept) if kept else None


def supported(msg: SipMessage, allowed: tuple[bytes, ...] = IMPLEMENTED_OPTIONS) -> bytes | None:
    """The Supported value for the other leg: ``msg``'s offer that ansim implements."""
    if b"supported" not in msg.names:
        return None
    return _write(option_tags(msg, b"supported"), allowed)


def required(
    msg: SipMessage,
    allowed: tuple[bytes, ...] = IMPLEMENTED_OPTIONS,
    request: SipMessage | None = None,
) -> bytes | None:
    """The Require value for the other leg. For a response, ``request`` is the request
    it answers on that leg: only what that request offered may be required of it."""
    if b"require" not in msg.names:
        return None
    tags = option_tags(msg, b"require")
    if request is not None:
        offered = option_tags(request, b"supported") + option_tags(request, b"require")
        tags = [tag for tag in tags if tag in offered]
    return _write(tags, allowed)


def _delta(raw: bytes) -> int:
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 10:
        return -1
    n = int(raw)
    return n if 0 < n <= _MAX_DELTA else -1


def session_expires(msg: SipMessage) -> bytes | None:
    """Session-Expires (RFC 4028) rebuilt: the interval and a refresher of uac or uas."""
    value = msg.get(b"session-expires")
    if value is None:
        return None
    head, _, params = value.partition(b";")
    delta = _delta(head)
    if delta < 0:
        return None
    for param in params.split(b";"):
        name, _, v = param.partition(b"=")
        if name.strip().lower() == b"refresher":
            who = v.strip().lower()
            if who == b"uac" or who == b"uas":
                return b"%d;refresher=%s" % (delta, who)
    return b"%d" % delta


def min_se(msg: SipMessage) -> bytes | None:
    """Min-SE (RFC 4028) rebuilt: the interval."""
    value = msg.get(b"min-se")
    if value is None:
        return None
    delta = _delta(value.partition(b";")[0])
    return b"%d" % delta if delta >= 0 else None


def rseq(msg: SipMessage) -> bytes | None:
    """RSeq (RFC 3262) rebuilt: the response number."""
    value = msg.get(b"rseq")
    if value is None:
        return None
    n = _delta(value)
    return b"%d" % n if n >= 0 else None


def unsupported(msg: SipMessage) -> bytes | None:
    """Unsupported (a 420's list) toward the other leg: the tags ansim itself sent."""
    if b"unsupported" not in msg.names:
        return None
    return _write(option_tags(msg, b"unsupported"), IMPLEMENTED_OPTIONS)
