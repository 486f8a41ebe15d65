"""Slow and idle stream connections (slowloris): 500 TCP connections each sending a
message one byte a second do not stop calls over UDP or TCP, and are closed by the
message deadline (a message must be complete within ``message_timeout`` of its first
byte, however steadily its bytes come); connections that never send are closed by the
same deadline; one address cannot hold more than its share of connections.

The slow peers are plain sockets of the test, spread over 127.0.0.20-29 (50 each); the
calls are SIPp over UDP and over TCP (``-t t1``) from 127.0.0.1 while they trickle.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from call_env import (
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    Sipp,
    trunk,
    user_part,
)
from conftest import free_port

SLOW = 500
SILENT = 50
MESSAGE_TIMEOUT = 3.0
INVITE = (
    b"INVITE sip:050770004001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.20:5060;branch=z9hG4bKslow\r\n"
    + b"X-Padding: "
    + b"x" * 200
    + b"\r\n"
)


class Trickle(threading.Thread):
    """Opens ``n`` connections and sends one byte a second on each; notes when each is
    closed by the other side."""

    def __init__(self, port: int, n: int, send: bool) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.socks: list[socket.socket] = []
        for i in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((f"127.0.0.{20 + i % 10}", 0))
            s.connect(("127.0.0.1", port))
            s.setblocking(False)
            self.socks.append(s)
        self.opened = time.monotonic()
        self.send = send
        self.closed_at: dict[int, float] = {}
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        offset = 0
        while not self.stop.is_set() and len(self.closed_at) < len(self.socks):
            for i, s in enumerate(self.socks):
                if i in self.closed_at:
                    continue
                try:
                    if s.recv(1) == b"":
                        self.closed_at[i] = time.monotonic()
                        continue
                except BlockingIOError:
                    pass
                except OSError:
                    self.closed_at[i] = time.monotonic()
                    continue
                if self.send:
                    try:
                        s.send(INVITE[offset % len(INVITE) : offset % len(INVITE) + 1])
                        self.sent += 1
                    except OSError:
                        self.closed_at[i] = time.monotonic()
            offset += 1
            self.stop.wait(1.0)

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        for s in self.socks:
            s.close()


def calls(sipp: Sipp, engine: Ansim, uas_port: int, transport: str, n: int) -> None:
    """``n`` calls from the carrier's SIPp over ``transport``; all must complete."""
    uas = sipp.start(
        "call_uas_answer", port=uas_port, calls=n, keys=CALLEE.sipp_keys("callee"), timeout=20
    )
    uac = sipp.start(
        "call_uac_basic",
        port=free_port(),
        remote=engine.addr,
        service=user_part(VIRTUAL_AX),
        keys=CALLER.sipp_keys("caller"),
        calls=n,
        rate=5,
        timeout=20,
        transport=transport,
        extra=["-d", "100"],
    )
    codes = (uac.wait(30), uas.wait(30))
    assert codes == (0, 0), (
        f"{transport} calls failed: {codes}\n{uac.report()}\n{engine.log_text()}"
    )


def test_slow_senders_do_not_stop_calls_and_are_closed_by_the_deadline(tmp_path: Path) -> None:
    uas_port = free_port()
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee", uas_port)],
        routes=[{"prefix": "+82", "trunks": ["callee"]}],
        tcp=True,
        metrics=True,
        config={"sip": {"connections": {"message_timeout": MESSAGE_TIMEOUT}}},
    )
    (tmp_path / "sipp").mkdir()
    with engine, Sipp(tmp_path / "sipp") as sipp:
        slow = Trickle(engine.port, SLOW, send=True)
        silent = Trickle(engine.port, SILENT, send=False)
        slow.start()
        silent.start()
        try:
            calls(sipp, engine, uas_port, "udp", 10)
            calls(sipp, engine, uas_port, "tcp", 10)
            deadline = time.monotonic() + MESSAGE_TIMEOUT + 10
            while (len(slow.closed_at) < SLOW or len(silent.closed_at) < SILENT) and (
                time.monotonic() < deadline
            ):
                time.sleep(0.2)
        finally:
            slow.close()
            silent.close()
        metrics = engine.metrics()
    assert len(slow.closed_at) == SLOW and len(silent.closed_at) == SILENT
    # closed by the deadline, not after the 120 s idle timeout; bytes kept coming meanwhile
    for trickle in (slow, silent):
        latest = max(trickle.closed_at.values()) - trickle.opened
        assert latest < MESSAGE_TIMEOUT + 4, latest
    assert slow.sent >= SLOW * 2
    assert metrics['ansim_sip_connections_timed_out_total{reason="slow"}'] == SLOW
    assert metrics['ansim_sip_connections_timed_out_total{reason="silent"}'] == SILENT
    assert metrics['ansim_sip_connections{transport="tcp"}'] == 0


def test_connections_per_source_are_capped(tmp_path: Path) -> None:
    """An address outside the trunks and the allow-list gets 32 connections; more are
    closed at once, and another address is not affected."""
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee", free_port()) | {"accept_from": ["127.0.0.1/32"]}],
        routes=[{"prefix": "+82", "trunks": ["callee"]}],
        tcp=True,
        metrics=True,
        config={"flood": {"allow": []}},
    )
    with engine:
        socks = []
        for _ in range(40):
            s = socket.create_connection(
                ("127.0.0.1", engine.port), source_address=("127.0.0.40", 0)
            )
            socks.append(s)
        other = socket.create_connection(
            ("127.0.0.1", engine.port), source_address=("127.0.0.41", 0)
        )
        time.sleep(0.5)
        closed = 0
        for s in socks:
            s.settimeout(0.05)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except TimeoutError:
                pass
            except ConnectionResetError:
                closed += 1
        other.settimeout(0.05)
        try:
            still_open = other.recv(1) != b""
        except TimeoutError:
            still_open = True
        metrics = engine.metrics()
        for s in [*socks, other]:
            s.close()
    assert closed == 8 and still_open
    assert metrics['ansim_sip_connections_refused_total{reason="per_source"}'] == 8
