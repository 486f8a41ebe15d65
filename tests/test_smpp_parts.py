"""Long-message references, receipts, SMPP times, the queue and bind guarding."""

from __future__ import annotations

import calendar
from pathlib import Path

from sms_smpp.auth import BindGuard
from sms_smpp.concat import concat_info, derived_ref, rewrite_ref, split_payload, split_udh
from sms_smpp.config import Account
from sms_smpp.dlr import is_receipt, receipt_ids, receipt_state, rewrite_receipt
from sms_smpp.pdu import Bind, Cmd, EsmClass, MessageState, ShortMessage, Status, Tag
from sms_smpp.queue import TO_UPSTREAM, Message, MessageQueue
from sms_smpp.validity import parse_smpp_time


def test_udh_8bit_reference_rewritten_per_sender() -> None:
    parts = split_udh(b"a" * 300, ref=7)
    assert len(parts) == 3
    pdus = [ShortMessage(Cmd.SUBMIT_SM, esm_class=EsmClass.UDHI, short_message=p) for p in parts]
    infos = [rewrite_ref(p, "+821099998888") for p in pdus]
    new = derived_ref("+821099998888", 7, 8)
    assert [(i.ref, i.seq, i.total) for i in infos if i] == [(new, 1, 3), (new, 2, 3), (new, 3, 3)]
    assert all(p.short_message[6:] == parts[n][6:] for n, p in enumerate(pdus))
    assert derived_ref("+821077770000", 7, 8) != new or derived_ref("+821077770000", 8, 8) != new


def test_udh_16bit_and_sar_and_payload() -> None:
    udh16 = bytes((6, 8, 4, 0x12, 0x34, 2, 1))
    pdu = ShortMessage(
        Cmd.SUBMIT_SM, esm_class=EsmClass.UDHI, tlvs={Tag.MESSAGE_PAYLOAD: udh16 + b"text"}
    )
    info = concat_info(pdu)
    assert info is not None and (info.ref, info.total, info.seq, info.bits) == (0x1234, 2, 1, 16)
    rewrite_ref(pdu, "s")
    assert pdu.tlvs[Tag.MESSAGE_PAYLOAD][3:5] == derived_ref("s", 0x1234, 16).to_bytes(2, "big")
    sar = ShortMessage(
        Cmd.SUBMIT_SM,
        tlvs={
            Tag.SAR_MSG_REF_NUM: b"\x00\x09",
            Tag.SAR_TOTAL_SEGMENTS: b"\x03",
            Tag.SAR_SEGMENT_SEQNUM: b"\x02",
        },
    )
    info = rewrite_ref(sar, "s")
    assert info is not None and (info.total, info.seq, info.via) == (3, 2, "sar")
    assert int.from_bytes(sar.tlvs[Tag.SAR_MSG_REF_NUM], "big") == derived_ref("s", 9, 16)
    assert concat_info(ShortMessage(Cmd.SUBMIT_SM, short_message=b"plain")) is None


def test_receipt_id_state_and_rewrite() -> None:
    text = b"id:A1B2 sub:001 dlvrd:001 submit date:2401010000 done date:2401010001 stat:DELIVRD err:000 text:hi"
    pdu = ShortMessage(Cmd.DELIVER_SM, esm_class=EsmClass.DELIVERY_RECEIPT, short_message=text)
    assert is_receipt(pdu)
    assert receipt_ids(pdu)[:2] == ["A1B2", str(0xA1B2)]
    assert receipt_state(pdu) == MessageState.DELIVERED
    rewrite_receipt(pdu, "0000ours")
    assert pdu.short_message.startswith(b"id:0000ours sub:001")
    tlv = ShortMessage(
        Cmd.DELIVER_SM, tlvs={Tag.RECEIPTED_MESSAGE_ID: b"77\0", Tag.MESSAGE_STATE: b"\x05"}
    )
    assert is_receipt(tlv) and receipt_ids(tlv)[0] == "77"
    assert receipt_state(tlv) == MessageState.UNDELIVERABLE
    assert not is_receipt(ShortMessage(Cmd.DELIVER_SM, short_message=b"hello"))


def test_smpp_times() -> None:
    assert parse_smpp_time("", 100.0) is None
    assert parse_smpp_time("000001020304000R", 100.0) == 100.0 + 86400 + 2 * 3600 + 3 * 60 + 4
    utc = calendar.timegm((2024, 5, 6, 7, 8, 9, 0, 0, 0))
    assert parse_smpp_time("240506070809036+", 0) == utc + 0.0 - 9 * 3600
    for bad in ("x", "240506070809036*", "241306070809036+"):
        try:
            parse_smpp_time(bad, 0)
        except ValueError:
            continue
        raise AssertionError(bad)


def test_queue_survives_reopen_and_keeps_order(tmp_path: Path) -> None:
    q = MessageQueue(str(tmp_path / "q"), map_size=16 << 20, fsync=False)
    ids = []
    for i in range(5):
        mid = q.new_id()
        ids.append(mid)
        q.stage_put(Message(mid, TO_UPSTREAM, "", Cmd.SUBMIT_SM, bytes([i]), 1.0, 2.0, {"s": "c1"}))
    q.commit()
    q.stage_delete(ids[1])
    q.stage_receipt_map("up", "U1", (ids[0], "c1", "+1", "+2"), 10.0)
    q.commit()
    last = ids[-1]
    q.close()
    q = MessageQueue(str(tmp_path / "q"), map_size=16 << 20, fsync=False)
    assert [m.id for m in q.pending()] == [ids[0], *ids[2:]]
    assert [m.body for m in q.pending()] == [b"\0", b"\2", b"\3", b"\4"]
    assert q.new_id() > last
    found = q.receipt_map("U1")
    assert found is not None and found[2] == ids[0]
    assert q.expire_receipt_maps(older_than=4e9) == 1
    assert q.receipt_map("U1") is None
    q.close()


