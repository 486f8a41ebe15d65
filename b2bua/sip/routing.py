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
    """The Via header value ``via_line_value`` (whose first value is ``via``, the top Via)
    with ``received`` and the ``rport`` value set on the top Via, or None when unchanged.

    RFC 3261 §18.2.1: ``received`` when sent-by differs from the source address.
    RFC 3581 §4: an empty ``rport`` gets the source port, and then ``received`` is
    added even when it equals sent-by. Later Via values on the same line are kept.
    """
    _, host, port = source
    hostb = host.encode()
    want_rport = via.has_rport and via.rport is None
    if not want_rport and (via.host == hostb or via.received == hostb):
        return None
    top = via.raw
    if not via_line_value.startswith(top):
        return None
    parts = top.split(b";")
    out = [parts[0].rstrip()]
    for part in parts[1:]:
        name = part.partition(b"=")[0].strip().lower()
        if name == b"received":
            continue  # replaced by the address the request came from
        if name == b"rport" and want_rport:
            part = b"rport=%d" % port
        out.append(part)
    out.append(b"received=" + hostb)
    return b";".join(out) + via_line_value[len(top) :]
