"""Long messages: reading and rewriting concatenation references (UDH and SAR).

A long message arrives as several submit_sm, each carrying its part number either in a
User Data Header (esm_class UDHI, information element 0x00 with an 8-bit reference or
0x08 with a 16-bit one) or in the SAR TLVs; or whole, in message_payload. The parts are
relayed one by one, unchanged except for the reference number: the recipient's phone
groups parts by (originator, reference), and every sender behind one virtual number
shares the same presented originator, so the reference is remapped to one derived from
the real sender. The remapping is a pure function, so parts that straddle a restart
still agree.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from .pdu import EsmClass, ShortMessage, Tag


@dataclass(frozen=True, slots=True)
class Concat:
    """Where one part sits in its long message."""

    ref: int
    total: int
    seq: int
    bits: int  # 8 or 16
    via: str  # "udh" or "sar"


def _user_data(pdu: ShortMessage) -> tuple[bytes, bool]:
    """The user data and whether it lives in message_payload."""
    payload = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    if payload is not None:
        return payload, True
    return pdu.short_message, False


def _find_ie(ud: bytes) -> tuple[int, int] | None:
    """(offset of the concatenation IE, its identifier) within a UDH, or None."""
    if not ud:
        return None
    udhl = ud[0]
    end = 1 + udhl
    if end > len(ud):
        return None
    pos = 1
    while pos + 2 <= end:
        iei, iel = ud[pos], ud[pos + 1]
        if pos + 2 + iel > end:
            return None
        if (iei == 0x00 and iel == 3) or (iei == 0x08 and iel == 4):
            return pos, iei
        pos += 2 + iel
    return None


def concat_info(pdu: ShortMessage) -> Concat | None:
    """The part information of a submit_sm/deliver_sm, or None for a single message."""
    tlvs = pdu.tlvs
    if Tag.SAR_MSG_REF_NUM in tlvs:
        ref = int.from_bytes(tlvs[Tag.SAR_MSG_REF_NUM], "big")
        total = int.from_bytes(tlvs.get(Tag.SAR_TOTAL_SEGMENTS, b"\x01"), "big")
        seq = int.from_bytes(tlvs.get(Tag.SAR_SEGMENT_SEQNUM, b"\x01"), "big")
        return Concat(ref, total, seq, 16, "sar")
    if not pdu.esm_class & EsmClass.UDHI:
        return None
    ud, _ = _user_data(pdu)
    found = _find_ie(ud)
    if found is None:
        return None
    pos, iei = found
    if iei == 0x00:
        return Concat(ud[pos + 2], ud[pos + 3], ud[pos + 4], 8, "udh")
    return Concat(int.from_bytes(ud[pos + 2 : pos + 4], "big"), ud[pos + 4], ud[pos + 5], 16,
                  "udh")


def derived_ref(sender: str, ref: int, bits: int) -> int:
    """The reference presented to the recipient for a sender's own reference."""
    h = zlib.crc32(f"{sender}\0{ref}".encode())
    return h & 0xFF if bits == 8 else h & 0xFFFF


def rewrite_ref(pdu: ShortMessage, sender: str) -> Concat | None:
    """Replace the concatenation reference in place by ``derived_ref(sender, ...)``."""
    info = concat_info(pdu)
    if info is None:
        return None
    new = derived_ref(sender, info.ref, info.bits)
    if info.via == "sar":
        pdu.tlvs[Tag.SAR_MSG_REF_NUM] = new.to_bytes(2, "big")
    else:
        ud, in_payload = _user_data(pdu)
        found = _find_ie(ud)
        assert found is not None
        pos, iei = found
        raw = bytearray(ud)
        if iei == 0x00:
            raw[pos + 2] = new
        else:
            raw[pos + 2 : pos + 4] = new.to_bytes(2, "big")
        if in_payload:
            pdu.tlvs[Tag.MESSAGE_PAYLOAD] = bytes(raw)
        else:
            pdu.short_message = bytes(raw)
    return Concat(new, info.total, info.seq, info.bits, info.via)


def split_udh(text: bytes, ref: int, max_part: int = 134) -> list[bytes]:
    """Split octets into parts each prefixed with an 8-bit-reference UDH (for senders/tests)."""
    chunks = [text[i : i + max_part] for i in range(0, len(text), max_part)] or [b""]
    total = len(chunks)
    return [bytes((5, 0, 3, ref & 0xFF, total, i + 1)) + c for i, c in enumerate(chunks)]
