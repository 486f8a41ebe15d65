"""Shared fixtures: free loopback ports and paths into the repository and shared/."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORTURE = ROOT.parent / "shared" / "sip-torture"


# Ports are handed out from a range below the kernel's ephemeral ports (32768 and up on
# Linux), in turn: a port is free when asked for but is bound later, by a server the
# test starts, and one taken from the ephemeral range could meanwhile become the source
# port of any client's socket. Going round the range in turn also means a port is not
# handed out twice until some thousands of others have been.
PORT_LOW, PORT_HIGH = 10000, 20000  # relays under test take ports from 20000 up
_next_port = PORT_LOW + os.getpid() % (PORT_HIGH - PORT_LOW)


def _bindable(port: int) -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive ports, each free for UDP and TCP on 127.0.0.1,
    outside the ephemeral range; none of them, nor the three after them, is handed
    out again soon."""
    global _next_port
    for _ in range(PORT_HIGH - PORT_LOW):
        first = _next_port
        if first + count > PORT_HIGH:
            first = PORT_LOW
        # a gap: peers bind the ports just above the one they are given (baresip its
        # SIP port + 1 for TLS, SIPp its media port + 2 for video)
        _next_port = first + count + 3
        if all(_bindable(p) for p in range(first, first + count)):
            return first
    raise RuntimeError("no free port")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1, outside the ephemeral range."""
    return free_ports(1)


@pytest.fixture
def port() -> int:
    return free_port()


# A test that skips because a real peer (SIPp, Node.js) is missing proves nothing. The
# suite's own runner (.ci/test) sets ANSIM_NO_SKIP so that such a run fails instead.
_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("ANSIM_NO_SKIP") and _skipped and exitstatus == 0:
        print(
            f"\n{len(_skipped)} test(s) skipped with ANSIM_NO_SKIP set: {', '.join(_skipped[:5])}"
        )
        session.exitstatus = 1
