"""URIs (sip:, sips:, tel:, and opaque others) and name-addr values (From, To, Contact, ...).

Parsing is strict where RFC 3261 is, because the engine answers malformed input
with 400: no whitespace inside a URI, no empty parameters, addr-specs carrying
parameters or headers must be in angle brackets, display names are tokens or
quoted strings.
"""

from __future__ import annotations

from .errors import SipParseError

_WS = b" \t\r\n"
_TOKEN = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_SCHEME = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.")
_HEXDIGITS = frozenset(b"0123456789abcdefABCDEF")


def unescape(value: bytes) -> bytes:
    """Decode %XX escapes (a malformed escape is kept as it is)."""
    if value.find(b"%") < 0:
        return value
    out = bytearray()
    i = 0
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == 0x25 and i + 2 < n and value[i + 1] in _HEXDIGITS and value[i + 2] in _HEXDIGITS:
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(ch)
            i += 1
    return bytes(out)


def _has_ws(value: bytes) -> bool:
    return (
        value.find(b" ") >= 0
        or value.find(b"\t") >= 0
        or value.find(b"\r") >= 0
        or value.find(b"\n") >= 0
    )


def parse_params(raw: bytes, *, what: str) -> dict[bytes, bytes | None]:
    """Parse ``;name=value;flag`` (leading ``;`` optional), names lower-cased."""
    params: dict[bytes, bytes | None] = {}
    if not raw:
        return params
    parts = raw.split(b";")
    if not parts[0] or not parts[0].strip():
        del parts[0]
    if raw.find(b" ") < 0 and raw.find(b"\t") < 0:
        # the usual case: no whitespace around ';' and '=', nothing to strip
        for part in parts:
            name, eq, value = part.partition(b"=")
            if not name:
                raise SipParseError(f"empty {what} parameter")
            if eq:
                if not value:
                    raise SipParseError(f"empty {what} parameter value")
                params[name.lower()] = value
            else:
                params[name.lower()] = None
        return params
    for part in parts:
        at = part.find(b"=")
        if at < 0:
            name = part.strip()
            opt: bytes | None = None
        else:
            name = part[:at].strip()
            opt = part[at + 1 :].strip()
            if not opt:
                raise SipParseError(f"empty {what} parameter value")
        if not name:
            raise SipParseError(f"empty {what} parameter")
        params[name.lower()] = opt
    return params


class Uri:
    """A parsed URI. For sip/sips: user, password, host, port, params, headers; for tel: the
    number as ``user`` and its params; other schemes keep the text after ':' as ``opaque``."""

    __slots__ = ("headers", "host", "opaque", "params", "password", "port", "raw", "scheme", "user")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.scheme = b""
        self.user: bytes | None = None
        self.password: bytes | None = None
        self.host = b""
        self.port: int | None = None
        self.params: dict[bytes, bytes | None] = {}
        self.headers: bytes | None = None
        self.opaque = b""

    @property
    def is_sip(self) -> bool:
        return self.scheme in (b"sip", b"sips")

    @property
    def user_unescaped(self) -> bytes | None:
        return None if self.user is None else unescape(self.user)

    def __bytes__(self) -> bytes:
        return self.raw

    def __repr__(self) -> str:
        return f"<Uri {self.raw.decode(errors='replace')}>"


# Schemes as usually written, mapped to their lower-case form without further checks.
_KNOWN_SCHEMES = {b"sip": b"sip", b"sips": b"sips", b"tel": b"tel", b"SIP": b"sip", b"TEL": b"tel"}


def parse_uri(raw: bytes) -> Uri:
    """Parse a URI; raises SipParseError on malformed sip/sips/tel URIs."""
    uri = Uri(raw)
    colon = raw.find(b":")
    if colon <= 0 or _has_ws(raw):
        raise SipParseError("malformed URI")
    scheme = _KNOWN_SCHEMES.get(raw[:colon])
    if scheme is None:
        scheme = raw[:colon].lower()
        if not all(c in _SCHEME for c in scheme) or not (0x61 <= scheme[0] <= 0x7A):
            raise SipParseError("malformed URI scheme")
    uri.scheme = scheme
    rest = raw[colon + 1 :]
    if scheme == b"sip" or scheme == b"sips":
        _parse_sip(uri, rest)
    elif scheme == b"tel":
        semi = rest.find(b";")
        number = rest if semi < 0 else rest[:semi]
        if not number:
            raise SipParseError("empty tel number")
        uri.user = number
        if semi >= 0:
            uri.params = parse_params(rest[semi:], what="URI")
    else:
        if not rest:
            raise SipParseError("empty URI")
        uri.opaque = rest
    return uri


