"""Basic calls under packet loss and reordering: through ansim, and SIPp to SIPp directly.

The test makes a network namespace of its own (``bench/lossy_net.py``) whose input hook
drops 5 % of UDP datagrams at random and delays another 3 % by 10-80 ms, so that datagrams
sent after them overtake them. In it, at the same time and through the same rules:

- the carrier's SIPp (127.0.0.2) places calls at 100 calls/s through ansim (127.0.0.3)
  to the callee trunk's SIPp (127.0.0.4);
- another SIPp pair places as many calls straight from 127.0.0.5 to 127.0.0.6.

The suite runs 600 calls each; ``ANSIM_LOSS_CALLS=2500`` runs the full comparison that
bench/README.md reports (``bench/cps.py --loss 5 --reorder 3 --direct`` runs the same
network with the benchmark's figures).

Both pairs run the CPS benchmark's scenarios (``bench/sipp/uac_cps.xml``, ``uas_cps.xml``:
INVITE, 180, 200, ACK, BYE at once, 200), which accept what the protocol lets a lossy
network do to a call (see their comments); like every SIPp of the suite they run with
``-nd``, so that an ACK or INVITE delayed past the BYE is logged rather than taken for the
call's failure. A call counts as completed at an end when that SIPp ran it to the end of
its scenario; a call it never finished counts as failed.
The test asserts that ansim's calls complete at each end at least as often as the
direct ones, and that ansim wrote a CDR for every call placed (each answered, hung up by
the caller). Everything the test starts is stopped, and the namespace deleted, whatever
happens. It needs root, ``ip`` and ``nft`` (``.ci/setup --test`` installs nftables).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, Sipp, SippRun, sipp_counts, trunk
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from lossy_net import LossyNet, available

# CI runs a few hundred calls; ANSIM_LOSS_CALLS=2500 is the full comparison (bench/README.md)
CALLS = int(os.environ.get("ANSIM_LOSS_CALLS", "600"))
RATE = 100
LOSS = 5.0  # % of UDP datagrams dropped
REORDER = 3.0  # % of UDP datagrams delayed...
DELAY_MS = (10.0, 80.0)  # ...by this much
BENCH_SIPP = ROOT / "bench" / "sipp"

# Each party has an address of its own; the ports differ too, so that each SIPp's files
# and its wait for its port are its own.
CALLER_AT, ANSIM_AT, CALLEE_AT = ("127.0.0.2", 5060), ("127.0.0.3", 5060), ("127.0.0.4", 5062)
DIRECT_CALLER_AT, DIRECT_CALLEE_AT = ("127.0.0.5", 5064), ("127.0.0.6", 5066)

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


def injection(path: Path) -> Path:
    """SIPp's -inf file: every call dials the ax binding's virtual number from CALLER."""
    path.write_text(f"SEQUENTIAL\n{VIRTUAL_AX.replace('-', '')};{CALLER.national};\n")
    return path


def start_pair(
    sipp: Sipp,
    inf: Path,
    caller: tuple[str, int],
    target: tuple[str, int],
    callee: tuple[str, int],
    tag: str,
) -> tuple[SippRun, SippRun]:
    """The callee's SIPp at ``callee``, then the caller's at ``caller`` placing CALLS
    toward ``target``."""
    uas = sipp.start(
        BENCH_SIPP / "uas_cps.xml",
        ip=callee[0],
        port=callee[1],
        calls=CALLS,
        timeout=120,
        trace=False,
    )
    uac = sipp.start(
        BENCH_SIPP / "uac_cps.xml",
        ip=caller[0],
        port=caller[1],
        remote=f"{target[0]}:{target[1]}",
        calls=CALLS,
        rate=RATE,
        limit=CALLS,
        timeout=120,
        trace=False,
        call_id=f"{tag}-%u@{caller[0]}",
        extra=["-inf", str(inf), "-d", "0"],
    )
    return uac, uas


def finish(run: SippRun, timeout: float) -> dict[str, int]:
    """Wait (bounded) for ``run`` to exit, stopping it if need be; its counts."""
    try:
        run.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        run.stop()
    run.returncode = run.proc.returncode
    return sipp_counts(run)


def failed(counts: dict[str, int]) -> int:
    """Calls an end did not complete: failed ones and those it never finished."""
    return CALLS - counts["Successful call"]


def test_calls_under_loss_complete_at_both_ends_as_often_as_sipp_direct(
    sipp: Sipp, tmp_path: Path
) -> None:
    inf = injection(tmp_path / "calls.csv")
    with LossyNet(LOSS, REORDER, DELAY_MS) as net, net.entered():
        with Ansim(
            tmp_path / "ansim",
            host=ANSIM_AT[0],
            port=ANSIM_AT[1],
            # the product's default: 4 s without any response before the next trunk
            trunks=[trunk("callee-trunk", CALLEE_AT[1], CALLEE_AT[0], invite_timeout=4.0)],
            routes=[{"prefix": "+82", "trunks": ["callee-trunk"]}],
        ) as engine:
            via_uac, via_uas = start_pair(sipp, inf, CALLER_AT, ANSIM_AT, CALLEE_AT, "via-ansim")
            direct_uac, direct_uas = start_pair(
                sipp, inf, DIRECT_CALLER_AT, DIRECT_CALLEE_AT, DIRECT_CALLEE_AT, "direct"
            )
            # 25 s of calls, then the retransmissions of the last ones; each callee lingers
            # 4 s after its last BYE
            counts = {
                "via ansim, caller": finish(via_uac, 60),
                "direct, caller": finish(direct_uac, 15),
                "via ansim, callee": finish(via_uas, 20),
                "direct, callee": finish(direct_uas, 10),
            }
            rows = engine.cdr_rows(CALLS, timeout=15)
        dropped = net.counters()
    fails = {k: failed(v) for k, v in counts.items()}
    print(
        f"\n{CALLS} calls at {RATE}/s, {LOSS}% of UDP datagrams lost, {REORDER}% delayed "
        f"{DELAY_MS[0]:g}-{DELAY_MS[1]:g} ms ({dropped['lost']} lost, {dropped['delayed']} "
        f"delayed): calls not completed {fails}; {len(rows)} CDRs"
    )
    report = f"{fails}\n{counts}\n{via_uac.report()}\n{via_uas.report()}\n{engine.log_text()}"
    assert dropped["lost"] > 0 and dropped["delayed"] > 0, dropped
    assert fails["via ansim, caller"] <= fails["direct, caller"], report
    assert fails["via ansim, callee"] <= fails["direct, callee"], report

    expected = {f"via-ansim-{i}@{CALLER_AT[0]}" for i in range(1, CALLS + 1)}
    assert len(rows) == CALLS, f"{len(rows)} CDRs for {CALLS} calls\n{report}"
    assert {r["a_call_id"] for r in rows} == expected
    outcomes = {(r["status"], r["ended_by"], r["reason"]) for r in rows}
    assert outcomes == {(200, "caller", None)}, outcomes
    assert all(r["answer_at"] is not None and r["callee"] == CALLEE.e164 for r in rows)
