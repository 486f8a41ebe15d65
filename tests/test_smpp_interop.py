"""Interop: smpplib as the carrier's ESME, node-smpp as the upstream SMSC, ansim between.

Everything runs on loopback, started and stopped here: the node-smpp SMSC
(tests/peers/smsc.js) records every submit_sm it accepts, and ansim runs as
`python -m sms_smpp.cli smpp run` over a translation store built with translate's API.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import smpplib.exceptions
from smpp_helpers import (
    DRIVER,
    PARENT,
    RIDER,
    STRANGER,
    TEACHER,
    TEACHER_X,
    TRIP_X,
    Ansim,
    Esme,
    NodeSmsc,
    build_store,
    digits,
    node_available,
    wait_for,
    write_config,
)

from sms_smpp.concat import derived_ref, split_udh
from sms_smpp.pdu import Status

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        build_store(tmp / "translate")
        self.smsc = NodeSmsc(tmp / "upstream.jsonl")
        cfg = write_config(tmp / "smpp.yaml", tmp, upstream_port=self.smsc.port, mo=True)
        self.ansim = Ansim(cfg, tmp / "ansim.log")
        self.esme = Esme(self.ansim.port)

    def upstream_record(self, ansim_id: bytes) -> dict[str, Any]:
        wait_for(lambda: any(r["ansim_id"] == ansim_id.decode() for r in self.smsc.accepted()))
        return next(r for r in self.smsc.accepted() if r["ansim_id"] == ansim_id.decode())

    def send(self, src: str, dst: str, text: bytes, **kw: Any) -> Any:
        pdu = self.esme.submit(src, dst, text, **kw)
        self.esme.read_until(lambda: self.esme.resp_for(pdu) is not None)
        return self.esme.resp_for(pdu)

    def close(self) -> None:
        self.esme.close()
        assert self.ansim.terminate() == 0
        self.smsc.terminate()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(tmp_path_factory.mktemp("interop"))
    try:
        yield w
    finally:
        w.close()


def test_single_sms_translated_and_receipt_mapped_back(world: World) -> None:
    resp = world.send(PARENT, TEACHER_X, b"Is the trip on Friday?")
    assert resp.status == 0 and resp.message_id
    rec = world.upstream_record(resp.message_id)
    assert rec["destination_addr"] == digits(TEACHER) and rec["dest_addr_ton"] == 1
    assert rec["source_addr"] == digits(TEACHER_X)  # the teacher sees the 050 number
    assert bytes.fromhex(rec["short_message"]) == b"Is the trip on Friday?"
    assert rec["dup"] is False
    world.esme.read_until(lambda: world.esme.receipt_for(resp.message_id) is not None)
    receipt = world.esme.receipt_for(resp.message_id)
    assert receipt.source_addr == digits(TEACHER_X).encode()  # never the teacher's number
    assert receipt.destination_addr == digits(PARENT).encode()
    assert receipt.short_message.startswith(b"id:" + resp.message_id + b" ")
    assert rec["upstream_id"].encode() not in receipt.short_message


@pytest.mark.parametrize("text", ["안녕하세요, 선생님. 내일 뵙겠습니다.", "你好，老师。明天见。"])  # noqa: RUF001
def test_ucs2_korean_and_chinese_octets_unchanged(world: World, text: str) -> None:
    octets = text.encode("utf-16-be")
    resp = world.send(PARENT, TEACHER_X, octets, data_coding=8)
    rec = world.upstream_record(resp.message_id)
    assert rec["data_coding"] == 8
    assert bytes.fromhex(rec["short_message"]).decode("utf-16-be") == text


def test_axb_both_directions_show_the_virtual_number(world: World) -> None:
    to_driver = world.upstream_record(world.send(RIDER, TRIP_X, b"at the gate").message_id)
    to_rider = world.upstream_record(world.send(DRIVER, TRIP_X, b"2 minutes").message_id)
    assert (to_driver["destination_addr"], to_driver["source_addr"]) == (
        digits(DRIVER),
        digits(TRIP_X),
    )
    assert (to_rider["destination_addr"], to_rider["source_addr"]) == (
        digits(RIDER),
        digits(TRIP_X),
    )


def test_refusals_get_documented_statuses(world: World) -> None:
    assert world.send(STRANGER, TRIP_X, b"hi").status == Status.RINVSRCADR
    assert world.send(PARENT, "+82509999999", b"hi").status == Status.RINVDSTADR


def _three_parts_arrive(world: World, resps: list[Any], ref_sender: str) -> list[dict[str, Any]]:
    assert all(r.status == 0 for r in resps)
    recs = [world.upstream_record(r.message_id) for r in resps]
    for rec in recs:
        assert rec["destination_addr"] == digits(TEACHER)
        assert rec["source_addr"] == digits(TEACHER_X)
    # every part's receipt comes back, each with the id ansim gave that part
    world.esme.read_until(lambda: all(world.esme.receipt_for(r.message_id) for r in resps))
    assert len({r.message_id for r in resps}) == 3
    return recs


def test_three_part_message_by_udh(world: World) -> None:
    text = ("장문 메시지 테스트 " * 14).encode("utf-16-be")
    parts = split_udh(text, ref=0x42)
    assert len(parts) == 3
    resps = [world.send(PARENT, TEACHER_X, p, data_coding=8, esm_class=0x40) for p in parts]
    recs = _three_parts_arrive(world, resps, PARENT)
    new_ref = derived_ref(PARENT, 0x42, 8)
    got = [bytes.fromhex(r["short_message"]) for r in recs]
    assert [g[:6] for g in got] == [bytes((5, 0, 3, new_ref, 3, i)) for i in (1, 2, 3)]
    assert b"".join(g[6:] for g in got) == text
    assert all(r["esm_class"] & 0x40 for r in recs)


def test_three_part_message_by_sar(world: World) -> None:
    chunks = [b"part one of three, ", b"part two of three, ", b"part three of three."]
    resps = [
        world.send(
            PARENT,
            TEACHER_X,
            c,
            sar_msg_ref_num=0x1234,
            sar_total_segments=3,
            sar_segment_seqnum=i + 1,
        )
        for i, c in enumerate(chunks)
    ]
    recs = _three_parts_arrive(world, resps, PARENT)
    assert [r["sar_segment_seqnum"] for r in recs] == [1, 2, 3]
    assert {r["sar_total_segments"] for r in recs} == {3}
    assert {r["sar_msg_ref_num"] for r in recs} == {derived_ref(PARENT, 0x1234, 16)}
    assert b"".join(bytes.fromhex(r["short_message"]) for r in recs) == b"".join(chunks)


def test_message_payload_and_sender_tlvs_not_leaked(world: World) -> None:
    body = ("long text in message_payload " * 20).encode()
    resp = world.send(
        PARENT,
        TEACHER_X,
        b"",
        message_payload=body,
        callback_num=b"\x01\x01\x01" + digits(PARENT).encode(),
    )
    rec = world.upstream_record(resp.message_id)
    assert bytes.fromhex(rec["message_payload"]) == body
    assert rec["callback_num"] is None


def test_mobile_originated_reply_reaches_the_carrier(world: World) -> None:
    world.smsc.send_line(f"mo {digits(DRIVER)} {digits(TRIP_X)} see you soon")
    world.esme.read_until(
        lambda: any(d.short_message == b"see you soon" for d in world.esme.delivered)
    )
    mo = next(d for d in world.esme.delivered if d.short_message == b"see you soon")
    assert mo.destination_addr == digits(RIDER).encode()
    assert mo.source_addr == digits(TRIP_X).encode()


def test_wrong_password_refused(world: World) -> None:
    with pytest.raises(smpplib.exceptions.PDUError) as info:
        Esme(world.ansim.port, password="wrong")
    assert info.value.args[1] == Status.RBINDFAIL


def test_records_written(world: World) -> None:
    resp = world.send(PARENT, TEACHER_X, b"for the record")

    def row() -> Any:
        con = sqlite3.connect(world.tmp / "cdr.sqlite")
        try:
            return con.execute(
                "SELECT source, destination, callee, status FROM sms WHERE id=?",
                (resp.message_id.decode(),),
            ).fetchone()
        finally:
            con.close()

    wait_for(lambda: row() is not None and row()[3] != "queued")
    assert row()[:3] == (PARENT, TEACHER_X, TEACHER)
