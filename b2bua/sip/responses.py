"""Building responses to requests (RFC 3261 §8.2.6), used for stateless and UAS replies."""

from __future__ import annotations

from .message import START_NAME, Request, Response

REASONS: dict[int, bytes] = {
    100: b"Trying", 180: b"Ringing", 181: b"Call Is Being Forwarded", 182: b"Queued",
    183: b"Session Progress", 200: b"OK", 202: b"Accepted", 400: b"Bad Request",
    401: b"Unauthorized", 403: b"Forbidden", 404: b"Not Found", 405: b"Method Not Allowed",
    406: b"Not Acceptable", 407: b"Proxy Authentication Required", 408: b"Request Timeout", 410: b"Gone", 415: b"Unsupported Media Type",
    416: b"Unsupported URI Scheme", 420: b"Bad Extension", 423: b"Interval Too Brief", 480: b"Temporarily Unavailable",
    481: b"Call/Transaction Does Not Exist", 482: b"Loop Detected", 483: b"Too Many Hops",
    486: b"Busy Here", 487: b"Request Terminated", 488: b"Not Acceptable Here",
    491: b"Request Pending", 500: b"Server Internal Error", 501: b"Not Implemented",
    502: b"Bad Gateway", 503: b"Service Unavailable", 504: b"Server Time-out",
    505: b"Version Not Supported", 513: b"Message Too Large", 600: b"Busy Everywhere",
    603: b"Decline", 604: b"Does Not Exist Anywhere", 606: b"Not Acceptable",
}  # fmt: skip

_COPIED = (b"via", b"from", b"call-id", b"cseq")


def make_response(
    req: Request,
    status: int,
    reason: bytes | None = None,
    *,
    to_tag: bytes | None = None,
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response to ``req``: Via lines, From, Call-ID, CSeq copied; To copied with
    ``to_tag`` added when it has none (never for 100 Trying)."""
    if reason is None:
        reason = REASONS.get(status, b"Unknown")
    lines = [b"SIP/2.0 %d %s" % (status, reason)]
    names = [START_NAME]
    src_lines = req.lines
    for i, name in enumerate(req.names):
        if name in _COPIED:
            lines.append(src_lines[i])
            names.append(name)
        elif name == b"to":
            line = src_lines[i]
            if to_tag is not None and status != 100 and line.lower().find(b";tag=") < 0:
                # "tag" is matched case-insensitively above; a To without it gets ours.
                line = line + b";tag=" + to_tag
            lines.append(line)
            names.append(name)
    resp = Response(status, reason, lines, names, body)
    if headers:
        for name, value in headers:
            resp.add(name, value)
    return resp
