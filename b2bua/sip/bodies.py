"""What body crosses to the other leg, for every kind of message (sans-IO).

A body is rebuilt from what ansim understands or it is not sent; the other leg's
Content-Type, Content-Disposition and Content-Length are written from what is sent.

- ``application/sdp``, in the messages of an offer/answer exchange (INVITE, re-INVITE,
  UPDATE, PRACK, ACK, and 1xx/2xx answering INVITE, UPDATE and PRACK): rebuilt by the
  receiving leg's ``SdpBuilder`` (``sdp``). Elsewhere (OPTIONS, BYE, error responses) an
  SDP is dropped: it is no part of a session there.
- ``multipart/*`` (RFC 2046: the boundary parameter, quoted or not, preamble, epilogue,
  part headers, parts inside parts): taken apart and each part treated as a body of its
  own; the first SDP part is rebuilt, later ones and ``early-session`` parts (RFC 3959,
  an option ansim does not implement) are dropped. What is left is sent as one
  ``multipart/mixed`` (or ``multipart/alternative``) with ansim's own boundary, as the
  part alone when one is left, or not at all.
- ``application/dtmf-relay`` and ``application/dtmf``, in INFO: rebuilt from the parsed
  Signal and Duration.
- ``application/isup`` (SIP-I/SIP-T, ISUP parameters with the calling and called
  numbers in BCD), ``application/qsig``, PIDF-LO location (``application/pidf+xml``),
  vendor types, anything else: dropped, unless the type is in the ``pass_bodies``
  setting of trunks.yaml (``BodyPolicy.passed``), in which case it crosses as received
  with only its ``charset`` parameter. ISUP and QSIG cannot be put there (their
  content is the parties' numbers); they can cross once a rebuilder for them, writing
  the numbers as the far leg may see them, is registered in ``REBUILDERS`` and named in
  ``pass_bodies`` (``BodyPolicy.rebuilders``). None is shipped.

``Content-Disposition: ...;handling=required`` is not honoured by refusing the message:
the far leg gets a message ansim built, without the part, and cannot mistake it for the
sender's. A body under a ``Content-Encoding`` or ``Content-Transfer-Encoding`` other
than identity is not read and is dropped.

When nothing usable is left of an SDP the message needed (``UNUSABLE``): an INVITE,
re-INVITE, UPDATE or PRACK is answered 488 and not relayed; a 2xx answering one is
replaced by 502 toward the other leg (the 2xx itself is ACKed, and an initial INVITE's
callee hung up); an ACK, or a 1xx (early media), is relayed without a body. An INFO
whose body is dropped is answered 415 with the types ansim relays in Accept (400 when
the body is of such a type but malformed), and not relayed. Any other message goes on
without its body.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .message import SipMessage
from .sdp import SdpBuilder, SdpError, parse_sdp

# Message kinds, as far as bodies go.
OFFER = 1  # INVITE, re-INVITE, UPDATE, PRACK
ACK = 2  # ACK of a 2xx (the answer to an offerless INVITE)
EARLY = 3  # 1xx answering INVITE, UPDATE or PRACK
ANSWER = 4  # 2xx answering INVITE, UPDATE or PRACK
INFO = 5
OTHER = 6  # BYE, OPTIONS, CANCEL, and any other request or response
_SESSION_KINDS = (OFFER, ACK, EARLY, ANSWER)

# What happens when a message carried an SDP and none could be rebuilt: the status its
# sender is answered (requests), or the status that replaces it toward the other leg
# (2xx answers); 0: it goes on without a body.
UNUSABLE: dict[int, int] = {OFFER: 488, ACK: 0, EARLY: 0, ANSWER: 502, INFO: 0, OTHER: 0}
INFO_DROPPED = 415  # an INFO whose body is not one ansim relays
INFO_MALFORMED = 400  # an INFO whose DTMF body does not parse

SDP = b"application/sdp"
DTMF_RELAY = b"application/dtmf-relay"
DTMF = b"application/dtmf"
INFO_TYPES = (DTMF_RELAY, DTMF)
# Types that cannot be named in pass_bodies: ansim rebuilds them itself, takes them apart,
# or they hold the parties' numbers and may only cross through a rebuilder.
REBUILT_HERE = (SDP, DTMF_RELAY, DTMF)
NEEDS_REBUILDER = (b"application/isup", b"application/qsig")

_TOKEN_CHARS = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
_DISPOSITIONS = (
    b"session",
    b"render",
    b"signal",
    b"alert",
    b"icon",
    b"early-session",
    b"info-package",
)
_MAX_DEPTH = 3
_BOUNDARY = b"ansim-part-boundary"


def _is_token(value: bytes) -> bool:
    return bool(value) and len(value) <= 127 and not value.translate(None, _TOKEN_CHARS)


class ContentType(NamedTuple):
    """A parsed Content-Type: ``type/subtype`` in lower case, and its parameters (names
    in lower case, values unquoted)."""

    mime: bytes
    params: dict[bytes, bytes]


def _params(text: bytes) -> dict[bytes, bytes] | None:
    """``;name=value`` parameters (values tokens or quoted strings), or None if malformed."""
    params: dict[bytes, bytes] = {}
    i = 0
    n = len(text)
    while i < n:
        if text[i] in b" \t;":
            i += 1
            continue
        eq = text.find(b"=", i)
        if eq < 0:
            return None
        name = text[i:eq].strip().lower()
        j = eq + 1
        while j < n and text[j] in b" \t":
            j += 1
        if j < n and text[j] == 0x22:  # quoted string
            k = j + 1
            value = bytearray()
            while k < n and text[k] != 0x22:
                if text[k] == 0x5C and k + 1 < n:
                    k += 1
                value.append(text[k])
                k += 1
            if k >= n:
                return None
            params[name] = bytes(value)
            i = k + 1
        else:
            k = text.find(b";", j)
            if k < 0:
                k = n
            params[name] = text[j:k].strip()
            i = k
        if not _is_token(name):
            return None
    return params


def parse_content_type(value: bytes | None) -> ContentType | None:
    """``type/subtype;params`` parsed, or None when absent or malformed."""
    if value is None:
        return None
    head, _, rest = value.partition(b";")
    mime = head.strip().lower()
    kind, slash, sub = mime.partition(b"/")
    if not slash or not _is_token(kind) or not _is_token(sub):
        return None
    params = _params(rest) if rest else {}
    if params is None:
        return None
    return ContentType(mime, params)


def _disposition(value: bytes | None) -> tuple[bytes, bytes] | None:
    """A Content-Disposition as (type, handling) rebuilt from known words, or None."""
    if value is None:
        return None
    head, _, rest = value.partition(b";")
    kind = head.strip().lower()
    if kind not in _DISPOSITIONS:
        return None
    params = _params(rest) if rest else {}
    handling = (params or {}).get(b"handling", b"").lower()
    return (kind, handling if handling in (b"optional", b"required") else b"")


def _write_disposition(disposition: tuple[bytes, bytes] | None) -> bytes | None:
    if disposition is None:
        return None
    kind, handling = disposition
    return kind + b";handling=" + handling if handling else kind


class Numbers(NamedTuple):
    """The numbers as the leg a body goes to may see them (E.164): who calls, who is
    called. What a rebuilder writes into a body that holds numbers."""

    calling: str
    called: str


# A rebuilder takes the part's content type, its content and the numbers the receiving
# leg may see, and returns the content to send, or None when it cannot be rebuilt.
Rebuilder = Callable[[ContentType, bytes, Numbers | None], bytes | None]

_SIGNALS = frozenset(b"0123456789*#ABCD")


def _dtmf_signal(value: bytes) -> bytes | None:
    value = value.strip().upper()
    if len(value) == 1 and value[0] in _SIGNALS:
        return value
    if value == b"16":  # flash hook, as some gateways write it
        return value
    return None


def rebuild_dtmf_relay(ctype: ContentType, body: bytes, numbers: Numbers | None) -> bytes | None:
    """``application/dtmf-relay``: ``Signal=<digit>`` and ``Duration=<ms>`` rebuilt;
    any other line is left out."""
    signal: bytes | None = None
    duration = -1
    for line in body.split(b"\n"):
        key, eq, value = line.partition(b"=")
        key = key.strip().lower()
        if not eq:
            if line.strip():
                return None
            continue
        if key == b"signal":
            signal = _dtmf_signal(value)
            if signal is None:
                return None
        elif key == b"duration":
            raw = value.strip()
            if not raw.isdigit() or len(raw) > 5:
                return None
            duration = int(raw)
    if signal is None:
        return None
    if duration < 0:
        return b"Signal=" + signal + b"\r\n"
    return b"Signal=%s\r\nDuration=%d\r\n" % (signal, duration)


def rebuild_dtmf(ctype: ContentType, body: bytes, numbers: Numbers | None) -> bytes | None:
    """``application/dtmf``: the one key pressed."""
    return _dtmf_signal(body)


# Rebuilders by type. A type here may be named in pass_bodies even if it holds numbers
# (NEEDS_REBUILDER): its content crosses as the rebuilder writes it.
REBUILDERS: dict[bytes, Rebuilder] = {}
_INFO_REBUILDERS: dict[bytes, Rebuilder] = {DTMF_RELAY: rebuild_dtmf_relay, DTMF: rebuild_dtmf}


def pass_body_problem(mime: str) -> str | None:
    """Why content type ``mime`` cannot be in pass_bodies, or None if it can."""
    low = mime.strip().lower().encode()
    if parse_content_type(low) is None or low.find(b";") >= 0:
        return "expected a content type such as application/vnd.example+xml, without parameters"
    if low in REBUILT_HERE or low.startswith(b"multipart/"):
        return f"{mime} is always rebuilt or taken apart by ansim, never passed as received"
    if low in NEEDS_REBUILDER and low not in REBUILDERS:
        return (
            f"{mime} carries the parties' numbers and can only cross rewritten; "
            "this version of ansim has no rewriter for it"
        )
    return None


class BodyPolicy:
    """Which bodies besides those ansim rebuilds itself may cross (trunks.yaml
    ``pass_bodies``): as received (``passed``) or through a rebuilder (``rebuilders``)."""

    __slots__ = ("accept_info", "passed", "rebuilders")

    def __init__(self, pass_bodies: tuple[bytes, ...] = ()) -> None:
        self.rebuilders = {m: REBUILDERS[m] for m in pass_bodies if m in REBUILDERS}
        self.passed = frozenset(m for m in pass_bodies if m not in self.rebuilders)
        # The Accept of a 415 answering an INFO: what an INFO may carry across.
        self.accept_info = b", ".join([*INFO_TYPES, *pass_bodies])


class OutBody:
    """The body to send (empty for none) with its Content-Type and Content-Disposition,
    or ``status``: the message is not sent on (see ``UNUSABLE``)."""

    __slots__ = ("body", "content_type", "disposition", "status")

    def __init__(
        self,
        body: bytes = b"",
        content_type: bytes | None = None,
        disposition: bytes | None = None,
        status: int = 0,
    ) -> None:
        self.body = body
        self.content_type = content_type
        self.disposition = disposition
        self.status = status

    def headers(self) -> list[tuple[bytes, bytes]]:
        """Content-Type and Content-Disposition for a message carrying this body."""
        out = []
        if self.content_type is not None:
            out.append((b"content-type", self.content_type))
        if self.disposition is not None:
            out.append((b"content-disposition", self.disposition))
        return out


NO_BODY = OutBody()


class _Part:
    __slots__ = ("content", "ctype", "disposition")

    def __init__(self, ctype: bytes, content: bytes, disposition: tuple[bytes, bytes] | None):
        self.ctype = ctype  # the Content-Type to write
        self.content = content
        self.disposition = disposition


class _Walk:
    """State of taking one message's body apart."""

    __slots__ = ("had_sdp", "info_malformed", "kind", "numbers", "parts", "policy", "sdp")

    def __init__(
        self, kind: int, sdp: SdpBuilder, policy: BodyPolicy, numbers: Numbers | None
    ) -> None:
        self.kind = kind
        self.sdp = sdp
        self.policy = policy
        self.numbers = numbers
        self.parts: list[_Part] = []
        self.had_sdp = False  # an SDP was there (usable or not)
        self.info_malformed = False

    def take(
        self,
        ctype: ContentType | None,
        content: bytes,
        disposition: tuple[bytes, bytes] | None,
        encoded: bool,
        depth: int,
    ) -> None:
        """Keep what may be rebuilt of one body (or body part)."""
        if ctype is None:
            return
        mime = ctype.mime
        kind = self.kind
        if mime == SDP:
            if kind not in _SESSION_KINDS:
                return
            if disposition is not None and disposition[0] != b"session":
                return  # early-session (RFC 3959): not implemented
            self.had_sdp = True
            if encoded or any(p.ctype == SDP for p in self.parts):
                return
            try:
                desc = parse_sdp(content)
            except SdpError:
                return
            self.parts.append(_Part(SDP, self.sdp.build(desc), disposition))
            return
        if mime.startswith(b"multipart/"):
            boundary = ctype.params.get(b"boundary")
            if encoded or not boundary or depth >= _MAX_DEPTH:
                return
            parts = split_multipart(content, boundary)
            if parts is None:
                return
            for headers, part in parts:
                part_encoding = headers.get(b"content-transfer-encoding", b"").lower()
                self.take(
                    parse_content_type(headers.get(b"content-type")),
                    part,
                    _disposition(headers.get(b"content-disposition")),
                    part_encoding not in (b"", b"7bit", b"8bit", b"binary"),
                    depth + 1,
                )
            return
        if encoded:
            return
        rebuild = self.policy.rebuilders.get(mime)
        if rebuild is None and kind == INFO:
            rebuild = _INFO_REBUILDERS.get(mime)
        if rebuild is not None:
            rebuilt = rebuild(ctype, content, self.numbers)
            if rebuilt is not None:
                self.parts.append(_Part(mime, rebuilt, disposition))
            elif kind == INFO:
                self.info_malformed = True
            return
        if mime in self.policy.passed:
            charset = ctype.params.get(b"charset")
            written = mime + b";charset=" + charset if charset and _is_token(charset) else mime
            self.parts.append(_Part(written, content, disposition))


