"""Shared fixtures: free loopback ports and paths into the repository and shared/."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TORTURE = ROOT.parent / "shared" / "sip-torture"


# Ports this test process has handed out: a port is free when asked for but is bound
# later (by a server the test starts), so two calls must never return the same one.
_HANDED_OUT: set[int] = set()


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for both UDP and TCP on 127.0.0.1, never one handed out before."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                _HANDED_OUT.add(port)
                return port
    raise RuntimeError("no free port")


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
        print(f"\n{len(_skipped)} test(s) skipped with ANSIM_NO_SKIP set: {', '.join(_skipped[:5])}")
        session.exitstatus = 1
