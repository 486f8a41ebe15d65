"""Inbound digest authentication: which new INVITE is challenged, and what its answer
is worth (sans-IO).

A trunk with ``auth`` has every new INVITE challenged (407 with ``Proxy-Authenticate``,
or 401 with ``WWW-Authenticate``: one challenge per algorithm it offers) before anything
else is done with it: no lookup, no call state, no record. A trunk with ``auth`` and no
``accept_from`` is known by its credentials alone: an INVITE from an address no trunk
accepts is challenged in the realms of those trunks, and its answer's username and
realm say which trunk it is.

RFC 3261 §22 and the choices made here:

- ACK for the 407 is absorbed by the INVITE's server transaction and never reaches
  this module; CANCEL cannot be challenged (§22.1) and is matched to the INVITE it
  cancels, which only the party that sent it knows.
- In-dialog requests (BYE, re-INVITE, UPDATE, INFO, ...) are not challenged: they are
  matched by Call-ID and the tags of a dialog set up by an authenticated INVITE, and
  ansim's own tag is random (40 bits and more), so only a party of that dialog can
  address it; carriers commonly fail calls whose BYE is challenged.
- A wrong password, a replayed nonce count, or credentials that do not fit the
  challenge (another realm, an algorithm not offered, no qop=auth, a ``uri`` that is
  neither the Request-URI nor its host and port) are refused with 403 and recorded (CDR reason ``auth_failed``,
  ``auth_replay``, ``auth_malformed``). A stale nonce (older than
  ``nonce_lifetime``, with a response that is right for it) is challenged again with
  ``stale=true``; a nonce this process did not make (another worker's, or from before a
  restart) is challenged again without it.

The nonce key is random per process, so a client is verified by the worker that
challenged it: with several workers behind a dispatcher, route by Call-ID (a client
retries a challenged INVITE with the same Call-ID) or by source address.
"""

from __future__ import annotations

from dataclasses import dataclass

from .sip.digest import DigestError, DigestServer, Outcome, ha1, parse_credentials
from .sip.errors import SipParseError
from .sip.message import Request
from .sip.uri import parse_uri
from .trunks import Trunk, TrunkTable

__all__ = ["AuthVerdict", "InboundAuth"]

#: Outcome -> (status, CDR reason) of a refusal; outcomes missing here are challenged.
_REFUSED = {
    Outcome.WRONG: "auth_failed",
    Outcome.REPLAY: "auth_replay",
    Outcome.MALFORMED: "auth_malformed",
}


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """What to do with a new INVITE: go on as a call from ``trunk`` (``status`` 0), or
    answer ``status`` with ``headers`` (a challenge), ``reason`` naming a refusal (403)
    for its record (``trunk`` then the trunk its credentials named, if any)."""

    status: int
    trunk: Trunk | None
    headers: list[tuple[bytes, bytes]] | None = None
    reason: str | None = None


def digest_uri_fits(written: str, req: Request) -> bool:
    """Whether the ``uri`` a client's credentials name fits the request: the Request-URI
    itself (RFC 3261 §22.4), or a SIP URI of the same host and port without the user part
    (what SIPp writes). The response is computed over what was written either way."""
    raw = req.uri
    if written.encode() == raw:
        return True
    try:
        mine = parse_uri(raw)
        theirs = parse_uri(written.encode())
    except (SipParseError, UnicodeEncodeError):
        return False
    return (
        theirs.user is None
        and theirs.scheme == mine.scheme
        and theirs.host.lower() == mine.host.lower()
        and (theirs.port or 5060) == (mine.port or 5060)
    )


class InboundAuth:
    """Challenges and verifies new INVITEs for the trunks that have ``auth``."""

    def __init__(self, trunks: TrunkTable, key: bytes, lifetime: float) -> None:
        self.trunks = trunks
        self.server = DigestServer(key, lifetime)
        self._ha1: dict[tuple[str, str], str] = {}
        # outcome name (or "challenged") -> count, read by the metrics collector
        self.stats: dict[str, int] = {}
        only = trunks.credential_only
        # Realms (in order) and their algorithms, for requests from unknown addresses.
        self._open: dict[str, list[str]] = {}
        for t in only:
            assert t.auth is not None
            algs = self._open.setdefault(t.auth.realm or trunks.auth_realm, [])
            algs.extend(a for a in t.auth.algorithms if a not in algs)
        self._open_status = only[0].auth.status if only and only[0].auth is not None else 407

    @property
    def open(self) -> bool:
        """Whether requests from addresses no trunk accepts are challenged."""
        return bool(self._open)

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def check(self, req: Request, trunk: Trunk | None, now: float) -> AuthVerdict:
        """The verdict on new INVITE ``req`` from a source that ``trunk`` accepts (a trunk
        with ``auth``), or that no trunk accepts (None: the credential-only trunks)."""
        if trunk is not None:
            auth = trunk.auth
            assert auth is not None
            realms: dict[str, list[str]] = {
                auth.realm or self.trunks.auth_realm: list(auth.algorithms)
            }
            status = auth.status
        else:
            realms, status = self._open, self._open_status
        answer_header = b"proxy-authorization" if status == 407 else b"authorization"
        creds = None
        for value in req.get_all(answer_header):
            try:
                c = parse_credentials(value)
            except DigestError:
                continue
            if c.realm in realms:
                creds = c
                break
        if creds is None:
            return self._challenge(realms, status, now, False)
        named = self.trunks.by_credentials.get((creds.realm, creds.username))
        if (
            named is None
            or (trunk is not None and named is not trunk)
            or (trunk is None and named.accept_from)
        ):
            # No such user here, or another trunk's credentials: as a wrong password.
            self._count("auth_failed")
            return AuthVerdict(403, trunk, reason="auth_failed")
        auth = named.auth
        assert auth is not None
        password = auth.password.get_secret_value()
        cache = self._ha1

        def ha1_of(algorithm: str) -> str:
            key = (named.name, algorithm)
            value = cache.get(key)
            if value is None:
                value = cache[key] = ha1(algorithm, auth.username, creds.realm, password)
            return value

        outcome = self.server.verify(
            creds,
            req.method.decode(),
            lambda written: digest_uri_fits(written, req),
            creds.realm,
            tuple(auth.algorithms),
            ha1_of,
            now,
        )
        if outcome is Outcome.OK:
            self._count("ok")
            return AuthVerdict(0, named)
        reason = _REFUSED.get(outcome)
        if reason is not None:
            self._count(reason)
            return AuthVerdict(403, named, reason=reason)
        self._count("stale" if outcome is Outcome.STALE else "unknown_nonce")
        return self._challenge(realms, status, now, outcome is Outcome.STALE)

    def _challenge(
        self, realms: dict[str, list[str]], status: int, now: float, stale: bool
    ) -> AuthVerdict:
        self._count("challenged")
        name = b"proxy-authenticate" if status == 407 else b"www-authenticate"
        headers = [
            (name, value)
            for realm, algorithms in realms.items()
            for value in self.server.challenges(realm, tuple(algorithms), now, stale)
        ]
        return AuthVerdict(status, None, headers)

    def housekeeping(self, now: float) -> None:
        """Forget the counts of nonces past their lifetime (the engine calls it now and then)."""
        self.server.forget_expired(now)
