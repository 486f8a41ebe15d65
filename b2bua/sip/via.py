"""The Via header: sent-protocol, sent-by, and the branch/received/rport parameters."""

from __future__ import annotations

from .errors import SipParseError
from .uri import parse_params

MAGIC_COOKIE = b"z9hG4bK"


class Via:
    """One parsed Via value."""

    __slots__ = ("host", "params", "port", "raw", "transport")

    def __init__(
        self,
        raw: bytes,
        transport: bytes,
        host: bytes,
        port: int | None,
        params: dict[bytes, bytes | None],
    ) -> None:
        self.raw = raw
        self.transport = transport
        self.host = host
        self.port = port
        self.params = params

    @property
    def branch(self) -> bytes | None:
        return self.params.get(b"branch")

    @property
    def rfc3261_branch(self) -> bool:
        """True when the branch carries the RFC 3261 magic cookie (and so identifies the transaction)."""
        b = self.params.get(b"branch")
        return b is not None and b.startswith(MAGIC_COOKIE)

    @property
    def received(self) -> bytes | None:
        return self.params.get(b"received")

    @property
    def has_rport(self) -> bool:
        return b"rport" in self.params

    @property
    def rport(self) -> int | None:
        v = self.params.get(b"rport")
        return int(v) if v is not None and v.isdigit() else None

    def __repr__(self) -> str:
        return f"<Via {self.raw.decode(errors='replace')}>"


def parse_via(raw: bytes) -> Via:
    """Parse one Via value such as ``SIP/2.0/UDP host:5060;branch=z9hG4bK...;rport``."""
    value = raw.strip()
    slash1 = value.find(b"/")
    slash2 = value.find(b"/", slash1 + 1)
    if slash1 < 0 or slash2 < 0:
        raise SipParseError("malformed Via")
    name = value[:slash1].strip()
    version = value[slash1 + 1 : slash2].strip()
    if not name or not version:
        raise SipParseError("malformed Via protocol")
    rest = value[slash2 + 1 :].lstrip()
    sp = 0
    n = len(rest)
    while sp < n and rest[sp] not in b" \t":
        sp += 1
    transport = rest[:sp].upper()
    if not transport:
        raise SipParseError("Via without transport")
    sentby = rest[sp:].lstrip()
    semi = sentby.find(b";")
    hostport = (sentby if semi < 0 else sentby[:semi]).strip()
    if not hostport or hostport.find(b",") >= 0 or hostport.find(b" ") >= 0:
        raise SipParseError("malformed Via sent-by")
    port: int | None = None
    if hostport[0] == 0x5B:
        close = hostport.find(b"]")
        if close < 0:
            raise SipParseError("malformed Via IPv6 host")
        host = hostport[: close + 1]
        tail = hostport[close + 1 :]
        if tail:
            port = _via_port(tail[1:] if tail[0] == 0x3A else b"x")
    else:
        c = hostport.find(b":")
        if c >= 0:
            port = _via_port(hostport[c + 1 :])
            host = hostport[:c]
        else:
            host = hostport
    if not host:
        raise SipParseError("Via without host")
    params = parse_params(sentby[semi:], what="Via") if semi >= 0 else {}
    return Via(value, transport, host, port, params)


def _via_port(raw: bytes) -> int:
    raw = raw.strip()
    if not raw.isdigit() or len(raw) > 5 or int(raw) > 65535:
        raise SipParseError("malformed Via port")
    return int(raw)
