"""Helpers for the media tests: a relay process, UDP parties, tones and keys."""

from __future__ import annotations

import asyncio
import math
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import free_port
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from media.client import RelayClient
from media.events import Event
from media.g711 import linear_to_ulaw
from media.rtp import build_rtp

ROOT = Path(__file__).resolve().parent.parent


def relay_media(folder: Path, **settings: Any) -> tuple[dict[str, Any], int]:
    """The ``media:`` section of an engine with one relay of its own (control socket in
    ``folder``) on 100 ports from the returned first one: above the kernel's ephemeral
    range (32768-60999), and apart from other tests' by 200; ``settings`` are more keys
    of the section (``mode`` replaces ``relay``)."""
    base = 61000 + (free_port() % 20) * 200
    relay = {"control": str(folder / "relay.sock"), "address": "127.0.0.1"}
    media = {"mode": "relay", **settings, "relays": [{**relay, "ports": f"{base}-{base + 99}"}]}
    return media, base


def make_keys(folder: Path, bits: int = 2048) -> tuple[Path, Path, rsa.RSAPrivateKey]:
    """An operator key pair: (public PEM path, private PEM path, private key)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pub = folder / "recording-pub.pem"
    priv = folder / "recording-key.pem"
    pub.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    priv.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    priv.chmod(0o600)
    return pub, priv, key


def ulaw_tone(freq: float, samples: int, start: int = 0, amplitude: int = 8000) -> bytes:
    return bytes(
        linear_to_ulaw(int(amplitude * math.sin(2 * math.pi * freq * (start + i) / 8000)))
        for i in range(samples)
    )


def tone_power(pcm: bytes, freq: float, rate: int = 8000) -> float:
    """Goertzel power of ``freq`` in 16-bit mono PCM, normalised by length."""
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm[: len(pcm) // 2 * 2])
    k = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + k * s1 - s2, s1
    return (s1 * s1 + s2 * s2 - k * s1 * s2) / max(1, len(samples)) ** 2


class Party:
    """A UDP endpoint on a loopback address: one side of a call's media."""

    def __init__(self, ip: str, port: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((ip, port))
        self.sock.settimeout(0.05)
        self.address: tuple[str, int] = self.sock.getsockname()
        self.rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rtcp.bind((ip, 0))
        self.rtcp.settimeout(0.05)
        self.rtcp_address: tuple[str, int] = self.rtcp.getsockname()
        self.seq = 1000
        self.ts = 5000
        self.ssrc = int.from_bytes(os.urandom(4), "big")

    def rtp(self, payload: bytes = b"\xff" * 160, pt: int = 0, marker: bool = False) -> bytes:
        self.seq = (self.seq + 1) & 0xFFFF
        self.ts = (self.ts + 160) & 0xFFFFFFFF
        return build_rtp(pt, self.seq, self.ts, self.ssrc, payload, marker)

    def send(self, data: bytes, to: tuple[str, int]) -> None:
        self.sock.sendto(data, to)

    def recv_all(
        self, wait: float = 0.3, sock: socket.socket | None = None
    ) -> list[tuple[bytes, tuple[str, int]]]:
        """Everything that arrives until ``wait`` seconds pass without a packet.

        The first packet is waited for at least a second, so a loaded machine does not
        make a packet that is late look lost (or an unwanted one look absent).
        """
        sock = sock or self.sock
        out = []
        deadline = time.monotonic() + max(wait, 1.0)
        while time.monotonic() < deadline:
            try:
                data, addr = sock.recvfrom(65536)
            except TimeoutError:
                continue
            out.append((data, addr))
            deadline = time.monotonic() + wait
        return out

    def close(self) -> None:
        self.sock.close()
        self.rtcp.close()


class RelayProcess:
    """``python -m media.relay`` in a process of its own, stopped by :meth:`stop`."""

    def __init__(
        self,
        folder: Path,
        port_min: int,
        port_max: int,
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.control = str(folder / "relay.sock")
        self.log = folder / "relay.log"
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "media.relay",
                "--control",
                self.control,
                "--address",
                "127.0.0.1",
                "--ports",
                f"{port_min}-{port_max}",
                *extra,
            ],
            cwd=ROOT,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.control):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"relay did not start: {self.log.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextmanager
