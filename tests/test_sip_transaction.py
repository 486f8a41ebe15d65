"""Every state-machine path of ``b2bua.sip.transaction`` (RFC 3261 §17 with RFC 6026),
driven by a fake clock: time is a plain float passed to ``receive``/``handle_timer``,
and ``get_timer`` is checked after every step.

INVITE client (Calling, Proceeding, Completed with the ACK it builds, Accepted,
Terminated; timers A, B, D, M), non-INVITE client (Trying, Proceeding, Completed;
timers E, F, K), INVITE server (Proceeding, Completed, Confirmed, Accepted; timers G,
H, I, L), non-INVITE server (Trying, Proceeding, Completed; timer J), reliable
transports (no retransmission, zero-length wait timers), transport errors, RFC 2543
matching, CANCEL matching and stray messages. Each step asserts what went into the
outbox and which events came out.
"""

from __future__ import annotations

from typing import Any

import pytest

from b2bua.sip.message import Request, Response
from b2bua.sip.parser import parse_datagram
from b2bua.sip.responses import make_response
from b2bua.sip.transaction import (
    ClientTransaction,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
    TransactionTimeout,
    TransportError,
    ack_for,
)

T1, T2, T4 = 0.5, 4.0, 5.0
UDP = ("udp", "192.0.2.1", 5060)
TCP = ("tcp", "192.0.2.1", 5060)
PEER = ("udp", "198.51.100.9", 5070)


def layer() -> TransactionLayer:
    return TransactionLayer(TimerConfig(T1, T2, T4), is_reliable=lambda dest: dest[0] != "udp")


def request(
    method: bytes = b"INVITE",
    *,
    branch: bytes | None = b"z9hG4bKclient1",
    via_host: bytes = b"198.51.100.9:5070",
    cseq: int = 1,
    cseq_method: bytes | None = None,
    uri: bytes = b"sip:+825012345678@192.0.2.1",
    to_tag: bytes | None = None,
    call_id: bytes = b"call-1",
    extra: bytes = b"",
) -> Request:
    via = b"SIP/2.0/UDP " + via_host + (b";branch=" + branch if branch is not None else b"")
    data = (
        method + b" " + uri + b" SIP/2.0\r\n"
        b"Via: " + via + b", SIP/2.0/UDP 10.9.9.9;branch=z9hG4bKbelow\r\n"
        b"Route: <sip:proxy.example;lr>\r\n"
        b"Max-Forwards: 70\r\n"
        b"From: <sip:+821012345678@198.51.100.9>;tag=from1\r\n"
        b"To: <sip:+825012345678@192.0.2.1>" + (b";tag=" + to_tag if to_tag else b"") + b"\r\n"
        b"Call-ID: " + call_id + b"\r\n"
        b"CSeq: %d "
        % cseq
        + (cseq_method or method)
        + b"\r\n"
        + extra
        + b"Content-Length: 0\r\n\r\n"
    )
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    return msg


def response(req: Request, status: int, to_tag: bytes = b"uas1") -> Response:
    """A response as the far end would send it (parsed back from its bytes)."""
    msg = parse_datagram(make_response(req, status, to_tag=to_tag).serialize())
    assert isinstance(msg, Response)
    return msg


def sent(tl: TransactionLayer) -> list[tuple[bytes, Any]]:
    return tl.take_outbox()


def starts(tl: TransactionLayer) -> list[bytes]:
    """First lines of what was sent since the last look."""
    return [data.split(b"\r\n", 1)[0] for data, _ in sent(tl)]


def fire(tl: TransactionLayer, now: float) -> list[Any]:
    """Assert a timer is due exactly at ``now`` and fire it."""
    assert tl.get_timer() == pytest.approx(now)
    return tl.handle_timer(now)


# -- INVITE client transaction -------------------------------------------------------------------
def test_ict_timer_a_doubles_then_timer_b_times_out() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, UDP, 0.0)
    assert txn.state == State.CALLING and isinstance(txn, ClientTransaction)
    assert sent(tl) == [(inv.serialize(), UDP)]
    assert tl.handle_timer(0.49) == [] and sent(tl) == []
    at = T1
    times = []
    while at < 64 * T1:
        assert fire(tl, at) == []
        assert sent(tl) == [(inv.serialize(), UDP)]  # timer A: the INVITE again
        times.append(at)
        at += T1 * 2 ** len(times)  # the interval doubles, with no T2 cap for INVITE
    assert times == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    assert tl.retransmissions == 6
    events = fire(tl, 64 * T1)  # timer B
    assert events == [TransactionTimeout(txn)]
    assert txn.state == State.TERMINATED and sent(tl) == []
    assert tl.client == {} and tl.get_timer() is None