def split_multipart(body: bytes, boundary: bytes) -> list[tuple[dict[bytes, bytes], bytes]] | None:
    """The parts of a multipart body as (headers by lower-case name, content), or None
    when no delimiter line is found. A missing close delimiter ends the last part at
    the end of the body; a delimiter line may end in CRLF or LF."""
    delim = b"--" + boundary
    n = len(delim)
    if body.startswith(delim):
        pos = 0
    else:
        i = body.find(b"\n" + delim)
        if i < 0:
            return None
        pos = i + 1
    parts = []
    while True:
        after = pos + n
        if body[after : after + 2] == b"--":
            break
        eol = body.find(b"\n", after)
        if eol < 0 or body[after:eol].strip():
            break  # a delimiter with nothing after it, or a longer line: no more parts
        start = eol + 1
        nxt = body.find(b"\n" + delim, eol)
        end = len(body) if nxt < 0 else nxt
        if end > start and body[end - 1] == 0x0D:
            end -= 1
        parts.append(_part(body[start:end] if end > start else b""))
        if nxt < 0:
            break
        pos = nxt + 1
    return parts


def _part(data: bytes) -> tuple[dict[bytes, bytes], bytes]:
    """One part: its headers (unfolded, names in lower case; the first of each) and content."""
    if data.startswith(b"\r\n"):
        return {}, data[2:]
    if data.startswith(b"\n"):
        return {}, data[1:]
    crlf = data.find(b"\n\r\n")
    lf = data.find(b"\n\n")
    if crlf >= 0 and (lf < 0 or crlf < lf):
        head, content = data[:crlf], data[crlf + 3 :]
    elif lf >= 0:
        head, content = data[:lf], data[lf + 2 :]
    else:
        head, content = data, b""
    headers: dict[bytes, bytes] = {}
    last: bytes | None = None
    for line in head.split(b"\n"):
        if line[-1:] == b"\r":
            line = line[:-1]
        if line[:1] in (b" ", b"\t") and last is not None:
            headers[last] = headers[last] + b" " + line.strip()
            continue
        name, colon, value = line.partition(b":")
        name = name.strip().lower()
        if not colon or not name:
            last = None
            continue
        if name == b"c":
            name = b"content-type"
        if name in headers:
            last = None
            continue
        headers[name] = value.strip()
        last = name
    return headers, content


