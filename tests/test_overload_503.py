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
