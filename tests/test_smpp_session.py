"""The sans-IO session: binds, windows, keep-alive, timeouts and garbage, with no sockets."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from sms_smpp import events as ev
from sms_smpp.pdu import (
    Bind,
    BindResp,
    Cmd,
    MessageResp,
    Pdu,
    ShortMessage,
    Status,
    decode,
    encode,
    encode_short_message_body,
)
from sms_smpp.session import Role, Session, State


def frames(data: bytes) -> list[Pdu]:
    out = []
    while data:
        (length,) = struct.unpack(">I", data[:4])
        out.append(decode(data[:length]))
        data = data[length:]
    return out


def bound_pair(now: float = 0.0) -> tuple[Session, Session]:
    smsc = Session(Role.SMSC, now)
    esme = Session(Role.ESME, now)
    esme.send_request(Bind(Cmd.BIND_TRANSCEIVER, system_id="c1", password="pw"), now)
    (req,) = smsc.receive_data(esme.data_to_send(), now)
    assert isinstance(req, ev.BindRequested)
    smsc.accept_bind(req.pdu, "ansim")
    (done,) = esme.receive_data(smsc.data_to_send(), now)
    assert isinstance(done, ev.Bound) and done.pdu.system_id == "ansim"
    assert smsc.state is State.BOUND_TRX and esme.state is State.BOUND_TRX
    return smsc, esme


def test_submit_before_bind_is_refused_with_invbndsts() -> None:
    smsc = Session(Role.SMSC, 0)
    events = smsc.receive_data(encode(ShortMessage(Cmd.SUBMIT_SM, 1)), 0)
    assert isinstance(events[0], ev.ProtocolError)
    (resp,) = frames(smsc.data_to_send())
    assert resp.command_id == Cmd.SUBMIT_SM_RESP and resp.status == Status.RINVBNDSTS


def test_window_of_many_outstanding_requests_answered_out_of_order() -> None:
    smsc, esme = bound_pair()
    body = encode_short_message_body(ShortMessage(Cmd.SUBMIT_SM, short_message=b"x"))
    seqs = [esme.send_body(Cmd.SUBMIT_SM, body, 0, context=i) for i in range(100)]
    assert esme.outstanding == 100
    reqs = smsc.receive_data(esme.data_to_send(), 0)
    assert len(reqs) == 100
    for event in reversed(reqs):
        assert isinstance(event, ev.RequestReceived)
        smsc.respond(event.pdu, 0, f"id{event.pdu.sequence}")
    answers = esme.receive_data(smsc.data_to_send(), 0)
    assert [a.context for a in answers if isinstance(a, ev.ResponseReceived)] == list(
        range(99, -1, -1)
    )
    assert esme.outstanding == 0
    assert {
        a.pdu.message_id
        for a in answers
        if isinstance(a, ev.ResponseReceived) and isinstance(a.pdu, MessageResp)
    } == {f"id{s}" for s in seqs}


def test_byte_at_a_time_delivery() -> None:
    smsc, esme = bound_pair()
    esme.send_request(ShortMessage(Cmd.SUBMIT_SM, short_message=b"hello"), 0)
    data = esme.data_to_send()
    events: list[ev.Event] = []
    for i in range(len(data)):
        events += smsc.receive_data(data[i : i + 1], 0)
    assert len(events) == 1 and isinstance(events[0], ev.RequestReceived)


def test_enquire_link_sent_when_idle_and_dead_link_closes() -> None:
    _smsc, esme = bound_pair()
    esme.enquire_link_interval = 5
    esme.response_timeout = 2
    timer = esme.get_timer()
    assert timer == 5
    esme.handle_timer(5)
    (probe,) = frames(esme.data_to_send())
    assert probe.command_id == Cmd.ENQUIRE_LINK
    events = esme.handle_timer(7.1)
    assert any(isinstance(e, ev.Closed) for e in events)
    assert esme.state is State.CLOSED


def test_response_timeout_returns_context() -> None:
    smsc, esme = bound_pair()
    esme.response_timeout = 3
    body = encode_short_message_body(ShortMessage(Cmd.SUBMIT_SM, short_message=b"x"))
    esme.send_body(Cmd.SUBMIT_SM, body, 1.0, context="m1")
    smsc.receive_data(esme.data_to_send(), 1.0)  # read, never answered
    assert esme.handle_timer(2.0) == []
    assert esme.handle_timer(4.0) == []  # an enquire_link first: is the peer there?
    smsc.receive_data(esme.data_to_send(), 4.0)
    esme.receive_data(smsc.data_to_send(), 4.0)
    events = esme.handle_timer(4.0)
    assert [e.context for e in events if isinstance(e, ev.RequestTimedOut)] == ["m1"]


def test_connection_loss_hands_back_outstanding() -> None:
    _smsc, esme = bound_pair()
    for i in range(3):
        esme.send_body(Cmd.SUBMIT_SM, b"", 0, context=i)
    events = esme.abort("gone")
    assert [e.context for e in events if isinstance(e, ev.RequestTimedOut)] == [0, 1, 2]
    assert isinstance(events[-1], ev.Closed)


def test_unbind_both_ways() -> None:
    smsc, esme = bound_pair()
    esme.unbind(0)
    events = smsc.receive_data(esme.data_to_send(), 0)
    assert isinstance(events[-1], ev.Closed) and smsc.state is State.CLOSED
    events = esme.receive_data(smsc.data_to_send(), 0)
    assert isinstance(events[-1], ev.Closed) and esme.state is State.CLOSED


def test_rejected_bind() -> None:
    smsc = Session(Role.SMSC, 0)
    esme = Session(Role.ESME, 0)
    esme.send_request(Bind(Cmd.BIND_TRANSMITTER, system_id="c1", password="bad"), 0)
    (req,) = smsc.receive_data(esme.data_to_send(), 0)
    assert isinstance(req, ev.BindRequested)
    smsc.reject_bind(req.pdu, Status.RBINDFAIL)
    events = esme.receive_data(smsc.data_to_send(), 0)
    assert isinstance(events[0], ev.BindRefused) and events[0].status == Status.RBINDFAIL
    assert smsc.state is State.CLOSED


def test_no_bind_in_time_closes() -> None:
    smsc = Session(Role.SMSC, 0, bind_timeout=2)
    assert smsc.get_timer() == 2
    assert isinstance(smsc.handle_timer(2)[-1], ev.Closed)


def test_bad_command_length_is_fatal() -> None:
    smsc = Session(Role.SMSC, 0)
    events = smsc.receive_data(struct.pack(">IIII", 8, 4, 0, 1), 0)
    assert isinstance(events[0], ev.ProtocolError) and isinstance(events[-1], ev.Closed)
    (nack,) = frames(smsc.data_to_send())
    assert nack.command_id == Cmd.GENERIC_NACK and nack.status == Status.RINVCMDLEN


def test_unknown_command_gets_generic_nack_and_session_continues() -> None:
    smsc, _esme = bound_pair()
    smsc.receive_data(struct.pack(">IIII", 16, 0x1234, 0, 77), 0)
    (nack,) = frames(smsc.data_to_send())
    assert nack.command_id == Cmd.GENERIC_NACK and nack.sequence == 77
    assert smsc.state is State.BOUND_TRX


def test_bind_response_for_esme() -> None:
    esme = Session(Role.ESME, 0)
    esme.send_request(Bind(Cmd.BIND_TRANSMITTER, system_id="x"), 0)
    esme.data_to_send()
    events = esme.receive_data(encode(BindResp(Cmd.BIND_TRANSMITTER_RESP, 1, 0, "up")), 0)
    assert isinstance(events[0], ev.Bound) and esme.state is State.BOUND_TX


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=80), max_size=8))
def test_garbage_never_raises(chunks: list[bytes]) -> None:
    smsc, _esme = bound_pair()
    for chunk in chunks:
        smsc.receive_data(chunk, 0)
        smsc.data_to_send()
    smsc.handle_timer(1000)


def _submit_all(esme: Session, n: int, now: float) -> list[int]:
    body = encode_short_message_body(ShortMessage(Cmd.SUBMIT_SM, short_message=b"x"))
    return [esme.send_body(Cmd.SUBMIT_SM, body, now, context=i) for i in range(n)]


def test_peer_that_stops_answering_hands_everything_back_unanswered() -> None:
    smsc, esme = bound_pair()
    esme.response_timeout = 2
    _submit_all(esme, 5, 1.0)
    reqs = smsc.receive_data(esme.data_to_send(), 1.0)
    # the peer answers the first two, then reads nothing more (it wedged on the third)
    for event in reqs[:2]:
        assert isinstance(event, ev.RequestReceived)
        smsc.respond(event.pdu, 0, "ok")
    esme.receive_data(smsc.data_to_send(), 1.1)
    assert esme.get_timer() == 3.0
    assert esme.handle_timer(3.0) == []  # not reported yet: an enquire_link decides
    (probe,) = frames(esme.data_to_send())
    assert probe.command_id == Cmd.ENQUIRE_LINK
    # the timeouts wait for the verdict: the timer is the probe's deadline, not theirs
    assert esme.get_timer() == 5.0
    assert esme.handle_timer(4.0) == []
    events = esme.handle_timer(5.0)
    assert esme.state is State.CLOSED
    assert isinstance(events[-1], ev.Closed) and events[-1].reason == "enquire_link not answered"
    # handed back oldest first: the one the peer stopped on, then those behind it
    assert [e.context for e in events if isinstance(e, ev.RequestTimedOut)] == [2, 3, 4]


def test_peer_alive_reports_timeouts_and_which_ones_it_passed_over() -> None:
    smsc, esme = bound_pair()
    esme.response_timeout = 2
    body = encode_short_message_body(ShortMessage(Cmd.SUBMIT_SM, short_message=b"x"))
    for i, at in enumerate((1.0, 1.1, 1.2)):
        esme.send_body(Cmd.SUBMIT_SM, body, at, context=i)
    reqs = smsc.receive_data(esme.data_to_send(), 1.2)
    assert isinstance(reqs[1], ev.RequestReceived)
    smsc.respond(reqs[1].pdu, 0, "ok")  # answers the second only
    esme.receive_data(smsc.data_to_send(), 1.5)
    assert esme.handle_timer(3.0) == []
    assert smsc.receive_data(esme.data_to_send(), 3.0) == []  # the session answers it
    esme.receive_data(smsc.data_to_send(), 3.01)
    # alive: the timeouts are reported at once, and the link stays up
    assert esme.get_timer() == 3.0
    events = esme.handle_timer(3.2)
    timed_out = [e for e in events if isinstance(e, ev.RequestTimedOut)]
    assert [(e.context, e.ignored) for e in timed_out] == [(0, True), (2, False)]
    assert esme.state is State.BOUND_TRX and esme.outstanding == 0
    assert frames(esme.data_to_send()) == []


def test_enquire_link_with_context_reports_its_answer() -> None:
    smsc, esme = bound_pair()
    esme.send_request(Pdu(Cmd.ENQUIRE_LINK), 0, context="fence")
    smsc.receive_data(esme.data_to_send(), 0)
    events = esme.receive_data(smsc.data_to_send(), 0)
    assert [e.context for e in events if isinstance(e, ev.ResponseReceived)] == ["fence"]


def test_undecodable_bind_is_a_bind_attempt_for_the_application() -> None:
    smsc = Session(Role.SMSC, 0)
    body = b"s" * 20 + b"\0pw\0\0\x34\0\0\0"
    (event,) = smsc.receive_data(
        struct.pack(">IIII", 16 + len(body), Cmd.BIND_TRANSCEIVER, 0, 9) + body, 0
    )
    assert isinstance(event, ev.BindInvalid) and event.status == Status.RINVSYSID
    assert smsc.data_to_send() == b""  # the application answers
    events = smsc.refuse_bind(event.command_id, event.sequence, event.status)
    (resp,) = frames(smsc.data_to_send())
    assert resp.command_id == Cmd.BIND_TRANSCEIVER_RESP and resp.sequence == 9
    assert resp.status == Status.RINVSYSID
    assert isinstance(events[-1], ev.Closed) and smsc.state is State.CLOSED
