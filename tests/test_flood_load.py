"""Flood protection under load: while SIPp places 200 legitimate calls a second from a
trunk's address, another address (127.0.0.5) floods INVITEs and OPTIONS at up to
20,000 datagrams a second for 30 s, and a SIPVicious-style OPTIONS sweep runs from a
third (127.0.0.6). No legitimate call fails, both sources are banned within 2 s, neither
gets a single answer, and the engine's CPU stays under one core (from /proc). The
flooders are processes of their own (``flooder.py``), paced and bounded in time; what
they really sent is printed, since on a 2-core machine shared with SIPp and the engine a
Python sender may not reach the rate it aims at.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, Sipp, trunk, user_part
from conftest import free_port

FLOOD_SECONDS = 30
RATE = 20_000
CALLS_PER_SECOND = 200
FLOODER = Path(__file__).resolve().parent / "flooder.py"


def test_a_flood_is_banned_and_legitimate_calls_go_on(tmp_path: Path) -> None:
    uas_port = free_port()
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("carrier", uas_port) | {"accept_from": ["127.0.0.1/32"]}],
        routes=[{"prefix": "+82", "trunks": ["carrier"]}],
        metrics=True,
        config={"flood": {"allow": []}, "logging": {"level": "info"}},
    )
    calls = CALLS_PER_SECOND * (FLOOD_SECONDS + 6)
    (tmp_path / "sipp").mkdir()
    with engine, Sipp(tmp_path / "sipp") as sipp:
        uas = sipp.start(
            "call_uas_answer", port=uas_port, calls=calls, keys=CALLEE.sipp_keys("callee"),
            timeout=FLOOD_SECONDS + 60, trace=False, extra=["-d", "0"],
        )  # fmt: skip
        uac = sipp.start(
            "call_uac_basic", port=free_port(), remote=engine.addr, service=user_part(VIRTUAL_AX),
            keys=CALLER.sipp_keys("caller"), calls=calls, rate=CALLS_PER_SECOND, limit=2000,
            timeout=FLOOD_SECONDS + 60, trace=False, extra=["-d", "0"],
        )  # fmt: skip
        time.sleep(3.0)  # calls under way before the flood
        cpu0, t0, wall0 = engine.cpu_seconds(), time.monotonic(), time.time()
        flooders = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(FLOODER),
                    "--source",
                    source,
                    "--to",
                    engine.addr,
                    "--rate",
                    str(rate),
                    "--seconds",
                    str(FLOOD_SECONDS),
                    "--kind",
                    kind,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            for source, rate, kind in (("127.0.0.5", RATE, "flood"), ("127.0.0.6", 200, "sweep"))
        ]
        outcomes = []
        for proc in flooders:
            out, _ = proc.communicate(timeout=FLOOD_SECONDS + 30)
            outcomes.append(json.loads(out))
        cpu = (engine.cpu_seconds() - cpu0) / (time.monotonic() - t0)
        codes = (uac.wait(FLOOD_SECONDS + 60), uas.wait(FLOOD_SECONDS + 60))
        metrics = engine.metrics()
        log = engine.log_text()
    flood, sweep = outcomes
    print(  # the figures the issue asks for, shown with -s
        f"\nflood from 127.0.0.5: {flood['sent']} datagrams in {flood['seconds']:.1f} s "
        f"({flood['rate']:.0f}/s); sweep from 127.0.0.6: {sweep['sent']}; engine CPU {cpu:.2f} core"
    )
    assert codes == (0, 0), f"legitimate calls failed: {codes}\n{uac.report()}\n{log}"
    # The sweep got nothing. The flood got only the answers to what it sent before its
    # ban: the 403s of its first INVITEs (unknown_source: reject) and their
    # retransmissions (timer G, as it never ACKs), nothing after.
    assert sweep["received"] == 0
    assert flood["received"] <= 4 * 11, flood
    assert flood["sent"] >= 100_000, flood  # whatever the machine allows, a real flood
    assert cpu < 1.0, cpu
    # both banned, each in one log line, within 2 s of the start (the log is written once
    # a second): the flood for its rate, the sweep for its fingerprint
    # (bans in the same second share one line: "banned 2 sources ..., among them ...")
    starts: dict[str, list[float]] = {}
    for line in log.splitlines():
        m = re.search(r'"ts":([0-9.]+).*"msg":"banned ', line)
        if m:
            for host in re.findall(r"127\.0\.0\.[56]\b", line.split('"msg":', 1)[1]):
                starts.setdefault(host, []).append(float(m.group(1)))
    assert set(starts) == {"127.0.0.5", "127.0.0.6"}, log
    assert all(len(times) == 1 for times in starts.values()), starts
    assert max(t[0] for t in starts.values()) - wall0 < 2.0, (starts, wall0)
    assert 'ansim_flood_bans_total{reason="scanner"}' in metrics
    assert metrics['ansim_flood_bans_total{reason="scanner"}'] == 1
    assert (
        metrics['ansim_flood_bans_total{reason="rate"}']
        + metrics['ansim_flood_bans_total{reason="calls"}']
        == 1
    )
    dropped = metrics['ansim_flood_dropped_total{reason="banned"}']
    kernel = metrics["ansim_udp_kernel_drops_total"]
    print(f"dropped as banned {dropped:.0f}, by the kernel {kernel:.0f}")
    # what the kernel did not drop for a full queue was dropped as banned, unparsed
    assert dropped >= (flood["sent"] + sweep["sent"]) * 0.5
    assert metrics["ansim_flood_banned_sources"] == 2
    assert metrics['ansim_calls_total{outcome="completed"}'] == calls
