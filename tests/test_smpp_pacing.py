"""Pacing a carrier keeps its link alive: its socket is still read while it is paced, so
enquire_link is answered at once, and its submits wait unanswered (holding its window)
or are answered ESME_RTHROTTLED, never acknowledged unstored.

The upstream is the npm `smpp` SMSC answering each submit_sm 3 s late within a window
of 2 (under one message a second); the carrier is smpplib sending 100 messages a second
with an enquire_link every 200 ms, resending what was throttled, as carriers do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from smpp_helpers import (
    PARENT,
    TEACHER_X,
    Ansim,
    Carrier,
    NodeSmsc,
    build_store,
    node_available,
    sms_rows,
    write_config,
)

from sms_smpp.pdu import Status

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)

PACED_FOR = 10.0  # seconds, past the ~8 s a paused read took to drain before


def test_a_paced_carrier_gets_its_enquire_link_answered_at_once(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    smsc = NodeSmsc(tmp_path / "upstream.jsonl", dlr=False, resp_delay_ms=3000)
    cfg = write_config(
        tmp_path / "smpp.yaml",
        tmp_path,
        upstream_port=smsc.port,
        window=2,
        upstream={"response_timeout": 30},
        forward_backlog=10,
        server={"pace_hold": 1.0},
    )
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    carrier = Carrier(ansim.port, window=50)
    try:
        pdus = [
            carrier.pdu(PARENT, TEACHER_X, b"paced-%04d" % i, registered_delivery=0)
            for i in range(5000)
        ]
        carrier.run(pdus, rate=100.0, enquire_every=0.2, resend_throttled=True, duration=PACED_FOR)
        delays = carrier.enquire_delays
        throttled = sum(s.count(Status.RTHROTTLED) for s in carrier.statuses.values())
        accepted = len(carrier.ids)
        print(
            f"\npaced {PACED_FOR:.0f} s: {len(delays)} enquire_link answered, longest"
            f" {max(delays) * 1000:.1f} ms; {accepted} submits accepted, {throttled}"
            " answered ESME_RTHROTTLED"
        )
        assert len(delays) >= PACED_FOR / 0.2 * 0.8  # answered all along, none lost
        assert max(delays) < 2.0  # well under the 30 s after which ESMEs drop a bind
        assert throttled > 0 and accepted > 10  # it was paced, and traffic went on
    finally:
        carrier.close()
        assert ansim.terminate() == 0
        smsc.terminate()
    # what was throttled was not stored: one record per message answered ESME_ROK
    assert {r["id"].encode() for r in sms_rows(tmp_path / "cdr.sqlite")} == set(
        carrier.ids.values()
    )
