"""Parsing SIP messages from a UDP datagram or a TCP byte stream (framed by Content-Length).

The parser does the least that every message needs: split the header block into raw
lines, name each line (compact forms mapped to full names), read the start line and
take the body. Everything else is parsed on demand by the message model.
"""

from __future__ import annotations

from .errors import SipParseError
from .headers import COMPACT
from .message import START_NAME, Request, Response, SipMessage

MAX_MESSAGE = 65536
_FOLD_SP = b"\r\n "
_FOLD_TAB = b"\r\n\t"
_COMMON_METHODS = frozenset(
    (b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"PRACK", b"UPDATE", b"INFO", b"REGISTER")
)
_TOKEN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def _unfold(head: bytes) -> bytes:
    """Join continuation lines (RFC 3261 §7.3.1 line folding) onto the line before."""
    lines = head.split(b"\r\n")
    out = [lines[0]]
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t") and len(out) > 1:
            out[-1] = out[-1].rstrip(b" \t") + b" " + line.lstrip(b" \t")
        else:
            out.append(line)
    return b"\r\n".join(out)


# Raw header name (as written on the wire) -> lower-case full name. Bounded so that a
# peer sending endless distinct names cannot grow it without limit.
_NAME_CACHE: dict[bytes, bytes] = {}
_NAME_CACHE_MAX = 4096


def _name_of(raw: bytes) -> bytes:
    """Slow path of header naming: validate, lower-case, expand compact forms, cache."""
    name = raw.rstrip(b" \t").lower()
    if not name or not all(c in _TOKEN for c in name):
        raise SipParseError("malformed header line")
    name = COMPACT.get(name, name)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw] = name
    return name


def _split_head(head: bytes) -> tuple[list[bytes], list[bytes]]:
    if _FOLD_SP in head or _FOLD_TAB in head:
        head = _unfold(head)
    lines = head.split(b"\r\n")
    get = _NAME_CACHE.get
    names: list = [get(line.partition(b":")[0]) for line in lines]
    names[0] = START_NAME
    if None in names:
        for i, name in enumerate(names):
            if name is None:
                line = lines[i]
                if b":" not in line:
                    raise SipParseError("malformed header line")
                names[i] = _name_of(line.partition(b":")[0])
    return lines, names


def _content_length(lines: list[bytes], names: list[bytes]) -> int | None:
    try:
        i = names.index(b"content-length")
    except ValueError:
        return None
    line = lines[i]
    raw = line[line.find(b":") + 1 :].strip()
    if not raw.isdigit() or len(raw) > 9:
        raise SipParseError("bad Content-Length")
    return int(raw)


def _build(lines: list[bytes], names: list[bytes], body: bytes) -> SipMessage:
    start = lines[0]
    if start.startswith(b"SIP/"):
        # Status-Line = SIP-Version SP Status-Code SP Reason-Phrase
        sp1 = start.find(b" ")
        sp2 = start.find(b" ", sp1 + 1)
        code = start[sp1 + 1 :] if sp2 < 0 else start[sp1 + 1 : sp2]
        if sp1 < 0 or len(code) != 3 or not code.isdigit():
            raise SipParseError("malformed status line")
        status = int(code)
        if status < 100:
            raise SipParseError("status code out of range")
        reason = b"" if sp2 < 0 else start[sp2 + 1 :]
        return Response(status, reason, lines, names, body, start[:sp1])
    # Request-Line = Method SP Request-URI SP SIP-Version
    parts = start.split(b" ")
    if len(parts) != 3:
        partial = Request(b"", b"", lines, names, body)
        raise SipParseError("malformed request line", 400, partial)
    method, uri, version = parts
    req = Request(method, uri, lines, names, body, version)
    if method not in _COMMON_METHODS and (not method or not all(c in _TOKEN for c in method)):
        raise SipParseError("malformed method", 400, req)
    if not uri or not version.startswith(b"SIP/"):
        raise SipParseError("malformed request line", 400, req)
    return req


def parse_datagram(data: bytes) -> SipMessage:
    """Parse one message from a UDP datagram; bytes after the body are discarded."""
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message too large", 513)
    end = data.find(b"\r\n\r\n")
    if end < 0:
        # A datagram whose header block lacks the final empty line still delimits the
        # message; take it whole so that it can be answered (with 400 if it is bad).
        if not data.endswith(b"\r\n"):
            raise SipParseError("no end of headers")
        data += b"\r\n"
        end = len(data) - 4
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 §7.5: ignore leading CRLFs
        start += 2
    lines, names = _split_head(data[start:end])
    clen = _content_length(lines, names)
    if clen is None:
        body = data[end + 4 :]
    else:
        available = len(data) - end - 4
        if clen > available:
            msg = _build(lines, names, b"")
            raise SipParseError("Content-Length larger than the datagram", 400, msg)
        body = data[end + 4 : end + 4 + clen]
    return _build(lines, names, body)


class StreamParser:
    """Frames SIP messages out of a TCP byte stream.

    ``feed(data)`` returns the complete messages now available; a partial message stays
    buffered. Double-CRLF keep-alives (RFC 5626) are counted in ``pings`` so the
    transport can answer them with a single CRLF. A framing error is unrecoverable for
    the connection: it raises SipParseError and the caller closes the connection.
    """

    __slots__ = ("_buf", "max_message", "pings")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = b""
        self.max_message = max_message
        self.pings = 0

    def feed(self, data: bytes) -> list[SipMessage | SipParseError]:
        buf = self._buf + data if self._buf else data
        out: list[SipMessage | SipParseError] = []
        pos = 0
        n = len(buf)
        while pos < n:
            while buf.startswith(b"\r\n", pos):
                if buf.startswith(b"\r\n\r\n", pos):
                    self.pings += 1
                    pos += 4
                else:
                    pos += 2
            if pos >= n:
                break
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > self.max_message:
                    raise SipParseError("message too large", 513)
                break
            lines, names = _split_head(buf[pos:end])
            clen = _content_length(lines, names)
            if clen is None:
                clen = 0
            if end + 4 - pos + clen > self.max_message:
                raise SipParseError("message too large", 513)
            if end + 4 + clen > n:
                break
            body = buf[end + 4 : end + 4 + clen]
            pos = end + 4 + clen
            try:
                out.append(_build(lines, names, body))
            except SipParseError as exc:
                out.append(exc)
        self._buf = buf[pos:] if pos < n else b""
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
