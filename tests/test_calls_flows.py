"""Call flows through ansim with SIPp as the real peer on both sides.

SIPp plays the carrier (uac) on the A-leg and the callee's trunk (uas) on the B-leg,
ansim runs as ``ansim serve`` in between. Each test checks that both SIPp ends saw
exactly the messages of their scenario (exit code 0), the status codes and requests
each end received, the CDR row, and that nothing ansim sent on one leg holds the other
party's real number (see test_calls_leaks.py for the fields that carry it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from call_env import (
    BINDING_AX,
    BINDING_EXPIRED,
    BINDING_LIMITED,
    CALLEE,
    CALLER,
    VIRTUAL_AXB,
    VIRTUAL_EXPIRED,
    VIRTUAL_LIMITED,
    VIRTUAL_UNKNOWN,
    Ansim,
    Sipp,
    UdpSink,
    assert_no_leaks,
    expired_binding,
    leaks,
    run_call,
    trunk,
)
from conftest import free_port

StartAnsim = Callable[..., Ansim]


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


@pytest.fixture
def start_ansim(tmp_path: Path) -> Iterator[StartAnsim]:
    started: list[Ansim] = []

    def start(*ports: int, **kwargs: Any) -> Ansim:
        """ansim with one trunk per port (``t1``, ``t2``...), tried in that order for every callee."""
        trunk_opts = kwargs.pop("trunk_opts", {})
        trunks = [trunk(f"t{i}", port, **trunk_opts) for i, port in enumerate(ports, 1)]
        routes = [{"prefix": "+82", "trunks": [t["name"] for t in trunks]}]
        engine = Ansim(tmp_path / f"ansim{len(started)}", trunks=trunks, routes=routes, **kwargs)
        started.append(engine)
        return engine.start()

    codes = []
    try:
        yield start
    finally:
        for engine in started:
            codes.append((engine.stop(), engine.log_text()))
    for rc, log in codes:
        assert rc == 0, f"ansim exited with {rc}:\n{log}"


def check_cdr(engine: Ansim, **expected: Any) -> dict[str, Any]:
    row = engine.cdr()
    got = {key: row[key] for key in expected}
    assert got == expected, row
    return row


# -- answered calls --------------------------------------------------------------------------


def test_basic_call_caller_hangs_up(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_basic", "call_uas_answer", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    assert run.uac.received_statuses("BYE") == [200]
    assert run.uas.received_requests() == ["INVITE", "ACK", "BYE"]
    row = check_cdr(
        engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t1", callee=CALLEE.e164
    )
    assert row["answer_at"] >= row["ring_at"] >= row["invite_at"]
    assert_no_leaks(run)


def test_max_call_length_ends_the_call_on_both_legs(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(
        sipp,
        engine,
        "call_uac_callee_bye",
        "call_uas_answer",
        uas_port=port,
        service=VIRTUAL_LIMITED,
    )
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    assert run.uac.received_requests() == ["BYE"]
    assert run.uas.received_requests() == ["INVITE", "ACK", "BYE"]
    row = check_cdr(
        engine, status=200, ended_by="limit", reason="max_call_length", binding_id=BINDING_LIMITED
    )
    assert row["duration_ms"] >= 1000  # the binding's limit, never cut short
    assert_no_leaks(run)


def test_basic_call_callee_hangs_up(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_callee_bye", "call_uas_bye", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    assert run.uac.received_requests() == ["BYE"]
    # The carrier's INVITE was Record-Routed: the route set is echoed and then followed.
    record_route = run.uac.sent()[0].header("Record-Route")
    assert record_route.startswith("<sip:127.0.0.1:")
    assert {m.header("Record-Route") for m in run.uac.received() if m.status in (180, 200)} == {
        record_route
    }
    assert next(m for m in run.uac.received() if m.method == "BYE").headers("Route") == [
        record_route
    ]
    assert run.uas.received_requests() == ["INVITE", "ACK"]
    assert run.uas.received_statuses("BYE") == [200]
    check_cdr(engine, status=200, ended_by="callee", binding_id=BINDING_AX, trunk="t1")
    assert_no_leaks(run)


def test_183_with_sdp_then_200(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_basic", "call_uas_early_media", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 183, 200]
    early = next(m for m in run.uac.received() if m.status == 183)
    assert early.header("Content-Type") == "application/sdp"
    assert "m=audio" in early.body and early.body.count("o=ansim ") == 1
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t1")
    assert_no_leaks(run)


def test_hold_and_resume_by_caller(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_hold", "call_uas_held", uas_port=port)
    assert run.uas.received_requests() == ["INVITE", "ACK", "INVITE", "ACK", "INVITE", "ACK", "BYE"]
    invites = [m for m in run.uas.received() if m.method == "INVITE"]
    assert ["a=sendonly" in m.body for m in invites] == [False, True, False]
    # The far leg's SDP origin moves with the sender's version, one step per offer.
    versions = [int(m.body.split("o=ansim ", 1)[1].split()[1]) for m in invites]
    assert versions == sorted(versions) and len(set(versions)) == 3
    assert run.uac.received_statuses("INVITE") == [100, 180, 200, 100, 200, 100, 200]
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t1")
    assert_no_leaks(run)


def test_hold_and_resume_by_callee(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_held", "call_uas_hold", uas_port=port)
    assert run.uac.received_requests() == ["INVITE", "ACK", "INVITE", "ACK"]
    invites = [m for m in run.uac.received() if m.method == "INVITE"]
    assert ["a=sendonly" in m.body for m in invites] == [True, False]
    assert run.uas.received_requests() == ["INVITE", "ACK", "BYE"]
    assert run.uas.received_statuses("INVITE") == [100, 200, 100, 200]
    answers = [m for m in run.uas.received() if m.status == 200 and m.cseq_method == "INVITE"]
    assert ["a=recvonly" in m.body for m in answers] == [True, False]
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t1")
    assert_no_leaks(run)


def test_prack_end_to_end(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_prack", "call_uas_prack", uas_port=port)
    early = next(m for m in run.uac.received() if m.status == 183)
    assert early.header("Require") == "100rel" and early.header("RSeq") == "4711"
    assert run.uac.received_statuses("PRACK") == [200]
    assert run.uac.received_statuses("INVITE")[-1] == 200
    prack = next(m for m in run.uas.received() if m.method == "PRACK")
    assert prack.header("RAck") == "4711 1 INVITE"
    assert "100rel" in next(m for m in run.uas.received() if m.method == "INVITE").header(
        "Supported"
    )
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t1")
    assert_no_leaks(run)


# -- calls that are not answered -------------------------------------------------------------


def test_busy_486(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_reject_486", "call_uas_486", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 486]
    assert run.uas.received_requests() == ["INVITE", "ACK"]
    check_cdr(
        engine, status=486, ended_by="callee", binding_id=BINDING_AX, trunk="t1", answer_at=None
    )
    assert_no_leaks(run)


def test_no_answer_480_and_callee_cancelled(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port, trunk_opts={"no_answer_timeout": 1.0})
    run = run_call(sipp, engine, "call_uac_reject_480", "call_uas_ring_cancel", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 480]
    assert run.uas.received_requests() == ["INVITE", "CANCEL", "ACK"]
    assert run.uas.sent()[-1].status == 487
    check_cdr(
        engine, status=480, ended_by="engine", binding_id=BINDING_AX, trunk="t1", reason="no_answer"
    )
    assert_no_leaks(run)


def test_cancel_while_ringing(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_cancel", "call_uas_ring_cancel", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 487]
    assert run.uac.received_statuses("CANCEL") == [200]
    assert run.uas.received_requests() == ["INVITE", "CANCEL", "ACK"]
    check_cdr(
        engine, status=487, ended_by="caller", binding_id=BINDING_AX, trunk="t1", answer_at=None
    )
    assert_no_leaks(run)


def test_caller_bye_while_ringing_cancels_the_callee(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_early_bye", "call_uas_ring_cancel", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 487]
    assert run.uac.received_statuses("BYE") == [200]
    assert run.uas.received_requests() == ["INVITE", "CANCEL", "ACK"]
    check_cdr(
        engine, status=487, ended_by="caller", binding_id=BINDING_AX, trunk="t1", answer_at=None
    )
    assert_no_leaks(run)


def test_200_after_cancel_is_acked_then_byed(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_cancel", "call_uas_200_after_cancel", uas_port=port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 487]
    assert run.uas.received_requests() == ["INVITE", "CANCEL", "ACK", "BYE"]
    assert run.uas.received_statuses() == []  # ansim answered nothing to the INVITE it sent
    check_cdr(
        engine, status=487, ended_by="caller", binding_id=BINDING_AX, trunk="t1", answer_at=None
    )
    assert_no_leaks(run)


# -- refusals --------------------------------------------------------------------------------


def test_unknown_virtual_number_404(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    with UdpSink(port) as callee_trunk:
        run = run_call(sipp, engine, "call_uac_reject_404", service=VIRTUAL_UNKNOWN)
        assert run.uac.received_statuses("INVITE") == [100, 404]
        check_cdr(
            engine, status=404, ended_by="engine", binding_id=None, trunk=None, reason="unknown"
        )
        assert callee_trunk.datagrams() == []
    assert_no_leaks(run)


def test_axb_third_party_403(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port)
    with UdpSink(port) as callee_trunk:
        run = run_call(sipp, engine, "call_uac_reject_403", service=VIRTUAL_AXB)
        assert run.uac.received_statuses("INVITE") == [100, 403]
        # X holds only axb pairs and the caller is in none: no binding id to record.
        check_cdr(
            engine, status=403, ended_by="engine", binding_id=None, trunk=None, reason="not_party"
        )
        assert callee_trunk.datagrams() == []
    assert_no_leaks(run)


def test_expired_binding_404(sipp: Sipp, start_ansim: StartAnsim) -> None:
    port = free_port()
    engine = start_ansim(port, api_bindings=[expired_binding()])
    with UdpSink(port) as callee_trunk:
        run = run_call(sipp, engine, "call_uac_reject_404", service=VIRTUAL_EXPIRED)
        assert run.uac.received_statuses("INVITE") == [100, 404]
        check_cdr(
            engine,
            status=404,
            ended_by="engine",
            binding_id=BINDING_EXPIRED,
            trunk=None,
            reason="expired",
        )
        assert callee_trunk.datagrams() == []
    assert_no_leaks(run)


# -- trunk failover --------------------------------------------------------------------------


def test_failover_when_first_trunk_has_nothing_listening(
    sipp: Sipp, start_ansim: StartAnsim
) -> None:
    dead, alive = free_port(), free_port()
    engine = start_ansim(dead, alive)
    run = run_call(sipp, engine, "call_uac_basic", "call_uas_answer", uas_port=alive)
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    assert run.uas.received_requests() == ["INVITE", "ACK", "BYE"]
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t2")
    assert_no_leaks(run)


def test_failover_when_first_trunk_never_answers(sipp: Sipp, start_ansim: StartAnsim) -> None:
    silent_port, alive = free_port(), free_port()
    engine = start_ansim(silent_port, alive)
    silent = sipp.start("call_uas_silent", port=silent_port, timeout=15, extra=["-d", "2500"])
    run = run_call(sipp, engine, "call_uac_basic", "call_uas_answer", uas_port=alive)
    assert silent.wait(20) == 0, silent.report()
    assert set(silent.received_requests()) == {"INVITE"}  # no CANCEL: it never sent a provisional
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t2")
    assert_no_leaks(run)
    assert not leaks(silent.received(), CALLER)


def test_failover_when_first_trunk_answers_503(sipp: Sipp, start_ansim: StartAnsim) -> None:
    out_of_service, alive = free_port(), free_port()
    engine = start_ansim(out_of_service, alive)
    first = sipp.start("call_uas_503", port=out_of_service, keys=CALLEE.sipp_keys("callee"))
    run = run_call(sipp, engine, "call_uac_basic", "call_uas_answer", uas_port=alive)
    assert first.wait(20) == 0, first.report()
    assert first.received_requests() == ["INVITE", "ACK"]
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t2")
    assert_no_leaks(run)
    assert not leaks(first.received(), CALLER)


def test_failover_after_early_media_moves_the_sdp_version(
    sipp: Sipp, start_ansim: StartAnsim
) -> None:
    """The caller saw the first trunk's SDP in a 183; the second trunk's answer is a new SDP
    in the same dialog on the caller's side, so its o= version must be higher (RFC 3264 §8)."""
    failing, alive = free_port(), free_port()
    engine = start_ansim(failing, alive)
    first = sipp.start("call_uas_early_503", port=failing, keys=CALLEE.sipp_keys("callee"))
    run = run_call(sipp, engine, "call_uac_basic", "call_uas_answer", uas_port=alive)
    assert first.wait(20) == 0, first.report()
    assert run.uac.received_statuses("INVITE") == [100, 183, 180, 200]
    early, answer = (
        m for m in run.uac.received() if m.status in (183, 200) and m.cseq_method == "INVITE"
    )
    origin = [m.body.split("o=", 1)[1].split()[:3] for m in (early, answer)]
    assert origin[0][:2] == origin[1][:2] == ["ansim", origin[0][1]]
    assert int(origin[1][2]) > int(origin[0][2])
    check_cdr(engine, status=200, ended_by="caller", binding_id=BINDING_AX, trunk="t2")
    assert_no_leaks(run)