def relay_process(
    folder: Path, *extra: str, env: dict[str, str] | None = None
) -> Iterator[RelayProcess]:
    from tests.conftest import free_port

    base = free_port()
    # A small range of its own, well away from the ephemeral ports other tests use.
    low = 20000 + (base % 120) * 100
    relay = RelayProcess(folder, low, low + 99, *extra, env=env)
    try:
        yield relay
    finally:
        relay.stop()


def run_async(coro_fn: Callable[..., Any], *args: Any, timeout: float = 60) -> Any:
    import uvloop

    async def main() -> Any:
        return await asyncio.wait_for(coro_fn(*args), timeout)

    return uvloop.run(main())


class EventLog:
    """Collects a client's events; ``wait_for`` polls for one that matches."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        self.events.append(event)

    async def wait_for(self, match: Callable[[Event], bool], timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if match(event):
                    return event
            await asyncio.sleep(0.02)
        raise AssertionError(f"no matching event in {timeout} s: {self.events}")


async def connect(relay: RelayProcess, events: EventLog | None = None) -> RelayClient:
    return await RelayClient.connect(relay.control, events)


async def pump(seconds: float) -> None:
    """Let the loop run (a party's blocking socket calls happen in between)."""
    await asyncio.sleep(seconds)


class RtpengineProcess:
    """A real ``rtpengine`` daemon in userspace mode (no kernel module) on ports of its own."""

    def __init__(self, folder: Path, ng_port: int, port_min: int, port_max: int) -> None:
        self.ng_port = ng_port
        self.ports = range(port_min, port_max + 1)
        self.log = folder / "rtpengine.log"
        self.folder = folder
        self.proc = subprocess.Popen(
            [
                "rtpengine",
                "--config-file=none",
                "--foreground",
                "--log-stderr",
                "--table=-1",
                "--interface=127.0.0.1",
                f"--listen-ng=127.0.0.1:{ng_port}",
                f"--port-min={port_min}",
                f"--port-max={port_max}",
                f"--pidfile={folder / 'rtpengine.pid'}",
                "--log-level=6",
                "--delete-delay=0",
            ],
            cwd=folder,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, "TMPDIR": str(folder)},
        )
        deadline = time.monotonic() + 15
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.settimeout(0.2)
        try:
            while True:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"rtpengine did not start: {self.log.read_text()}")
                probe.sendto(b"probe d7:command4:pinge", ("127.0.0.1", ng_port))
                try:
                    if b"pong" in probe.recv(1000):
                        break
                except (TimeoutError, ConnectionRefusedError):
                    continue
        finally:
            probe.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@contextmanager
def rtpengine_process(folder: Path, low: int | None = None) -> Iterator[RtpengineProcess]:
    from tests.conftest import free_port

    ng = free_port()
    if low is None:
        low = 10000 + (ng % 90) * 100
    daemon = RtpengineProcess(folder, ng, low, low + 99)
    try:
        yield daemon
    finally:
        daemon.stop()


def write_rtp_pcap(path: Path, seconds: float, freq: float = 440.0) -> int:
    """A pcap (Ethernet, IPv4, UDP) of ``seconds`` of G.711 µ-law RTP, one packet per
    20 ms, for SIPp's ``play_pcap_audio`` (which rewrites addresses and ports and keeps
    the timing); returns the number of packets."""
    count = int(seconds * 50)
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    ssrc = int.from_bytes(os.urandom(4), "big")
    for i in range(count):
        payload = ulaw_tone(freq, 160, i * 160)
        rtp = build_rtp(0, 1000 + i, 8000 + i * 160, ssrc, payload, i == 0)
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
            socket.inet_aton("127.0.0.1"), socket.inet_aton("127.0.0.1"),
        )  # fmt: skip
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        at = i * 0.020
        out.append(struct.pack("<IIII", int(at), int((at % 1) * 1e6), len(frame), len(frame)))
        out.append(frame)
    path.write_bytes(b"".join(out))
    return count
