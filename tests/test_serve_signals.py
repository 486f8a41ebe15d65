"""``ansim serve`` stops cleanly: exit status 0 within 6 s of SIGTERM or SIGINT, idle or
right after traffic, logging one JSON object per line (stdout is not a terminal) and
releasing its UDP and TCP ports.
"""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path

import pytest
from conftest import TORTURE
from engine_process import EngineProcess, options_request


def _ports_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
        try:
            u.bind(("127.0.0.1", port))
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _json_lines(engine: EngineProcess) -> list[dict[str, object]]:
    lines = [line for line in engine.log_path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_engine_exits_cleanly(tmp_path: Path, sig: int) -> None:
    engine = EngineProcess(tmp_path)
    try:
        engine.start()
        assert engine.stop(sig) == 0  # asserts exit 0 within 6 s
    finally:
        engine.kill()
    records = _json_lines(engine)
    messages = [r["msg"] for r in records]
    assert "engine started" in messages and messages[-1] == "engine stopped"
    assert all({"ts", "level", "logger", "msg"} <= r.keys() for r in records)
    assert _ports_free(engine.port)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_engine_exits_cleanly_after_traffic(tmp_path: Path, sig: int) -> None:
    engine = EngineProcess(tmp_path)
    try:
        engine.start()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            local = udp.getsockname()[1]
            for name in ("wsinv.dat", "esc01.dat", "badinv01.dat", "unreason.dat"):
                udp.sendto((TORTURE / name).read_bytes(), engine.udp)
            for _ in range(50):
                udp.sendto(options_request(engine.port, local), engine.udp)
        with socket.create_connection(engine.tcp, timeout=2) as tcp:  # an open TCP connection
            tcp.sendall(options_request(engine.port, tcp.getsockname()[1], transport="TCP"))
            tcp.settimeout(2)
            assert tcp.recv(65536).startswith(b"SIP/2.0 200 OK")
            assert engine.stop(sig) == 0
    finally:
        engine.kill()
    assert _json_lines(engine)[-1]["msg"] == "engine stopped"
