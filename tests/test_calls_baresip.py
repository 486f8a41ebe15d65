"""Calls between two real user agents through ansim: baresip (Debian ``baresip-core``)
as the caller on 127.0.0.2 and as the callee on 127.0.0.3 (auto-answer).

Each side plays a sine tone of its own (``ausine``) and dumps what it receives
(``sndfile``): the peak of each received recording's spectrum must be the other side's
tone, so the call has audio both ways. baresip puts its user's address of record, the
real number, in its From, Contact and in the SDP (``a=ssrc:... cname:sip:+8210...@``);
its own SIP trace (``-s``) of every message it received must hold the other party's
number in no written form. RTCP flows end to end while media is not anchored, and its
SDES CNAME items carry each side's address of record: that is outside what is checked
here (the media relay rewrites them).

Each baresip runs from a configuration folder the test writes (modules, the audio
source and player, ``sip_listen`` on its address, one account), is stopped by its
``-t`` limit or killed by the test, and every wait is bounded.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from baresip_helpers import BARESIP, MODULES, Baresip, peak_hz
from call_env import VIRTUAL_AX, Ansim, Party, leaks, trunk, user_part
from conftest import free_port

from b2bua.sip.sdp import parse_sdp

pytestmark = pytest.mark.skipif(
    BARESIP is None or not MODULES.is_dir(), reason="baresip (Debian baresip-core) not installed"
)

CALLER_UA = Party("+821011112222")
CALLEE_UA = Party("+821033334444")
CALLER_TONE = 440
CALLEE_TONE = 1250


@pytest.fixture
def uas_port() -> int:
    return free_port()


@pytest.fixture
def engine(tmp_path: Path, uas_port: int) -> Iterator[Ansim]:
    numbers = {"version": 1, "ax": [{"id": "ua-ax", "x": VIRTUAL_AX, "a": CALLEE_UA.e164}]}
    callee_trunk = trunk("baresip-callee", uas_port) | {"address": f"127.0.0.3:{uas_port}"}
    with Ansim(
        tmp_path / "ansim",
        trunks=[callee_trunk],
        routes=[{"prefix": "+82", "trunks": ["baresip-callee"]}],
        numbers=numbers,
    ) as ansim:
        yield ansim


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[tuple[Baresip, Baresip]]:
    caller, callee = Baresip("caller", tmp_path / "caller"), Baresip("callee", tmp_path / "callee")
    try:
        yield caller, callee
    finally:
        caller.stop()
        callee.stop()


def wait_for_bye(agent: Baresip, address: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(m.method == "BYE" for m in agent.received(address)):
        assert time.monotonic() < deadline, agent.tail()
        time.sleep(0.1)


@pytest.mark.parametrize("hangs_up", ["caller", "callee"])
def test_baresip_to_baresip_audio_both_ways_and_no_number_crosses(
    hangs_up: str, engine: Ansim, agents: tuple[Baresip, Baresip], uas_port: int
) -> None:
    caller, callee = agents
    callee.write_config(CALLEE_UA, "127.0.0.3", uas_port, CALLEE_TONE, (21000, 21099), True)
    caller.write_config(CALLER_UA, "127.0.0.2", free_port(), CALLER_TONE, (20000, 20099), False)
    # Whoever hangs up does so when its -t limit comes, after about four seconds of audio.
    callee.start(7 if hangs_up == "callee" else 14)
    deadline = time.monotonic() + 5
    while b"baresip is ready" not in (callee.log.read_bytes() if callee.log.exists() else b""):
        assert time.monotonic() < deadline and callee.proc and callee.proc.poll() is None, (
            callee.tail()
        )
        time.sleep(0.05)
    caller.start(
        6 if hangs_up == "caller" else 14,
        f"/dial sip:{user_part(VIRTUAL_AX)}@127.0.0.1:{engine.port}",
    )
    first, second = (caller, callee) if hangs_up == "caller" else (callee, caller)
    assert first.wait(15) is not None, first.tail()
    wait_for_bye(second, "127.0.0.3" if second is callee else "127.0.0.2")
    second.stop()

    # The call was answered, and ended on both legs by the side that hung up.
    to_caller, to_callee = caller.received("127.0.0.2"), callee.received("127.0.0.3")
    assert [m.status for m in to_caller if m.cseq_method == "INVITE"][-1:] == [200], caller.tail()
    requests = ["INVITE", "ACK", "BYE"] if hangs_up == "caller" else ["INVITE", "ACK"]
    assert [m.method for m in to_callee if m.method] == requests, callee.tail()
    if hangs_up == "callee":
        assert [m.method for m in to_caller if m.method] == ["BYE"], caller.tail()
    row = engine.cdr()
    assert (row["status"], row["ended_by"], row["callee"]) == (200, hangs_up, CALLEE_UA.e164)

    # Audio both ways: each side received the other's tone.
    assert abs(peak_hz(caller.recording()) - CALLEE_TONE) <= 10
    assert abs(peak_hz(callee.recording()) - CALLER_TONE) <= 10

    # Neither side received the other's number; each did send its own (the scan's check).
    assert leaks(caller.sent("127.0.0.2"), CALLER_UA) and leaks(callee.sent("127.0.0.3"), CALLEE_UA)
    assert any("cname:sip:" + CALLER_UA.e164 in m.text for m in caller.sent("127.0.0.2"))
    hits = leaks(to_callee, CALLER_UA)
    assert not hits, f"caller's number sent to the callee: {hits}"
    hits = leaks(to_caller, CALLEE_UA)
    assert not hits, f"callee's number sent to the caller: {hits}"
    offer = next(m for m in to_callee if m.method == "INVITE")
    answer = next(m for m in to_caller if m.status == 200 and m.cseq_method == "INVITE")
    for msg in (offer, answer):
        body = msg.raw.split(b"\r\n\r\n", 1)[1]
        assert body.startswith(b"v=0\r\no=ansim ")
        sdp = parse_sdp(body)
        assert [m.kind for m in sdp.media] == [b"audio"] and not sdp.media[0].rejected
        assert b"a=tool" not in body and b"a=label" not in body and b"a=ssrc" not in body
