"""SMPP 3.4 PDUs: the data model, and encoding to and decoding from bytes.

Pure functions over bytes; no I/O. ``decode(frame)`` turns one complete frame (header
included) into a PDU object or raises :class:`PduError` carrying the SMPP status that
the peer should be answered with. ``encode(pdu)`` is its inverse. Optional parameters
(TLVs) are kept raw as ``{tag: bytes}`` in arrival order; helpers read the integer and
string ones in use.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

HEADER = struct.Struct(">IIII")
HEADER_LEN = 16
#: Largest frame accepted; SMPP sets no bound, message_payload allows 64 KiB.
MAX_FRAME = 70_000


class Cmd:
    """command_id values."""

    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    QUERY_SM = 0x00000003
    QUERY_SM_RESP = 0x80000003
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    REPLACE_SM = 0x00000007
    REPLACE_SM_RESP = 0x80000007
    CANCEL_SM = 0x00000008
    CANCEL_SM_RESP = 0x80000008
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    OUTBIND = 0x0000000B
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015
    SUBMIT_MULTI = 0x00000021
    SUBMIT_MULTI_RESP = 0x80000021
    ALERT_NOTIFICATION = 0x00000102
    DATA_SM = 0x00000103
    DATA_SM_RESP = 0x80000103


RESP_BIT = 0x80000000

COMMAND_NAMES: dict[int, str] = {
    value: name.lower() for name, value in vars(Cmd).items() if name.isupper()
}

BIND_COMMANDS = frozenset({Cmd.BIND_RECEIVER, Cmd.BIND_TRANSMITTER, Cmd.BIND_TRANSCEIVER})


class Status:
    """command_status values (SMPP 3.4 section 5.1.3) used by ansim."""

    ROK = 0x00
    RINVMSGLEN = 0x01
    RINVCMDLEN = 0x02
    RINVCMDID = 0x03
    RINVBNDSTS = 0x04
    RALYBND = 0x05
    RINVREGDLVFLG = 0x07
    RSYSERR = 0x08
    RINVSRCADR = 0x0A
    RINVDSTADR = 0x0B
    RINVMSGID = 0x0C
    RBINDFAIL = 0x0D
    RINVPASWD = 0x0E
    RINVSYSID = 0x0F
    RMSGQFUL = 0x14
    RINVSERTYP = 0x15
    RINVSYSTYP = 0x53
    RINVESMCLASS = 0x43
    RSUBMITFAIL = 0x45
    RINVSRCTON = 0x48
    RINVDSTTON = 0x50
    RTHROTTLED = 0x58
    RINVSCHED = 0x61
    RINVEXPIRY = 0x62
    RX_T_APPN = 0x64
    RX_P_APPN = 0x65
    RX_R_APPN = 0x66
    RINVOPTPARSTREAM = 0xC0
    ROPTPARNOTALLWD = 0xC1
    RINVPARLEN = 0xC2
    RMISSINGOPTPARAM = 0xC3
    RINVOPTPARAMVAL = 0xC4
    RDELIVERYFAILURE = 0xFE
    RUNKNOWNERR = 0xFF


#: Statuses after which resending the same PDU later may succeed.
TRANSIENT_STATUSES = frozenset(
    {
        Status.RSYSERR,
        Status.RMSGQFUL,
        Status.RTHROTTLED,
        Status.RX_T_APPN,
        Status.RDELIVERYFAILURE,
        Status.RUNKNOWNERR,
        Status.RINVBNDSTS,
    }
)


class Tag:
    """Optional parameter (TLV) tags."""

    DEST_ADDR_SUBUNIT = 0x0005
    SOURCE_ADDR_SUBUNIT = 0x000D
    QOS_TIME_TO_LIVE = 0x0017
    PAYLOAD_TYPE = 0x0019
    ADDITIONAL_STATUS_INFO_TEXT = 0x001D
    RECEIPTED_MESSAGE_ID = 0x001E
    MS_MSG_WAIT_FACILITIES = 0x0030
    PRIVACY_INDICATOR = 0x0201
    SOURCE_SUBADDRESS = 0x0202
    DEST_SUBADDRESS = 0x0203
    USER_MESSAGE_REFERENCE = 0x0204
    USER_RESPONSE_CODE = 0x0205
    SOURCE_PORT = 0x020A
    DESTINATION_PORT = 0x020B
    SAR_MSG_REF_NUM = 0x020C
    LANGUAGE_INDICATOR = 0x020D
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    CALLBACK_NUM_PRES_IND = 0x0302
    CALLBACK_NUM_ATAG = 0x0303
    NUMBER_OF_MESSAGES = 0x0304
    CALLBACK_NUM = 0x0381
    DPF_RESULT = 0x0420
    SET_DPF = 0x0421
    MS_AVAILABILITY_STATUS = 0x0422
    NETWORK_ERROR_CODE = 0x0423
    MESSAGE_PAYLOAD = 0x0424
    DELIVERY_FAILURE_REASON = 0x0425
    MORE_MESSAGES_TO_SEND = 0x0426
    MESSAGE_STATE = 0x0427
    USSD_SERVICE_OP = 0x0501
    DISPLAY_TIME = 0x1201
    MS_VALIDITY = 0x1204
    ALERT_ON_MESSAGE_DELIVERY = 0x130C
    ITS_REPLY_TYPE = 0x1380
    ITS_SESSION_INFO = 0x1383


class EsmClass:
    """esm_class bits."""

    TYPE_MASK = 0x3C
    DELIVERY_RECEIPT = 0x04
    INTERMEDIATE_NOTIFICATION = 0x20
    UDHI = 0x40


class MessageState:
    """message_state TLV values."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8


