"""Fault test: 10,000 messages, the upstream SMSC killed and restarted mid-stream, ansim
restarted once; every message reaches the upstream exactly once and every submit_sm was
answered.

The carrier side is smpplib driven at PDU level with a window of 100 and a sender's
ordinary recovery: a submit_sm left unanswered when its connection dropped, or answered
ESME_RTHROTTLED, is submitted again. The upstream (node-smpp) appends each submit_sm to
its record file before answering, so the file is what it accepted even across SIGKILL;
it honours ansim's idempotency key (the message id in TLV 0x1401), as the queue resends
whatever was in flight when the link died.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import smpplib.client
import smpplib.exceptions
import smpplib.smpp
from smpp_helpers import (
    PARENT,
    TEACHER,
    TEACHER_X,
    Ansim,
    NodeSmsc,
    build_store,
    digits,
    node_available,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)

TOTAL = 10_000
WINDOW = 100
KILL_UPSTREAM_AT = 3_000
RESTART_ANSIM_AT = 6_500


class Sender:
    """A windowed smpplib ESME that resubmits what was not accepted."""

    def __init__(self) -> None:
        self.todo = list(range(TOTAL - 1, -1, -1))  # popped from the end: 0 first
        self.ids: dict[int, list[bytes]] = {}  # index -> message ids answered ROK
        self.statuses: Counter[int] = Counter()
        self.client: Any = None
        self.inflight: dict[int, int] = {}  # sequence -> index
        self.reconnects = 0

    @property
    def accepted(self) -> int:
        return len(self.ids)

    def connect(self, port: int, deadline: float) -> None:
        while True:
            try:
                client = smpplib.client.Client(
                    "127.0.0.1", port, timeout=5, allow_unknown_opt_params=True
                )
                client.connect()
                client.bind_transmitter(system_id="carrier1", password="pw1")
                self.client = client
                return
            except (smpplib.exceptions.ConnectionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def lost(self) -> None:
        """The connection dropped: whatever was unanswered goes back in line."""
        self.todo.extend(sorted(self.inflight.values(), reverse=True))
        self.inflight.clear()
        try:
            self.client.disconnect()
        except Exception:
            pass
        self.client = None
        self.reconnects += 1

    def pump(self) -> None:
        """Fill the window, then handle one PDU from ansim."""
        client = self.client
        while self.todo and len(self.inflight) < WINDOW:
            index = self.todo.pop()
            pdu = smpplib.smpp.make_pdu(
                "submit_sm",
                client=client,
                source_addr_ton=1,
                source_addr_npi=1,
                source_addr=digits(PARENT),
                dest_addr_ton=1,
                dest_addr_npi=1,
                destination_addr=digits(TEACHER_X),
                short_message=b"fault-%05d" % index,
            )
            self.inflight[pdu.sequence] = index
            client.send_pdu(pdu)
        pdu = client.read_pdu()
        if pdu.command == "submit_sm_resp":
            index = self.inflight.pop(pdu.sequence)
            self.statuses[pdu.status] += 1
            if pdu.status == 0:
                self.ids.setdefault(index, []).append(pdu.message_id)
            else:
                self.todo.append(index)
        elif pdu.command in ("unbind", "enquire_link"):
            answer = smpplib.smpp.make_pdu(pdu.command + "_resp", client=client)
            answer.sequence = pdu.sequence  # make_pdu does not take it from kwargs
            client.send_pdu(answer)


def test_upstream_killed_and_ansim_restarted_mid_stream(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    records = tmp_path / "upstream.jsonl"
    smsc = NodeSmsc(records, dlr=False)
    upstream_port = smsc.port
    cfg = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=upstream_port)
    log = tmp_path / "ansim.log"
    ansim = Ansim(cfg, log)
    sender = Sender()
    killed = restarted = replaced = False
    deadline = time.monotonic() + 150
    try:
        sender.connect(ansim.port, deadline)
        while sender.accepted < TOTAL:
            assert time.monotonic() < deadline, "stream did not finish in time"
            if not killed and sender.accepted >= KILL_UPSTREAM_AT:
                smsc.kill()  # SIGKILL: no goodbye to ansim
                killed = True
                time.sleep(0.3)
                smsc = NodeSmsc(records, port=upstream_port, dlr=False)
            if not restarted and sender.accepted >= RESTART_ANSIM_AT:
                # SIGTERM: ansim stops gracefully while the sender goes on sending; the
                # sender learns of it as the connection closes, as a carrier would.
                ansim.proc.send_signal(signal.SIGTERM)
                restarted = True
            if sender.client is None:
                if restarted and not replaced:
                    assert ansim.terminate(timeout=10) == 0
                    ansim = Ansim(cfg, log)
                    replaced = True
                sender.connect(ansim.port, deadline)
            try:
                sender.pump()
            except (TimeoutError, smpplib.exceptions.ConnectionError, OSError):
                sender.lost()

        assert killed and replaced
        # Every index was answered ESME_ROK exactly once, each with its own id.
        assert sorted(sender.ids) == list(range(TOTAL))
        assert all(len(ids) == 1 for ids in sender.ids.values())
        given = {ids[0].decode(): index for index, ids in sender.ids.items()}
        assert len(given) == TOTAL

        def upstream_new() -> list[dict[str, Any]]:
            return [r for r in smsc.accepted() if not r["dup"]]

        wait_for(lambda: len(upstream_new()) >= TOTAL, timeout=60)
        time.sleep(0.5)  # nothing more may arrive
        new = upstream_new()
        assert len(new) == TOTAL
        assert Counter(r["ansim_id"] for r in new) == Counter(given.keys())  # once, by id
        texts = Counter(bytes.fromhex(r["short_message"]) for r in new)
        assert texts == Counter(b"fault-%05d" % i for i in range(TOTAL))
        assert all(
            bytes.fromhex(r["short_message"]) == b"fault-%05d" % given[r["ansim_id"]] for r in new
        )
        assert {r["destination_addr"] for r in new} == {digits(TEACHER)}
        resent = sum(1 for r in smsc.accepted() if r["dup"])
        print(
            f"\nfault test: {TOTAL} delivered once; {resent} resent after the upstream"
            f" died and answered by its idempotency key; sender statuses"
            f" {dict(sender.statuses)}; reconnects {sender.reconnects}"
        )
    finally:
        if sender.client is not None:
            try:
                sender.client.disconnect()
            except Exception:
                pass
        ansim.terminate()
        smsc.terminate()
