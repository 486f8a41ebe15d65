"""The media timeout and the relay's supervision, with SIPp on both sides playing RTP (``play_pcap_audio``): a call
anchored by ansim's relay whose media stops in both directions is ended by the engine
(BYE on both legs, CDR reason ``media_timeout``) once ``media.media_timeout`` seconds
have passed without a packet, and not before.

The RTP each SIPp received from the relay and the BYE it got are captured on ``lo``
(raw socket, as root) to show that media flowed, then stopped, and when the BYE came.
A relay process killed during a call is started again by ``ansim serve``; the call it
carried is ended on both legs (CDR reason ``media_failure``) and the next call is
anchored by the new process. A re-INVITE that moves a party's media to another port
moves what the relay sends it, from the same relay port.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, Sipp, number_map, trunk, user_part
from capture import LoopbackCapture
from conftest import free_port
from media_helpers import Party as MediaParty
from media_helpers import relay_media, write_rtp_pcap

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the loopback capture needs a raw socket (root)"
)

MEDIA_TIMEOUT = 2.0
PLAY_SECONDS = 3.0


def test_a_call_whose_media_stops_is_ended_by_the_media_timeout(tmp_path: Path) -> None:
    write_rtp_pcap(tmp_path / "rtp.pcap", PLAY_SECONDS)
    uas_port, uac_port = free_port(), free_port()
    uas_media, uac_media = free_port(), free_port()
    media, base = relay_media(tmp_path, media_timeout=MEDIA_TIMEOUT)
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


def _relay_pid(engine_pid: int) -> int | None:
    for task in Path(f"/proc/{engine_pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            if b"media.relay" in cmdline:
                return int(child)
    return None


def test_a_relay_that_dies_is_restarted_and_its_calls_are_ended(tmp_path: Path) -> None:
    media, base = relay_media(tmp_path)
    uas_port = free_port()
    with (
        Ansim(
            tmp_path / "ansim",
            trunks=[trunk("callee", uas_port)],
            routes=[{"prefix": "+82", "trunks": ["callee"]}],
            numbers=number_map(),
            media=media,
        ) as engine,
        Sipp(tmp_path) as sipp,
    ):
        first = _relay_pid(engine.pid)
        assert first is not None, engine.log_text()
        # Both ends wait for a BYE: only the engine can end this call.
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"))
        uac = sipp.start(
            "call_uac_callee_bye",
            port=free_port(),
            remote=engine.addr,
            service=user_part(VIRTUAL_AX),
            keys=CALLER.sipp_keys("caller"),
        )
        deadline = time.monotonic() + 10
        while not any(m.status == 200 for m in uac.received()):
            uac._messages = None
            assert time.monotonic() < deadline, uac.report()
            time.sleep(0.1)
        os.kill(first, signal.SIGKILL)
        assert (uac.wait(20), uas.wait(20)) == (0, 0), uac.report() + uas.report()
        row = engine.cdr()
        assert (row["status"], row["ended_by"], row["reason"]) == (200, "engine", "media_failure")
        # A new relay is started, and the next call is anchored by it.
        deadline = time.monotonic() + 10
        while _relay_pid(engine.pid) in (None, first):
            assert time.monotonic() < deadline, engine.log_text()
            time.sleep(0.1)
        time.sleep(0.5)
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"))
        uac = sipp.start(
            "call_uac_basic",
            port=free_port(),
            remote=engine.addr,
            service=user_part(VIRTUAL_AX),
            keys=CALLER.sipp_keys("caller"),
        )
        assert (uac.wait(20), uas.wait(20)) == (0, 0), uac.report() + uas.report()
        answer = next(m for m in uac.received() if m.status == 200 and m.cseq_method == "INVITE")
        port = int(answer.body.split("m=audio ", 1)[1].split()[0])
        assert port in range(base, base + 100), answer.body
        rows = engine.cdr_rows(2)
        assert (rows[-1]["status"], rows[-1]["ended_by"]) == (200, "caller")


def test_a_reinvite_moving_the_media_port_moves_what_the_relay_sends(tmp_path: Path) -> None:
    media, base = relay_media(tmp_path)
    uas_port, uas_media, uac_media = free_port(), free_port(), free_port()
    moved = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # where the caller moves to
    moved.bind(("127.0.0.1", uac_media + 10))
    moved.settimeout(0.2)
    callee = MediaParty("127.0.0.1")  # the callee's media, sending toward the relay
    got: list[tuple[float, tuple[str, int]]] = []
    stop = threading.Event()
    try:
        with (
            Ansim(
                tmp_path / "ansim",
                trunks=[trunk("callee", uas_port)],
                routes=[{"prefix": "+82", "trunks": ["callee"]}],
                numbers=number_map(),
                media=media,
            ) as engine,
            Sipp(tmp_path) as sipp,
        ):
            uas = sipp.start(
                "media_uas_move",
                port=uas_port,
                keys=CALLEE.sipp_keys("callee"),
                extra=["-mp", str(uas_media)],
            )
            uac = sipp.start(
                "media_uac_move",
                port=free_port(),
                remote=engine.addr,
                service=user_part(VIRTUAL_AX),
                keys=CALLER.sipp_keys("caller"),
                extra=["-mp", str(uac_media)],
            )
            deadline = time.monotonic() + 10
            while not (invites := [m for m in uas.received() if m.method == "INVITE"]):
                uas._messages = None
                assert time.monotonic() < deadline, uas.report()
                time.sleep(0.05)
            relay_b = int(invites[0].body.split("m=audio ", 1)[1].split()[0])

            def talk() -> None:
                while not stop.is_set():
                    callee.send(callee.rtp(), ("127.0.0.1", relay_b))
                    time.sleep(0.02)

            def listen() -> None:
                while not stop.is_set():
                    try:
                        _, source = moved.recvfrom(2048)
                    except TimeoutError:
                        continue
                    got.append((time.monotonic(), source))

            threads = [threading.Thread(target=f, daemon=True) for f in (talk, listen)]
            for t in threads:
                t.start()
            assert (uac.wait(30), uas.wait(30)) == (0, 0), uac.report() + uas.report()
            stop.set()
            for t in threads:
                t.join(5)
            answers = [m for m in uac.received() if m.status == 200 and m.cseq_method == "INVITE"]
    finally:
        stop.set()
        moved.close()
        callee.close()
    # The caller's side of the relay stays the same port across the re-INVITE ...
    ports = {int(m.body.split("m=audio ", 1)[1].split()[0]) for m in answers}
    assert len(ports) == 1 and ports <= set(range(base, base + 100)), ports
    # ... and what it sends the caller goes to the new port once the re-INVITE is
    # through, from that same relay port: about the three seconds before the BYE.
    assert len(got) >= 100, len(got)
    assert {source for _, source in got} == {("127.0.0.1", ports.pop())}