class PduError(Exception):
    """A frame that cannot be accepted; ``status`` is the SMPP error to answer with.

    ``command_id`` and ``sequence`` are those of the offending frame when the header
    could be read (0 otherwise); ``fatal`` means the byte stream cannot be resynchronised.
    """

    def __init__(
        self, status: int, detail: str, command_id: int = 0, sequence: int = 0, fatal: bool = False
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.command_id = command_id
        self.sequence = sequence
        self.fatal = fatal


@dataclass(slots=True)
class Pdu:
    """A PDU with no body: generic_nack, unbind(_resp), enquire_link(_resp)."""

    command_id: int
    sequence: int = 0
    status: int = 0

    @property
    def name(self) -> str:
        return COMMAND_NAMES.get(self.command_id, hex(self.command_id))


@dataclass(slots=True)
class Bind(Pdu):
    """bind_transmitter, bind_receiver or bind_transceiver."""

    system_id: str = ""
    password: str = ""
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


@dataclass(slots=True)
class BindResp(Pdu):
    """The response to a bind."""

    system_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class Outbind(Pdu):
    """outbind: an SMSC asking an ESME to bind to it."""

    system_id: str = ""
    password: str = ""


@dataclass(slots=True)
class ShortMessage(Pdu):
    """submit_sm or deliver_sm (the two share one body layout)."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    short_message: bytes = b""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class DataSm(Pdu):
    """data_sm: the message travels in the message_payload TLV."""

    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    destination_addr: str = ""
    esm_class: int = 0
    registered_delivery: int = 0
    data_coding: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class MessageResp(Pdu):
    """submit_sm_resp, deliver_sm_resp or data_sm_resp."""

    message_id: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


@dataclass(slots=True)
class AlertNotification(Pdu):
    """alert_notification: a mobile became available."""

    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    esme_addr_ton: int = 0
    esme_addr_npi: int = 0
    esme_addr: str = ""
    tlvs: dict[int, bytes] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# TLV helpers


def tlv_int(tlvs: dict[int, bytes], tag: int, default: int | None = None) -> int | None:
    """An unsigned big-endian integer TLV (1, 2 or 4 bytes), or ``default``."""
    raw = tlvs.get(tag)
    if raw is None or not raw:
        return default
    return int.from_bytes(raw, "big")


def tlv_str(tlvs: dict[int, bytes], tag: int) -> str | None:
    """A C-octet string TLV (trailing NUL optional), or None."""
    raw = tlvs.get(tag)
    if raw is None:
        return None
    if raw.endswith(b"\0"):
        raw = raw[:-1]
    return raw.decode("latin-1")


def cstr_tlv(value: str) -> bytes:
    """Encode a C-octet string TLV value."""
    return value.encode("latin-1") + b"\0"


# ---------------------------------------------------------------------------
# Decoding

_B = struct.Struct(">B")
_BB = struct.Struct(">BB")
_TLV = struct.Struct(">HH")
_SM_MID = struct.Struct(">BBB")  # esm_class, protocol_id, priority_flag
_SM_TAIL = struct.Struct(">BBBBB")  # registered_delivery .. sm_length


def _cstr(
    body: bytes, pos: int, limit: int, what: str, too_long: int = Status.RINVPARLEN
) -> tuple[str, int]:
    """Read a NUL-terminated string of at most ``limit`` bytes including the NUL.

    A string longer than that is answered ``too_long`` (the field's own error code where
    SMPP has one); one that runs to the end of the PDU unterminated, ESME_RINVMSGLEN.
    """
    try:
        end = body.index(0, pos, pos + limit)
    except ValueError:
        if len(body) >= pos + limit:
            raise PduError(too_long, f"{what}: longer than {limit - 1}") from None
        raise PduError(Status.RINVMSGLEN, f"{what}: unterminated") from None
    return body[pos:end].decode("latin-1"), end + 1


def _tlvs(body: bytes, pos: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    end = len(body)
    while pos < end:
        if pos + 4 > end:
            raise PduError(Status.RINVOPTPARSTREAM, "truncated TLV header")
        tag, length = _TLV.unpack_from(body, pos)
        pos += 4
        if pos + length > end:
            raise PduError(Status.RINVPARLEN, f"TLV 0x{tag:04x} runs past the PDU")
        out[tag] = body[pos : pos + length]
        pos += length
    return out


def _addr(
    body: bytes, pos: int, limit: int, what: str, too_long: int = Status.RINVPARLEN
) -> tuple[int, int, str, int]:
    if pos + 2 > len(body):
        raise PduError(Status.RINVMSGLEN, f"{what}: truncated")
    ton, npi = _BB.unpack_from(body, pos)
    addr, pos = _cstr(body, pos + 2, limit, what, too_long)
    return ton, npi, addr, pos


def _decode_short_message(cid: int, seq: int, status: int, body: bytes) -> ShortMessage:
    service_type, pos = _cstr(body, 0, 6, "service_type", Status.RINVSERTYP)
    ston, snpi, src, pos = _addr(body, pos, 21, "source_addr", Status.RINVSRCADR)
    dton, dnpi, dst, pos = _addr(body, pos, 21, "destination_addr", Status.RINVDSTADR)
    if pos + 3 > len(body):
        raise PduError(Status.RINVMSGLEN, "truncated before esm_class")
    esm, pid, prio = _SM_MID.unpack_from(body, pos)
    sched, pos = _cstr(body, pos + 3, 17, "schedule_delivery_time", Status.RINVSCHED)
    validity, pos = _cstr(body, pos, 17, "validity_period", Status.RINVEXPIRY)
    if pos + 5 > len(body):
        raise PduError(Status.RINVMSGLEN, "truncated before short_message")
    reg, rep, dcs, defid, sm_len = _SM_TAIL.unpack_from(body, pos)
    pos += 5
    if pos + sm_len > len(body):
        raise PduError(Status.RINVMSGLEN, "sm_length runs past the PDU")
    sm = body[pos : pos + sm_len]
    tlvs = _tlvs(body, pos + sm_len) if pos + sm_len < len(body) else {}
    if sm_len and Tag.MESSAGE_PAYLOAD in tlvs:
        raise PduError(Status.RINVMSGLEN, "both short_message and message_payload")
    return ShortMessage(
        cid,
        seq,
        status,
        service_type,
        ston,
        snpi,
        src,
        dton,
        dnpi,
        dst,
        esm,
        pid,
        prio,
        sched,
        validity,
        reg,
        rep,
        dcs,
        defid,
        sm,
        tlvs,
    )


def _decode_data_sm(cid: int, seq: int, status: int, body: bytes) -> DataSm:
    service_type, pos = _cstr(body, 0, 6, "service_type", Status.RINVSERTYP)
    ston, snpi, src, pos = _addr(body, pos, 65, "source_addr", Status.RINVSRCADR)
    dton, dnpi, dst, pos = _addr(body, pos, 65, "destination_addr", Status.RINVDSTADR)
    if pos + 3 > len(body):
        raise PduError(Status.RINVMSGLEN, "truncated data_sm")
    esm, reg, dcs = _SM_MID.unpack_from(body, pos)
    return DataSm(
        cid,
        seq,
        status,
        service_type,
        ston,
        snpi,
        src,
        dton,
        dnpi,
        dst,
        esm,
        reg,
        dcs,
        _tlvs(body, pos + 3),
    )


def _decode_bind(cid: int, seq: int, status: int, body: bytes) -> Bind:
    system_id, pos = _cstr(body, 0, 16, "system_id", Status.RINVSYSID)
    password, pos = _cstr(body, pos, 9, "password", Status.RINVPASWD)
    system_type, pos = _cstr(body, pos, 13, "system_type", Status.RINVSYSTYP)
    if pos + 3 > len(body):
        raise PduError(Status.RINVMSGLEN, "truncated bind")
    version, ton, npi = _SM_MID.unpack_from(body, pos)
    address_range, pos = _cstr(body, pos + 3, 41, "address_range")
    return Bind(
        cid, seq, status, system_id, password, system_type, version, ton, npi, address_range
    )


def _decode_bind_resp(cid: int, seq: int, status: int, body: bytes) -> BindResp:
    if not body:  # an error response may carry no body
        return BindResp(cid, seq, status)
    system_id, pos = _cstr(body, 0, 16, "system_id")
    return BindResp(cid, seq, status, system_id, _tlvs(body, pos))


def _decode_message_resp(cid: int, seq: int, status: int, body: bytes) -> MessageResp:
    if not body:
        return MessageResp(cid, seq, status)
    message_id, pos = _cstr(body, 0, 65, "message_id")
    return MessageResp(cid, seq, status, message_id, _tlvs(body, pos) if pos < len(body) else {})


def _decode_outbind(cid: int, seq: int, status: int, body: bytes) -> Outbind:
    system_id, pos = _cstr(body, 0, 16, "system_id")
    password, pos = _cstr(body, pos, 9, "password")
    return Outbind(cid, seq, status, system_id, password)


def _decode_alert(cid: int, seq: int, status: int, body: bytes) -> AlertNotification:
    ston, snpi, src, pos = _addr(body, 0, 65, "source_addr")
    eton, enpi, esme, pos = _addr(body, pos, 65, "esme_addr")
    return AlertNotification(cid, seq, status, ston, snpi, src, eton, enpi, esme, _tlvs(body, pos))


def _decode_empty(cid: int, seq: int, status: int, body: bytes) -> Pdu:
    if body and cid != Cmd.GENERIC_NACK:
        raise PduError(Status.RINVCMDLEN, "unexpected body")
    return Pdu(cid, seq, status)


_DECODERS = {
    Cmd.SUBMIT_SM: _decode_short_message,
    Cmd.DELIVER_SM: _decode_short_message,
    Cmd.SUBMIT_SM_RESP: _decode_message_resp,
    Cmd.DELIVER_SM_RESP: _decode_message_resp,
    Cmd.DATA_SM: _decode_data_sm,
    Cmd.DATA_SM_RESP: _decode_message_resp,
    Cmd.BIND_RECEIVER: _decode_bind,
    Cmd.BIND_TRANSMITTER: _decode_bind,
    Cmd.BIND_TRANSCEIVER: _decode_bind,
    Cmd.BIND_RECEIVER_RESP: _decode_bind_resp,
    Cmd.BIND_TRANSMITTER_RESP: _decode_bind_resp,
    Cmd.BIND_TRANSCEIVER_RESP: _decode_bind_resp,
    Cmd.OUTBIND: _decode_outbind,
    Cmd.ALERT_NOTIFICATION: _decode_alert,
    Cmd.UNBIND: _decode_empty,
    Cmd.UNBIND_RESP: _decode_empty,
    Cmd.ENQUIRE_LINK: _decode_empty,
    Cmd.ENQUIRE_LINK_RESP: _decode_empty,
    Cmd.GENERIC_NACK: _decode_empty,
}


def frame_length(buf: bytes | bytearray | memoryview, pos: int = 0) -> int | None:
    """The command_length of the frame starting at ``pos``, or None if under 4 bytes.

    Raises a fatal PduError if the length cannot be a valid frame.
    """
    if len(buf) - pos < 4:
        return None
    (length,) = struct.unpack_from(">I", buf, pos)
    if length < HEADER_LEN or length > MAX_FRAME:
        raise PduError(Status.RINVCMDLEN, f"command_length {length}", fatal=True)
    return length


def decode(frame: bytes) -> Pdu:
    """Decode one complete frame; raise PduError with the status to answer with."""
    length, cid, status, seq = HEADER.unpack_from(frame, 0)
    if length != len(frame):
        raise PduError(Status.RINVCMDLEN, "command_length mismatch", cid, seq, fatal=True)
    decoder = _DECODERS.get(cid)
    if decoder is None:
        raise PduError(Status.RINVCMDID, f"command_id 0x{cid:08x} not supported", cid, seq)
    try:
        return decoder(cid, seq, status, frame[HEADER_LEN:])
    except PduError as exc:
        exc.command_id, exc.sequence = cid, seq
        raise
    except (struct.error, UnicodeDecodeError, IndexError, ValueError) as exc:
        raise PduError(
            Status.RSYSERR, f"malformed {COMMAND_NAMES.get(cid)}: {exc}", cid, seq
        ) from None


# ---------------------------------------------------------------------------
# Encoding


def _c(value: str) -> bytes:
    return value.encode("latin-1") + b"\0"


def _encode_tlvs(tlvs: dict[int, bytes]) -> bytes:
    if not tlvs:
        return b""
    return b"".join(_TLV.pack(tag, len(value)) + value for tag, value in tlvs.items())


def encode_short_message_body(p: ShortMessage) -> bytes:
    """The body of a submit_sm/deliver_sm, without the 16-byte header."""
    sm = p.short_message
    return b"".join(
        (
            _c(p.service_type),
            _BB.pack(p.source_addr_ton, p.source_addr_npi),
            _c(p.source_addr),
            _BB.pack(p.dest_addr_ton, p.dest_addr_npi),
            _c(p.destination_addr),
            _SM_MID.pack(p.esm_class, p.protocol_id, p.priority_flag),
            _c(p.schedule_delivery_time),
            _c(p.validity_period),
            _SM_TAIL.pack(
                p.registered_delivery,
                p.replace_if_present_flag,
                p.data_coding,
                p.sm_default_msg_id,
                len(sm),
            ),
            sm,
            _encode_tlvs(p.tlvs),
        )
    )


def _body(p: Pdu) -> bytes:
    if isinstance(p, ShortMessage):
        return encode_short_message_body(p)
    if isinstance(p, MessageResp):
        if p.status and not p.message_id and not p.tlvs:
            return b""
        return _c(p.message_id) + _encode_tlvs(p.tlvs)
    if isinstance(p, DataSm):
        return b"".join(
            (
                _c(p.service_type),
                _BB.pack(p.source_addr_ton, p.source_addr_npi),
                _c(p.source_addr),
                _BB.pack(p.dest_addr_ton, p.dest_addr_npi),
                _c(p.destination_addr),
                _SM_MID.pack(p.esm_class, p.registered_delivery, p.data_coding),
                _encode_tlvs(p.tlvs),
            )
        )
    if isinstance(p, Bind):
        return b"".join(
            (
                _c(p.system_id),
                _c(p.password),
                _c(p.system_type),
                _SM_MID.pack(p.interface_version, p.addr_ton, p.addr_npi),
                _c(p.address_range),
            )
        )
    if isinstance(p, BindResp):
        return _c(p.system_id) + _encode_tlvs(p.tlvs)
    if isinstance(p, Outbind):
        return _c(p.system_id) + _c(p.password)
    if isinstance(p, AlertNotification):
        return b"".join(
            (
                _BB.pack(p.source_addr_ton, p.source_addr_npi),
                _c(p.source_addr),
                _BB.pack(p.esme_addr_ton, p.esme_addr_npi),
                _c(p.esme_addr),
                _encode_tlvs(p.tlvs),
            )
        )
    return b""


def encode(p: Pdu) -> bytes:
    """Encode a PDU into one frame."""
    body = _body(p)
    return HEADER.pack(HEADER_LEN + len(body), p.command_id, p.status, p.sequence) + body


def encode_frame(command_id: int, status: int, sequence: int, body: bytes) -> bytes:
    """A frame from a pre-encoded body (the relay stores bodies and only renumbers them)."""
    return HEADER.pack(HEADER_LEN + len(body), command_id, status, sequence) + body


def encode_message_resp(command_id: int, status: int, sequence: int, message_id: str) -> bytes:
    """Fast path for submit_sm_resp / deliver_sm_resp / data_sm_resp."""
    if status and not message_id:
        return HEADER.pack(HEADER_LEN, command_id, status, sequence)
    mid = message_id.encode("latin-1")
    return HEADER.pack(HEADER_LEN + len(mid) + 1, command_id, status, sequence) + mid + b"\0"


def response_id(command_id: int) -> int:
    """The command_id of the response to a request."""
    return command_id | RESP_BIT


def is_response(command_id: int) -> bool:
    return bool(command_id & RESP_BIT)