def test_bind_guard_rate_limit_credentials_and_bind_types() -> None:
    guard = BindGuard(
        [Account(system_id="c1", password="pw", bind_types=["transmitter"], max_binds=1)],
        burst=3,
        rate=1.0,
    )
    tx = Bind(Cmd.BIND_TRANSMITTER, system_id="c1", password="pw")
    assert (
        guard.check(Bind(Cmd.BIND_TRANSMITTER, system_id="c1", password="no"), "a", 0)[0]
        == Status.RBINDFAIL
    )
    assert (
        guard.check(Bind(Cmd.BIND_RECEIVER, system_id="c1", password="pw"), "a", 0)[0]
        == Status.RBINDFAIL
    )
    status, account, _reason = guard.check(tx, "a", 0)
    assert status == 0 and account is not None
    assert guard.check(tx, "a", 0)[0] == Status.RBINDFAIL  # bucket of 3 is empty
    assert guard.check(tx, "b", 0)[0] == 0  # another address has its own bucket
    guard.bound("c1")
    assert guard.check(tx, "a", 5.0)[0] == Status.RBINDFAIL  # max_binds reached
    guard.unbound("c1")
    assert guard.check(tx, "a", 6.0)[0] == 0


def _payload_sm(payload: bytes, data_coding: int, **kw: object) -> ShortMessage:
    return ShortMessage(
        Cmd.SUBMIT_SM,
        data_coding=data_coding,
        tlvs={Tag.MESSAGE_PAYLOAD: payload, Tag.USER_MESSAGE_REFERENCE: b"\0\1"},
        **kw,
    )  # type: ignore[arg-type]


def _reassembled(parts: list[ShortMessage], ref: int) -> bytes:
    total = len(parts)
    out = b""
    for i, part in enumerate(parts):
        assert part.esm_class & EsmClass.UDHI
        assert part.short_message[:6] == bytes((5, 0, 3, ref, total, i + 1))
        assert Tag.MESSAGE_PAYLOAD not in part.tlvs
        assert part.tlvs[Tag.USER_MESSAGE_REFERENCE] == b"\0\1"  # the rest is carried
        assert len(part.short_message) <= 140 or part.data_coding in (0, 1, 0xF0)
        out += part.short_message[6:]
    return out


def test_split_payload_ucs2_keeps_surrogate_pairs_whole() -> None:
    text = "가나다라 😀 " * 1200  # Hangul and an emoji: surrogate pairs in UTF-16
    payload = text.encode("utf-16-be")
    assert len(payload) > 16384
    parts = split_payload(_payload_sm(payload, 8), ref=0x2A)
    assert parts is not None and len(parts) >= -(-len(payload) // 134)
    assert _reassembled(parts, 0x2A) == payload
    for part in parts:
        chunk = part.short_message[6:]
        assert len(chunk) <= 134 and len(chunk) % 2 == 0
        chunk.decode("utf-16-be")  # every part is whole characters: no lone surrogate


def test_split_payload_gsm_keeps_escapes_with_their_character() -> None:
    payload = b"price \x1be5 " * 2500  # \x1b\x65 is the euro sign in GSM 03.38
    parts = split_payload(_payload_sm(payload, 0), ref=7)
    assert parts is not None
    assert _reassembled(parts, 7) == payload
    for part in parts:
        chunk = part.short_message[6:]
        assert len(chunk) <= 153 and not chunk.endswith(b"\x1b")


def test_split_payload_octets_and_ksc5601() -> None:
    payload = bytes(range(256)) * 80
    parts = split_payload(_payload_sm(payload, 4), ref=1)
    assert parts is not None and _reassembled(parts, 1) == payload
    assert {len(p.short_message) for p in parts[:-1]} == {140}
    korean = ("안녕 a " * 3000).encode("euc-kr")
    parts = split_payload(_payload_sm(korean, 0x0E), ref=2)
    assert parts is not None and _reassembled(parts, 2) == korean
    for part in parts:
        part.short_message[6:].decode("euc-kr")  # no double-byte character cut


def test_split_payload_refuses_what_it_cannot_cut() -> None:
    assert split_payload(_payload_sm(b"x" * 20000, 5), ref=1) is None  # JIS: stateful
    assert split_payload(_payload_sm(b"x" * 20001, 8), ref=1) is None  # odd UCS2
    assert split_payload(_payload_sm(b"x" * 134 * 256, 4), ref=1) is None  # > 255 parts
    assert split_payload(_payload_sm(b"x" * 20000, 4, esm_class=EsmClass.UDHI), ref=1) is None
    sar = _payload_sm(b"x" * 20000, 4)
    sar.tlvs[Tag.SAR_MSG_REF_NUM] = b"\0\1"
    assert split_payload(sar, ref=1) is None
    assert split_payload(ShortMessage(Cmd.SUBMIT_SM, short_message=b"x" * 100), ref=1) is None
