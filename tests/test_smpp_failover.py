"""Failover between upstreams, and expiry of what cannot be delivered in time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from smpp_helpers import (
    PARENT,
    TEACHER_X,
    Ansim,
    Esme,
    NodeSmsc,
    build_store,
    node_available,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)


def test_traffic_moves_to_the_backup_and_back(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    primary = NodeSmsc(tmp_path / "primary.jsonl", dlr=False)
    backup = NodeSmsc(tmp_path / "backup.jsonl", dlr=False)
    cfg = write_config(
        tmp_path / "smpp.yaml", tmp_path, upstream_port=primary.port, backup_port=backup.port
    )
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    esme = Esme(ansim.port)
    try:
        wait_for(
            lambda: (
                "bound to upstream backup" in (tmp_path / "ansim.log").read_text()
                and "bound to upstream node" in (tmp_path / "ansim.log").read_text()
            )
        )

        def send(text: bytes) -> bytes:
            pdu = esme.submit(PARENT, TEACHER_X, text, registered_delivery=0)
            esme.read_until(lambda: esme.resp_for(pdu) is not None)
            resp = esme.resp_for(pdu)
            assert resp.status == 0
            return bytes(resp.message_id)

        first = [send(b"to primary %d" % i) for i in range(5)]
        wait_for(lambda: len(primary.accepted()) == 5)
        assert backup.accepted() == []
        primary.kill()
        second = [send(b"to backup %d" % i) for i in range(5)]
        wait_for(lambda: len(backup.accepted()) == 5)
        assert {r["ansim_id"].encode() for r in backup.accepted()} == set(second)
        assert {r["ansim_id"].encode() for r in primary.accepted()} == set(first)
        primary = NodeSmsc(tmp_path / "primary.jsonl", port=primary.port, dlr=False)
        wait_for(lambda: (tmp_path / "ansim.log").read_text().count("bound to upstream node") == 2)
        third = send(b"primary again")
        wait_for(lambda: any(r["ansim_id"].encode() == third for r in primary.accepted()))
        assert len(backup.accepted()) == 5
    finally:
        esme.close()
        ansim.terminate()
        primary.terminate()
        backup.terminate()


def test_expired_message_dropped_with_a_receipt(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    # An upstream that refuses our bind: nothing can be delivered.
    refusing = NodeSmsc(tmp_path / "refusing.jsonl", password="other")
    cfg = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=refusing.port)
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    esme = Esme(ansim.port)
    try:
        pdu = esme.client_pdu(PARENT, TEACHER_X, b"too late", 0, 0, 1)
        pdu.validity_period = "000000000002000R"  # two seconds
        esme.client.send_pdu(pdu)
        esme.read_until(lambda: esme.resp_for(pdu) is not None)
        resp = esme.resp_for(pdu)
        assert resp.status == 0
        deadline = time.monotonic() + 20
        esme.client._socket.settimeout(0.5)
        while esme.receipt_for(resp.message_id) is None:
            assert time.monotonic() < deadline, "no receipt for the expired message"
            try:
                esme.client.read_once()
            except Exception:
                pass
        receipt = esme.receipt_for(resp.message_id)
        assert b"stat:EXPIRED" in receipt.short_message
        assert refusing.accepted() == []
    finally:
        esme.close()
        ansim.terminate()
        refusing.terminate()