def test_ict_proceeding_completed_ack_and_timer_d() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, UDP, 0.0)
    sent(tl)
    trying = response(inv, 100)
    assert tl.receive(trying, UDP, 0.1) == [ResponseReceived(trying, txn)]
    assert txn.state == State.PROCEEDING
    assert tl.get_timer() is None  # no timer A and no timer B in Proceeding
    assert tl.handle_timer(100.0) == [] and sent(tl) == []
    ringing = response(inv, 180)
    assert tl.receive(ringing, UDP, 1.0) == [ResponseReceived(ringing, txn)]  # each passed up
    busy = response(inv, 486)
    assert tl.receive(busy, UDP, 2.0) == [ResponseReceived(busy, txn)]
    assert txn.state == State.COMPLETED
    ((ack_bytes, dest),) = sent(tl)
    assert dest == UDP and ack_bytes == txn.ack
    ack = parse_datagram(ack_bytes)
    assert isinstance(ack, Request) and ack.method == b"ACK" and ack.uri == inv.uri
    assert ack.get_all(b"via") == [b"SIP/2.0/UDP 198.51.100.9:5070;branch=z9hG4bKclient1"]
    assert ack.get(b"to") == busy.get(b"to") and ack.to_tag == b"uas1"
    for name in (b"from", b"call-id", b"route", b"max-forwards"):
        assert ack.get(name) == inv.get(name)
    assert ack.cseq == (1, b"ACK") and ack.body == b""
    assert tl.get_timer() == pytest.approx(2.0 + 32.0)  # timer D, at least 32 s
    # a retransmitted final is answered with the same ACK and not passed up
    assert tl.receive(busy, UDP, 3.0) == []
    assert sent(tl) == [(ack_bytes, UDP)]
    assert tl.receive(ringing, UDP, 3.1) == [] and sent(tl) == []
    assert fire(tl, 34.0) == []  # timer D: quietly Terminated
    assert txn.state == State.TERMINATED and tl.client == {} and tl.get_timer() is None
    assert tl.receive(busy, UDP, 35.0) == [StrayResponse(busy, UDP)]
    assert sent(tl) == []


def test_ict_calling_straight_to_completed() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, UDP, 0.0)
    sent(tl)
    fire(tl, 0.5)
    sent(tl)
    reject = response(inv, 603)
    assert tl.receive(reject, UDP, 0.7) == [ResponseReceived(reject, txn)]
    assert txn.state == State.COMPLETED and starts(tl) == [
        b"ACK sip:+825012345678@192.0.2.1 SIP/2.0"
    ]
    assert tl.get_timer() == pytest.approx(32.7)  # timers A and B are gone
    assert tl.handle_timer(1.5) == [] and sent(tl) == []


def test_ict_accepted_passes_2xx_retransmissions_up_until_timer_m() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, UDP, 0.0)
    sent(tl)
    tl.receive(response(inv, 180), UDP, 0.2)
    ok = response(inv, 200)
    assert tl.receive(ok, UDP, 1.0) == [ResponseReceived(ok, txn)]
    assert txn.state == State.ACCEPTED
    assert sent(tl) == []  # the ACK for a 2xx is the TU's, not the transaction's
    assert tl.get_timer() == pytest.approx(1.0 + 64 * T1)  # timer M
    assert tl.receive(ok, UDP, 1.5) == [ResponseReceived(ok, txn)]  # retransmission, passed up
    other = response(inv, 200, to_tag=b"fork2")  # a 2xx from another fork, passed up too
    assert tl.receive(other, UDP, 2.0) == [ResponseReceived(other, txn)]
    assert tl.receive(response(inv, 486), UDP, 2.5) == [] and sent(tl) == []
    assert tl.receive(response(inv, 183), UDP, 2.6) == []
    assert fire(tl, 33.0) == []
    assert txn.state == State.TERMINATED and tl.client == {}
    assert tl.receive(ok, UDP, 34.0) == [StrayResponse(ok, UDP)]


