"""An upstream's max_pdu_size: a longer message_payload is split into concatenated parts
at submit time, with one receipt for the whole; what cannot be split is refused.

The upstream is the npm `smpp` SMSC, whose limit is 16384 octets a PDU (past it, it
stops reading the session); the carrier is smpplib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from smpp_helpers import (
    PARENT,
    TEACHER,
    TEACHER_X,
    Ansim,
    Esme,
    NodeSmsc,
    build_store,
    digits,
    node_available,
    sms_rows,
    wait_for,
    write_config,
)

from sms_smpp.concat import concat_info
from sms_smpp.pdu import Cmd, ShortMessage, Status

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)


@pytest.fixture()
def world(tmp_path: Path) -> Any:
    build_store(tmp_path / "translate")
    smsc = NodeSmsc(tmp_path / "upstream.jsonl")
    cfg = write_config(
        tmp_path / "smpp.yaml", tmp_path, upstream_port=smsc.port, upstream={"max_pdu_size": 16384}
    )
    ansim = Ansim(cfg, tmp_path / "ansim.log")
    esme = Esme(ansim.port)
    try:
        yield tmp_path, smsc, esme
    finally:
        esme.close()
        assert ansim.terminate() == 0
        smsc.terminate()


def send(esme: Esme, **kw: Any) -> Any:
    pdu = esme.submit(PARENT, TEACHER_X, b"", **kw)
    esme.read_until(lambda: esme.resp_for(pdu) is not None)
    return esme.resp_for(pdu)


def test_long_payload_is_split_and_answered_with_one_receipt(world: Any) -> None:
    tmp, smsc, esme = world
    payload = ("긴 메시지를 나눠 보냅니다. " * 800).encode("utf-16-be")
    assert len(payload) > 20_000
    resp = send(esme, message_payload=payload, data_coding=8)
    assert resp.status == 0 and resp.message_id
    parts = int(-(-len(payload) // 134))
    wait_for(lambda: len(smsc.accepted()) >= parts, timeout=30)
    recs = smsc.accepted()
    assert smsc.printed("WEDGED") == []
    infos = [
        concat_info(
            ShortMessage(
                Cmd.SUBMIT_SM,
                esm_class=r["esm_class"],
                short_message=bytes.fromhex(r["short_message"]),
            )
        )
        for r in recs
    ]
    concat = [i for i in infos if i is not None]
    assert len(concat) == len(recs)
    assert {(i.total, i.ref) for i in concat} == {(len(recs), concat[0].ref)}  # one message
    assert sorted(i.seq for i in concat) == list(range(1, len(recs) + 1))
    by_seq = sorted(zip(concat, recs, strict=True), key=lambda pair: pair[0].seq)
    assert b"".join(bytes.fromhex(r["short_message"])[6:] for _i, r in by_seq) == payload
    assert {r["destination_addr"] for r in recs} == {digits(TEACHER)}
    assert {r["data_coding"] for r in recs} == {8}
    assert all(r["message_payload"] is None for r in recs)
    # the upstream sent a receipt for each part; the sender gets one, for its own id
    esme.read_until(lambda: esme.receipt_for(resp.message_id) is not None, timeout=20)
    receipts = [d for d in esme.delivered if d.receipted_message_id == resp.message_id]
    assert len(receipts) == 1
    assert receipts[0].short_message.startswith(b"id:" + resp.message_id + b" ")
    assert b"stat:DELIVRD" in receipts[0].short_message
    wait_for(
        lambda: any(
            r["id"].encode() == resp.message_id and r["status"] == "delivered"
            for r in sms_rows(tmp / "cdr.sqlite")
        )
    )


def test_what_cannot_be_split_is_refused_and_what_fits_goes_whole(world: Any) -> None:
    _tmp, smsc, esme = world
    # JIS is stateful: no safe place to cut it
    assert send(esme, message_payload=b"x" * 20_000, data_coding=5).status == Status.RINVMSGLEN
    # a payload that carries its own UDH
    assert (
        send(
            esme,
            message_payload=b"\x05\x00\x03\x01\x02\x01" + b"x" * 20_000,
            esm_class=0x40,
            data_coding=4,
        ).status
        == Status.RINVMSGLEN
    )
    fits = send(esme, message_payload=b"f" * 10_000, data_coding=4)
    assert fits.status == 0
    wait_for(lambda: any(r["ansim_id"] == fits.message_id.decode() for r in smsc.accepted()))
    (rec,) = smsc.accepted()
    assert bytes.fromhex(rec["message_payload"]) == b"f" * 10_000  # whole, not split
