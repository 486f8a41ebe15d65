"""1,000 calls at 100 calls/s through ansim, SIPp on both sides.

The carrier's SIPp places 1,000 basic calls (answered, held 100 ms, hung up by the
caller) at 100 calls/s; the callee trunk's SIPp answers them. Both SIPp ends must count
1,000 successful and 0 failed calls, the CDR file must hold 1,000 answered calls, and
/metrics must agree (1,000 completed, none active). The engine's CPU time per call
(utime + stime from /proc) is printed and recorded as a test property; nothing about
speed is asserted. Run it by hand under the shared lock:
``flock /tmp/ansim-bench.lock .venv/bin/python -m pytest tests/test_calls_load.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from call_env import (
    BINDING_AX,
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    Sipp,
    sipp_counts,
    trunk,
    user_part,
)
from conftest import free_port

CALLS = 1000
RATE = 100


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


def test_thousand_calls_at_100_per_second(
    sipp: Sipp, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    port = free_port()
    with Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee-trunk", port)],
        routes=[{"prefix": "+82", "trunks": ["callee-trunk"]}],
        metrics=True,
    ) as engine:
        cpu_before = engine.cpu_seconds()
        uas = sipp.start(
            "call_uas_answer",
            port=port,
            keys=CALLEE.sipp_keys("callee"),
            calls=CALLS,
            timeout=60,
            trace=False,
        )
        uac = sipp.start(
            "call_uac_basic",
            port=free_port(),
            remote=engine.addr,
            service=user_part(VIRTUAL_AX),
            keys=CALLER.sipp_keys("caller"),
            calls=CALLS,
            rate=RATE,
            timeout=60,
            trace=False,
            call_id=f"{CALLER.national}-%u-%p@%s",
            extra=["-d", "100"],
        )
        rc_a = uac.wait(90)
        rc_b = uas.wait(30)
        cpu = engine.cpu_seconds() - cpu_before
        counts_a, counts_b = sipp_counts(uac), sipp_counts(uas)
        assert (rc_a, rc_b) == (0, 0), f"{uac.report()}\n{uas.report()}\n{engine.log_text()}"
        assert counts_a["Successful call"] == CALLS and counts_a["Failed call"] == 0, counts_a
        assert counts_b["Successful call"] == CALLS and counts_b["Failed call"] == 0, counts_b

        rows = engine.cdr_rows(CALLS, timeout=15)
        assert len(rows) == CALLS
        assert {(r["status"], r["ended_by"], r["binding_id"], r["trunk"]) for r in rows} == {
            (200, "caller", BINDING_AX, "callee-trunk")
        }
        assert len({r["a_call_id"] for r in rows}) == CALLS
        assert all(r["answer_at"] is not None for r in rows)

        metrics = engine.metrics()
        assert metrics.get('ansim_calls_total{outcome="completed"}') == CALLS, metrics
        assert sum(v for k, v in metrics.items() if k.startswith("ansim_calls_total{")) == CALLS
        assert metrics.get("ansim_active_calls") == 0
        assert metrics.get('ansim_lookups_total{result="route"}') == CALLS
        assert metrics.get("ansim_call_setup_seconds_count") == CALLS

    ms_per_call = cpu * 1000 / CALLS
    record_property("ansim_cpu_ms_per_call", round(ms_per_call, 3))
    print(f"\nansim CPU: {cpu:.2f} s for {CALLS} calls = {ms_per_call:.3f} ms per call")