def _parse_sip(uri: Uri, rest: bytes) -> None:
    # userinfo may hold ';', '?', '/' and ','; it never holds an unescaped '@', so the
    # first '@' ends it and parameters and headers are looked for after it only.
    at = rest.find(b"@")
    if at >= 0:
        userinfo = rest[:at]
        hostpart = rest[at + 1 :]
        pw = userinfo.find(b":")
        if pw >= 0:
            uri.password = userinfo[pw + 1 :]
            userinfo = userinfo[:pw]
        if not userinfo:
            raise SipParseError("empty URI user")
        uri.user = userinfo
    else:
        hostpart = rest
    q = hostpart.find(b"?")
    if q >= 0:
        uri.headers = hostpart[q + 1 :]
        if not uri.headers:
            raise SipParseError("empty URI headers")
        hostpart = hostpart[:q]
    semi = hostpart.find(b";")
    if semi >= 0:
        uri.params = parse_params(hostpart[semi:], what="URI")
        hostpart = hostpart[:semi]
    if not hostpart:
        raise SipParseError("URI without host")
    if hostpart[0] == 0x5B:  # [IPv6]
        close = hostpart.find(b"]")
        if close < 0:
            raise SipParseError("unterminated IPv6 reference")
        uri.host = hostpart[: close + 1]
        tail = hostpart[close + 1 :]
        if tail:
            if tail[0] != 0x3A:
                raise SipParseError("junk after IPv6 reference")
            uri.port = _port(tail[1:])
    else:
        c = hostpart.find(b":")
        if c >= 0:
            uri.port = _port(hostpart[c + 1 :])
            hostpart = hostpart[:c]
        if (
            not hostpart
            or hostpart.find(b"[") >= 0
            or hostpart.find(b"]") >= 0
            or hostpart.find(b"<") >= 0
        ):
            raise SipParseError("malformed URI host")
        uri.host = hostpart


def _port(raw: bytes) -> int:
    if not raw.isdigit() or len(raw) > 5 or int(raw) > 65535:
        raise SipParseError("malformed port")
    return int(raw)


class NameAddr:
    """A name-addr or addr-spec header value: display name, URI, header parameters.

    The URI is parsed on first access of ``uri``; ``uri_raw`` is always available."""

    __slots__ = ("_uri", "display", "params", "raw", "uri_raw")

    def __init__(
        self, raw: bytes, display: bytes | None, uri_raw: bytes, params: dict[bytes, bytes | None]
    ) -> None:
        self.raw = raw
        self.display = display
        self.uri_raw = uri_raw
        self.params = params
        self._uri: Uri | None = None

    @property
    def uri(self) -> Uri:
        u = self._uri
        if u is None:
            u = self._uri = parse_uri(self.uri_raw)
        return u

    @property
    def tag(self) -> bytes | None:
        return self.params.get(b"tag")

    def __repr__(self) -> str:
        return f"<NameAddr {self.raw.decode(errors='replace')}>"


def _quoted_end(value: bytes, start: int) -> int:
    """Index of the closing quote of the quoted string opening at ``start``."""
    i = start + 1
    n = len(value)
    while i < n:
        ch = value[i]
        if ch == 0x5C:
            i += 2
            continue
        if ch == 0x22:
            return i
        i += 1
    raise SipParseError("unterminated quoted string")


def parse_name_addr(raw: bytes) -> NameAddr:
    """Parse a From/To/Contact/Route style value (one value, not a comma list)."""
    value = raw.strip()
    if not value:
        raise SipParseError("empty address")
    display: bytes | None = None
    if value[0] == 0x22:
        end = _quoted_end(value, 0)
        display = value[1:end]
        lt = end + 1
        while lt < len(value) and value[lt] in _WS:
            lt += 1
        if lt >= len(value) or value[lt] != 0x3C:
            raise SipParseError("quoted display name not followed by <URI>")
    else:
        lt = value.find(b"<")
        if lt > 0:
            display = value[:lt].strip()
            for word in display.split():
                if not all(c in _TOKEN for c in word):
                    raise SipParseError("display name must be a token or quoted string")
    if lt >= 0:
        gt = value.find(b">", lt)
        if gt < 0:
            raise SipParseError("unterminated <URI>")
        uri_raw = value[lt + 1 : gt]
        if not uri_raw or uri_raw[0] in _WS or uri_raw[-1] in _WS:
            raise SipParseError("whitespace inside <URI>")
        rest = value[gt + 1 :].strip()
        if rest and rest[0] != 0x3B:
            raise SipParseError("junk after <URI>")
    else:
        semi = value.find(b";")
        uri_raw = value if semi < 0 else value[:semi]
        rest = b"" if semi < 0 else value[semi:]
        if uri_raw.find(b"?") >= 0 or uri_raw.find(b",") >= 0 or _has_ws(uri_raw.strip()):
            raise SipParseError("URI with headers or separators must be enclosed in <>")
        uri_raw = uri_raw.strip()
    params = parse_params(rest, what="header") if rest else {}
    return NameAddr(value, display, uri_raw, params)
