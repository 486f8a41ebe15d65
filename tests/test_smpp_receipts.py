"""Delivery receipts that arrive before the submit_sm_resp of their message.

SMPP does not order the two, and some SMSCs write both in one TCP segment, receipt
first. Each one must still reach the sender with the id ansim gave it: held until the
id is mapped, on disk, across a restart of ansim; past the hold's bound it is dropped
and counted. Peers: the npm `smpp` SMSC (tests/peers/smsc.js --dlr-first), and a
raw-socket SMSC for the one-segment case, which no library produces on request.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from smpp_helpers import (
    PARENT,
    TEACHER,
    TEACHER_X,
    Ansim,
    Esme,
    InProcess,
    NodeSmsc,
    RawSmsc,
    build_store,
    digits,
    node_available,
    sms_rows,
    wait_for,
    write_config,
)

from sms_smpp.concat import split_udh
from sms_smpp.queue import MessageQueue

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)


def send(esme: Esme, text: bytes, **kw: Any) -> bytes:
    pdu = esme.submit(PARENT, TEACHER_X, text, **kw)
    esme.read_until(lambda: esme.resp_for(pdu) is not None)
    resp = esme.resp_for(pdu)
    assert resp.status == 0 and resp.message_id
    return bytes(resp.message_id)


def send_single_and_parts(esme: Esme) -> list[bytes]:
    """One single message, three parts by UDH and three by SAR: seven sender ids."""
    ids = [send(esme, b"receipt before its resp")]
    text = ("parts and receipts " * 20).encode()
    ids += [send(esme, part, esm_class=0x40) for part in split_udh(text, ref=9)]
    chunks = [b"sar one, ", b"sar two, ", b"sar three."]
    ids += [
        send(esme, c, sar_msg_ref_num=0x4242, sar_total_segments=3, sar_segment_seqnum=i + 1)
        for i, c in enumerate(chunks)
    ]
    assert len(ids) == 7 and len(set(ids)) == 7
    return ids


def assert_receipts(esme: Esme, ids: list[bytes]) -> None:
    esme.read_until(lambda: all(esme.receipt_for(i) is not None for i in ids), timeout=20)
    for our_id in ids:
        receipt = esme.receipt_for(our_id)
        assert receipt.short_message.startswith(b"id:" + our_id + b" ")
        assert b"stat:DELIVRD" in receipt.short_message
        assert receipt.source_addr == digits(TEACHER_X).encode()  # never the real recipient
        assert receipt.destination_addr == digits(PARENT).encode()
    # exactly one receipt per message
    assert sorted(
        bytes(d.receipted_message_id) for d in esme.delivered if d.receipted_message_id in ids
    ) == sorted(ids)


def test_receipt_in_the_same_segment_before_its_resp(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    raw = RawSmsc()
    cfg = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=raw.port)
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    esme = Esme(ansim.port)
    try:
        ids = send_single_and_parts(esme)
        assert_receipts(esme, ids)
        wait_for(lambda: len(raw.receipts_acked) == 7)
        assert {status for _id, status in raw.receipts_acked} == {0}
        assert all(s["dst"] == digits(TEACHER).encode() for s in raw.submits)
        wait_for(
            lambda: (
                {
                    r["id"].encode(): r["status"]
                    for r in sms_rows(tmp_path / "cdr.sqlite")
                    if r["id"].encode() in ids
                }
                == dict.fromkeys(ids, "delivered")
            )
        )
    finally:
        esme.close()
        assert ansim.terminate() == 0
        raw.stop()


def test_receipt_before_its_resp_from_node_smpp(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    smsc = NodeSmsc(tmp_path / "upstream.jsonl", dlr_first=True)
    cfg = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=smsc.port)
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    esme = Esme(ansim.port)
    try:
        ids = send_single_and_parts(esme)
        assert_receipts(esme, ids)
        wait_for(lambda: len(smsc.printed("RECEIPT_ACKED")) == 7)
        assert {line.split()[2] for line in smsc.printed("RECEIPT_ACKED")} == {"0"}
    finally:
        esme.close()
        assert ansim.terminate() == 0
        smsc.terminate()


def test_held_receipts_survive_a_restart_of_ansim(tmp_path: Path) -> None:
    """The upstream sends each receipt at once and holds the submit_sm_resp back past a
    restart of ansim; ansim resends the messages with their idempotency key after the
    restart, the upstream answers those at once with the same ids, and every receipt
    held on disk reaches the sender."""
    build_store(tmp_path / "translate")
    records = tmp_path / "upstream.jsonl"
    smsc = NodeSmsc(records, dlr_first=True, resp_delay_ms=600_000)
    cfg = write_config(
        tmp_path / "smpp.yaml", tmp_path, upstream_port=smsc.port, upstream={"response_timeout": 60}
    )
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    esme = Esme(ansim.port)
    try:
        ids = [send(esme, b"held across a restart")]
        ids += [send(esme, p, esm_class=0x40) for p in split_udh(b"p" * 300, ref=3)]
        wait_for(lambda: len(smsc.printed("RECEIPT_ACKED")) == 4)  # held and acknowledged
        assert esme.delivered == []
        esme.close()
        assert ansim.terminate() == 0
        queue = MessageQueue(str(tmp_path / "queue"), map_size=1 << 30, fsync=False)
        try:
            assert len(list(queue.held())) == 4
            assert {m.id.encode() for m in queue.pending()} == set(ids)
        finally:
            queue.env.close()

        ansim = Ansim(cfg, tmp_path / "ansim.log")
        esme = Esme(ansim.port)
        assert_receipts(esme, ids)
        sent = smsc.accepted()
        assert sorted((r["ansim_id"], r["dup"]) for r in sent) == sorted(
            [(i.decode(), False) for i in ids] + [(i.decode(), True) for i in ids]
        )
        wait_for(lambda: _held_count(tmp_path) == 0)
    finally:
        esme.close()
        ansim.terminate()
        smsc.terminate()


def _held_count(tmp_path: Path) -> int:
    import lmdb

    env = lmdb.open(str(tmp_path / "queue"), max_dbs=8, readonly=True, lock=False)
    try:
        db = env.open_db(b"dlr_hold", create=False)
        with env.begin(db=db) as txn:
            return int(txn.stat(db)["entries"])
    finally:
        env.close()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_unmatched_receipts_are_dropped_past_the_hold_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_store(tmp_path / "translate")
    raw = RawSmsc()
    cfg = write_config(
        tmp_path / "smpp.yaml",
        tmp_path,
        upstream_port=raw.port,
        receipt_hold=1.0,
        receipt_hold_max=2,
    )
    caplog.set_level(logging.WARNING, logger="sms_smpp.relay")
    before = {
        r: metric("ansim_smpp_receipts_total", result=r) for r in ("held", "evicted", "unmatched")
    }
    relay = InProcess(cfg)
    try:
        wait_for(lambda: metric("ansim_smpp_binds", side="upstream") >= 1)
        for n in range(3):
            raw.send_receipt(f"never-given-{n}", digits(TEACHER).encode(), digits(PARENT).encode())
        wait_for(lambda: len(raw.receipts_acked) == 3)
        assert {status for _id, status in raw.receipts_acked} == {0}  # taken, not refused
        assert metric("ansim_smpp_receipts_held") == 2  # the oldest made room
        assert metric("ansim_smpp_receipts_total", result="evicted") - before["evicted"] == 1
        wait_for(lambda: metric("ansim_smpp_receipts_held") == 0, timeout=5)
        assert metric("ansim_smpp_receipts_total", result="unmatched") - before["unmatched"] == 2
        assert metric("ansim_smpp_receipts_total", result="held") - before["held"] == 3
        lines = [r.getMessage() for r in caplog.records if "matched no message" in r.getMessage()]
        assert len(lines) == 3 and "never-given-0" in lines[0] and "(evicted)" in lines[0]
        time.sleep(0.2)
    finally:
        relay.stop()
        raw.stop()
