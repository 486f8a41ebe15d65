"""The media timeout, with SIPp on both sides playing RTP (``play_pcap_audio``): a call
anchored by ansim's relay whose media stops in both directions is ended by the engine
(BYE on both legs, CDR reason ``media_timeout``) once ``media.media_timeout`` seconds
have passed without a packet, and not before.

The RTP each SIPp received from the relay and the BYE it got are captured on ``lo``
(raw socket, as root) to show that media flowed, then stopped, and when the BYE came.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, Sipp, number_map, trunk, user_part
from capture import LoopbackCapture
from conftest import free_port
from media_helpers import write_rtp_pcap

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the loopback capture needs a raw socket (root)"
)

MEDIA_TIMEOUT = 2.0
PLAY_SECONDS = 3.0


def test_a_call_whose_media_stops_is_ended_by_the_media_timeout(tmp_path: Path) -> None:
    write_rtp_pcap(tmp_path / "rtp.pcap", PLAY_SECONDS)
    uas_port, uac_port = free_port(), free_port()
    uas_media, uac_media = free_port(), free_port()
    base = 61000 + (free_port() % 20) * 200
    media = {
        "mode": "relay",
        "media_timeout": MEDIA_TIMEOUT,
        "relays": [
            {
                "control": str(tmp_path / "relay.sock"),
                "address": "127.0.0.1",
                "ports": f"{base}-{base + 99}",
            }
        ],
    }
    with (
        Ansim(
            tmp_path / "ansim",
            trunks=[trunk("callee", uas_port)],
            routes=[{"prefix": "+82", "trunks": ["callee"]}],
            numbers=number_map(),
            media=media,
        ) as engine,
        Sipp(tmp_path) as sipp,
        LoopbackCapture("127.0.0.1") as capture,
    ):
        uas = sipp.start(
            "media_uas_stops",
            port=uas_port,
            keys=CALLEE.sipp_keys("callee"),
            timeout=30,
            extra=["-mp", str(uas_media)],
        )
        uac = sipp.start(
            "media_uac_stops",
            port=uac_port,
            remote=engine.addr,
            service=user_part(VIRTUAL_AX),
            keys=CALLER.sipp_keys("caller"),
            timeout=30,
            extra=["-mp", str(uac_media)],
        )
        assert (uac.wait(40), uas.wait(40)) == (0, 0), (
            uac.report() + uas.report() + engine.log_text()
        )
        row = engine.cdr()
        packets = list(capture.packets)
    assert (row["status"], row["ended_by"], row["reason"]) == (200, "engine", "media_timeout"), row

    for sip_port, media_port in ((uac_port, uac_media), (uas_port, uas_media)):
        # Relayed RTP reached each SIPp from the relay, then stopped; the BYE came once
        # the media timeout had passed, not before.
        rtp = [
            p
            for p in packets
            if p.dst[1] == media_port and p.is_rtp and p.src[1] in range(base, base + 100)
        ]
        assert len(rtp) >= PLAY_SECONDS * 50 * 0.8, len(rtp)
        byes = [p for p in packets if p.dst[1] == sip_port and p.payload.startswith(b"BYE ")]
        assert byes, f"no BYE to {sip_port}"
        silence = byes[0].at - rtp[-1].at
        assert MEDIA_TIMEOUT - 0.1 <= silence <= MEDIA_TIMEOUT + 2.5, silence
