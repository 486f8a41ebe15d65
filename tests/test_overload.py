"""``b2bua.overload``: the detector's decisions from queueing delays, with the clock
passed in, and its RFC 7339 parameters."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from b2bua.endpoint import SipEndpoint
from b2bua.overload import OverloadDetector, OverloadLimits
from b2bua.sip.parser import parse_datagram
from b2bua.sip.transaction import Event, RequestReceived


def run(det: OverloadDetector, delays: list[float], start: float, turns: int = 10) -> float:
    """One interval per entry of ``delays``: ``turns`` read turns each seeing that delay."""
    t = start
    for d in delays:
        for i in range(turns):
            det.observe(d, t + i * det.limits.interval / turns)
        t += det.limits.interval
    return t


def test_an_engine_that_keeps_up_admits_everything() -> None:
    det = OverloadDetector()
    run(det, [0.0005] * 100, 0.0)
    assert not det.shedding and det.admit_share == 1.0


def test_a_burst_read_away_within_an_interval_is_not_overload() -> None:
    det = OverloadDetector()
    t = 0.0
    for _ in range(50):
        det.observe(0.3, t)  # a burst queued for 300 ms ...
        det.observe(0.0002, t + 0.05)  # ... then the queue is empty again
        t += 0.1
    assert not det.shedding


def test_a_stall_that_left_no_queue_is_not_overload() -> None:
    """The first datagram after a pause of the engine is old, but the turn reads the
    socket empty: there is no standing queue, whatever the pause lasted."""
    det = OverloadDetector()
    t = 0.0
    for _ in range(20):
        t += 1.0  # an engine that is mostly idle ...
        det.observe(0.6, t, drained=True)  # ... and stalls before each datagram
        det.tick(t + 0.5)
        assert not det.shedding
    # the same turns, leaving datagrams behind each time, are a standing queue
    for _ in range(3):
        t += 1.0
        det.observe(0.6, t, drained=False)
        det.tick(t + 0.5)
    assert det.shedding and det.cut_delay == 0.6


def test_one_drained_turn_in_an_interval_means_the_queue_was_gone() -> None:
    det = OverloadDetector()
    t = 0.0
    for _ in range(30):
        for i in range(9):
            det.observe(0.4, t + i * 0.01)  # full turns: datagrams still queued ...
        det.observe(0.4, t + 0.095, drained=True)  # ... until the last one empties it
        t += 0.1
    assert not det.shedding and det.delay == 0.0


def test_a_standing_queue_cuts_new_calls_and_recovery_restores_them() -> None:
    det = OverloadDetector(OverloadLimits(max_delay=0.05))
    t = run(det, [0.2] * 5, 0.0)
    assert det.shedding
    assert 0.25 < det.admit_share < 0.5  # 0.8 ** 4 or 5
    admitted = sum(det.admit() for _ in range(1000))
    assert abs(admitted - det.admit_share * 1000) <= 1  # spread evenly, no random draw
    # the queue is gone: the share climbs back by steps
    t = run(det, [0.001] * 10, t)
    assert det.shedding and det.admit_share < 1.0
    t = run(det, [0.001] * 40, t)
    assert not det.shedding and det.admit_share == 1.0
    assert det.admit_share >= 0.02


def test_the_share_never_falls_to_zero() -> None:
    det = OverloadDetector()
    run(det, [5.0] * 200, 0.0)
    assert det.admit_share == det.limits.min_admit
    assert sum(det.admit() for _ in range(1000)) == 20


def test_an_idle_engine_recovers_without_traffic() -> None:
    det = OverloadDetector()
    t = run(det, [1.0] * 10, 0.0)
    assert det.shedding
    det.tick(t + 10.0)  # ten seconds without a datagram
    assert not det.shedding


def test_rfc7339_parameters() -> None:
    det = OverloadDetector()
    assert not det.oc_active(0.0)
    t = run(det, [0.5] * 3, 0.0)
    assert det.oc_active(t)
    params = det.oc_params(1_700_000_000.0)
    loss = round((1 - det.admit_share) * 100)
    assert params.startswith(b";oc=%d;oc-validity=2000;oc-seq=17000" % loss)
    assert params.endswith(b';oc-algo="loss"')
    seq1 = float(params.split(b"oc-seq=")[1].split(b";")[0])
    t = run(det, [0.001] * 60, t)
    assert not det.shedding
    # after the overload, oc=0 for the validity period, then nothing
    assert det.oc_active(det._changed + 1.0)
    end = det.oc_params(1_700_000_000.0)
    assert end.startswith(b";oc=0;oc-validity=0;")
    assert float(end.split(b"oc-seq=")[1].split(b";")[0]) > seq1
    assert not det.oc_active(det._changed + 3.0)


class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def time(self) -> float:
        return self.t

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        return None


class _Wire:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(data)


class _Engine:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def handle_event(self, event: Event, now: float) -> None:
        self.events.append(event)


def _invite(n: int, via_params: str) -> bytes:
    return (
        f"INVITE sip:+82507000000@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKoc{n}{via_params}\r\n"
        f"From: <sip:+821000000001@127.0.0.1>;tag=f{n}\r\n"
        "To: <sip:+82507000000@127.0.0.1>\r\n"
        f"Call-ID: oc-{n}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        "Contact: <sip:c@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_the_stateless_503_tells_an_rfc7339_client_by_how_much_to_cut() -> None:
    clock, wire, engine = _Clock(), _Wire(), _Engine()
    det = OverloadDetector()
    ep = SipEndpoint(overload=det)
    ep._loop = clock  # type: ignore[assignment]
    ep.transports.attach_udp(wire)  # type: ignore[arg-type]
    ep.user = engine
    run(det, [0.5] * 5, clock.t - 0.5)  # a standing queue: about two calls in three cut
    assert det.shedding and det.admit_share < 0.5
    loss = b"%d" % round((1 - det.admit_share) * 100)
    for n in range(20):
        ep.on_datagram(_invite(n, ';oc;oc-algo="loss,rate"'), ("udp", "127.0.0.1", 5070))
        ep.on_datagram(_invite(100 + n, ""), ("udp", "127.0.0.1", 5070))
    refused = [parse_datagram(d) for d in wire.sent]
    assert refused and all(m.status == 503 for m in refused)
    to_oc = [m for m in refused if m.call_id.startswith(b"oc-") and int(m.call_id[3:]) < 100]
    plain = [m for m in refused if int(m.call_id[3:]) >= 100]
    assert to_oc and plain
    for m in to_oc:
        params = m.via.params
        assert params[b"oc"] == loss and params[b"oc-algo"] == b'"loss"', m.via
        assert params[b"oc-validity"] == b"2000" and b"oc-seq" in params
    assert not any(b"oc" in m.via.params for m in plain)
    # the admitted INVITEs from the oc client reach the engine stamped as well: the
    # responses the call sends are built from their Via lines
    admitted = [e.request for e in engine.events if isinstance(e, RequestReceived)]
    stamped = [r.lines[r.names.index(b"via")] for r in admitted if int(r.call_id[3:]) < 100]
    assert stamped and all(b";oc=" + loss + b";" in line for line in stamped), stamped
