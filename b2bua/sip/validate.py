"""Checks a received message must pass before any layer acts on it, with the RFC's answer.

``check_request`` returns None for an acceptable request, or a ``Rejection`` naming the
status, reason phrase and any header the stateless reply must carry (Unsupported for
420, Accept for 415, Allow for 405). ``check_response`` returns None or the reason a
response is dropped. Both only read the message.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import SipParseError
from .headers import SINGLE_VALUED, split_values
from .message import Request, Response
from .uri import parse_name_addr

KNOWN_METHODS = frozenset(
    (
        b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER", b"PRACK", b"UPDATE",
        b"INFO", b"REFER", b"MESSAGE", b"NOTIFY", b"SUBSCRIBE", b"PUBLISH",
    )
)  # fmt: skip
# What a B2BUA in front of carrier trunks takes part in: the Allow ansim writes on
# every leg, whatever the other side allows.
ALLOWED_METHODS = (b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"PRACK", b"UPDATE", b"INFO")
ALLOW_HEADER = b", ".join(ALLOWED_METHODS)
# Option tags ansim implements end to end, in the order it writes them:
#   100rel: reliable provisionals of the initial INVITE are relayed with their RSeq and
#     the caller's PRACK is relayed with its RAck mapped to the callee leg's INVITE;
#   timer: Session-Expires and Min-SE are rebuilt on each leg, and the refreshes
#     (re-INVITE, UPDATE) and 422 are relayed, so each leg's refresher is the same party.
# Not "replaces": the Replaces header is not mapped between the legs' dialogs.
IMPLEMENTED_OPTIONS = (b"100rel", b"timer")
SUPPORTED_OPTIONS = frozenset(IMPLEMENTED_OPTIONS)
SUPPORTED_HEADER = b", ".join(IMPLEMENTED_OPTIONS)
ACCEPTED_BODIES = (
    b"application/sdp",
    b"multipart/mixed",
    b"multipart/alternative",
    b"multipart/related",
)
ACCEPT_HEADER = b", ".join(ACCEPTED_BODIES)
_ALLOWED = frozenset(ALLOWED_METHODS)
_MAX_CSEQ = 2**31
_MAX_EXPIRES = 2**32 - 1


@dataclass(slots=True)
class Rejection:
    """Why a request is refused and how to answer it."""

    status: int
    reason: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def phrase(self) -> bytes:
        return self.reason.encode()


def _uint(raw: bytes | None, limit: int) -> bool:
    return raw is not None and raw.isdigit() and len(raw) <= 12 and int(raw) <= limit


def check_request(req: Request) -> Rejection | None:
    """Validate a parsed request; None when it may be processed."""
    try:
        return _check_request(req)
    except SipParseError as exc:
        return Rejection(exc.status, exc.reason)


def _check_request(req: Request) -> Rejection | None:
    if req.version != b"SIP/2.0" and req.version.upper() != b"SIP/2.0":  # case-insensitive (§7.1)
        return Rejection(505, "Version Not Supported")
    names = req.names
    for name in (b"via", b"from", b"to", b"call-id", b"cseq"):
        if name not in names:
            return Rejection(400, f"Missing {name.decode().title()} header")
    if len(set(names)) != len(names):
        for name in SINGLE_VALUED:
            if names.count(name) > 1:
                return Rejection(400, f"Multiple {name.decode().title()} headers")
    cseq_method = req.cseq[1]
    if cseq_method != req.method:
        return Rejection(400, "CSeq method does not match request method")
    mf = req.get(b"max-forwards")
    if mf is not None and not _uint(mf, 255):
        return Rejection(400, "Bad Max-Forwards")
    expires = req.get(b"expires")
    if expires is not None and not _uint(expires, _MAX_EXPIRES):
        return Rejection(400, "Bad Expires")
    req.via  # noqa: B018  (parses the top Via; raises when malformed)
    if req.to.tag is None:
        # Out of dialog: the URIs are checked in full. In a dialog the tags identify it
        # and the URIs are not used, so their name-addr syntax is all that is checked.
        req.from_.uri  # noqa: B018
        req.to.uri  # noqa: B018
    else:
        req.from_  # noqa: B018
    method = req.method
    if method == b"INVITE" or method == b"REGISTER" or method == b"SUBSCRIBE":
        for contact in req.get_all(b"contact"):
            if contact == b"*":
                continue
            for value in split_values(contact):
                parse_name_addr(value).uri  # noqa: B018
    try:
        uri = req.ruri
    except SipParseError:
        if req.uri.startswith(b"<") or req.uri.find(b":") < 0:
            return Rejection(400, "Malformed Request-URI")
        raise
    if uri.headers is not None:
        return Rejection(400, "Headers not allowed in Request-URI")
    if method not in _ALLOWED:
        if method in KNOWN_METHODS:
            return Rejection(405, "Method Not Allowed", [(b"allow", ALLOW_HEADER)])
        return Rejection(501, "Not Implemented", [(b"allow", ALLOW_HEADER)])
    if uri.scheme not in (b"sip", b"sips", b"tel"):
        return Rejection(416, "Unsupported URI Scheme")
    if mf is not None and int(mf) == 0 and method != b"OPTIONS":
        return Rejection(483, "Too Many Hops")
    require = req.get_all(b"require")
    if require and method != b"ACK" and method != b"CANCEL":
        unsupported = [
            opt for v in require for opt in split_values(v) if opt.lower() not in SUPPORTED_OPTIONS
        ]
        if unsupported:
            return Rejection(420, "Bad Extension", [(b"unsupported", b", ".join(unsupported))])
    if req.body and (method == b"INVITE" or method == b"UPDATE" or method == b"PRACK"):
        ctype = req.get(b"content-type")
        base = b"" if ctype is None else ctype.split(b";", 1)[0].strip().lower()
        if base not in ACCEPTED_BODIES:
            return Rejection(415, "Unsupported Media Type", [(b"accept", ACCEPT_HEADER)])
    return None


def check_response(resp: Response) -> str | None:
    """Validate a parsed response; None when it may be matched to a transaction."""
    try:
        if not 100 <= resp.status <= 699:
            return "status code out of range"
        if resp.version != b"SIP/2.0" and resp.version.upper() != b"SIP/2.0":
            return "bad version"
        names = resp.names
        for name in (b"via", b"from", b"to", b"call-id", b"cseq"):
            if name not in names:
                return f"missing {name.decode()}"
        # RFC 3261 §8.1.3.3: a response reaching a UAC with more than one Via is discarded.
        if names.count(b"via") > 1 or (resp.get(b"via") or b"").find(b",") >= 0:
            return "more than one Via"
        resp.cseq  # noqa: B018
        resp.via  # noqa: B018
        resp.to  # noqa: B018  (its tag is read by every layer; From is parsed where used)
    except SipParseError as exc:
        return exc.reason
    return None
