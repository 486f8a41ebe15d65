"""SIP requests and responses: header access by name, raw header lines kept for free forwarding.

A message holds its start line and header lines as the raw bytes they arrived as
(``lines[0]`` is the start line), a parallel list of lower-case full header names,
and the body. Reading a header slices its raw line; untouched headers are written
back byte for byte. Fields the transaction and dialog layers use on every message
(top Via, Call-ID, CSeq, tags) are parsed once, on first use.
"""

from __future__ import annotations

from .errors import SipParseError
from .headers import canonical, split_values
from .uri import NameAddr, Uri, parse_name_addr, parse_uri
from .via import Via, parse_via

_START = b":start"  # name slot of lines[0], never a real header name


class SipMessage:
    """Common part of requests and responses."""

    __slots__ = ("_call_id", "_cseq", "_from", "_to", "_via", "body", "lines", "names")

    def __init__(self, lines: list[bytes], names: list[bytes], body: bytes = b"") -> None:
        self.lines = lines
        self.names = names
        self.body = body
        self._call_id: bytes | None = None
        self._via: Via | None = None
        self._cseq: tuple[int, bytes] | None = None
        self._from: NameAddr | None = None
        self._to: NameAddr | None = None

    # -- header access -----------------------------------------------------------------
    def get(self, name: bytes) -> bytes | None:
        """Value of the first ``name`` header (lower-case full name), or None."""
        names = self.names
        if name not in names:  # cheaper than catching ValueError from index()
            return None
        line = self.lines[names.index(name)]
        return line[line.find(b":") + 1 :].strip()

    def get_all(self, name: bytes) -> list[bytes]:
        """Values of every ``name`` header line, in order (not split on commas)."""
        lines = self.lines
        out = []
        for i, n in enumerate(self.names):
            if n == name:
                line = lines[i]
                out.append(line[line.find(b":") + 1 :].strip())
        return out

    def values(self, name: bytes) -> list[bytes]:
        """Every value of a multi-valued header, split on commas, across repeated lines."""
        out: list[bytes] = []
        for v in self.get_all(name):
            out.extend(split_values(v))
        return out

    def has(self, name: bytes) -> bool:
        return name in self.names

    def count(self, name: bytes) -> int:
        return self.names.count(name)

    def set(self, name: bytes, value: bytes) -> None:
        """Replace every ``name`` header with one line holding ``value`` (append if absent)."""
        line = canonical(name) + b": " + value
        names = self.names
        lines = self.lines
        if name not in names:
            names.append(name)
            lines.append(line)
        else:
            i = names.index(name)
            lines[i] = line
            for _ in range(names.count(name) - 1):
                j = names.index(name, i + 1)
                del names[j]
                del lines[j]
        self._invalidate(name)

    def add(self, name: bytes, value: bytes, *, first: bool = False) -> None:
        """Add a ``name`` header line; with ``first`` before any existing one of that name."""
        line = canonical(name) + b": " + value
        names = self.names
        if first and name in names:
            i = names.index(name)
            names.insert(i, name)
            self.lines.insert(i, line)
        else:
            names.append(name)
            self.lines.append(line)
        self._invalidate(name)

    def remove(self, name: bytes) -> int:
        """Remove every ``name`` header line; returns how many were removed."""
        names = self.names
        removed = names.count(name)
        for _ in range(removed):
            i = names.index(name)
            del names[i]
            del self.lines[i]
        if removed:
            self._invalidate(name)
        return removed

    def remove_first(self, name: bytes) -> bytes | None:
        """Remove the first ``name`` line and return its value."""
        if name not in self.names:
            return None
        i = self.names.index(name)
        line = self.lines.pop(i)
        del self.names[i]
        self._invalidate(name)
        return line[line.find(b":") + 1 :].strip()

    def _invalidate(self, name: bytes) -> None:
        if name == b"via":
            self._via = None
        elif name == b"cseq":
            self._cseq = None
        elif name == b"from":
            self._from = None
        elif name == b"to":
            self._to = None
        elif name == b"call-id":
            self._call_id = None

    def header_items(self) -> list[tuple[bytes, bytes]]:
        """(lower-case name, value) of every header line, in order."""
        out = []
        for i in range(1, len(self.lines)):
            line = self.lines[i]
            out.append((self.names[i], line[line.find(b":") + 1 :].strip()))
        return out

    def forget_parsed(self) -> None:
        """Drop the parsed forms of header fields (they are parsed again if read): for a
        message kept for its whole call after the layers that read them are done."""
        self._via = self._from = self._to = None
        self._cseq = None

    # -- fields every layer needs --------------------------------------------------------
    @property
    def via(self) -> Via:
        """The top Via, parsed (raises SipParseError if absent or malformed)."""
        v = self._via
        if v is None:
            raw = self.get(b"via")
            if raw is None:
                raise SipParseError("missing Via")
            comma = raw.find(b",")
            v = parse_via(raw if comma < 0 else split_values(raw)[0])
            self._via = v
        return v

    @property
    def call_id(self) -> bytes:
        v = self._call_id
        if v is None:
            v = self.get(b"call-id")
            if not v:
                raise SipParseError("missing Call-ID")
            self._call_id = v
        return v

    @property
    def cseq(self) -> tuple[int, bytes]:
        """(sequence number, method) of the CSeq header."""
        c = self._cseq
        if c is None:
            raw = self.get(b"cseq")
            if raw is None:
                raise SipParseError("missing CSeq")
            num, _, method = raw.partition(b" ")
            method = method.strip()
            if not method or not num.isdigit():  # LWS other than one SP (slow path)
                parts = raw.split(None, 1)
                if len(parts) == 2:
                    num, method = parts
            if not num.isdigit() or not method or len(num) > 10 or int(num) >= 2**31:
                raise SipParseError("bad CSeq")
            c = (int(num), method)
            self._cseq = c
        return c

    @property
    def from_(self) -> NameAddr:
        f = self._from
        if f is None:
            raw = self.get(b"from")
            if raw is None:
                raise SipParseError("missing From")
            f = parse_name_addr(raw)
            self._from = f
        return f

    @property
    def to(self) -> NameAddr:
        t = self._to
        if t is None:
            raw = self.get(b"to")
            if raw is None:
                raise SipParseError("missing To")
            t = parse_name_addr(raw)
            self._to = t
        return t

    @property
    def from_tag(self) -> bytes | None:
        return self.from_.tag

    @property
    def to_tag(self) -> bytes | None:
        return self.to.tag

    # -- output --------------------------------------------------------------------------
    def serialize(self) -> bytes:
        """The message as bytes, with Content-Length set from the body."""
        body = self.body
        names = self.names
        if b"content-length" in names:
            i = names.index(b"content-length")
            line = self.lines[i]
            if int(line[line.find(b":") + 1 :]) != len(body) or names.count(b"content-length") > 1:
                self.set(b"content-length", str(len(body)).encode())
        else:
            names.append(b"content-length")
            self.lines.append(b"Content-Length: " + str(len(body)).encode())
        return b"\r\n".join(self.lines) + b"\r\n\r\n" + body

    def __bytes__(self) -> bytes:
        return self.serialize()


