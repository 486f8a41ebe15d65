"""Delivery receipts: recognising them, reading their message id, rewriting them.

A receipt is a deliver_sm whose esm_class says so (SMSC delivery receipt or
intermediate notification), or that carries ``receipted_message_id``. Its text follows
SMPP 3.4 appendix B: ``id:IIII sub:001 dlvrd:001 submit date:YYMMDDhhmm done
date:YYMMDDhhmm stat:DELIVRD err:000 text:...``. Rewriting replaces the upstream's id by
the id ansim gave the sender, both in the TLV and in the text, and swaps the numbers so
that the sender sees the virtual number, never the recipient's real one.
"""

from __future__ import annotations

import re
import time

from .pdu import EsmClass, MessageState, ShortMessage, Tag, cstr_tlv, tlv_int, tlv_str

_ID_RE = re.compile(rb"id:([^ ]*)")
_STAT_RE = re.compile(rb"stat:([A-Z]+)")

STAT_TO_STATE = {
    b"ENROUTE": MessageState.ENROUTE,
    b"DELIVRD": MessageState.DELIVERED,
    b"EXPIRED": MessageState.EXPIRED,
    b"DELETED": MessageState.DELETED,
    b"UNDELIV": MessageState.UNDELIVERABLE,
    b"ACCEPTD": MessageState.ACCEPTED,
    b"UNKNOWN": MessageState.UNKNOWN,
    b"REJECTD": MessageState.REJECTED,
}
STATE_TO_STAT = {v: k.decode() for k, v in STAT_TO_STATE.items()}


def is_receipt(pdu: ShortMessage) -> bool:
    kind = pdu.esm_class & EsmClass.TYPE_MASK
    return (
        kind in (EsmClass.DELIVERY_RECEIPT, EsmClass.INTERMEDIATE_NOTIFICATION)
        or Tag.RECEIPTED_MESSAGE_ID in pdu.tlvs
    )


def receipt_ids(pdu: ShortMessage) -> list[str]:
    """Candidate upstream message ids of a receipt, most authoritative first."""
    ids: list[str] = []
    tlv = tlv_str(pdu.tlvs, Tag.RECEIPTED_MESSAGE_ID)
    if tlv:
        ids.append(tlv)
    m = _ID_RE.search(pdu.short_message)
    if m and m.group(1):
        text_id = m.group(1).decode("latin-1")
        if text_id not in ids:
            ids.append(text_id)
    # Some SMSCs answer with a hex id and write it in decimal in the receipt, or back.
    for found in list(ids):
        if found.isdigit():
            alt = f"{int(found):x}"
        else:
            try:
                alt = str(int(found, 16))
            except ValueError:
                continue
        if alt not in ids:
            ids.append(alt)
    return ids


def receipt_state(pdu: ShortMessage) -> int:
    """The message_state a receipt reports (TLV first, then the text's stat:)."""
    state = tlv_int(pdu.tlvs, Tag.MESSAGE_STATE)
    if state is not None:
        return state
    m = _STAT_RE.search(pdu.short_message)
    if m:
        return STAT_TO_STATE.get(m.group(1), MessageState.UNKNOWN)
    return MessageState.UNKNOWN


def rewrite_receipt(pdu: ShortMessage, our_id: str) -> None:
    """Put ``our_id`` in place of the upstream id, in the TLV and the text, in place."""
    if Tag.RECEIPTED_MESSAGE_ID in pdu.tlvs:
        pdu.tlvs[Tag.RECEIPTED_MESSAGE_ID] = cstr_tlv(our_id)
    if _ID_RE.search(pdu.short_message):
        pdu.short_message = _ID_RE.sub(
            b"id:" + our_id.encode("latin-1"), pdu.short_message, count=1
        )


def make_receipt_text(
    message_id: str, state: int, submitted: float, done: float, err: int = 0
) -> bytes:
    """A receipt text in the appendix B format, for receipts ansim writes itself."""
    fmt = "%y%m%d%H%M"
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if state == MessageState.DELIVERED else '000'}"
        f" submit date:{time.strftime(fmt, time.gmtime(submitted))}"
        f" done date:{time.strftime(fmt, time.gmtime(done))}"
        f" stat:{STATE_TO_STAT.get(state, 'UNKNOWN')} err:{err:03d} text:"
    ).encode()
