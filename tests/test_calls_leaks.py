"""Neither party's real number reaches the other leg (DESIGN.md, "What the far leg may see").

The carrier's SIPp writes the caller's real number into every place a phone or carrier
puts it (P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID, Diversion,
History-Info, Reply-To, Call-Info, the Contact user part, the Call-ID, From, free-text
headers, and the SDP o=, s=, i=, u=, e= and p= lines); the callee trunk's SIPp does the
same with the callee's number in its responses and requests. SIPp's ``-trace_msg`` log
of what each end received is everything ansim sent on that leg, and it is searched for
the other party's number in every form (E.164, without +, national, with dashes, dots
or spaces, without the trunk prefix, the subscriber digits alone). The flow tests in
test_calls_flows.py run the same scan on every flow; the tests here show that the scan
has something to find and cover the paths that carry numbers in less usual places.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from call_env import (
    BINDING_AX,
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    CallRun,
    SipMsg,
    Sipp,
    assert_no_leaks,
    leaks,
    run_call,
    trunk,
    user_part,
)
from conftest import free_port


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


@pytest.fixture
def callee_port() -> int:
    return free_port()


@pytest.fixture
def ansim(tmp_path: Path, callee_port: int) -> Iterator[Ansim]:
    with Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee-trunk", callee_port)],
        routes=[{"prefix": "+82", "trunks": ["callee-trunk"]}],
    ) as engine:
        yield engine


def carries(msg: SipMsg, number: str, *headers: str) -> list[str]:
    """The names among ``headers`` (or SDP lines such as ``o=``) of ``msg`` without ``number``."""
    missing = []
    for name in headers:
        if name.endswith("="):
            values = [line for line in msg.body.splitlines() if line.startswith(name)]
        else:
            values = msg.headers(name)
        if not any(number in v for v in values):
            missing.append(name)
    return missing


def test_real_numbers_everywhere_on_the_way_in_nowhere_on_the_way_out(
    sipp: Sipp, ansim: Ansim, callee_port: int
) -> None:
    run = run_call(sipp, ansim, "call_uac_basic", "call_uas_answer", uas_port=callee_port)
    assert run.uas is not None
    # What the carrier sent ansim carries the caller's number in every usual place...
    invite = run.uac.sent()[0]
    assert invite.method == "INVITE"
    assert CALLER.national in invite.header("Call-ID")
    assert invite.header("Contact").split("<sip:", 1)[1].startswith(CALLER.e164 + "@")
    assert not carries(
        invite,
        CALLER.e164,
        "P-Asserted-Identity",
        "Reply-To",
        "Contact",
    )
    assert not carries(
        invite, CALLER.national, "From", "Remote-Party-ID", "History-Info", "o=", "e="
    )
    assert not carries(invite, CALLER.short, "Diversion", "u=")
    assert not carries(invite, CALLER.digits, "P-Preferred-Identity", "X-Original-Caller")
    assert not carries(invite, CALLER.dashed, "Call-Info", "Subject", "i=")
    assert not carries(invite, CALLER.spaced, "Organization", "p=")
    # ...and what the callee's trunk answered carries the callee's.
    answer = next(m for m in run.uas.sent() if m.status == 200 and m.cseq_method == "INVITE")
    assert not carries(answer, CALLEE.e164, "Contact", "P-Asserted-Identity", "X-Real-Callee", "p=")
    assert not carries(answer, CALLEE.national, "Remote-Party-ID", "Warning", "o=")
    assert not carries(answer, CALLEE.dashed, "Call-Info", "Organization", "s=")
    assert not carries(answer, CALLEE.spaced, "Server", "i=")
    # The scan finds these numbers where they legitimately are (a check of the scan itself).
    assert leaks([invite], CALLER) and leaks([answer], CALLEE)
    assert {form for form, _ in leaks([invite, answer], CALLER)} >= {
        CALLER.e164,
        CALLER.digits,
        CALLER.national,
        CALLER.dashed,
        CALLER.spaced,
        CALLER.short,
    }
    # Zero hits on either leg.
    assert_no_leaks(run)
    # What each side sees instead: the virtual number, and ansim's own identifiers.
    b_invite = run.uas.received()[0]
    virtual = "+82" + user_part(VIRTUAL_AX)[1:]
    assert virtual in b_invite.header("From") and virtual in b_invite.header("P-Asserted-Identity")
    assert b_invite.header("Call-ID") != invite.header("Call-ID")
    assert "o=ansim " in b_invite.body and "s=-" in b_invite.body
    a_answer = next(m for m in run.uac.received() if m.status == 200 and m.cseq_method == "INVITE")
    assert a_answer.header("To").startswith(f"<sip:{user_part(VIRTUAL_AX)}@")
    assert a_answer.header("Contact").startswith("<sip:ansim@")
    assert not a_answer.headers("P-Asserted-Identity") and not a_answer.headers("Remote-Party-ID")
    assert ansim.cdr()["binding_id"] == BINDING_AX


def test_redirect_to_the_callee_is_not_relayed(sipp: Sipp, ansim: Ansim, callee_port: int) -> None:
    run = run_call(sipp, ansim, "call_uac_reject_480", "call_uas_302", uas_port=callee_port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 480]
    final = run.uac.received()[-1]
    assert not final.headers("Contact") and not final.headers("Diversion")
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"]) == (480, "callee", "b_302")
    assert_no_leaks(run)


def test_in_dialog_info_options_update_relayed_without_numbers(
    sipp: Sipp, ansim: Ansim, callee_port: int
) -> None:
    run: CallRun = run_call(sipp, ansim, "call_uac_info", "call_uas_info", uas_port=callee_port)
    assert run.uas is not None
    assert run.uac.received_statuses("INFO") == [469]
    assert run.uac.received_statuses("OPTIONS") == [200]
    assert run.uac.received_requests() == ["UPDATE"]
    info = next(m for m in run.uas.received() if m.method == "INFO")
    assert info.header("Content-Type") == "application/dtmf-relay" and "Signal=5" in info.body
    options_ok = next(m for m in run.uac.received() if m.cseq_method == "OPTIONS")
    assert "UPDATE" in options_ok.header("Allow")
    assert run.uas.received_statuses("UPDATE") == [200]
    row = ansim.cdr()
    assert (row["status"], row["ended_by"]) == (200, "caller")
    assert_no_leaks(run)
