"""SMS records of tenants' bindings: their owner (tenant, pool, out_id) is recorded even
when the binding is gone by then, and their webhook events (``sms.received``,
``sms.delivered``) are written beside them, with smpplib as the carrier, node-smpp as
the upstream SMSC sending receipts, and ``ansim smpp run`` between."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
from smpp_helpers import Ansim, Esme, NodeSmsc, digits, node_available, wait_for, write_config

from translate.bindings import Binding, Hours
from translate.pools import Pool
from translate.store import Store

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)

X_POOLED = "+825071230001"
X_MAP = "+825071230002"
X_CLOSED = "+825071230003"
RIDER = "+821033334444"
DRIVER = "+821055556666"
PARENT = "+821099998888"
TEACHER = "+821011112222"


def _rows(db: Path, sql: str) -> list[dict[str, Any]]:
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in con.execute(sql)]
    finally:
        con.close()


def test_owned_messages_are_recorded_with_their_owner_and_events(tmp_path: Path) -> None:
    now = time.time()
    with Store(tmp_path / "translate") as store:
        with store.transaction(now) as t:
            store.pools.create(t.txn, Pool("acme", "trips", 10, 0.0, now))
            store.pools.add_number(t.txn, "acme", "trips", X_POOLED, None)
            t.put(Binding("b_trip", "axb", X_POOLED, RIDER, DRIVER, tenant="acme", out_id="o-7"))
            minute = int(now // 60) % 1440  # hours that exclude now: refused, with its owner
            closed = Hours((minute + 60) % 1440, (minute + 120) % 1440, "UTC")
            t.put(Binding("b_closed", "axb", X_CLOSED, RIDER, DRIVER, hours=closed,
                          tenant="acme", out_id="o-8"))  # fmt: skip
        store.put(Binding("school-1", "ax", X_MAP, TEACHER), now=now, source="yaml")
    smsc = NodeSmsc(tmp_path / "upstream.jsonl")
    relay = Ansim(
        write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=smsc.port),
        tmp_path / "relay.log",
    )
    esme = Esme(relay.port)
    db = tmp_path / "cdr.sqlite"
    try:
        sent = []
        for src, dst, text in ((RIDER, X_POOLED, b"at the gate"), (PARENT, X_MAP, b"hello")):
            pdu = esme.submit(src, dst, text)
            esme.read_until(lambda p=pdu: esme.resp_for(p) is not None)
            assert esme.resp_for(pdu).status == 0
            sent.append(esme.resp_for(pdu).message_id.decode())
        refused = esme.submit(RIDER, X_CLOSED, b"too late")
        esme.read_until(lambda: esme.resp_for(refused) is not None)
        assert esme.resp_for(refused).status == 0x64  # ESME_RX_T_APPN: hours
        # The binding goes before the records are written: its owner is kept all the same.
        with Store(tmp_path / "translate") as store:
            assert store.unbind("b_trip")
        wait_for(lambda: len(smsc.accepted()) == 2)
        for message_id in sent:
            esme.read_until(lambda m=message_id: esme.receipt_for(m.encode()) is not None)
        wait_for(lambda: len(_rows(db, "SELECT * FROM sms_events")) >= 2, timeout=10)
    finally:
        esme.close()
        assert relay.terminate() == 0
        smsc.terminate()
    records = {r["id"]: r for r in _rows(db, "SELECT * FROM sms")}
    owned, unowned = records[sent[0]], records[sent[1]]
    assert (owned["tenant"], owned["pool"], owned["out_id"], owned["binding_id"]) == (
        "acme", "trips", "o-7", "b_trip",
    )  # fmt: skip
    assert (owned["callee"], owned["status"]) == (DRIVER, "delivered")
    assert (unowned["tenant"], unowned["pool"], unowned["out_id"]) == (None, None, None)
    (closed_row,) = [r for r in records.values() if r["destination"] == X_CLOSED]
    assert (closed_row["status"], closed_row["reason"], closed_row["binding_id"]) == (
        "refused", "hours", "b_closed",
    )  # fmt: skip
    assert (closed_row["tenant"], closed_row["out_id"]) == ("acme", "o-8")
    events = _rows(db, "SELECT * FROM sms_events ORDER BY seq")
    assert [(e["type"], e["sms_id"], e["tenant"]) for e in events] == [
        ("sms.received", sent[0], "acme"),
        ("sms.delivered", sent[0], "acme"),
    ]
    assert len({e["event_id"] for e in events}) == 2
    assert digits(DRIVER) == smsc.accepted()[0]["destination_addr"]
