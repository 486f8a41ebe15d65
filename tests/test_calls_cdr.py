"""What a call's CDR holds, with SIPp as the carrier and as the callee trunk through ansim.

Each test places calls and checks the record ansim wrote for them: the caller's Call-ID
and source address, the trunks in and out, the binding's kind and who called whom in
its terms (every direction of ax, axb and axn), the number the callee was shown, the
times and milliseconds, and the release cause: the Q.850 cause of a Reason header when
the message that ended the call had one, else the one table's mapping of the status
that ended it (the callee's own, not the one the caller was told).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from call_env import (
    BINDING_AX,
    BINDING_AXB,
    CALLEE,
    CALLER,
    PARTY_A,
    PARTY_B,
    VIRTUAL_AX,
    VIRTUAL_AXB,
    VIRTUAL_UNKNOWN,
    Ansim,
    CallRun,
    Party,
    Sipp,
    number_map,
    trunk,
    user_part,
)
from conftest import free_port

VIRTUAL_AXN = "0507-7000-4005"  # axn: anyone -> CALLEE; CALLEE -> PARTY_B
BINDING_AXN = "it-shop-1"


def e164(national: str) -> str:
    return "+82" + user_part(national)[1:]


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[tuple[Ansim, int]]:
    """ansim with one callee trunk ``t1`` (its port given back) and a map with an axn too."""
    port = free_port()
    numbers = {
        **number_map(),
        "axn": [{"id": BINDING_AXN, "x": VIRTUAL_AXN, "a": CALLEE.dashed, "b": PARTY_B.dashed}],
    }
    ansim = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("t1", port, no_answer_timeout=30)],
        routes=[{"prefix": "+82", "trunks": ["t1"]}],
        numbers=numbers,
    )
    ansim.start()
    try:
        yield ansim, port
    finally:
        rc = ansim.stop()
    assert rc == 0, ansim.log_text()


def call(
    sipp: Sipp,
    ansim: Ansim,
    uac: str,
    uas: str | None,
    uas_port: int,
    *,
    service: str = VIRTUAL_AX,
    caller: Party = CALLER,
    uas_keys: dict[str, str] | None = None,
    hold_ms: int = 100,
) -> tuple[CallRun, int]:
    """One call (both SIPp ends must pass); the run and the caller's SIPp port."""
    uas_run = None
    if uas is not None:
        uas_run = sipp.start(
            uas,
            port=uas_port,
            keys={**CALLEE.sipp_keys("callee"), **(uas_keys or {})},
            timeout=15,
            extra=["-d", str(hold_ms)],
        )
    uac_port = free_port()
    uac_run = sipp.start(
        uac,
        port=uac_port,
        remote=ansim.addr,
        service=user_part(service),
        keys=caller.sipp_keys("caller"),
        timeout=15,
        call_id="cdr-%u-%p@%s",
        extra=["-d", str(hold_ms)],
    )
    run = CallRun(uac_run, uas_run)
    codes = (uac_run.wait(25), uas_run.wait(25) if uas_run is not None else 0)
    assert codes == (0, 0), f"{run.report()}\n--- ansim:\n{ansim.log_text()}"
    return run, uac_port


def call_id(run: CallRun) -> str:
    return run.uac.sent()[0].header("Call-ID")


def record_of(ansim: Ansim, run: CallRun, expect: int = 1) -> dict[str, Any]:
    rows = ansim.cdr_rows(expect)
    mine = [r for r in rows if r["a_call_id"] == call_id(run)]
    assert len(mine) == 1, rows
    return mine[0]


def test_answered_call(sipp: Sipp, engine: tuple[Ansim, int]) -> None:
    ansim, port = engine
    run, uac_port = call(sipp, ansim, "call_uac_basic", "call_uas_answer", port, hold_ms=300)
    row = record_of(ansim, run)
    b_invite = next(m for m in run.uas.received() if m.method == "INVITE")
    assert row["b_call_id"] == b_invite.header("Call-ID")
    assert row["record_id"]
    expected = {
        "call_type": "bridge",
        "binding_kind": "ax",
        "direction": "N->A",
        "virtual": e164(VIRTUAL_AX),
        "caller": CALLER.e164,
        "callee": CALLEE.e164,
        "presented": e164(VIRTUAL_AX),  # what the callee was shown as calling number
        "binding_id": BINDING_AX,
        "in_trunk": "t1",  # the one trunk accepts loopback: the carrier's INVITE came in on it
        "src_transport": "udp",
        "src_ip": "127.0.0.1",
        "src_port": uac_port,
        "trunk": "t1",
        "status": 200,
        "q850_cause": 16,  # the caller's BYE says Q.850 cause 16
        "ended_by": "caller",
        "reason": None,
    }
    assert {k: row[k] for k in expected} == expected
    invite, ring, answer, end = (row[k] for k in ("invite_at", "ring_at", "answer_at", "end_at"))
    assert invite <= ring <= answer <= end
    assert row["ring_ms"] == round((ring - invite) * 1000)
    assert row["setup_ms"] == round((answer - invite) * 1000)
    assert row["duration_ms"] == round((end - answer) * 1000)
    assert 300 <= row["duration_ms"] < 5000  # SIPp held the call 300 ms