class Request(SipMessage):
    """A SIP request: method, Request-URI (raw bytes), version."""

    __slots__ = ("_ruri", "method", "uri", "version")

    def __init__(
        self,
        method: bytes,
        uri: bytes,
        lines: list[bytes] | None = None,
        names: list[bytes] | None = None,
        body: bytes = b"",
        version: bytes = b"SIP/2.0",
    ) -> None:
        if lines is None:
            lines = [method + b" " + uri + b" " + version]
            names = [_START]
        super().__init__(lines, names or [_START], body)
        self.method = method
        self.uri = uri
        self.version = version
        self._ruri: Uri | None = None

    @property
    def ruri(self) -> Uri:
        """The Request-URI, parsed once (raises SipParseError when malformed)."""
        u = self._ruri
        if u is None:
            u = self._ruri = parse_uri(self.uri)
        return u

    def set_uri(self, uri: bytes) -> None:
        self._ruri = None
        self.uri = uri
        self.lines[0] = self.method + b" " + uri + b" " + self.version

    def __repr__(self) -> str:
        return f"<Request {self.method.decode()} {self.uri.decode(errors='replace')}>"


class Response(SipMessage):
    """A SIP response: status code and reason phrase."""

    __slots__ = ("reason", "status", "version")

    def __init__(
        self,
        status: int,
        reason: bytes,
        lines: list[bytes] | None = None,
        names: list[bytes] | None = None,
        body: bytes = b"",
        version: bytes = b"SIP/2.0",
    ) -> None:
        if lines is None:
            lines = [b"SIP/2.0 %d %s" % (status, reason)]
            names = [_START]
        super().__init__(lines, names or [_START], body)
        self.status = status
        self.reason = reason
        self.version = version

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason.decode(errors='replace')}>"


START_NAME = _START
