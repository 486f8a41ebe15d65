"""baresip (Debian ``baresip-core``) as a test peer: a configuration folder of its own,
a sine tone as its microphone, dumps of what it decodes, its SIP trace, and commands
during a call over its ``ctrl_tcp`` module (hold, resume, DTMF, hang-up)."""

from __future__ import annotations

import cmath
import json
import re
import shutil
import signal
import socket
import subprocess
import time
import wave
from dataclasses import dataclass
from pathlib import Path

from call_env import Party, SipMsg

BARESIP = shutil.which("baresip")
MODULES = Path("/usr/lib/baresip/modules")
RATE = 8000  # what the PCMU decoder writes to the dump


@dataclass
class Baresip:
    """One baresip process, its configuration folder and what it wrote."""

    name: str
    home: Path
    proc: subprocess.Popen[bytes] | None = None
    address: str = ""
    sip_port: int = 0
    ctrl_port: int | None = None

    @property
    def log(self) -> Path:
        return self.home / "stdout.log"

    @property
    def dumps(self) -> Path:
        return self.home / "dumps"

    def write_config(
        self,
        party: Party,
        address: str,
        port: int,
        tone: int,
        rtp: tuple[int, int],
        auto: bool,
        ctrl_port: int | None = None,
    ) -> None:
        self.address = address
        self.sip_port = port
        self.ctrl_port = ctrl_port
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
        if ctrl_port is not None:
            config += ["module ctrl_tcp.so", f"ctrl_tcp_listen {address}:{ctrl_port}"]
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

    def command(self, command: str, params: str = "", timeout: float = 3.0) -> str:
        """Run a baresip command (``hold``, ``resume``, ``sndcode``, ``hangup``...) over
        ctrl_tcp; its response text."""
        assert self.ctrl_port is not None
        payload = json.dumps({"command": command, "params": params, "token": command}).encode()
        with socket.create_connection((self.address, self.ctrl_port), timeout=timeout) as sock:
            sock.sendall(b"%d:%s," % (len(payload), payload))
            data = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    break
                if not chunk:
                    break
                data += chunk
                if b'"response"' in data and data.endswith(b","):
                    break
        return data.decode(errors="replace")

    def wait_log(self, text: bytes, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in (self.log.read_bytes() if self.log.exists() else b""):
            assert time.monotonic() < deadline and self.proc and self.proc.poll() is None, (
                f"{self.name}: {text!r} not seen\n{self.tail()}"
            )
            time.sleep(0.05)


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


def peak_hz(samples: list[int], n: int = 8192, start: int | None = None) -> float:
    """The strongest frequency of ``n`` samples from ``start`` (default: the middle)."""
    assert len(samples) >= n, f"only {len(samples)} samples received"
    if start is None:
        start = (len(samples) - n) // 2
    chunk = samples[start : start + n]
    assert len(chunk) == n, f"only {len(chunk)} samples from {start}"
    assert max(abs(s) for s in chunk) > 1000, "the received audio is silence"
    # A Hann window keeps the tone's energy in its bin.
    window = [0.5 - 0.5 * cmath.cos(2 * cmath.pi * i / (n - 1)).real for i in range(n)]
    spectrum = fft([complex(s * w) for s, w in zip(chunk, window, strict=True)])
    k = max(range(1, n // 2), key=lambda i: abs(spectrum[i]))
    return k * RATE / n
