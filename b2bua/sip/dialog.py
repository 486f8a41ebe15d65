"""Dialog state (RFC 3261 §12) and building requests inside a dialog, sans-IO.

A ``Dialog`` holds what both sides agreed on: Call-ID, local and remote tags, the
local and remote URIs as written in From/To, CSeq counters, the remote target and the
route set. ``request()`` builds an in-dialog request with a fresh Via branch.
"""

from __future__ import annotations

from .message import START_NAME, Request
from .uri import parse_name_addr


class Dialog:
    """One side's view of a dialog."""

    __slots__ = (
        "call_id",
        "local_cseq",
        "local_tag",
        "local_uri",
        "remote_cseq",
        "remote_tag",
        "remote_target",
        "remote_uri",
        "route_set",
    )

    def __init__(
        self,
        call_id: bytes,
        local_uri: bytes,
        local_tag: bytes,
        remote_uri: bytes,
        remote_tag: bytes | None,
        remote_target: bytes,
        route_set: list[bytes] | None = None,
        local_cseq: int = 0,
        remote_cseq: int = 0,
    ) -> None:
        self.call_id = call_id
        self.local_uri = local_uri  # name-addr as written in our From, without the tag
        self.local_tag = local_tag
        self.remote_uri = remote_uri  # name-addr as written in our To, without the tag
        self.remote_tag = remote_tag
        self.remote_target = remote_target
        self.route_set = route_set or []
        self.local_cseq = local_cseq
        self.remote_cseq = remote_cseq

    def request(
        self,
        method: bytes,
        via: bytes,
        *,
        cseq: int | None = None,
        contact: bytes | None = None,
        max_forwards: int = 70,
    ) -> Request:
        """A request in this dialog. ``via`` is the complete Via value (with branch).
        A new CSeq is taken unless ``cseq`` is given (ACK and CANCEL reuse one)."""
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        target = self.remote_target
        lines = [
            method + b" " + target + b" SIP/2.0",
            b"Via: " + via,
            b"Max-Forwards: %d" % max_forwards,
        ]
        names = [START_NAME, b"via", b"max-forwards"]
        for route in self.route_set:
            lines.append(b"Route: " + route)
            names.append(b"route")
        lines.append(b"From: " + self.local_uri + b";tag=" + self.local_tag)
        to = b"To: " + self.remote_uri
        if self.remote_tag:
            to += b";tag=" + self.remote_tag
        lines.append(to)
        lines.append(b"Call-ID: " + self.call_id)
        lines.append(b"CSeq: %d %s" % (cseq, method))
        names += [b"from", b"to", b"call-id", b"cseq"]
        if contact is not None:
            lines.append(b"Contact: " + contact)
            names.append(b"contact")
        return Request(method, target, lines, names)

    def next_hop_uri(self) -> bytes:
        """The URI that decides where the request is sent: the first route, or the target."""
        if self.route_set:
            return parse_name_addr(self.route_set[0]).uri_raw
        return self.remote_target


def without_tag(name_addr: bytes) -> bytes:
    """A From/To value with its tag parameter removed."""
    low = name_addr.lower()
    i = low.find(b";tag=")
    if i < 0:
        return name_addr
    j = name_addr.find(b";", i + 1)
    return name_addr[:i] + (name_addr[j:] if j >= 0 else b"")
