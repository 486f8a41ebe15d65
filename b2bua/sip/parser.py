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
_BAD_NAME = b""  # name slot of a malformed header line (never a real header name)


def _name_of(line: bytes) -> bytes | None:
    """Slow path of header naming: validate, lower-case, expand compact forms, cache.
    None for a malformed line."""
    raw, colon, _ = line.partition(b":")
    name = raw.rstrip(b" \t").lower()
    if not colon or not name or not all(c in _TOKEN for c in name):
        return None
    name = COMPACT.get(name, name)
    if len(_NAME_CACHE) < _NAME_CACHE_MAX:
        _NAME_CACHE[raw] = name
    return name


def _split_head(head: bytes) -> tuple[list[bytes], list[bytes], bool]:
    """The header block as (raw lines, lower-case full names, whether a line is malformed).

    A malformed line is named ``_BAD_NAME`` so that the rest of the message can still
    address a 400 to its sender."""
    if head.find(_FOLD_SP) >= 0 or head.find(_FOLD_TAB) >= 0:
        head = _unfold(head)
    lines = head.split(b"\r\n")
    get = _NAME_CACHE.get
    names: list = [get(line.partition(b":")[0]) for line in lines]
    names[0] = START_NAME
    if None in names:
        bad = False
        for i, name in enumerate(names):
            if name is None:
                name = _name_of(lines[i])
                if name is None:
                    bad = True
                    name = _BAD_NAME
                names[i] = name
        return lines, names, bad
    return lines, names, False


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


def _partial(lines: list[bytes], names: list[bytes]) -> SipMessage | None:
    """As much of a failed message as can address a reply to its sender."""
    try:
        return _build(lines, names, b"")
    except SipParseError as exc:
        return exc.message


def _response(start: bytes, lines: list[bytes], names: list[bytes], body: bytes) -> Response:
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


def _build(lines: list[bytes], names: list[bytes], body: bytes) -> SipMessage:
    start = lines[0]
    if start.startswith(b"SIP/"):
        return _response(start, lines, names, body)
    # Request-Line = Method SP Request-URI SP SIP-Version
    parts = start.split(b" ")
    if len(parts) != 3 or (
        parts[0] not in _COMMON_METHODS and (not parts[0] or not all(c in _TOKEN for c in parts[0]))
    ):
        # SIP-Version is case-insensitive (RFC 3261 §7.1): "sip/2.0 200 OK" is a response.
        if start[:4].upper() == b"SIP/":
            return _response(start, lines, names, body)
        if len(parts) != 3:
            partial = Request(b"", b"", lines, names, body)
            raise SipParseError("malformed request line", 400, partial)
        partial = Request(parts[0], parts[1], lines, names, body, parts[2])
        raise SipParseError("malformed method", 400, partial)
    method, uri, version = parts
    req = Request(method, uri, lines, names, body, version)
    if not uri or not (version.startswith(b"SIP/") or version[:4].upper() == b"SIP/"):
        raise SipParseError("malformed request line", 400, req)
    return req


def parse_datagram(data: bytes) -> SipMessage:
    """Parse one message from a UDP datagram; bytes after the body are discarded.

    A failure raises SipParseError; its ``message`` holds what was parsed when that is
    enough to answer the sender (a request with a Via), so that it can get its 400.
    """
    if len(data) > MAX_MESSAGE:
        raise SipParseError("message too large", 513)
    start = 0
    while data.startswith(b"\r\n", start):  # RFC 3261 §7.5: ignore leading CRLFs
        start += 2
    if start >= len(data):
        raise SipParseError("empty message")
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        # A datagram whose header block lacks the final empty line still delimits the
        # message; take it whole so that it can be answered (with 400 if it is bad).
        if not data.endswith(b"\r\n"):
            raise SipParseError("no end of headers")
        data += b"\r\n"
        end = len(data) - 4
    lines, names, bad = _split_head(data[start:end])
    try:
        clen = _content_length(lines, names)
    except SipParseError as exc:
        raise SipParseError(exc.reason, 400, _partial(lines, names)) from None
    if bad:
        raise SipParseError("malformed header line", 400, _partial(lines, names))
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

    ``feed(data)`` returns the complete messages now available, in order; a partial
    message stays buffered (bytes arriving one at a time cost linear time overall). A
    message that is framed but malformed comes back as a SipParseError in the list,
    carrying what was parsed so that it can be answered. Double-CRLF keep-alives
    (RFC 5626) are counted in ``pings`` so the transport can answer them with a single
    CRLF. A framing error (bad Content-Length, message over ``max_message``) is
    unrecoverable for the connection: ``feed`` raises SipParseError (after returning
    the messages framed before it, if any) and the caller closes the connection.
    """

    __slots__ = ("_buf", "_error", "_need", "_scan", "max_message", "pings")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._scan = 0  # where the search for the end of the buffered header resumes
        self._need = 0  # length of the buffered message once its header is known
        self._error: SipParseError | None = None
        self.max_message = max_message
        self.pings = 0

    def feed(self, data: bytes) -> list[SipMessage | SipParseError]:
        if self._error is not None:
            raise self._error
        pending = self._buf
        if pending:
            pending += data
            if self._need:
                if len(pending) < self._need:
                    return []
            elif pending.find(b"\r\n\r\n", self._scan) < 0:
                if len(pending) > self.max_message:
                    raise SipParseError("message too large", 513)
                self._scan = max(0, len(pending) - 3)
                return []
            data = bytes(pending)
            self._buf = bytearray()
            self._scan = self._need = 0
        elif not data:
            return []
        return self._frame(data)

    def _frame(self, buf: bytes) -> list[SipMessage | SipParseError]:
        out: list[SipMessage | SipParseError] = []
        pos = 0
        n = len(buf)
        while pos < n:
            if buf[pos] == 13:  # CR: keep-alive CRLFs between messages
                if buf.startswith(b"\r\n\r\n", pos):
                    self.pings += 1
                    pos += 4
                    continue
                if n - pos < 4 and b"\r\n\r\n".startswith(buf[pos:]):
                    break  # maybe the start of a keep-alive: wait for the rest
                if buf.startswith(b"\r\n", pos):
                    pos += 2
                    continue
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                if n - pos > self.max_message:
                    return self._fail(out, SipParseError("message too large", 513))
                self._scan = max(0, n - pos - 3)
                break
            lines, names, bad = _split_head(buf[pos:end])
            try:
                clen = _content_length(lines, names) or 0
            except SipParseError as exc:
                return self._fail(out, SipParseError(exc.reason, 400, _partial(lines, names)))
            size = end + 4 - pos + clen
            if size > self.max_message:
                too_large = SipParseError("message too large", 513, _partial(lines, names))
                return self._fail(out, too_large)
            if end + 4 + clen > n:
                self._need = size
                break
            body = buf[end + 4 : end + 4 + clen]
            pos = end + 4 + clen
            if bad:
                out.append(SipParseError("malformed header line", 400, _partial(lines, names)))
                continue
            try:
                out.append(_build(lines, names, body))
            except SipParseError as exc:
                out.append(exc)
        if pos < n:
            self._buf = bytearray(buf[pos:])
        return out

    def _fail(
        self, out: list[SipMessage | SipParseError], exc: SipParseError
    ) -> list[SipMessage | SipParseError]:
        """A framing error: nothing after it can be trusted. Hand over what came before
        and raise on the next ``feed``, or raise now when there is nothing to hand over."""
        self._buf = bytearray()
        self._scan = self._need = 0
        if not out:
            raise exc
        self._error = exc
        return out

    @property
    def buffered(self) -> int:
        return len(self._buf)
