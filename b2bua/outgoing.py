"""Pieces of the messages ansim writes toward a leg: headers rebuilt from the other
leg's message, body headers, reason phrases, where a request goes (sans-IO).

Everything a leg is sent is built by ansim (DESIGN.md, "What the far leg may see"):
these helpers write what is rebuilt from parsed values (Supported, Session-Expires,
Min-SE, Unsupported), pass only the configured allow-list of other headers, and never
copy a reason phrase.
"""

from __future__ import annotations

import ipaddress

from .sip.errors import SipParseError
from .sip.extensions import min_se, session_expires, supported, unsupported
from .sip.headers import split_values
from .sip.message import Request, Response
from .sip.responses import REASONS
from .sip.routing import Peer
from .sip.uri import parse_uri


def copy_headers(
    src: Request | Response,
    lines: list[bytes],
    names: list[bytes],
    options: tuple[bytes, ...],
    allow: tuple[bytes, ...],
) -> None:
    """The headers built from ``src`` for the other leg: the allow-list ``allow`` as
    received; Supported (of ``options``), Session-Expires, Min-SE and Unsupported
    rebuilt from their parsed values."""
    if allow:
        src_lines = src.lines
        for i, name in enumerate(src.names):
            if name in allow:
                lines.append(src_lines[i])
                names.append(name)
    src_names = src.names
    if b"supported" in src_names:
        value = supported(src, options)
        if value is not None:
            lines.append(b"Supported: " + value)
            names.append(b"supported")
    if b"session-expires" in src_names:
        value = session_expires(src)
        if value is not None:
            lines.append(b"Session-Expires: " + value)
            names.append(b"session-expires")
    if b"min-se" in src_names:
        value = min_se(src)
        if value is not None:
            lines.append(b"Min-SE: " + value)
            names.append(b"min-se")
    if b"unsupported" in src_names:
        value = unsupported(src)
        if value is not None:
            lines.append(b"Unsupported: " + value)
            names.append(b"unsupported")


def add_body_headers(
    msg: Request | Response, content_type: bytes | None, disposition: bytes | None
) -> None:
    """Content-Type and Content-Disposition of the body ``msg`` carries (Content-Length is
    written when the message is serialized)."""
    if content_type is not None:
        msg.lines.append(b"Content-Type: " + content_type)
        msg.names.append(b"content-type")
    if disposition is not None:
        msg.lines.append(b"Content-Disposition: " + disposition)
        msg.names.append(b"content-disposition")


_CLASS_REASONS = {
    1: b"Session Progress",
    2: b"OK",
    3: b"Redirected",
    4: b"Request Failed",
    5: b"Server Error",
    6: b"Global Failure",
}


def reason(status: int) -> bytes:
    """ansim's own reason phrase for ``status``."""
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, b"Unknown")


def split(value: bytes) -> list[bytes]:
    return split_values(value)


def dest(uri_raw: bytes, fallback: Peer) -> Peer:
    """Where to send a request for ``uri_raw``: its host if an IP literal, else ``fallback``."""
    try:
        uri = parse_uri(uri_raw)
    except SipParseError:
        return fallback
    host = uri.host.decode(errors="replace").strip("[]")
    if not is_ip(host):
        return fallback
    transport = (uri.params.get(b"transport") or fallback[0].encode()).decode().lower()
    if uri.scheme == b"sips" or transport not in ("udp", "tcp", "tls"):
        transport = "tls" if uri.scheme == b"sips" else fallback[0]
    return (transport, host, uri.port or (5061 if transport == "tls" else 5060))


_IP_LITERAL: dict[str, bool] = {}


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address literal (answers cached; the cache is bounded)."""
    known = _IP_LITERAL.get(host)
    if known is None:
        try:
            ipaddress.ip_address(host)
            known = True
        except ValueError:
            known = False
        if len(_IP_LITERAL) < 65536:
            _IP_LITERAL[host] = known
    return known