def test_ict_reliable_transport() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, TCP, 0.0)
    assert txn.reliable and len(sent(tl)) == 1
    assert tl.get_timer() == pytest.approx(64 * T1)  # timer B only, no timer A
    assert fire(tl, 32.0) == [TransactionTimeout(txn)]
    assert sent(tl) == [] and tl.retransmissions == 0
    # a final response over a reliable transport: timer D is zero
    inv2 = request(branch=b"z9hG4bKclient2")
    txn2 = tl.send_request(inv2, TCP, 40.0)
    sent(tl)
    not_found = response(inv2, 404)
    assert tl.receive(not_found, TCP, 41.0) == [ResponseReceived(not_found, txn2)]
    assert txn2.state == State.COMPLETED and starts(tl) == [
        b"ACK sip:+825012345678@192.0.2.1 SIP/2.0"
    ]
    assert fire(tl, 41.0) == []
    assert txn2.state == State.TERMINATED and tl.get_timer() is None


def test_ict_transport_error() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, UDP, 0.0)
    sent(tl)
    assert tl.transport_error(txn) == [TransportError(txn)]
    assert txn.state == State.TERMINATED and tl.client == {}
    assert tl.get_timer() is None and tl.handle_timer(100.0) == [] and sent(tl) == []
    late = response(inv, 200)
    assert tl.receive(late, UDP, 1.0) == [StrayResponse(late, UDP)]


# -- non-INVITE client transaction -----------------------------------------------------------------
def test_nict_timer_e_capped_at_t2_then_timer_f() -> None:
    tl = layer()
    bye = request(b"BYE", to_tag=b"uas1")
    txn = tl.send_request(bye, UDP, 0.0)
    assert txn.state == State.TRYING and sent(tl) == [(bye.serialize(), UDP)]
    times = []
    at = T1
    interval = T1
    while at < 64 * T1:
        assert fire(tl, at) == []
        assert sent(tl) == [(bye.serialize(), UDP)]
        times.append(at)
        interval = min(2 * interval, T2)
        at += interval
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fire(tl, 32.0) == [TransactionTimeout(txn)]  # timer F
    assert txn.state == State.TERMINATED and tl.client == {} and sent(tl) == []


def test_nict_proceeding_retransmits_every_t2_and_times_out() -> None:
    tl = layer()
    opt = request(b"OPTIONS")
    txn = tl.send_request(opt, UDP, 0.0)
    sent(tl)
    trying = response(opt, 100)
    assert tl.receive(trying, UDP, 0.1) == [ResponseReceived(trying, txn)]
    assert txn.state == State.PROCEEDING
    progress = response(opt, 183)
    assert tl.receive(progress, UDP, 0.2) == [ResponseReceived(progress, txn)]  # each 1xx passed up
    assert fire(tl, 0.5) == [] and len(sent(tl)) == 1  # timer E, now reset to T2
    for at in (4.5, 8.5, 12.5, 16.5, 20.5, 24.5, 28.5):
        assert fire(tl, at) == [] and len(sent(tl)) == 1
    assert fire(tl, 32.0) == [TransactionTimeout(txn)]  # timer F in Proceeding


def test_nict_completed_absorbs_retransmissions_until_timer_k() -> None:
    tl = layer()
    bye = request(b"BYE", to_tag=b"uas1")
    txn = tl.send_request(bye, UDP, 0.0)
    sent(tl)
    fire(tl, 0.5)
    sent(tl)
    ok = response(bye, 200)
    assert tl.receive(ok, UDP, 1.0) == [ResponseReceived(ok, txn)]
    assert txn.state == State.COMPLETED
    assert tl.get_timer() == pytest.approx(1.0 + T4)  # timer K; timer E is gone
    assert tl.receive(ok, UDP, 2.0) == [] and tl.receive(response(bye, 100), UDP, 2.1) == []
    assert sent(tl) == []
    assert fire(tl, 6.0) == [] and txn.state == State.TERMINATED
    assert tl.receive(ok, UDP, 7.0) == [StrayResponse(ok, UDP)]


