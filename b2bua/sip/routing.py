"""Where a response goes (RFC 3261 §18.2.2 with RFC 3581 rport), as a pure function."""

from __future__ import annotations

from .via import Via

Peer = tuple[str, str, int]  # (transport "udp"/"tcp", host, port)


def response_destination(via: Via, source: Peer, *, symmetric: bool) -> Peer:
    """The peer to send a response to, given the request's top Via and where it came from.

    Over a stream the response goes back to the source (the transport reuses the
    connection). Over UDP: to the source address and port when rport was asked for or
    ``symmetric`` is set; otherwise to the ``received`` address (the source address)
    and the Via port, or 5060.
    """
    proto, host, _ = source
    if proto != "udp" or symmetric or via.has_rport:
        return source
    return (proto, host, via.port or 5060)


def stamp_received(via_line_value: bytes, via: Via, source: Peer) -> bytes | None:
    """The top Via value with ``received`` (and the ``rport`` value) added, or None when
    unchanged (§18.2.1: received when sent-by differs from the source address)."""
    _, host, port = source
    hostb = host.encode()
    add = b""
    if via.host != hostb and b"received" not in via.params:
        add += b";received=" + hostb
    if via.has_rport and via.rport is None:
        value = via_line_value.replace(b";rport", b";rport=%d" % port, 1)
        return value + add
    return via_line_value + add if add else None
