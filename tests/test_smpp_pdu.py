"""PDU codec: round trips, interop with smpplib's encoder, and malformed input."""

from __future__ import annotations

import struct

import pytest
import smpplib.command
import smpplib.smpp
from hypothesis import given, settings
from hypothesis import strategies as st

from sms_smpp.pdu import (
    Bind,
    BindResp,
    Cmd,
    DataSm,
    MessageResp,
    Pdu,
    PduError,
    ShortMessage,
    Status,
    Tag,
    decode,
    encode,
    encode_message_resp,
    tlv_int,
    tlv_str,
)


def test_submit_sm_round_trip_with_tlvs() -> None:
    pdu = ShortMessage(
        Cmd.SUBMIT_SM,
        7,
        0,
        "CMT",
        1,
        1,
        "821099998888",
        1,
        1,
        "82501234567",
        0x40,
        0,
        1,
        "",
        "000001000000000R",
        1,
        0,
        8,
        0,
        "안녕하세요".encode("utf-16-be"),
        {Tag.SAR_MSG_REF_NUM: b"\x00\x05", Tag.SAR_TOTAL_SEGMENTS: b"\x03"},
    )
    frame = encode(pdu)
    assert struct.unpack(">I", frame[:4])[0] == len(frame)
    assert decode(frame) == pdu


def test_decodes_smpplib_submit_sm() -> None:
    client = type("C", (), {"next_sequence": lambda self: 42})()
    theirs = smpplib.smpp.make_pdu(
        "submit_sm",
        client=client,
        source_addr_ton=1,
        source_addr="821099998888",
        dest_addr_ton=1,
        destination_addr="82501234567",
        data_coding=8,
        short_message="你好".encode("utf-16-be"),
        registered_delivery=1,
        sar_msg_ref_num=9,
        sar_total_segments=2,
        sar_segment_seqnum=1,
    )
    pdu = decode(theirs.generate())
    assert isinstance(pdu, ShortMessage)
    assert pdu.sequence == 42
    assert pdu.source_addr == "821099998888" and pdu.destination_addr == "82501234567"
    assert pdu.short_message.decode("utf-16-be") == "你好"
    assert tlv_int(pdu.tlvs, Tag.SAR_MSG_REF_NUM) == 9
    assert tlv_int(pdu.tlvs, Tag.SAR_SEGMENT_SEQNUM) == 1


def test_smpplib_decodes_our_submit_sm_resp() -> None:
    frame = encode_message_resp(Cmd.SUBMIT_SM_RESP, 0, 3, "00ab")
    resp = smpplib.smpp.parse_pdu(frame, client=None)
    assert resp.command == "submit_sm_resp"
    assert resp.sequence == 3 and resp.message_id == b"00ab"


@pytest.mark.parametrize(
    "pdu",
    [
        Bind(Cmd.BIND_TRANSCEIVER, 1, 0, "carrier1", "pw1", "", 0x34, 1, 1, ""),
        BindResp(Cmd.BIND_TRANSCEIVER_RESP, 1, 0, "ansim", {Tag.SC_INTERFACE_VERSION: b"\x34"}),
        MessageResp(Cmd.SUBMIT_SM_RESP, 2, 0, "abc"),
        DataSm(
            Cmd.DATA_SM, 3, 0, "", 1, 1, "1", 1, 1, "2", 0, 1, 0, {Tag.MESSAGE_PAYLOAD: b"x" * 300}
        ),
        Pdu(Cmd.ENQUIRE_LINK, 4),
        Pdu(Cmd.UNBIND_RESP, 5),
        Pdu(Cmd.GENERIC_NACK, 6, 3),
    ],
)
def test_round_trip(pdu: Pdu) -> None:
    assert decode(encode(pdu)) == pdu


def test_error_response_without_body() -> None:
    resp = decode(struct.pack(">IIII", 16, Cmd.SUBMIT_SM_RESP, Status.RTHROTTLED, 9))
    assert isinstance(resp, MessageResp) and resp.status == Status.RTHROTTLED
    assert resp.message_id == ""


