"""``b2bua.flood``: per-source token buckets, bans, scanner fingerprints and probes, on
datagrams as they arrive, with the clock passed in."""

from __future__ import annotations

import pytest

from b2bua.flood import (
    BANNED,
    CALLS,
    PASS,
    PROBE,
    RATE,
    SCANNER,
    SCANNERS,
    FloodGuard,
    FloodLimits,
)


def request(method: str = "INVITE", agent: str = "carrier-sbc/1.0", extra: str = "") -> bytes:
    return (
        f"{method} sip:+82507000@10.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\n"
        "From: <sip:100@192.0.2.7>;tag=1\r\nTo: <sip:200@10.0.0.1>\r\n"
        f"Call-ID: c1\r\nCSeq: 1 {method}\r\nUser-Agent: {agent}\r\n{extra}"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def guard(**kw: object) -> FloodGuard:
    return FloodGuard(FloodLimits(**kw), ["203.0.113.0/24", "2001:db8::/32", "198.51.100.9"])  # type: ignore[arg-type]


def test_trusted_sources_are_never_limited() -> None:
    g = guard()
    for host in ("203.0.113.5", "198.51.100.9", "2001:db8::7"):
        assert all(g.check(request(), host, 0.0) == PASS for _ in range(10_000))
        # not even scanners or probes: a trunk's own equipment is the operator's matter
        assert g.check(request("OPTIONS", "friendly-scanner"), host, 0.0) == PASS
    assert not g.banned and not g.dropped


def test_requests_over_the_bucket_ban_the_source_until_it_stops() -> None:
    g = guard(requests=16, requests_seconds=2.0, calls=100, ban_seconds=60.0)
    host = "192.0.2.7"
    verdicts = [g.check(request("BYE"), host, 0.0) for _ in range(17)]
    assert verdicts[:16] == [PASS] * 16 and verdicts[16] == RATE
    assert g.bans == {RATE: 1} and g.take_new_bans() == ([(host, RATE)], 0)
    assert g.is_banned(host, 1.0)
    # everything from it is dropped while it keeps sending, and the ban goes on
    for t in range(1, 200):
        assert g.check(request("BYE"), host, float(t)) == BANNED
    assert g.is_banned(host, 199.0 + 59.0)
    # quiet for ban_seconds: allowed again, with a full bucket
    assert g.check(request("BYE"), host, 199.0 + 61.0) == PASS
    assert g.dropped[BANNED] == 199


def test_the_bucket_refills_at_its_rate() -> None:
    g = guard(requests=16, requests_seconds=2.0, calls=100)
    host = "192.0.2.8"
    # 8 requests a second, for a minute: exactly the rate, never over
    for i in range(480):
        assert g.check(request("BYE"), host, i / 8) == PASS
    assert not g.banned


def test_invites_have_a_bucket_of_their_own() -> None:
    g = guard(requests=100, calls=4, calls_seconds=2.0)
    host = "192.0.2.9"
    assert [g.check(request(), host, 0.0) for _ in range(5)] == [PASS] * 4 + [CALLS]
    assert g.is_banned(host, 0.5)


@pytest.mark.parametrize("scanner", SCANNERS)
@pytest.mark.parametrize("where", ["agent", "agent-upper", "from"])
def test_scanners_are_banned_on_their_first_message(scanner: str, where: str) -> None:
    g = guard()
    if where == "agent":
        data = request("OPTIONS", scanner + " 0.3.1")
    elif where == "agent-upper":
        data = request("INVITE", scanner.upper())
    else:  # SIPVicious writes its name in From as well
        data = request("REGISTER").replace(b"From: <sip:100", f'From: "{scanner}"<sip:100'.encode())
    assert g.check(data, "192.0.2.10", 0.0) == SCANNER
    assert g.is_banned("192.0.2.10", 1.0)


def test_a_fingerprint_in_the_body_is_not_a_scanner() -> None:
    g = guard()
    data = request("INVITE").replace(
        b"Content-Length: 0\r\n\r\n", b"Content-Length: 16\r\n\r\nfriendly-scanner"
    )
    assert g.check(data, "192.0.2.11", 0.0) == PASS


def test_options_and_register_from_unknown_sources_are_dropped_silently() -> None:
    g = guard()
    assert g.check(request("OPTIONS"), "192.0.2.12", 0.0) == PROBE
    assert g.check(request("REGISTER"), "192.0.2.12", 0.0) == PROBE
    assert not g.banned  # a single probe is not a flood ...
    # ... but a sweep is one: it runs the request bucket dry
    verdicts = {g.check(request("OPTIONS"), "192.0.2.12", 0.0) for _ in range(20)}
    assert verdicts == {PROBE, RATE, BANNED}
    g2 = guard(drop_probes=False)
    assert g2.check(request("OPTIONS"), "192.0.2.12", 0.0) == PASS


def test_tables_are_bounded_and_expire() -> None:
    g = guard(max_sources=1000, ban_seconds=10.0, requests=1)
    for i in range(5000):
        g.check(request("BYE"), f"10.1.{i // 256}.{i % 256}", 0.0)
        assert g.sources() <= 1000
        g.check(request("BYE"), f"10.1.{i // 256}.{i % 256}", 0.0)
    assert len(g.banned) == 1000 and sum(g.bans.values()) == 5000
    bans, lost = g.take_new_bans()
    assert len(bans) == 100 and lost == sum(g.bans.values()) - 100
    g.expire(11.0)
    assert not g.banned and g.sources() == 0


def test_a_stream_message_is_checked_by_its_head() -> None:
    g = guard()
    head = request("INVITE", "sipcli/v1.8").split(b"\r\n\r\n")[0]
    assert g.check_message(head, "192.0.2.13", 0.0) == SCANNER
    assert g.check_message(head, "203.0.113.1", 0.0) == PASS