def test_nict_reliable_transport() -> None:
    tl = layer()
    bye = request(b"BYE", to_tag=b"uas1")
    txn = tl.send_request(bye, TCP, 0.0)
    sent(tl)
    assert tl.get_timer() == pytest.approx(32.0)  # timer F only
    tl.receive(response(bye, 100), TCP, 0.5)
    assert tl.get_timer() == pytest.approx(32.0)
    ok = response(bye, 200)
    assert tl.receive(ok, TCP, 1.0) == [ResponseReceived(ok, txn)]
    assert fire(tl, 1.0) == []  # timer K is zero
    assert txn.state == State.TERMINATED and tl.retransmissions == 0 and sent(tl) == []


def test_nict_transport_error() -> None:
    tl = layer()
    txn = tl.send_request(request(b"OPTIONS"), UDP, 0.0)
    assert tl.transport_error(txn) == [TransportError(txn)]
    assert txn.state == State.TERMINATED and tl.get_timer() is None


def test_client_ack_for_2xx_has_no_transaction() -> None:
    tl = layer()
    ack = request(b"ACK", to_tag=b"uas1", branch=b"z9hG4bKack2xx")
    txn = tl.send_request(ack, UDP, 0.0)
    assert txn.state == State.TERMINATED
    assert sent(tl) == [(ack.serialize(), UDP)]
    assert tl.client == {} and tl.get_timer() is None


def test_stray_responses() -> None:
    tl = layer()
    inv = request()
    txn = tl.send_request(inv, UDP, 0.0)
    sent(tl)
    other = response(request(branch=b"z9hG4bKunknown"), 200)
    assert tl.receive(other, PEER, 0.1) == [StrayResponse(other, PEER)]
    # the branch matches but the CSeq method does not: another transaction's response
    wrong_method = response(request(b"BYE", to_tag=b"x"), 200)
    assert tl.receive(wrong_method, PEER, 0.2) == [StrayResponse(wrong_method, PEER)]
    assert txn.state == State.CALLING and sent(tl) == []


def test_ack_for_takes_the_top_via_of_a_shared_line() -> None:
    inv = request()
    assert inv.count(b"via") == 1 and len(inv.values(b"via")) == 2
    ack = ack_for(inv, response(inv, 480))
    assert ack.get_all(b"via") == [b"SIP/2.0/UDP 198.51.100.9:5070;branch=z9hG4bKclient1"]


# -- INVITE server transaction ---------------------------------------------------------------------
def new_txn(tl: TransactionLayer, req: Request, source: Any, now: float) -> ServerTransaction:
    """Receive ``req``; assert it starts a server transaction, passed up once, and return it."""
    (ev,) = tl.receive(req, source, now)
    assert isinstance(ev, RequestReceived) and ev.request is req and ev.source == source
    assert isinstance(ev.txn, ServerTransaction) and ev.txn.request is req
    return ev.txn


def _ist(tl: TransactionLayer, now: float = 0.0, **kw: Any) -> tuple[Request, ServerTransaction]:
    inv = request(**kw)
    txn = new_txn(tl, inv, PEER, now)
    assert txn.state == State.PROCEEDING
    return inv, txn


def test_ist_proceeding_resends_the_last_provisional() -> None:
    tl = layer()
    _, txn = _ist(tl)
    assert tl.get_timer() is None
    assert tl.receive(request(), PEER, 0.1) == [] and sent(tl) == []  # nothing to resend yet
    trying = tl.reply(txn, 100, 0.1)
    assert sent(tl) == [(trying.serialize(), PEER)] and trying.to_tag is None
    txn.to_tag = b"srv1"
    ringing = tl.reply(txn, 180, 0.2)
    assert ringing.to_tag == b"srv1" and sent(tl) == [(ringing.serialize(), PEER)]
    assert txn.state == State.PROCEEDING and tl.get_timer() is None
    assert tl.receive(request(), PEER, 0.5) == []  # a retransmitted INVITE: not passed up
    assert sent(tl) == [(ringing.serialize(), PEER)]  # the last provisional again
    assert tl.retransmissions == 1
    assert tl.server[next(iter(tl.server))] is txn