def test_all_trunks_down_503(sipp: Sipp, start_ansim: StartAnsim) -> None:
    engine = start_ansim(free_port(), free_port(), trunk_opts={"invite_timeout": 0.5})
    run = run_call(sipp, engine, "call_uac_reject_503")
    assert run.uac.received_statuses("INVITE") == [100, 503]
    check_cdr(
        engine, status=503, ended_by="engine", binding_id=BINDING_AX, trunk="t2", answer_at=None
    )
    assert_no_leaks(run)


def test_callee_2xx_retransmission_is_acked_again(sipp: Sipp, start_ansim: StartAnsim) -> None:
    """A callee whose ACK was lost sends its 200 again: ansim ACKs it again at once (not only
    when the call ends, by which time the callee would have given up on the call)."""
    port = free_port()
    engine = start_ansim(port)
    run = run_call(sipp, engine, "call_uac_callee_bye", "call_uas_2xx_again", uas_port=port)
    assert run.uas.received_requests() == ["INVITE", "ACK", "ACK"]
    acks = [m for m in run.uas.received() if m.method == "ACK"]
    assert {m.header("CSeq") for m in acks} == {"1 ACK"}
    assert run.uac.received_statuses("INVITE") == [100, 180, 200]
    assert run.uac.received_requests() == ["BYE"]
    check_cdr(engine, status=200, ended_by="callee", binding_id=BINDING_AX, trunk="t1")
    assert_no_leaks(run)