def test_unknown_command_and_bad_fields() -> None:
    with pytest.raises(PduError) as info:
        decode(struct.pack(">IIII", 16, 0x77, 0, 1))
    assert info.value.status == Status.RINVCMDID and info.value.sequence == 1
    # sm_length pointing past the end
    body = b"\0" + b"\1\1" + b"1\0" + b"\1\1" + b"2\0" + b"\0\0\0" + b"\0\0" + b"\0\0\0\0" + b"\xff"
    with pytest.raises(PduError) as info:
        decode(struct.pack(">IIII", 16 + len(body), Cmd.SUBMIT_SM, 0, 2) + body)
    assert info.value.status == Status.RINVMSGLEN and info.value.command_id == Cmd.SUBMIT_SM
    # an unterminated system_id longer than allowed
    body = b"x" * 40
    with pytest.raises(PduError) as info:
        decode(struct.pack(">IIII", 16 + len(body), Cmd.BIND_TRANSMITTER, 0, 3) + body)
    assert info.value.status == Status.RINVSYSID


@pytest.mark.parametrize(
    ("fields", "status"),
    [
        ((b"x" * 16, b"pw", b"", b"\x34\0\0", b""), Status.RINVSYSID),
        ((b"x" * 200, b"pw", b"", b"\x34\0\0", b""), Status.RINVSYSID),
        ((b"sys", b"p" * 9, b"", b"\x34\0\0", b""), Status.RINVPASWD),
        ((b"sys", b"pw", b"t" * 13, b"\x34\0\0", b""), Status.RINVSYSTYP),
    ],
)
def test_over_long_bind_fields_get_their_own_status(fields: tuple[bytes, ...], status: int) -> None:
    system_id, password, system_type, version_ton_npi, address_range = fields
    body = (
        system_id
        + b"\0"
        + password
        + b"\0"
        + system_type
        + b"\0"
        + version_ton_npi
        + address_range
        + b"\0"
    )
    for cid in (Cmd.BIND_TRANSMITTER, Cmd.BIND_RECEIVER, Cmd.BIND_TRANSCEIVER):
        with pytest.raises(PduError) as info:
            decode(struct.pack(">IIII", 16 + len(body), cid, 0, 3) + body)
        assert info.value.status == status and not info.value.fatal


def test_over_long_message_fields_get_their_own_status() -> None:
    def submit(
        service: bytes = b"",
        src: bytes = b"1",
        dst: bytes = b"2",
        sched: bytes = b"",
        validity: bytes = b"",
    ) -> bytes:
        body = (
            service
            + b"\0"
            + b"\1\1"
            + src
            + b"\0"
            + b"\1\1"
            + dst
            + b"\0"
            + b"\0\0\0"
            + sched
            + b"\0"
            + validity
            + b"\0"
            + b"\0\0\0\0\0"
        )
        return struct.pack(">IIII", 16 + len(body), Cmd.SUBMIT_SM, 0, 4) + body

    for frame, status in (
        (submit(service=b"s" * 6), Status.RINVSERTYP),
        (submit(src=b"1" * 21), Status.RINVSRCADR),
        (submit(dst=b"2" * 21), Status.RINVDSTADR),
        (submit(sched=b"0" * 17), Status.RINVSCHED),
        (submit(validity=b"0" * 17), Status.RINVEXPIRY),
    ):
        with pytest.raises(PduError) as info:
            decode(frame)
        assert info.value.status == status
    assert decode(submit(src=b"1" * 20, dst=b"2" * 20)).command_id == Cmd.SUBMIT_SM


def test_tlv_helpers() -> None:
    tlvs = {Tag.RECEIPTED_MESSAGE_ID: b"abc\0", Tag.MESSAGE_STATE: b"\x02"}
    assert tlv_str(tlvs, Tag.RECEIPTED_MESSAGE_ID) == "abc"
    assert tlv_int(tlvs, Tag.MESSAGE_STATE) == 2
    assert tlv_int(tlvs, Tag.SAR_MSG_REF_NUM, 0) == 0


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(
        [
            Cmd.SUBMIT_SM,
            Cmd.DELIVER_SM,
            Cmd.DATA_SM,
            Cmd.BIND_TRANSCEIVER,
            Cmd.SUBMIT_SM_RESP,
            Cmd.ALERT_NOTIFICATION,
            Cmd.OUTBIND,
        ]
    ),
    st.binary(max_size=300),
)
def test_random_bodies_decode_or_raise_pdu_error(cid: int, body: bytes) -> None:
    frame = struct.pack(">IIII", 16 + len(body), cid, 0, 1) + body
    try:
        pdu = decode(frame)
    except PduError as exc:
        assert exc.status != 0
    else:
        assert pdu.command_id == cid