def test_axb_both_directions(sipp: Sipp, engine: tuple[Ansim, int]) -> None:
    ansim, port = engine
    a_to_b, _ = call(
        sipp, ansim, "call_uac_basic", "call_uas_answer", port, service=VIRTUAL_AXB, caller=PARTY_A
    )
    b_to_a, _ = call(
        sipp, ansim, "call_uac_basic", "call_uas_answer", port, service=VIRTUAL_AXB, caller=PARTY_B
    )
    for run, caller, callee, direction in (
        (a_to_b, PARTY_A, PARTY_B, "A->B"),
        (b_to_a, PARTY_B, PARTY_A, "B->A"),
    ):
        row = record_of(ansim, run, 2)
        got = {k: row[k] for k in ("binding_kind", "direction", "caller", "callee", "presented")}
        assert got == {
            "binding_kind": "axb",
            "direction": direction,
            "caller": caller.e164,
            "callee": callee.e164,
            "presented": e164(VIRTUAL_AXB),
        }
        assert row["binding_id"] == BINDING_AXB


def test_axn_both_directions(sipp: Sipp, engine: tuple[Ansim, int]) -> None:
    ansim, port = engine
    anyone, _ = call(
        sipp, ansim, "call_uac_basic", "call_uas_answer", port, service=VIRTUAL_AXN, caller=CALLER
    )
    owner, _ = call(
        sipp, ansim, "call_uac_basic", "call_uas_answer", port, service=VIRTUAL_AXN, caller=CALLEE
    )
    n_to_a = record_of(ansim, anyone, 2)
    a_to_b = record_of(ansim, owner, 2)
    assert (n_to_a["binding_kind"], n_to_a["direction"], n_to_a["callee"]) == (
        "axn",
        "N->A",
        CALLEE.e164,
    )
    assert (a_to_b["binding_kind"], a_to_b["direction"], a_to_b["callee"]) == (
        "axn",
        "A->B",
        PARTY_B.e164,
    )
    assert {n_to_a["binding_id"], a_to_b["binding_id"]} == {BINDING_AXN}


def test_cause_from_the_callees_bye(sipp: Sipp, engine: tuple[Ansim, int]) -> None:
    ansim, port = engine
    run, _ = call(
        sipp,
        ansim,
        "call_uac_callee_bye",
        "cdr_uas_bye_cause",
        port,
        uas_keys={"cause": "31"},
    )
    row = record_of(ansim, run)
    assert (row["status"], row["ended_by"], row["q850_cause"]) == (200, "callee", 31)
    assert row["duration_ms"] is not None


@pytest.mark.parametrize(
    ("uas", "uac", "caller_gets", "reason"),
    [
        ("cdr_uas_486_cause", "call_uac_reject_486", 486, "b_486"),
        # a 503 moves on to the next trunk; with none left the caller gets 503, and the
        # record keeps the last trunk's cause
        ("cdr_uas_503_cause", "call_uac_reject_503", 503, "trunks_failed"),
    ],
)
def test_cause_from_the_callees_failure_response(
    sipp: Sipp, engine: tuple[Ansim, int], uas: str, uac: str, caller_gets: int, reason: str
) -> None:
    ansim, port = engine
    run, _ = call(sipp, ansim, uac, uas, port, uas_keys={"cause": "34"})
    row = record_of(ansim, run)
    assert (row["status"], row["reason"], row["q850_cause"]) == (caller_gets, reason, 34)
    assert row["answer_at"] is None and row["duration_ms"] is None and row["setup_ms"] is None
    assert row["ring_ms"] is not None  # it rang first


def test_cause_mapped_from_the_callees_status(sipp: Sipp, engine: tuple[Ansim, int]) -> None:
    ansim, port = engine
    busy, _ = call(sipp, ansim, "call_uac_reject_486", "call_uas_486", port)
    # A redirect is never passed on: the caller is told 480, the record keeps the 302's cause.
    moved, _ = call(sipp, ansim, "call_uac_reject_480", "call_uas_302", port)
    rows = {r["a_call_id"]: r for r in ansim.cdr_rows(2)}
    assert (rows[call_id(busy)]["status"], rows[call_id(busy)]["q850_cause"]) == (486, 17)
    assert (rows[call_id(moved)]["status"], rows[call_id(moved)]["q850_cause"]) == (480, 23)
    assert rows[call_id(moved)]["ended_by"] == "callee"


def test_cancelled_and_refused_calls(sipp: Sipp, engine: tuple[Ansim, int]) -> None:
    ansim, port = engine
    cancelled, _ = call(sipp, ansim, "call_uac_cancel", "call_uas_ring_cancel", port)
    unknown, _ = call(sipp, ansim, "call_uac_reject_404", None, port, service=VIRTUAL_UNKNOWN)
    rows = {r["a_call_id"]: r for r in ansim.cdr_rows(2)}
    row = rows[call_id(cancelled)]
    assert (row["status"], row["ended_by"], row["q850_cause"]) == (487, "caller", 16)
    assert (row["binding_kind"], row["direction"]) == ("ax", "N->A")
    row = rows[call_id(unknown)]
    assert (row["status"], row["ended_by"], row["q850_cause"], row["reason"]) == (
        404,
        "engine",
        1,
        "unknown",
    )
    # nothing was routed: no binding, kind, direction or presented number to record
    assert (row["binding_kind"], row["direction"], row["presented"], row["trunk"]) == (None,) * 4
    assert (row["in_trunk"], row["src_transport"], row["call_type"]) == ("t1", "udp", "bridge")
