"""Long messages: reading and rewriting concatenation references (UDH and SAR).

A long message arrives as several submit_sm, each carrying its part number either in a
User Data Header (esm_class UDHI, information element 0x00 with an 8-bit reference or
0x08 with a 16-bit one) or in the SAR TLVs; or whole, in message_payload. The parts are
relayed one by one, unchanged except for the reference number: the recipient's phone
groups parts by (originator, reference), and every sender behind one virtual number
shares the same presented originator, so the reference is remapped to one derived from
the real sender. The remapping is a pure function, so parts that straddle a restart
still agree.

:func:`split_payload` cuts a message_payload too large for an upstream into the
concatenated parts a handset expects (UDH with an 8-bit reference, at most 140 octets
of user data each), on character boundaries of its data_coding; codings it cannot cut
safely are left whole (the relay then refuses the message).
"""

from __future__ import annotations

import dataclasses
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
    return Concat(int.from_bytes(ud[pos + 2 : pos + 4], "big"), ud[pos + 4], ud[pos + 5], 16, "udh")


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


_UDH_LEN = 6  # 05 00 03 ref total seq
#: data_coding values whose octets are one GSM 7-bit character each (SMSC default
#: alphabet, IA5, and the message-class group with the default alphabet)
_SEPTET_CODINGS = frozenset({0x00, 0x01, 0xF0, 0xF1, 0xF2, 0xF3})
#: one octet per character, or opaque octets
_OCTET_CODINGS = frozenset({0x02, 0x03, 0x04, 0x06, 0x07, 0xF4, 0xF5, 0xF6, 0xF7})
_UCS2 = 0x08
_KSC5601 = 0x0E
MAX_PARTS = 255


def _cuts(payload: bytes, data_coding: int) -> list[bytes] | None:
    """The payload cut into chunks that fit one part each, or None if it cannot be cut."""
    if data_coding in _SEPTET_CODINGS:
        size, unit = 153, 1  # 160 septets less the UDH's 7
    elif data_coding in _OCTET_CODINGS or data_coding in (_UCS2, _KSC5601):
        size, unit = 140 - _UDH_LEN, 2 if data_coding == _UCS2 else 1
    else:
        return None  # JIS, pictograms and the like: stateful or unknown widths
    if unit == 2 and len(payload) % 2:
        return None
    chunks = []
    pos = 0
    end = len(payload)
    while pos < end:
        cut = min(end, pos + size)
        if cut < end:
            if data_coding in _SEPTET_CODINGS and payload[cut - 1] == 0x1B:
                cut -= 1  # never split an escape from the character it extends
            elif data_coding == _UCS2 and 0xD8 <= payload[cut - 2] <= 0xDB:
                cut -= 2  # nor a surrogate pair
            elif data_coding == _KSC5601:
                i = pos
                while i < cut:
                    i += 2 if payload[i] >= 0x81 else 1  # lead byte of a double-byte char
                if i > cut:
                    cut = i - 2
        chunks.append(payload[pos:cut])
        pos = cut
    return chunks


def split_payload(pdu: ShortMessage, ref: int) -> list[ShortMessage] | None:
    """``pdu`` (user data in message_payload) as concatenated parts with reference ``ref``.

    None where that is not possible: no message_payload, a UDH or SAR parts already, a
    data_coding that cannot be cut on character boundaries, or over 255 parts.
    """
    payload = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    if (
        payload is None
        or pdu.short_message
        or pdu.esm_class & EsmClass.UDHI
        or Tag.SAR_MSG_REF_NUM in pdu.tlvs
    ):
        return None
    chunks = _cuts(payload, pdu.data_coding)
    if chunks is None or not 1 <= len(chunks) <= MAX_PARTS:
        return None
    total = len(chunks)
    tlvs = {tag: value for tag, value in pdu.tlvs.items() if tag != Tag.MESSAGE_PAYLOAD}
    return [
        dataclasses.replace(
            pdu,
            esm_class=pdu.esm_class | EsmClass.UDHI,
            tlvs=dict(tlvs),
            short_message=bytes((5, 0, 3, ref & 0xFF, total, i + 1)) + chunk,
        )
        for i, chunk in enumerate(chunks)
    ]
