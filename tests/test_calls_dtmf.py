"""Digits through an anchored call, with SIPp on both sides: each digit reaches the
call's controller as an event (``ansim_dtmf_digits{via}`` counts them) and crosses to
the other leg in the form that leg negotiated.

- A SIP INFO (``application/dtmf-relay``) from the caller, toward a callee that accepted
  telephone-event: answered 200 by ansim, not relayed as an INFO; the relay sends the
  digit as RFC 4733 events to the callee's media address (captured on ``lo``).
- RFC 4733 events from the caller (SIPp's ``dtmf_2833_5.pcap``), toward a callee that
  did not accept telephone-event: the callee gets an INFO with ``Signal=5``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, Sipp, number_map, trunk, user_part
from capture import Datagram, LoopbackCapture
from conftest import free_port
from media_helpers import relay_media

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the loopback capture needs a raw socket (root)"
)
DTMF_PCAP = Path("/usr/share/sip-tester/dtmf_2833_5.pcap")


def call(
    tmp_path: Path, uac: str, uas: str
) -> tuple[Ansim, list[Datagram], int, range, dict[str, float]]:
    uas_port, uas_media = free_port(), free_port()
    media, base = relay_media(tmp_path)
    relay_ports = range(base, base + 100)
    with (
        Ansim(
            tmp_path / "ansim",
            trunks=[trunk("callee", uas_port)],
            routes=[{"prefix": "+82", "trunks": ["callee"]}],
            numbers=number_map(),
            media=media,
            metrics=True,
        ) as engine,
        Sipp(tmp_path) as sipp,
        LoopbackCapture("127.0.0.1") as capture,
    ):
        callee = sipp.start(
            uas, port=uas_port, keys=CALLEE.sipp_keys("callee"), extra=["-mp", str(uas_media)]
        )
        caller = sipp.start(
            uac,
            port=free_port(),
            remote=engine.addr,
            service=user_part(VIRTUAL_AX),
            keys=CALLER.sipp_keys("caller"),
            extra=["-mp", str(free_port())],
        )
        codes = (caller.wait(30), callee.wait(30))
        assert codes == (0, 0), caller.report() + callee.report() + engine.log_text()
        metrics = engine.metrics()
        packets = list(capture.packets)
    assert engine.cdr()["status"] == 200
    return engine, packets, uas_media, relay_ports, metrics


def test_an_info_digit_reaches_a_callee_with_telephone_event_as_rfc4733(tmp_path: Path) -> None:
    _, packets, uas_media, relay_ports, metrics = call(tmp_path, "dtmf_uac_info", "dtmf_uas_events")
    assert metrics['ansim_dtmf_digits_total{via="info"}'] == 1
    events = [
        p.payload
        for p in packets
        if p.dst[1] == uas_media
        and p.src[1] in relay_ports
        and p.is_rtp
        and p.payload[1] & 0x7F == 101
    ]
    assert events, "no RFC 4733 packets reached the callee"
    assert {e[12] for e in events} == {5}  # the event code: digit 5
    assert any(e[13] & 0x80 for e in events)  # and its end


@pytest.mark.skipif(not DTMF_PCAP.exists(), reason="SIPp's DTMF pcaps (sip-tester) not found")
def test_rfc4733_digits_reach_a_callee_without_telephone_event_as_info(tmp_path: Path) -> None:
    _, packets, uas_media, _, metrics = call(tmp_path, "dtmf_uac_rtp", "dtmf_uas_info")
    assert metrics['ansim_dtmf_digits_total{via="rtp"}'] == 1
    # The events were not relayed as RTP to a party that did not negotiate them.
    assert not [
        p for p in packets if p.dst[1] == uas_media and p.is_rtp and p.payload[1] & 0x7F == 101
    ]
