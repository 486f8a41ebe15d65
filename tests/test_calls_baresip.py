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

import cmath
import re
import shutil
import signal
import subprocess
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from call_env import VIRTUAL_AX, Ansim, Party, SipMsg, leaks, trunk, user_part
from conftest import free_port

from b2bua.sip.sdp import parse_sdp

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
pytestmark = pytest.mark.skipif(
    BARESIP is None or not MODULES.is_dir(), reason="baresip (Debian baresip-core) not installed"
)

CALLER_UA = Party("+821011112222")
CALLEE_UA = Party("+821033334444")
CALLER_TONE = 440
CALLEE_TONE = 1250
RATE = 8000  # what the PCMU decoder writes to the dump


@dataclass
class Baresip:
    """One baresip process, its configuration folder and what it wrote."""

    name: str
    home: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.home / "stdout.log"

    @property
    def dumps(self) -> Path:
        return self.home / "dumps"

    def write_config(
        self, party: Party, address: str, port: int, tone: int, rtp: tuple[int, int], auto: bool
    ) -> None:
        self.home.mkdir(parents=True)
        self.dumps.mkdir()
        config = [
            "poll_method epoll",
            f"sip_listen {address}:{port}",
            f"net_interface {address}",
            f"rtp_ports {rtp[0]}-{rtp[1]}",
            "rtcp_mux no",
            "audio_level no",
            f"audio_source ausine,{tone}",
            f"audio_player aubridge,{self.name}",
            f"audio_alert aubridge,{self.name}",
            "ausrc_srate 48000",
            "ausrc_channels 2",
            "auplay_srate 48000",
            "auplay_channels 2",
            f"module_path {MODULES}",
            *(
                f"module {m}.so"
                for m in ("account", "menu", "g711", "ausine", "aubridge", "sndfile")
            ),
            f"snd_path {self.dumps}",
        ]
        (self.home / "config").write_text("\n".join(config) + "\n")
        account = f"<sip:{party.e164}@{address}>;regint=0;audio_codecs=PCMU"
        if auto:
            account += ";answermode=auto"
        (self.home / "accounts").write_text(account + "\n")
        (self.home / "contacts").write_text("")

    def start(self, seconds: int, *commands: str) -> None:
        assert BARESIP is not None
        cmd = [BARESIP, "-f", str(self.home), "-s", "-t", str(seconds)]
        for command in commands:
            cmd += ["-e", command]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            return None

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)

    def trace(self) -> list[tuple[str, str, SipMsg]]:
        """(from, to, message) of every SIP message in baresip's own trace."""
        data = self.log.read_bytes() if self.log.exists() else b""
        out = []
        for m in re.finditer(
            rb"\x1b\[36;1m#\n(?:UDP|TCP|TLS) (\S+) -> (\S+)\n(.*?)\x1b\[;m\n", data, re.S
        ):
            out.append((m.group(1).decode(), m.group(2).decode(), SipMsg("trace", m.group(3))))
        return out

    def received(self, address: str) -> list[SipMsg]:
        return [msg for _, dst, msg in self.trace() if dst.startswith(address + ":")]

    def sent(self, address: str) -> list[SipMsg]:
        return [msg for src, _, msg in self.trace() if src.startswith(address + ":")]

    def recording(self) -> list[int]:
        """The samples of what baresip decoded from the other side (its ``-dec`` dump)."""
        dumps = sorted(self.dumps.glob("*-dec.wav"))
        assert dumps, f"{self.name}: no recording of the received audio\n{self.tail()}"
        with wave.open(str(dumps[-1])) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (RATE, 1, 2)
            frames = w.readframes(w.getnframes())
        return [
            int.from_bytes(frames[i : i + 2], "little", signed=True)
            for i in range(0, len(frames), 2)
        ]

    def tail(self) -> str:
        try:
            return self.log.read_bytes()[-4000:].decode(errors="replace")
        except OSError:
            return ""


def fft(x: list[complex]) -> list[complex]:
    """Radix-2 FFT (len(x) a power of two)."""
    n = len(x)
    if n == 1:
        return x
    even, odd = fft(x[0::2]), fft(x[1::2])
    twiddled = [cmath.exp(-2j * cmath.pi * k / n) * odd[k] for k in range(n // 2)]
    return [even[k] + twiddled[k] for k in range(n // 2)] + [
        even[k] - twiddled[k] for k in range(n // 2)
    ]


def peak_hz(samples: list[int], n: int = 8192) -> float:
    """The strongest frequency of ``n`` samples from the middle of ``samples``."""
    assert len(samples) >= n, f"only {len(samples)} samples received"
    start = (len(samples) - n) // 2
    chunk = samples[start : start + n]
    assert max(abs(s) for s in chunk) > 1000, "the received audio is silence"
    # A Hann window keeps the tone's energy in its bin.
    window = [0.5 - 0.5 * cmath.cos(2 * cmath.pi * i / (n - 1)).real for i in range(n)]
    spectrum = fft([complex(s * w) for s, w in zip(chunk, window, strict=True)])
    k = max(range(1, n // 2), key=lambda i: abs(spectrum[i]))
    return k * RATE / n


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