def test_ist_completed_timer_g_capped_at_t2_then_ack_confirmed_timer_i() -> None:
    tl = layer()
    inv, txn = _ist(tl)
    busy = tl.reply(txn, 486, 0.0, to_tag=b"srv1")
    busy_bytes = busy.serialize()
    assert sent(tl) == [(busy_bytes, PEER)] and txn.state == State.COMPLETED
    for at in (0.5, 1.5, 3.5):  # timer G: T1, 2*T1, 4*T1 ...
        assert fire(tl, at) == [] and sent(tl) == [(busy_bytes, PEER)]
    assert fire(tl, 7.5) == [] and sent(tl) == [(busy_bytes, PEER)]  # ... capped at T2
    assert tl.get_timer() == pytest.approx(11.5)
    assert tl.receive(request(), PEER, 8.0) == []  # INVITE retransmission: the final again
    assert sent(tl) == [(busy_bytes, PEER)]
    assert tl.reply(txn, 200, 8.1).status == 200 and sent(tl) == []  # too late for the TU
    ack = ack_for(inv, busy)
    assert tl.receive(ack, PEER, 9.0) == []  # absorbed, not passed up
    assert txn.state == State.CONFIRMED and sent(tl) == []
    assert tl.get_timer() == pytest.approx(9.0 + T4)  # timer I; G and H are gone
    assert tl.receive(ack, PEER, 9.5) == [] and sent(tl) == []  # more ACKs absorbed
    assert tl.receive(request(), PEER, 9.6) == [] and sent(tl) == []  # INVITE absorbed too
    assert fire(tl, 14.0) == [] and txn.state == State.TERMINATED and tl.server == {}
    assert tl.get_timer() is None


def test_ist_timer_h_when_no_ack_comes() -> None:
    tl = layer()
    _, txn = _ist(tl)
    tl.reply(txn, 500, 0.0)
    sent(tl)
    at, interval, times = T1, T1, []
    while at < 64 * T1:
        assert fire(tl, at) == [] and len(sent(tl)) == 1
        times.append(at)
        interval = min(2 * interval, T2)
        at += interval
    assert times == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5, 19.5, 23.5, 27.5, 31.5]
    assert fire(tl, 32.0) == [TransactionTimeout(txn)]  # timer H
    assert txn.state == State.TERMINATED and tl.server == {} and sent(tl) == []


def test_ist_2xx_accepted_until_timer_l() -> None:
    tl = layer()
    _, txn = _ist(tl)
    tl.reply(txn, 180, 0.0, to_tag=b"srv1")
    sent(tl)
    ok = tl.reply(txn, 200, 1.0, to_tag=b"srv1")
    assert txn.state == State.ACCEPTED and sent(tl) == [(ok.serialize(), PEER)]
    assert tl.get_timer() == pytest.approx(1.0 + 64 * T1)  # timer L; no timer G for a 2xx
    assert tl.receive(request(), PEER, 1.5) == [] and sent(tl) == []  # INVITE absorbed
    # the TU (the UAS core) retransmits its 2xx itself; nothing else may follow a 2xx
    tl.respond(txn, ok, 2.0)
    assert sent(tl) == [(ok.serialize(), PEER)]
    tl.reply(txn, 486, 2.1)
    tl.reply(txn, 183, 2.2)
    assert sent(tl) == [] and txn.state == State.ACCEPTED and txn.response is ok
    # the ACK for a 2xx is its own transaction: passed up without one
    ack_new = request(b"ACK", branch=b"z9hG4bKack2xx", to_tag=b"srv1")
    assert tl.receive(ack_new, PEER, 3.0) == [RequestReceived(ack_new, PEER, None)]
    # an ACK that matches the INVITE transaction in Accepted is passed up too (RFC 6026)
    ack_same = request(b"ACK", to_tag=b"srv1")
    assert tl.receive(ack_same, PEER, 3.1) == [RequestReceived(ack_same, PEER, None)]
    assert txn.state == State.ACCEPTED and sent(tl) == []
    assert fire(tl, 33.0) == [] and txn.state == State.TERMINATED and tl.server == {}
    assert tl.receive(ack_same, PEER, 34.0) == [RequestReceived(ack_same, PEER, None)]


