"""SDP rewriting for the far leg (sans-IO): the origin line is made ansim's own.

The ``o=`` username and session id can carry the sender's identity (many phones put
the number or account there), so each leg gets its own origin: username ``ansim``, a
session id of the leg, and a version that moves exactly when the sender's moves, so
offer/answer ordering (RFC 3264 §8) still holds. ``s=`` becomes ``-``; ``i=``, ``u=``,
``e=`` and ``p=`` lines (free text, URIs, e-mail addresses, phone numbers) are dropped.
Media lines are passed unchanged.
"""

from __future__ import annotations

_DROP = (b"i=", b"u=", b"e=", b"p=")


class OriginRewriter:
    """Origin state of one direction of one leg."""

    __slots__ = ("_base", "_first", "_last", "session_id")

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self._first: int | None = None
        self._base = 1
        self._last = 0  # the last version written, 0 before the first

    def origin(self, version: bytes, nettype_addr: bytes) -> bytes:
        try:
            v = int(version)
        except ValueError:
            v = 0
        if self._first is None:
            self._first = v
        new_version = self._base + max(0, v - self._first)
        self._last = new_version
        return b"o=ansim %d %d %s" % (self.session_id, new_version, nettype_addr)

    def new_sender(self) -> None:
        """The SDP written from now on comes from another party (a failover to the next
        trunk): its versions continue above the last one written, whatever the new
        sender's own numbering."""
        if self._last:
            self._first = None
            self._base = self._last + 1


def rewrite_sdp(body: bytes, origin: OriginRewriter) -> bytes:
    """The SDP ``body`` as the far leg may see it."""
    eol = b"\r\n" if body.find(b"\r\n") >= 0 else b"\n"
    lines = body.split(eol)
    out = []
    for line in lines:
        head = line[:2]
        if head == b"o=":
            parts = line[2:].split(b" ", 3)
            if len(parts) == 4:
                _, _, version, rest = parts
                line = origin.origin(version, rest)
        elif head == b"s=":
            line = b"s=-"
        elif head in _DROP:
            continue
        out.append(line)
    return eol.join(out)
