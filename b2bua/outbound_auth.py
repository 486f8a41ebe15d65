"""Answering a trunk's digest challenge to a request ansim sent (sans-IO).

When a trunk answers one of ansim's requests (the UAC leg's INVITE, an in-dialog request
such as BYE or re-INVITE, a REGISTER) with 401 or 407, the request is sent again with
the trunk's ``credentials``: the same request, with a new Via branch, the dialog's next
CSeq, and an ``Authorization`` (401) or ``Proxy-Authorization`` (407) header answering
the strongest challenge ansim knows of the realm the credentials name (any realm when
they name none). Credentials already given for one header are kept when the other is
asked for (a proxy's 407, then the far end's 401).

A challenge is answered once per request: the same kind of challenge again means the
credentials were refused, and the request has failed, unless the new challenge says
``stale=true`` (the nonce had expired: answered again, at most ``MAX_STALE`` times per
request), which ``authorize`` leaves to the caller to count.
"""

from __future__ import annotations

import os

from .sip.digest import answer, best_challenge, parse_challenge
from .sip.errors import SipParseError
from .sip.message import START_NAME, Request, Response
from .trunk_auth import OutboundCredentials

__all__ = ["MAX_STALE", "authorize", "challenge_is_stale", "credentials_header"]

#: Stale-nonce challenges answered again for one request, at most.
MAX_STALE = 2


def credentials_header(status: int) -> bytes:
    """The header that answers a 401 (``authorization``) or a 407 (``proxy-authorization``)."""
    return b"proxy-authorization" if status == 407 else b"authorization"


def _challenge_header(status: int) -> bytes:
    return b"proxy-authenticate" if status == 407 else b"www-authenticate"


def challenge_is_stale(resp: Response) -> bool:
    """Whether ``resp`` (a 401 or 407) says the nonce ansim answered with had expired."""
    for value in resp.get_all(_challenge_header(resp.status)):
        try:
            if parse_challenge(value).stale:
                return True
        except ValueError:
            continue
    return False


def authorize(
    req: Request,
    resp: Response,
    creds: OutboundCredentials,
    via: bytes,
    cseq: int,
    cnonce: str | None = None,
) -> Request | None:
    """``req`` again, answering the challenge of ``resp`` (401 or 407) with ``creds``: a
    new Via (``via``, a complete value with a fresh branch) and CSeq ``cseq``. None when
    ``resp`` holds no challenge ansim can answer, or ``req`` already answered one of this
    kind and the new one is not stale (the credentials were refused)."""
    status = resp.status
    header = credentials_header(status)
    if header in req.names and not challenge_is_stale(resp):
        return None
    challenge = best_challenge(resp.get_all(_challenge_header(status)), creds.realm)
    if challenge is None:
        return None
    try:
        uri = req.uri.decode()
    except UnicodeDecodeError:
        return None
    answered = answer(
        challenge,
        creds.username,
        creds.password.get_secret_value(),
        req.method.decode(),
        uri,
        cnonce or os.urandom(12).hex(),
        1,
        req.body,
    )
    lines = [req.lines[0]]
    names = [START_NAME]
    via_done = False
    for line, name in zip(req.lines[1:], req.names[1:], strict=True):
        if name == b"via":
            if not via_done:  # ansim's own Via: the only one it writes
                lines.append(b"Via: " + via)
                names.append(name)
                via_done = True
            continue
        if name == b"cseq":
            lines.append(b"CSeq: %d %s" % (cseq, req.method))
        elif name == header or name == b"content-length":
            continue
        else:
            lines.append(line)
        names.append(name)
    out = Request(req.method, req.uri, lines, names, req.body)
    out.add(header, answered.header_value())
    return out


def request_cseq(req: Request) -> int:
    """The CSeq number of a request ansim built (0 when unreadable)."""
    try:
        return req.cseq[0]
    except SipParseError:
        return 0
