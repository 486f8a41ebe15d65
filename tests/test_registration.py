"""The registration state machine (b2bua.registration), sans-IO: what it sends, what each
answer of a registrar does to it, and when it wants to send again."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from b2bua.registration import Registration, RegState, refresh_delay
from b2bua.sip.digest import parse_credentials
from b2bua.sip.message import Request, Response
from b2bua.sip.parser import parse_datagram
from b2bua.trunk_auth import OutboundCredentials

CONTACT = b"sip:ansim@192.0.2.1:5060"
VIA = b"SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKtest;rport"


def machine(**kw: object) -> Registration:
    args: dict[str, object] = {
        "aor": b"sip:ansim@carrier.test",
        "registrar_uri": b"sip:198.51.100.7:5060",
        "contact": CONTACT,
        "expires": 600,
        "credentials": OutboundCredentials(username="ansim", password=SecretStr("pw")),
        "call_id": b"reg-1@ansim",
        "from_tag": b"ft1",
        "retry_min": 2.0,
        "retry_max": 60.0,
        **kw,
    }
    return Registration(**args)  # type: ignore[arg-type]


def reply(req: Request, status: int, *headers: str) -> Response:
    lines = [f"SIP/2.0 {status} Whatever"]
    for name in (b"via", b"from", b"to", b"call-id", b"cseq"):
        lines.append(f"{name.decode()}: {(req.get(name) or b'').decode()}")
    lines += [*headers, "Content-Length: 0"]
    msg = parse_datagram(("\r\n".join(lines) + "\r\n\r\n").encode())
    assert isinstance(msg, Response)
    return msg


def challenge(req: Request, stale: bool = False, status: int = 401) -> Response:
    name = "WWW-Authenticate" if status == 401 else "Proxy-Authenticate"
    extra = ", stale=true" if stale else ""
    return reply(
        req, status, f'{name}: Digest realm="c", nonce="n{req.cseq[0]}", qop="auth"{extra}'
    )


def test_register_challenge_grant_and_refresh() -> None:
    m = machine()
    m.start(100.0)
    assert m.due(100.0) and m.state == RegState.IDLE
    req = m.request(VIA, 100.0)
    data = parse_datagram(req.serialize())
    assert isinstance(data, Request) and data.method == b"REGISTER"
    assert data.uri == b"sip:198.51.100.7:5060" and data.cseq == (1, b"REGISTER")
    assert data.get(b"expires") == b"600" and data.get(b"contact") == b"<" + CONTACT + b">"
    assert data.get(b"to") == b"<sip:ansim@carrier.test>"
    assert m.state == RegState.REGISTERING and not m.due(100.0)
    again = m.on_response(challenge(req), VIA, 100.1)
    assert again is not None and again.cseq == (2, b"REGISTER")
    assert again.get(b"call-id") == req.get(b"call-id") and again.get(b"from") == req.get(b"from")
    creds = parse_credentials(again.get(b"authorization") or b"")
    assert (creds.username, creds.realm, creds.nonce, creds.uri) == (
        "ansim", "c", "n1", "sip:198.51.100.7:5060"
    )  # fmt: skip
    # the registrar grants less than asked, in the Contact's expires
    ok = reply(again, 200, f"Contact: <{CONTACT.decode()}>;expires=300, <sip:other@h>;expires=9")
    assert m.on_response(ok, VIA, 100.2) is None
    assert (m.state, m.granted, m.expires_at) == (RegState.REGISTERED, 300, 400.2)
    assert m.next_at == pytest.approx(100.2 + refresh_delay(300))
    assert not m.due(200.0) and m.due(m.next_at)
    refresh = m.request(VIA, 250.0)
    assert refresh.cseq == (3, b"REGISTER") and refresh.get(b"call-id") == b"reg-1@ansim"
    assert m.on_response(reply(refresh, 200, "Expires: 120"), VIA, 250.1) is None
    assert (m.state, m.granted) == (RegState.REGISTERED, 120)  # no Contact: Expires


def test_refresh_delay() -> None:
    assert refresh_delay(4) == 2 and refresh_delay(240) == 120
    assert refresh_delay(3600) == 3480


def test_second_challenge_is_a_failure_unless_stale() -> None:
    m = machine()
    m.start(0.0)
    req = m.request(VIA, 0.0)
    answered = m.on_response(challenge(req), VIA, 0.1)
    assert answered is not None
    # stale: answered again, at most twice
    second = m.on_response(challenge(answered, stale=True), VIA, 0.2)
    assert second is not None
    third = m.on_response(challenge(second, stale=True), VIA, 0.3)
    assert third is not None
    assert m.on_response(challenge(third, stale=True), VIA, 0.4) is None
    assert m.state == RegState.FAILED and m.failures == 1
    # a plain second challenge: the credentials were refused
    req = m.request(VIA, m.next_at or 0.0)
    answered = m.on_response(challenge(req, status=407), VIA, 5.0)
    assert answered is not None and answered.get(b"proxy-authorization")
    assert m.on_response(challenge(answered, status=407), VIA, 5.1) is None
    assert m.state == RegState.FAILED and m.failures == 2


def test_failures_back_off_and_retry_after_is_honoured() -> None:
    m = machine(retry_min=2.0, retry_max=10.0)
    m.start(0.0)
    waits = []
    now = 0.0
    for _ in range(5):
        req = m.request(VIA, now)
        m.on_response(reply(req, 403), VIA, now)
        assert m.state == RegState.FAILED and m.next_at is not None
        waits.append(m.next_at - now)
        now = m.next_at
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]
    req = m.request(VIA, now)
    m.on_response(reply(req, 503, "Retry-After: 45"), VIA, now)
    assert m.next_at == now + 45
    # no answer at all, then success: the count starts again
    now += 45
    m.request(VIA, now)
    m.on_failure(now, 408)
    assert m.last_status == 408 and m.failures == 7
    req = m.request(VIA, now + 10)
    m.on_response(reply(req, 200), VIA, 200.0)
    assert m.state == RegState.REGISTERED and m.failures == 0 and m.granted == 600


def test_interval_too_brief_asks_for_min_expires() -> None:
    m = machine(expires=60)
    m.start(0.0)
    req = m.request(VIA, 0.0)
    again = m.on_response(reply(req, 423, "Min-Expires: 1800"), VIA, 0.1)
    assert again is not None and again.get(b"expires") == b"1800"
    # a 423 that asks for nothing more is a failure
    assert m.on_response(reply(again, 423, "Min-Expires: 100"), VIA, 0.2) is None
    assert m.state == RegState.FAILED


def test_zero_grant_and_stop() -> None:
    m = machine()
    m.start(0.0)
    req = m.request(VIA, 0.0)
    m.on_response(reply(req, 200, f"Contact: <{CONTACT.decode()}>;expires=0"), VIA, 0.1)
    assert m.state == RegState.FAILED and m.next_at == 2.1
    assert m.stop(1.0) is False and m.state == RegState.UNREGISTERED
    m = machine()
    m.start(0.0)
    m.on_response(reply(m.request(VIA, 0.0), 200), VIA, 0.1)
    assert m.stop(10.0) is True and m.state == RegState.UNREGISTERING
    bye = m.request(VIA, 10.0)
    assert bye.get(b"expires") == b"0" and m.state == RegState.UNREGISTERING
    m.on_response(reply(bye, 200), VIA, 10.1)
    assert m.state == RegState.UNREGISTERED and m.next_at is None and m.expires_at is None


def test_responses_without_a_request_out_are_ignored() -> None:
    m = machine()
    m.start(0.0)
    req = m.request(VIA, 0.0)
    m.on_response(reply(req, 200), VIA, 0.1)
    before = (m.state, m.next_at, m.cseq)
    assert m.on_response(reply(req, 200), VIA, 0.2) is None  # a retransmitted 200
    assert m.on_response(reply(req, 100), VIA, 0.2) is None
    m.on_failure(0.3, 408)
    assert (m.state, m.next_at, m.cseq) == before