def test_ist_reliable_transport() -> None:
    tl = layer()
    inv = request()
    txn = new_txn(tl, inv, TCP, 0.0)
    assert txn.reliable
    busy = tl.reply(txn, 486, 0.0, to_tag=b"srv1")
    sent(tl)
    assert tl.get_timer() == pytest.approx(32.0)  # timer H only, no timer G
    assert tl.receive(ack_for(inv, busy), TCP, 1.0) == []
    assert txn.state == State.CONFIRMED
    assert fire(tl, 1.0) == []  # timer I is zero
    assert txn.state == State.TERMINATED and tl.retransmissions == 0 and sent(tl) == []
    # timer H on a reliable transport
    txn2 = new_txn(tl, request(branch=b"z9hG4bKother"), TCP, 2.0)
    tl.reply(txn2, 480, 2.0)
    sent(tl)
    assert fire(tl, 34.0) == [TransactionTimeout(txn2)]
    assert sent(tl) == [] and tl.retransmissions == 0


def test_ist_transport_error() -> None:
    tl = layer()
    _, txn = _ist(tl)
    tl.reply(txn, 180, 0.0)
    sent(tl)
    assert tl.transport_error(txn) == [TransportError(txn)]
    assert txn.state == State.TERMINATED and tl.server == {}
    # the next retransmission of the INVITE starts a new transaction
    assert new_txn(tl, request(), PEER, 1.0) is not txn


def test_rfc2543_matching_without_magic_cookie() -> None:
    tl = layer()
    _, cookieless = _ist(tl, branch=b"390skdjuw")  # a branch without the cookie
    assert cookieless.key[0] == b"2543"
    assert tl.receive(request(branch=b"390skdjuw"), PEER, 0.1) == []  # matched, absorbed
    inv, txn = _ist(tl, branch=None, call_id=b"call-2543")
    assert txn.key[0] == b"2543" and txn is not cookieless
    busy = tl.reply(txn, 486, 0.2, to_tag=b"srv1")
    sent(tl)
    assert tl.receive(request(branch=None, call_id=b"call-2543"), PEER, 0.3) == []  # matched
    assert sent(tl) == [(busy.serialize(), PEER)]
    ack = ack_for(inv, busy)  # carries our To tag; still matches the INVITE
    assert ack.via.branch is None
    assert tl.receive(ack, PEER, 0.4) == [] and txn.state == State.CONFIRMED
    # a different CSeq, Call-ID, From tag, top Via or Request-URI is another transaction
    for other in (
        request(branch=None, call_id=b"call-2543", cseq=2),
        request(branch=None, call_id=b"call-other"),
        request(branch=None, call_id=b"call-2543", via_host=b"198.51.100.10"),
        request(branch=None, call_id=b"call-2543", uri=b"sip:other@192.0.2.1"),
    ):
        assert new_txn(tl, other, PEER, 0.5) is not txn


def test_branch_matching_includes_sent_by_and_method() -> None:
    tl = layer()
    _, txn = _ist(tl)
    same_branch_other_host = request(via_host=b"203.0.113.1")
    assert new_txn(tl, same_branch_other_host, PEER, 0.1) is not txn
    bare_cookie = request(branch=b"z9hG4bK")  # the cookie alone still counts as RFC 3261
    assert new_txn(tl, bare_cookie, PEER, 0.2).key[0] == b"z9hG4bK"
    bye_same_branch = request(b"BYE", to_tag=b"srv1")
    assert new_txn(tl, bye_same_branch, PEER, 0.3).method == b"BYE"


def test_cancel_finds_its_invite() -> None:
    tl = layer()
    inv, inv_txn = _ist(tl)
    cancel = request(b"CANCEL")
    cancel_txn = new_txn(tl, cancel, PEER, 1.0)
    assert cancel_txn is not inv_txn and cancel_txn.method == b"CANCEL"
    assert cancel_txn.state == State.TRYING
    assert tl.find_invite(cancel) is inv_txn
    assert tl.find_invite(request(b"CANCEL", branch=b"z9hG4bKnope")) is None
    # RFC 2543 CANCEL: matched on Request-URI, Call-ID, From tag, CSeq number and top Via
    _, old_txn = _ist(tl, 2.0, branch=None, call_id=b"old")
    assert tl.find_invite(request(b"CANCEL", branch=None, call_id=b"old")) is old_txn
    assert tl.find_invite(request(b"CANCEL", branch=None, call_id=b"old", cseq=9)) is None
    # after the INVITE transaction ended there is nothing to cancel
    tl.reply(inv_txn, 487, 3.0)
    tl.receive(ack_for(inv, response(inv, 487)), PEER, 3.1)
    while (at := tl.get_timer()) is not None:
        tl.handle_timer(at)
    assert tl.find_invite(cancel) is None


