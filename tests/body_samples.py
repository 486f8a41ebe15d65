"""Bodies as carriers, PBXs and gateways send them, with a party's real number in them:
SIP-I/SIP-T ISUP messages (ITU-T Q.763, numbers in BCD), multipart bodies that hold
them beside the SDP, PIDF-LO location (RFC 4119/5491), INFO bodies of several kinds,
and SDPs with the attributes such equipment writes.

Used by the sans-IO body tests and by the call tests that send them through ansim.
"""

from __future__ import annotations

from call_env import Party


def bcd(digits: str) -> tuple[int, bytes]:
    """(odd indicator, digits packed as ISUP writes them: first digit in the low nibble,
    a 0 filler after an odd last digit)."""
    out = bytearray()
    for i in range(0, len(digits), 2):
        low = int(digits[i])
        high = int(digits[i + 1]) if i + 1 < len(digits) else 0
        out.append(low | high << 4)
    return len(digits) % 2, bytes(out)


def _number(digits: str, nai: int, second: int) -> bytes:
    """A Q.763 number parameter's content: odd/even and nature of address, the octet of
    numbering plan / presentation / screening, the BCD digits."""
    odd, packed = bcd(digits)
    return bytes([odd << 7 | nai, second]) + packed


def isup_iam(calling: Party, called: Party) -> bytes:
    """An Initial Address Message: called party number (international, mandatory
    variable part), calling party number and a generic number (optional part)."""
    called_number = _number(called.digits, 0x04, 0x10)  # international, ISDN plan
    calling_number = _number(calling.digits, 0x04, 0x13)  # presentation allowed, network
    generic = bytes([0x06]) + _number(calling.national, 0x03, 0x10)  # "additional calling"
    fixed = bytes(
        [
            0x01,  # message type: IAM
            0x00,  # nature of connection indicators
            0x20,
            0x01,  # forward call indicators (ISDN user part all the way)
            0x0A,  # calling party's category: ordinary subscriber
            0x00,  # transmission medium requirement: speech
        ]
    )
    optional = (
        bytes([0x0A, len(calling_number)])
        + calling_number
        + bytes([0xC0, len(generic)])
        + generic
        + b"\x00"  # end of optional parameters
    )
    # Pointers: to the called party number's length octet, to the optional part.
    return fixed + bytes([2, 2 + len(called_number), len(called_number)]) + called_number + optional


def isup_acm(called: Party) -> bytes:
    """An Address Complete Message with the called party in a generic number."""
    generic = bytes([0x05]) + _number(called.short, 0x03, 0x10)
    return bytes([0x06, 0x16, 0x14, 0x01]) + bytes([0xC0, len(generic)]) + generic + b"\x00"


def isup_anm(called: Party) -> bytes:
    """An Answer Message with the connected number (odd length: the national form)."""
    connected = _number(called.national, 0x03, 0x13)
    return bytes([0x09, 0x01]) + bytes([0x21, len(connected)]) + connected + b"\x00"


def sdp_offer(party: Party, host: str = "192.0.2.10", port: int = 40000, version: int = 1) -> bytes:
    """An SDP with the party's number wherever equipment writes one, and vendor lines."""
    n, e = party.national, party.e164
    return (
        "v=0\r\n"
        f"o={n} 8000 {version} IN IP4 {host}\r\n"
        f"s=SIP-I gateway {party.dashed}\r\n"
        f"i={party.spaced}\r\n"
        f"c=IN IP4 {host}\r\n"
        "t=0 0\r\n"
        f"a=X-caller:{e}\r\n"
        f"m=audio {port} RTP/AVP 8 0 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
        "a=ptime:20\r\n"
        f"a=label:{n}\r\n"
        f"a=tool:gw-{party.digits}\r\n"
        f"a=ssrc:1234567 cname:{e}@{host}\r\n"
        "a=sendrecv\r\n"
    ).encode()


def multipart(parts: list[tuple[bytes, bytes]], boundary: str = "unique-boundary-1") -> bytes:
    """A multipart body of (part headers, content), with a preamble and an epilogue."""
    b = boundary.encode()
    out = [b"This is a preamble that MIME readers ignore.\r\n"]
    for headers, content in parts:
        out.append(b"--" + b + b"\r\n" + headers + b"\r\n" + content + b"\r\n")
    out.append(b"--" + b + b"--\r\nand an epilogue\r\n")
    return b"".join(out)


ISUP_HEADERS = (
    b"Content-Type: application/ISUP; version=itu-t92+; base=itu-t92+\r\n"
    b"Content-Disposition: signal; handling=optional\r\n"
)


def sip_i(sdp: bytes, isup: bytes, boundary: str = "unique-boundary-1") -> bytes:
    """SIP-I (ITU-T Q.1912.5): the SDP and the ISUP message in one multipart/mixed."""
    return multipart([(b"Content-Type: application/sdp\r\n", sdp), (ISUP_HEADERS, isup)], boundary)


def pidf_lo(party: Party) -> bytes:
    """A PIDF-LO location object (RFC 4119, civic address of RFC 5139) of the party."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\r\n'
        '<presence xmlns="urn:ietf:params:xml:ns:pidf"'
        ' xmlns:gp="urn:ietf:params:xml:ns:pidf:geopriv10"'
        ' xmlns:ca="urn:ietf:params:xml:ns:pidf:geopriv10:civicAddr"'
        f' entity="pres:{party.e164}@example.com">\r\n'
        f'  <tuple id="{party.national}">\r\n'
        "    <status><gp:geopriv><gp:location-info><ca:civicAddress>\r\n"
        "      <ca:country>KR</ca:country><ca:A1>Seoul</ca:A1>\r\n"
        f"      <ca:NAM>{party.dashed}</ca:NAM>\r\n"
        "    </ca:civicAddress></gp:location-info>\r\n"
        "    <gp:usage-rules/></gp:geopriv></status>\r\n"
        f"    <contact>tel:{party.e164}</contact>\r\n"
        "  </tuple>\r\n"
        "</presence>\r\n"
    ).encode()


def with_location(sdp: bytes, party: Party) -> bytes:
    """SDP and PIDF-LO, as an emergency-capable PBX or an IMS sends them (RFC 6442)."""
    return multipart(
        [
            (b"Content-Type: application/sdp\r\n", sdp),
            (
                b"Content-Type: application/pidf+xml\r\n"
                b"Content-ID: <" + party.national.encode() + b"@example.com>\r\n",
                pidf_lo(party),
            ),
        ],
        "boundary1",
    )


def info_bodies(party: Party) -> list[tuple[str, bytes]]:
    """(Content-Type, body) of INFO requests that are not DTMF, each with the number."""
    return [
        ("text/plain", f"call from {party.dashed}\r\n".encode()),
        ("application/broadsoft", f"event=hold\r\ncaller={party.e164}\r\n".encode()),
        ("application/x-vendor-caller-id", party.national.encode()),
        ("application/vnd.etsi.aoc+xml", f"<aoc><number>{party.e164}</number></aoc>".encode()),
        ("application/pidf+xml", pidf_lo(party)),
        ("application/ISUP;version=itu-t92+", isup_iam(party, party)),
        ("message/sipfrag", f"SIP/2.0 200 OK\r\nFrom: <sip:{party.e164}@x>\r\n".encode()),
    ]
