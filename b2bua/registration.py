"""ansim's registration at a carrier's registrar: one binding's state machine (sans-IO).

A ``Registration`` builds the REGISTER requests of one binding (RFC 3261 §10.2: the
same Call-ID for every request, CSeq rising, ansim's Contact with the expiry asked for),
reads the registrar's answers and says when it next needs to send (``next_at``). The
engine's side (``b2bua.registrar_client``) sends what it builds, feeds it the responses
and arms one timer at ``next_at``; the time is always passed in.

States (``RegState``): ``IDLE`` before the first request, ``REGISTERING`` while a
request is out, ``REGISTERED`` once the registrar accepted the binding (its expiry is
the one it granted: the ``expires`` of ansim's Contact in the 200, else its Expires,
else what was asked), ``FAILED`` after a refusal or no answer (retried after
``retry_min`` seconds, doubling up to ``retry_max``; a 503's Retry-After is honoured),
``UNREGISTERING`` and ``UNREGISTERED`` when the engine stops and removes the binding.
A binding is refreshed before it expires: halfway through a grant of up to four
minutes, two minutes before the end of a longer one. A 401 or 407 is answered with the
trunk's credentials (``b2bua.outbound_auth``: once per request, again only for a stale
nonce); a 423 is answered by asking for the registrar's Min-Expires.
"""

from __future__ import annotations

from enum import Enum

from .outbound_auth import MAX_STALE, authorize, challenge_is_stale
from .sip.errors import SipParseError
from .sip.headers import split_values
from .sip.message import START_NAME, Request, Response
from .sip.uri import parse_name_addr
from .trunk_auth import OutboundCredentials

__all__ = ["RegState", "Registration", "refresh_delay"]


class RegState(Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"
    UNREGISTERED = "unregistered"


def refresh_delay(granted: float) -> float:
    """Seconds after a grant of ``granted`` seconds at which the binding is refreshed."""
    return granted / 2 if granted <= 240 else granted - 120


def _digits(value: bytes | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) <= 9 else None


class Registration:
    """One binding of ``aor`` to ``contact`` at ``registrar_uri``."""

    def __init__(
        self,
        *,
        aor: bytes,
        registrar_uri: bytes,
        contact: bytes,
        expires: int,
        credentials: OutboundCredentials,
        call_id: bytes,
        from_tag: bytes,
        retry_min: float,
        retry_max: float,
    ) -> None:
        self.aor = aor
        self.registrar_uri = registrar_uri
        self.contact = contact  # a URI, sip:user@host:port[;transport=tcp]
        self.expires = expires  # asked for (raised by a 423's Min-Expires)
        self.credentials = credentials
        self.call_id = call_id
        self.from_tag = from_tag
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.cseq = 0
        self.state = RegState.IDLE
        self.next_at: float | None = None  # when ``request`` should be called next
        self.expires_at: float | None = None  # when the registrar's binding ends
        self.granted: int | None = None
        self.failures = 0
        self.last_status: int | None = None
        self._stale = 0
        self._last: Request | None = None  # the request out, for its challenge

    def start(self, now: float) -> None:
        """Register from ``now`` on."""
        self.next_at = now

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at and self._last is None

    def request(self, via: bytes, now: float) -> Request:
        """The REGISTER to send now (``via`` a complete Via value with a fresh branch)."""
        expires = (
            0 if self.state in (RegState.UNREGISTERING, RegState.UNREGISTERED) else self.expires
        )
        if self.state not in (RegState.UNREGISTERING, RegState.UNREGISTERED):
            self.state = RegState.REGISTERING
        self.cseq += 1
        lines = [
            b"REGISTER " + self.registrar_uri + b" SIP/2.0",
            b"Via: " + via,
            b"Max-Forwards: 70",
            b"From: <" + self.aor + b">;tag=" + self.from_tag,
            b"To: <" + self.aor + b">",
            b"Call-ID: " + self.call_id,
            b"CSeq: %d REGISTER" % self.cseq,
            b"Contact: <" + self.contact + b">",
            b"Expires: %d" % expires,
        ]
        names = [
            START_NAME,
            b"via",
            b"max-forwards",
            b"from",
            b"to",
            b"call-id",
            b"cseq",
            b"contact",
            b"expires",
        ]
        req = Request(b"REGISTER", self.registrar_uri, lines, names)
        self._last = req
        self._stale = 0
        self.next_at = None
        return req

    def on_response(self, resp: Response, via: bytes, now: float) -> Request | None:
        """The registrar's answer to the request out; a request to send at once (the
        challenge answered, or a longer expiry asked for), or None."""
        status = resp.status
        last = self._last
        if status < 200 or last is None:
            return None
        self.last_status = status
        if 200 <= status < 300:
            self._last = None
            if self.state == RegState.UNREGISTERING:
                self.state = RegState.UNREGISTERED
                self.expires_at = None
                return None
            granted = self._granted(resp)
            self.granted = granted
            self.failures = 0
            if granted <= 0:  # the registrar removed the binding: register again later
                self.state = RegState.FAILED
                self.expires_at = None
                self.next_at = now + self.retry_min
                return None
            self.state = RegState.REGISTERED
            self.expires_at = now + granted
            self.next_at = now + refresh_delay(granted)
            return None
        if status in (401, 407):
            stale = challenge_is_stale(resp)
            if not stale or self._stale < MAX_STALE:
                self.cseq += 1
                out = authorize(last, resp, self.credentials, via, self.cseq)
                if out is not None:
                    if stale:
                        self._stale += 1
                    self._last = out
                    return out
                self.cseq -= 1
        elif status == 423:
            least = _digits(resp.get(b"min-expires"))
            if least is not None and least > self.expires:
                self.expires = least
                self._last = None
                return self.request(via, now)
        self._fail(now, _digits(resp.get(b"retry-after")) if status == 503 else None)
        return None

    def on_failure(self, now: float, status: int) -> None:
        """The request out had no answer (408) or could not be sent (503)."""
        if self._last is None:
            return
        self.last_status = status
        self._fail(now, None)

    def _fail(self, now: float, retry_after: int | None) -> None:
        self._last = None
        if self.state == RegState.UNREGISTERING:
            self.state = RegState.UNREGISTERED
            return
        self.state = RegState.FAILED
        if self.expires_at is not None and now >= self.expires_at:
            self.expires_at = None
        self.failures += 1
        wait = min(self.retry_min * 2 ** (self.failures - 1), self.retry_max)
        if retry_after is not None:
            wait = max(wait, float(retry_after))
        self.next_at = now + wait

    def stop(self, now: float) -> bool:
        """Remove the binding (the engine stops): True when an unregistering request is
        to be sent now (``request``), False when there is nothing to remove."""
        registered = self.expires_at is not None and now < self.expires_at
        self.next_at = None
        if not registered:
            self.state = RegState.UNREGISTERED
            return False
        self.state = RegState.UNREGISTERING
        self._last = None
        self.next_at = now
        return True

    def _granted(self, resp: Response) -> int:
        """The expiry the registrar granted ansim's contact (see the module docstring)."""
        ours = self.contact
        for line in resp.get_all(b"contact"):
            for value in split_values(line):
                try:
                    addr = parse_name_addr(value)
                except SipParseError:
                    continue
                if addr.uri_raw == ours:
                    granted = _digits(addr.params.get(b"expires"))
                    if granted is not None:
                        return granted
        header = _digits(resp.get(b"expires"))
        return header if header is not None else self.expires