def outgoing_body(
    msg: SipMessage,
    kind: int,
    sdp: SdpBuilder,
    policy: BodyPolicy,
    numbers: Numbers | None = None,
) -> OutBody:
    """The body the other leg is sent for ``msg`` (a message of ``kind``), rebuilt by
    ``sdp`` (the receiving leg's builder) and the rebuilders of ``policy``."""
    body = msg.body
    if not body:
        return NO_BODY
    names = msg.names
    if (
        kind in _SESSION_KINDS
        and b"content-encoding" not in names
        and b"content-disposition" not in names
    ):
        ctype = msg.get(b"content-type")
        if ctype is not None and ctype.lower() == SDP:  # the usual case, at once
            try:
                return OutBody(sdp.build(parse_sdp(body)), SDP)
            except SdpError:
                status = UNUSABLE[kind]
                return OutBody(status=status) if status else NO_BODY
    encoding = msg.get(b"content-encoding")
    walk = _Walk(kind, sdp, policy, numbers)
    walk.take(
        parse_content_type(msg.get(b"content-type")),
        body,
        _disposition(msg.get(b"content-disposition")),
        encoding is not None and encoding.strip().lower() not in (b"", b"identity"),
        0,
    )
    parts = walk.parts
    if walk.had_sdp and not any(p.ctype == SDP for p in parts):
        status = UNUSABLE[kind]
        if status:
            return OutBody(status=status)
    if not parts:
        if kind == INFO:
            return OutBody(status=INFO_MALFORMED if walk.info_malformed else INFO_DROPPED)
        return NO_BODY
    if len(parts) == 1:
        part = parts[0]
        return OutBody(part.content, part.ctype, _write_disposition(part.disposition))
    return _multipart(parts, msg.get(b"content-type") or b"")


def _multipart(parts: list[_Part], original: bytes) -> OutBody:
    boundary = _BOUNDARY
    n = 0
    while any(p.content.find(boundary) >= 0 for p in parts):
        n += 1
        boundary = _BOUNDARY + b"-%d" % n
    out = []
    for part in parts:
        out.append(b"--" + boundary + b"\r\nContent-Type: " + part.ctype + b"\r\n")
        disposition = _write_disposition(part.disposition)
        if disposition is not None:
            out.append(b"Content-Disposition: " + disposition + b"\r\n")
        out.append(b"\r\n" + part.content + b"\r\n")
    out.append(b"--" + boundary + b"--\r\n")
    sub = b"alternative" if original.lower().startswith(b"multipart/alternative") else b"mixed"
    return OutBody(b"".join(out), b"multipart/" + sub + b";boundary=" + boundary)