def test_stray_ack_is_passed_up() -> None:
    tl = layer()
    ack = request(b"ACK", to_tag=b"x", branch=b"z9hG4bKlonely")
    assert tl.receive(ack, PEER, 0.0) == [RequestReceived(ack, PEER, None)]
    assert tl.server == {} and sent(tl) == []


# -- non-INVITE server transaction -----------------------------------------------------------------
def test_nist_trying_proceeding_completed_timer_j() -> None:
    tl = layer()
    bye = request(b"BYE", to_tag=b"srv1")
    txn = new_txn(tl, bye, PEER, 0.0)
    assert txn.state == State.TRYING
    assert tl.receive(bye, PEER, 0.1) == [] and sent(tl) == []  # Trying: absorbed
    trying = tl.reply(txn, 100, 0.2)
    assert txn.state == State.PROCEEDING and sent(tl) == [(trying.serialize(), PEER)]
    assert tl.receive(bye, PEER, 0.3) == [] and sent(tl) == [(trying.serialize(), PEER)]
    ok = tl.reply(txn, 200, 0.4)
    assert txn.state == State.COMPLETED and sent(tl) == [(ok.serialize(), PEER)]
    assert tl.get_timer() == pytest.approx(0.4 + 64 * T1)  # timer J
    assert tl.receive(bye, PEER, 1.0) == [] and sent(tl) == [(ok.serialize(), PEER)]
    assert tl.reply(txn, 500, 1.1) is not None and sent(tl) == []  # a second final: ignored
    assert fire(tl, 32.4) == [] and txn.state == State.TERMINATED and tl.server == {}
    assert new_txn(tl, bye, PEER, 33.0) is not txn  # now a new transaction


def test_nist_final_from_trying_and_reliable_timer_j() -> None:
    tl = layer()
    opt = request(b"OPTIONS")
    txn = new_txn(tl, opt, TCP, 0.0)
    assert txn.reliable
    ok = tl.reply(txn, 200, 0.0, to_tag=b"srv1")
    assert sent(tl) == [(ok.serialize(), TCP)] and txn.state == State.COMPLETED
    assert fire(tl, 0.0) == [] and txn.state == State.TERMINATED  # timer J is zero


def test_nist_transport_error() -> None:
    tl = layer()
    txn = new_txn(tl, request(b"INFO", to_tag=b"srv1"), PEER, 0.0)
    assert tl.transport_error(txn) == [TransportError(txn)]
    assert txn.state == State.TERMINATED and tl.server == {}


# -- the timer heap --------------------------------------------------------------------------------
def test_timers_of_many_transactions_fire_in_order() -> None:
    tl = layer()
    a = tl.send_request(request(b"OPTIONS", branch=b"z9hG4bKa"), UDP, 0.0)
    b = tl.send_request(request(b"OPTIONS", branch=b"z9hG4bKb"), UDP, 0.2)
    c = tl.send_request(request(branch=b"z9hG4bKc"), TCP, 0.1)
    sent(tl)
    assert tl.get_timer() == pytest.approx(0.5)
    assert tl.handle_timer(0.8) == []  # a (0.5) and b (0.7) both due
    assert [d[1] for d in sent(tl)] == [UDP, UDP]
    tl.receive(response(request(b"OPTIONS", branch=b"z9hG4bKa"), 200), UDP, 0.9)
    # b's next timer E counts from when it fired (0.8), not from when it was due (0.7)
    assert a.state == State.COMPLETED and tl.get_timer() == pytest.approx(1.8)
    events = tl.handle_timer(100.0)
    assert TransactionTimeout(b) in events and TransactionTimeout(c) in events
    assert a.state == b.state == c.state == State.TERMINATED and tl.get_timer() is None
