"""SIPp sends OPTIONS to a running ``ansim serve`` over UDP and over TCP and gets 200
(issue 3, "Must show" 3).

The scenario is ``tests/sipp/options.xml``: one OPTIONS, and the call succeeds on a 200
whose Allow lists INVITE. SIPp runs with ``-m 1`` and a timeout, bounded again by
``subprocess.run(timeout=...)``; the test asserts its exit status 0, its statistics
(one successful call, none failed) and, from its message trace, that the 200 came back
over the transport asked for with the Via ``rport``/``received`` filled in.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, free_port
from engine_process import EngineProcess

SCENARIO = ROOT / "tests" / "sipp" / "options.xml"
SIPP = shutil.which("sipp")

pytestmark = pytest.mark.skipif(SIPP is None, reason="sipp (Debian sip-tester) is not installed")


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with EngineProcess(tmp_path_factory.mktemp("sipp-engine")) as proc:
        yield proc


def _stats(path: Path) -> dict[str, str]:
    """The last row of SIPp's ``-trace_stat`` CSV, by column name."""
    with path.open(newline="") as f:
        rows = list(csv.reader(f, delimiter=";"))
    assert len(rows) >= 2, path.read_text()
    return dict(zip(rows[0], rows[-1], strict=False))


@pytest.mark.parametrize(("mode", "transport"), [("u1", "UDP"), ("t1", "TCP")])
def test_sipp_options_gets_200(
    engine: EngineProcess, tmp_path: Path, mode: str, transport: str
) -> None:
    assert SIPP is not None
    local_port = free_port()
    stat = tmp_path / "stat.csv"
    messages = tmp_path / "messages.log"
    errors = tmp_path / "errors.log"
    cmd = [
        SIPP,
        f"127.0.0.1:{engine.port}",
        "-sf", str(SCENARIO),
        "-t", mode,
        "-i", "127.0.0.1",
        "-p", str(local_port),
        "-m", "1",
        "-timeout", "10s",
        "-timeout_error",
        "-nostdin",
        "-trace_stat", "-stf", str(stat),
        "-trace_msg", "-message_file", str(messages),
        "-trace_err", "-error_file", str(errors),
    ]  # fmt: skip
    run = subprocess.run(
        cmd, capture_output=True, timeout=30, cwd=tmp_path, stdin=subprocess.DEVNULL
    )
    detail = (
        f"sipp exited {run.returncode}\nstdout:\n{run.stdout.decode(errors='replace')[-2000:]}\n"
        f"stderr:\n{run.stderr.decode(errors='replace')[-2000:]}\n"
        f"errors:\n{errors.read_text(errors='replace') if errors.exists() else ''}\n"
        f"engine:\n{engine.log_text()[-2000:]}"
    )
    assert run.returncode == 0, detail
    stats = _stats(stat)
    assert stats["SuccessfulCall(C)"] == "1", detail
    assert stats["FailedCall(C)"] == "0", detail
    assert stats["OutgoingCall(C)"] == "1"
    trace = messages.read_text(errors="replace")
    assert "SIP/2.0 200 OK" in trace, trace
    answer = trace[trace.index("SIP/2.0 200 OK") :]
    via = next(line for line in answer.splitlines() if line.lower().startswith("via:"))
    assert f"SIP/2.0/{transport} 127.0.0.1:{local_port}" in via
    assert f"rport={local_port}" in via and "received=127.0.0.1" in via, via
    assert engine.alive()
