"""Overload control end to end: while ansim cannot keep up, new INVITEs get a stateless
503 with Retry-After at once, and every call it answered 100 Trying completes.

The engine is made to fall behind for real: it is stopped (SIGSTOP) for 1.5 s while
SIPp sends INVITEs at 300/s, so that on SIGCONT it finds a queue of about 450 INVITEs
and their retransmissions, each of which has waited up to 1.5 s. SIPp plays the carrier
with a scenario that takes either answer (``sipp/overload_uac.xml``: a 503 without a
100 is a refused call, anything after a 100 must end in 200), and a SIPp callee answers
what is admitted. A raw socket sends an INVITE with ``oc`` in its Via (RFC 7339) into
the same queue: its answer says by how much to cut.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from collections import defaultdict
from pathlib import Path

from call_env import (
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    VIRTUAL_UNKNOWN,
    Ansim,
    SipMsg,
    Sipp,
    trunk,
    user_part,
)
from conftest import free_port

from b2bua.sip.message import Response
from b2bua.sip.parser import parse_datagram

CALLS = 600
RATE = 300


def oc_invite(engine_port: int, local_port: int, call_id: str) -> bytes:
    return (
        f"INVITE sip:{user_part(VIRTUAL_UNKNOWN)}@127.0.0.1:{engine_port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch=z9hG4bK{uuid.uuid4().hex[:12]};oc;"
        'oc-algo="loss,rate"\r\n'
        f"From: <sip:{CALLER.e164}@127.0.0.1>;tag=oc1\r\n"
        f"To: <sip:{user_part(VIRTUAL_UNKNOWN)}@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
        f"Contact: <sip:oc@127.0.0.1:{local_port}>\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def ack_for(answer: Response, engine_port: int) -> bytes:
    """The ACK of a non-2xx final answer to ``oc_invite`` (RFC 3261 17.1.1.3)."""
    number = user_part(VIRTUAL_UNKNOWN)
    return (
        f"ACK sip:{number}@127.0.0.1:{engine_port} SIP/2.0\r\n"
        f"Via: {(answer.get(b'Via') or b'').decode()}\r\n"
        f"From: {(answer.get(b'From') or b'').decode()}\r\n"
        f"To: {(answer.get(b'To') or b'').decode()}\r\n"
        f"Call-ID: {answer.call_id.decode()}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def test_new_calls_get_a_stateless_503_while_the_engine_is_behind(tmp_path: Path) -> None:
    uas_port = free_port()
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee", uas_port, invite_timeout=8.0)],
        routes=[{"prefix": "+82", "trunks": ["callee"]}],
        metrics=True,
        config={"overload": {"max_delay": 0.02, "retry_after": 7}},
    )
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(10)
    with engine, Sipp(tmp_path / "sipp") as sipp:
        (tmp_path / "sipp").mkdir(exist_ok=True)
        uas = sipp.start(
            "call_uas_answer",
            port=uas_port,
            calls=CALLS,
            keys=CALLEE.sipp_keys("callee"),
            timeout=60,
            extra=["-d", "0"],
        )
        os.kill(engine.pid, signal.SIGSTOP)
        try:
            uac = sipp.start(
                "overload_uac",
                port=free_port(),
                remote=engine.addr,
                service=user_part(VIRTUAL_AX),
                keys=CALLER.sipp_keys("caller"),
                calls=CALLS,
                rate=RATE,
                limit=CALLS,
                timeout=60,
                extra=["-buff_size", "4194304"],
            )
            time.sleep(1.4)
            raw.sendto(oc_invite(engine.port, raw.getsockname()[1], "oc-1"), engine.udp)
            time.sleep(0.1)
        finally:
            os.kill(engine.pid, signal.SIGCONT)
        rc = uac.wait(60)
        assert rc == 0, f"a call failed at the caller\n{uac.report()}\n{engine.log_text()}"
        oc_answer = parse_datagram(raw.recv(65536))
        time.sleep(2.0)  # the last BYEs reach the callee
        uas.stop()
        metrics = engine.metrics()
        rows = engine.cdr_rows(expect=1)

    # Every call either completed or was refused with a 503 that came alone.
    by_call: dict[str, list[SipMsg]] = defaultdict(list)
    for msg in uac.received():
        by_call[msg.header("Call-ID")].append(msg)
    refused, completed = [], []
    for call_id, msgs in by_call.items():
        statuses = [m.status for m in msgs if m.cseq_method == "INVITE"]
        if 503 in statuses:
            assert set(statuses) == {503}, f"{call_id}: a 503 after other answers: {statuses}"
            refused.append(msgs[0])
        else:
            assert statuses[-1] == 200 and {100, 180} & set(statuses), f"{call_id}: {statuses}"
            assert any(m.cseq_method == "BYE" and m.status == 200 for m in msgs)
            completed.append(call_id)
    assert len(refused) + len(completed) == CALLS
    assert refused and completed, (len(refused), len(completed))

    # The 503 is the stateless answer to the INVITE: its Via, From, Call-ID, CSeq, a To
    # tag of ansim's, Retry-After, nothing of a call.
    sent = {m.header("Call-ID"): m for m in uac.sent() if m.method == "INVITE"}
    for msg in refused[:50]:
        invite = sent[msg.header("Call-ID")]
        assert msg.first_line == "SIP/2.0 503 Service Unavailable"
        assert msg.header("Retry-After") == "7"
        for name in ("From", "CSeq"):
            assert msg.header(name) == invite.header(name)
        assert msg.header("Via").startswith(invite.header("Via"))
        assert msg.header("To").startswith(invite.header("To") + ";tag=sl")
        assert not msg.header("Contact") and not msg.body

    # Every call the callee was offered completed there: INVITE, ACK and BYE for each.
    callee: dict[str, set[str]] = defaultdict(set)
    for msg in uas.received():
        if msg.method is not None:
            callee[msg.header("Call-ID")].add(msg.method)
    assert len(callee) == len(completed)
    assert all(methods == {"INVITE", "ACK", "BYE"} for methods in callee.values()), callee

    # Refused calls left no call state: records only for the calls admitted (and the
    # raw INVITE's 404, if it was admitted).
    assert len(completed) <= len(rows) <= len(completed) + 1
    assert metrics["ansim_overload_rejected_total"] >= len(refused)
    assert metrics["ansim_sip_stateless_acks_total"] >= len(refused)

    # RFC 7339: the client that announced oc is told by how much to cut, loss algorithm.
    via = oc_answer.via
    assert oc_answer.status in (100, 503), oc_answer.status
    assert via.params.get(b"oc-algo") == b'"loss"'
    assert 0 < int(via.params[b"oc"] or b"0") <= 100
    assert int(via.params[b"oc-validity"] or b"0") == 2000
    assert float(via.params[b"oc-seq"] or b"0") > time.time() - 60


def test_a_stalled_engine_without_a_queue_refuses_nothing(tmp_path: Path) -> None:
    """An engine that stops for a while (a busy machine, a paused process) finds its
    first datagrams old when it runs again; if it reads them all in one turn there was no
    standing queue, and no call is refused for it: every INVITE that waited is answered
    as usual (here 100 and 404 for a number that is not bound)."""
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee", free_port())],
        routes=[{"prefix": "+82", "trunks": ["callee"]}],
        metrics=True,
    )
    raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    raw.bind(("127.0.0.1", 0))
    raw.settimeout(5)
    sent = []
    with engine:
        for stall in range(3):
            os.kill(engine.pid, signal.SIGSTOP)
            try:
                for n in range(4):  # spread over the stall: each waits 0.15 to 0.6 s
                    call_id = f"stall-{stall}-{n}-{uuid.uuid4().hex[:8]}"
                    raw.sendto(oc_invite(engine.port, raw.getsockname()[1], call_id), engine.udp)
                    sent.append(call_id)
                    time.sleep(0.15)
                time.sleep(0.15)
            finally:
                os.kill(engine.pid, signal.SIGCONT)
            time.sleep(1.0)  # quiet, as between the calls of a small test
        answers: dict[str, list[int]] = defaultdict(list)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(
            any(s >= 200 for s in answers[c]) for c in sent
        ):
            try:
                msg = parse_datagram(raw.recv(65536))
            except TimeoutError:
                break
            if isinstance(msg, Response):
                answers[msg.call_id.decode()].append(msg.status)
                if msg.status >= 200:  # the ACK of a final answer, so that it stops resending
                    raw.sendto(ack_for(msg, engine.port), engine.udp)
        metrics = engine.metrics()
        log = engine.log_text()
    # (a 404 may come again: it is resent until the ACK, read only after the stalls)
    distinct = {c: list(dict.fromkeys(answers[c])) for c in sent}
    assert distinct == {c: [100, 404] for c in sent}, log
    assert metrics["ansim_overload_rejected_total"] == 0
    assert "overload" not in log
