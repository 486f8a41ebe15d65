"""Turning a carrier's submit_sm into the submit_sm ansim sends upstream.

The number dialled is a virtual number X, the sender a real number C; the translation
store decides the real recipient and the number presented as source. Everything else
is carried unchanged (data_coding and the octets of the text, esm_class, validity),
except the concatenation reference of long messages (see :mod:`sms_smpp.concat`) and
the optional parameters, which pass through an allow-list so that nothing naming the
sender (callback numbers, subaddresses, vendor TLVs) reaches the recipient.
"""

from __future__ import annotations

from translate.numbers import NumberError, NumberPlan, national_form, normalise
from translate.refusals import REFUSALS

from .pdu import DataSm, ShortMessage, Tag

#: Optional parameters relayed with a message; all others are dropped.
MESSAGE_TLVS = frozenset(
    {
        Tag.MESSAGE_PAYLOAD,
        Tag.SAR_MSG_REF_NUM,
        Tag.SAR_TOTAL_SEGMENTS,
        Tag.SAR_SEGMENT_SEQNUM,
        Tag.PAYLOAD_TYPE,
        Tag.USER_MESSAGE_REFERENCE,
        Tag.SOURCE_PORT,
        Tag.DESTINATION_PORT,
        Tag.LANGUAGE_INDICATOR,
        Tag.MS_VALIDITY,
        Tag.DISPLAY_TIME,
        Tag.PRIVACY_INDICATOR,
        Tag.MORE_MESSAGES_TO_SEND,
        Tag.QOS_TIME_TO_LIVE,
        Tag.DEST_ADDR_SUBUNIT,
        Tag.MS_MSG_WAIT_FACILITIES,
        Tag.ALERT_ON_MESSAGE_DELIVERY,
        0x1203,  # sms_signal
    }
)
#: Optional parameters relayed with a delivery receipt.
RECEIPT_TLVS = frozenset({Tag.RECEIPTED_MESSAGE_ID, Tag.MESSAGE_STATE, Tag.NETWORK_ERROR_CODE})

#: SMPP status answered for each translation refusal reason (translate.refusals decides).
REFUSAL_STATUS = {reason: row.smpp_status for reason, row in REFUSALS.items()}

TON_INTERNATIONAL = 1
TON_NATIONAL = 2
NPI_ISDN = 1


def address_number(ton: int, addr: str, plan: NumberPlan) -> str | NumberError:
    """An SMPP address as a canonical number, by its type of number: international
    digits get their "+", anything else is read by ``plan`` (national numbers, China's
    700 national-only numbers included, with or without prefixes)."""
    if ton == TON_INTERNATIONAL and addr and addr[0] != "+":
        addr = "+" + addr
    return normalise(addr, plan)


def address_of(number: str) -> tuple[int, int, str]:
    """(TON, NPI, address) for a canonical number: international ISDN digits for an E.164
    number; national ISDN with the national number for a national-only one (China's
    700 range), which has no international form."""
    national = national_form(number)
    if national is not None:
        return TON_NATIONAL, NPI_ISDN, national[1]
    return TON_INTERNATIONAL, NPI_ISDN, number.lstrip("+")


def set_addresses(pdu: ShortMessage, source: str, destination: str) -> None:
    """Write canonical source and destination numbers as ISDN addresses (``address_of``)."""
    pdu.source_addr_ton, pdu.source_addr_npi, pdu.source_addr = address_of(source)
    pdu.dest_addr_ton, pdu.dest_addr_npi, pdu.destination_addr = address_of(destination)


def filter_tlvs(tlvs: dict[int, bytes], allowed: frozenset[int]) -> dict[int, bytes]:
    if not tlvs:
        return tlvs
    return {tag: value for tag, value in tlvs.items() if tag in allowed}


def from_data_sm(pdu: DataSm, command_id: int) -> ShortMessage:
    """A data_sm as the equivalent submit_sm/deliver_sm (text in message_payload)."""
    return ShortMessage(
        command_id,
        pdu.sequence,
        0,
        pdu.service_type,
        pdu.source_addr_ton,
        pdu.source_addr_npi,
        pdu.source_addr,
        pdu.dest_addr_ton,
        pdu.dest_addr_npi,
        pdu.destination_addr,
        pdu.esm_class,
        0,
        0,
        "",
        "",
        pdu.registered_delivery,
        0,
        pdu.data_coding,
        0,
        b"",
        pdu.tlvs,
    )


def user_data_length(pdu: ShortMessage) -> int:
    payload = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    return len(payload) if payload is not None else len(pdu.short_message)
