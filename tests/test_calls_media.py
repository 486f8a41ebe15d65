"""Anchored media with real user agents: baresip A (127.0.0.2, a 440 Hz tone) calls X
through ansim, baresip B (127.0.0.3, a 1000 Hz tone) answers; media through ansim's
relay, and the same call through rtpengine.

What each baresip received is captured on ``lo`` with a raw socket (SIP, RTP and RTCP,
whatever the port): each side must have heard the other's tone, before and after a hold
and resume from each side; a digit keyed by A must reach B; and nothing A received may
hold 127.0.0.3 or B's number (in SDP, as an RTP or RTCP source, in RTCP SDES), nor
anything B received 127.0.0.2 or A's number. The call is recorded: the recording
decrypts with the operator's private key to audio holding both tones, and fails loudly
with a wrong key or one changed byte; while the call is being recorded, neither the
recordings folder nor the engine's temporary folder holds a byte of its audio in the
clear.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from baresip_helpers import BARESIP, MODULES, Baresip, peak_hz
from call_env import VIRTUAL_AX, Ansim, Party, scan, trunk, user_part
from capture import Datagram, LoopbackCapture
from conftest import ROOT, free_port
from media_helpers import make_keys, relay_media, rtpengine_process

from media.g711 import decode
from media.rtcp import sdes_items

pytestmark = [
    pytest.mark.skipif(
        BARESIP is None or not MODULES.is_dir(),
        reason="baresip (Debian baresip-core) not installed",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs a raw socket (root)"),
]

A_UA = Party("+821055516677")
B_UA = Party("+821088829933")
A_IP, B_IP = "127.0.0.2", "127.0.0.3"
A_TONE, B_TONE = 440, 1000
ANSIM = ROOT / ".venv" / "bin" / "ansim"


@dataclass
class CallResult:
    engine: Ansim
    caller: Baresip
    callee: Baresip
    packets: list[Datagram]
    plaintext_hits: list[str]
    rtp_from_a: list[bytes]
    a_ports: range
    b_ports: range
    media_ports: range  # the relay's or rtpengine's

    def ports_of(self, party: Baresip) -> set[int]:
        """The party's own ports: its SIP port, and the RTP and RTCP ports of every SDP
        it sent (other tests on the machine may run baresip on the same addresses)."""
        ports = {party.sip_port}
        for m in party.sent(party.address):
            for line in m.body.splitlines():
                if line.startswith("m=audio "):
                    rtp = int(line.split()[1])
                    ports |= {rtp, rtp + 1}
        return ports

    def to(self, party: Baresip) -> list[Datagram]:
        """What a party received: datagrams to its ports at its address, or at 127.0.0.1
        (its RTP leaves from 127.0.0.1, so the relay latches and answers there)."""
        ports = self.ports_of(party)
        return [
            p
            for p in self.packets
            if p.dst[0] in (party.address, "127.0.0.1") and p.dst[1] in ports
        ]

    def sent(self, party: Baresip) -> list[Datagram]:
        ports = self.ports_of(party)
        return [
            p
            for p in self.packets
            if p.src[0] in (party.address, "127.0.0.1") and p.src[1] in ports
        ]


def run_call(tmp_path: Path, mode: str) -> Iterator[CallResult]:
    """One recorded call A -> X -> B in ``mode`` with holds, resumes and a digit."""
    pub, _, _ = make_keys(tmp_path)
    uas_port = free_port()
    recordings = tmp_path / "recordings"
    engine_tmp = tmp_path / "engine-tmp"
    engine_tmp.mkdir()
    # Ports above the ephemeral range (32768-60999), apart from the other media tests'.
    media, base = relay_media(
        tmp_path,
        mode=mode,
        # baresip's RTP leaves from 127.0.0.1 whatever its SDP says (its socket is not
        # bound to its address): latch on the first packet from anywhere.
        latch="any",
        media_timeout=20,
        recording={"directory": str(recordings), "public_key": str(pub)},
    )
    b_ports, a_ports = range(base + 200, base + 300), range(base + 300, base + 400)
    daemon = None
    media_ports = range(base, base + 100)
    if mode == "rtpengine":
        daemon = rtpengine_process(tmp_path, base + 100)
        ng = daemon.__enter__()
        media["rtpengine"] = {"ng": f"127.0.0.1:{ng.ng_port}"}
        media_ports = ng.ports
    numbers = {
        "version": 1,
        "ax": [{"id": "media-ax", "x": VIRTUAL_AX, "a": B_UA.e164, "record": True}],
    }
    callee_trunk = trunk("callee", uas_port) | {"address": f"{B_IP}:{uas_port}"}
    caller = Baresip("caller", tmp_path / "caller")
    callee = Baresip("callee", tmp_path / "callee")
    try:
        with (
            Ansim(
                tmp_path / "ansim",
                trunks=[callee_trunk],
                routes=[{"prefix": "+82", "trunks": ["callee"]}],
                numbers=numbers,
                media=media,
                metrics=True,
                env={"TMPDIR": str(engine_tmp)},
            ) as engine,
            LoopbackCapture(A_IP, B_IP, "127.0.0.1") as capture,
        ):
            callee.write_config(
                B_UA, B_IP, uas_port, B_TONE, (base + 200, base + 299), True, free_port()
            )
            caller.write_config(
                A_UA, A_IP, free_port(), A_TONE, (base + 300, base + 399), False, free_port()
            )
            callee.start(30)
            callee.wait_log(b"baresip is ready", 5)
            caller.start(30, f"/dial sip:{user_part(VIRTUAL_AX)}@127.0.0.1:{engine.port}")
            caller.wait_log(b"Call established", 10)
            time.sleep(2.0)
            caller.command("hold")
            time.sleep(1.5)
            caller.command("resume")
            time.sleep(1.5)
            callee.command("hold")
            time.sleep(1.5)
            callee.command("resume")
            time.sleep(1.0)
            caller.command("sndcode", "5")
            time.sleep(1.5)
            # While the call is recorded: no plaintext audio on the engine's disk.
            rtp_from_a = [
                p.payload[12:]
                for p in capture.to("127.0.0.1")
                if p.src[1] in a_ports and p.is_rtp and p.payload[1] & 0x7F == 0
            ]
            assert len(rtp_from_a) > 60, summary(capture.packets)
            hits = plaintext_on_disk([recordings, engine_tmp, engine.workdir], rtp_from_a)
            time.sleep(4.5)  # baresip sends RTCP every few seconds: let each send some
            caller.command("hangup")
            deadline = time.monotonic() + 5
            while not any(m.method == "BYE" for m in callee.received(B_IP)):
                assert time.monotonic() < deadline, callee.tail()
                time.sleep(0.1)
            time.sleep(0.5)
            caller.stop()
            callee.stop()
            packets = list(capture.packets)
            yield CallResult(
                engine, caller, callee, packets, hits, rtp_from_a, a_ports, b_ports, media_ports
            )
    finally:
        caller.stop()
        callee.stop()
        if daemon is not None:
            daemon.__exit__(None, None, None)


def summary(packets: list[Datagram]) -> str:
    """Datagrams by source and destination address, and kind (for assertion messages)."""
    counts: dict[tuple[str, str, str], int] = {}
    for p in packets:
        kind = "sip" if p.is_sip else "rtcp" if p.is_rtcp else "rtp" if p.is_rtp else "other"
        key = (f"{p.src[0]}:{p.src[1]}", f"{p.dst[0]}:{p.dst[1]}", kind)
        counts[key] = counts.get(key, 0) + 1
    return "\n".join(f"{k}: {n}" for k, n in sorted(counts.items()))


def plaintext_on_disk(folders: list[Path], payloads: list[bytes]) -> list[str]:
    """Files under ``folders`` holding 32 bytes of any ``payloads`` (G.711 as sent, or
    decoded to 16-bit PCM)."""
    needles: set[bytes] = set()
    for payload in payloads[50:60]:
        if len(payload) >= 64:
            needles.add(payload[16:48])
            needles.add(bytes(decode("PCMU", payload))[32:96])
    assert needles, "no RTP from A captured to look for"
    hits = []
    for folder in folders:
        for path in folder.rglob("*"):
            if not path.is_file() or path.suffix == ".wav":
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [str(path) for n in needles if n in data]
    return hits


def check_call(result: CallResult, tmp_path: Path, mode: str) -> None:
    caller, callee, engine = result.caller, result.callee, result.engine
    to_a = result.to(caller)
    to_b = result.to(callee)

    # Audio both ways, and still after each side held and resumed (the end of each dump).
    a_heard, b_heard = caller.recording(), callee.recording()
    assert abs(peak_hz(a_heard) - B_TONE) <= 10
    assert abs(peak_hz(b_heard) - A_TONE) <= 10
    assert abs(peak_hz(a_heard, 4096, len(a_heard) - 4096 - 2000) - B_TONE) <= 10
    assert abs(peak_hz(b_heard, 4096, len(b_heard) - 4096 - 2000) - A_TONE) <= 10
    # Both holds crossed as re-INVITEs and were answered.
    reinvites_to_b = [m for m in callee.received(B_IP) if m.method == "INVITE"]
    reinvites_to_a = [m for m in caller.received(A_IP) if m.method == "INVITE"]
    assert len(reinvites_to_b) >= 3 and len(reinvites_to_a) >= 2, (caller.tail(), callee.tail())

    # The digit A keyed reached B.
    # (baresip logs "received event" for RFC 4733 events, "received DTMF" for an INFO.)
    assert b"received event: '5' (end=1)" in callee.log.read_bytes(), callee.tail()

    # RTP and RTCP only ever came from ansim's media address and ports (the parties'
    # own media leaves from 127.0.0.1 too, from ports of their ranges).
    for packets in (to_a, to_b):
        sources = {p.src for p in packets if not p.is_sip}
        assert sources and all(
            ip == "127.0.0.1" and port in result.media_ports for ip, port in sources
        ), sources
    assert any(p.is_rtcp for p in to_a) and any(p.is_rtcp for p in to_b), summary(result.packets)
    assert sum(p.is_rtp for p in to_a) > 200 and sum(p.is_rtp for p in to_b) > 200
    # Nothing either side received names the other: number in any form, or address.
    for packets, other, other_ip in ((to_a, B_UA, B_IP), (to_b, A_UA, A_IP)):
        for p in packets:
            if p.is_rtp:
                continue  # audio: its only identity is the SSRC
            assert other_ip.encode() not in p.payload, p.payload[:400]
            hits = scan(p.payload, other)
            assert not hits, (hits, p.payload[:400])
    if mode == "relay":
        # The CNAME each party finds in RTCP SDES is the one its SDP's a=ssrc names.
        for party, packets in ((caller, to_a), (callee, to_b)):
            sdp_cnames = {
                line.split("cname:", 1)[1].strip()
                for m in party.received(A_IP if party is caller else B_IP)
                for line in m.body.splitlines()
                if line.startswith("a=ssrc:") and "cname:" in line
            }
            rtcp_cnames = {
                text.decode()
                for p in packets
                if p.is_rtcp
                for _, kind, text in sdes_items(p.payload)
                if kind == 1
            }
            assert len(sdp_cnames) == 1 and rtcp_cnames == sdp_cnames, (sdp_cnames, rtcp_cnames)
    # Each side did send its own number and address in SDES (what the relay rewrites).
    sent_rtcp = [p for p in result.sent(caller) if p.is_rtcp]
    assert sent_rtcp and any(A_UA.e164.encode() in p.payload for p in sent_rtcp)
    if mode == "rtpengine":
        # rtpengine forwards an RTCP packet without a report unchanged (baresip's BYE
        # compound at hang-up: BYE, then SDES with its CNAME): each party was told to
        # send its RTCP to the engine's sink, without rtcp-mux, and all of it went there.
        for party, ip in ((caller, A_IP), (callee, B_IP)):
            bodies = [m.body for m in party.received(ip) if m.body]
            sinks = {
                line.split()[0].split(":")[1]
                for body in bodies
                for line in body.splitlines()
                if line.startswith("a=rtcp:")
            }
            assert bodies and len(sinks) == 1, bodies
            port = next(iter(sinks))
            assert all(f"a=rtcp:{port} IN IP4 127.0.0.1" in b for b in bodies)
            assert not any("a=rtcp-mux" in b for b in bodies)
            sent = [p for p in result.sent(party) if p.is_rtcp]
            assert sent and all(p.dst == ("127.0.0.1", int(port)) for p in sent)
        assert any(p.payload[:2] == b"\x81\xcb" for p in sent_rtcp)  # the caller's BYE

    # Signalling: the call was answered and ended on both legs; its record.
    row = engine.cdr()
    assert (row["status"], row["ended_by"], row["callee"]) == (200, "caller", B_UA.e164)
    metrics = engine.metrics()
    assert metrics.get('ansim_dtmf_digits_total{via="rtp"}', 0) >= 1 or mode == "rtpengine"

    # No plaintext audio on the engine's disk while the call was recorded.
    assert not result.plaintext_hits, result.plaintext_hits

    # The recording: both tones with the right key; a loud failure otherwise.
    recordings = engine.workdir.parent / "recordings"
    files = sorted(recordings.glob("*.rec"))
    assert len(files) == 1, files
    assert (recordings.stat().st_mode & 0o777, files[0].stat().st_mode & 0o777) == (0o700, 0o600)
    rec_id = files[0].stem
    out = tmp_path / "call.wav"
    done = decrypt(engine, rec_id, tmp_path / "recording-key.pem", out)
    assert done.returncode == 0, done.stderr
    left, right = stereo(out)
    # Left: A's party (the first leg), right: B's; the last seconds (after both resumes)
    # and the first ones hold both tones (the holds themselves are silent).
    for start in (4000, len(left) - 8192 - 4000):
        assert abs(peak_hz(left, 8192, start) - A_TONE) <= 10
        assert abs(peak_hz(right, 8192, start) - B_TONE) <= 10
    _, wrong_key, _ = make_keys(tmp_path / "other")
    bad = decrypt(engine, rec_id, wrong_key, tmp_path / "wrong.wav")
    assert bad.returncode == 1 and not (tmp_path / "wrong.wav").exists(), bad
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / "tampered"
    tampered.mkdir()
    (tampered / files[0].name).write_bytes(bytes(data))
    bad = decrypt(engine, rec_id, tmp_path / "recording-key.pem", tmp_path / "t.wav", tampered)
    assert bad.returncode == 1 and not (tmp_path / "t.wav").exists(), bad


def decrypt(
    engine: Ansim, rec_id: str, key: Path, out: Path, folder: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [str(ANSIM), "recordings", "decrypt", rec_id, "--config", str(engine.config_dir)]
    cmd += ["--key", str(key), "--reason", "test", "--out", str(out)]
    if folder is not None:
        cmd += ["--dir", str(folder)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def stereo(path: Path) -> tuple[list[int], list[int]]:
    with wave.open(str(path)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.readframes(w.getnframes())
    samples = [
        int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)
    ]
    return samples[0::2], samples[1::2]


@pytest.fixture(autouse=True)
def _keys_dir(tmp_path: Path) -> None:
    (tmp_path / "other").mkdir()


def test_relay_mode_anchors_records_and_hides_each_party(tmp_path: Path) -> None:
    for result in run_call(tmp_path, "relay"):
        check_call(result, tmp_path, "relay")


@pytest.mark.skipif(shutil.which("rtpengine") is None, reason="rtpengine-daemon not installed")
def test_rtpengine_mode_anchors_records_and_hides_each_party(tmp_path: Path) -> None:
    for result in run_call(tmp_path, "rtpengine"):
        check_call(result, tmp_path, "rtpengine")
