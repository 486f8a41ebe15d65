"""The SDP attributes ansim writes toward a leg, and how each is parsed (sans-IO).

``ATTRIBUTES`` is the allow-list: attribute name -> (spelling written, parser, levels).
A parser turns the received value into a typed attribute (payload types and clock rates
as integers, encoding names as tokens, fmtp as named codec parameters, words from fixed
sets) or None; ``Attribute.line()`` serializes the typed fields. What is not in the
table, or does not parse, is not written. The comment above the table says why each
kept attribute names no one, and why the usual others are left out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .sdp_fields import (
    ALPHA,
    BASE64,
    DIGITS,
    HEX,
    NUMBER_DIGITS,
    Address,
    is_token,
    is_word,
    only,
    parse_connection,
    uint,
)


class Attribute:
    """One ``a=`` line of the model; ``line()`` serializes it from its parsed fields."""

    __slots__ = ()

    def line(self) -> bytes:
        raise NotImplementedError


class Flag(Attribute):
    """A property attribute without a value (``a=sendrecv``, ``a=rtcp-mux``)."""

    __slots__ = ("name",)

    def __init__(self, name: bytes) -> None:
        self.name = name

    def line(self) -> bytes:
        return b"a=" + self.name


class Number(Attribute):
    """``a=<name>:<integer>`` (``a=ptime:20``, ``a=T38FaxVersion:0``)."""

    __slots__ = ("name", "value")

    def __init__(self, name: bytes, value: int) -> None:
        self.name = name
        self.value = value

    def line(self) -> bytes:
        return b"a=%s:%d" % (self.name, self.value)


class Word(Attribute):
    """``a=<name>:<one of a fixed set of words>`` (``a=setup:actpass``)."""

    __slots__ = ("name", "value")

    def __init__(self, name: bytes, value: bytes) -> None:
        self.name = name
        self.value = value

    def line(self) -> bytes:
        return b"a=" + self.name + b":" + self.value


class Rtpmap(Attribute):
    """``a=rtpmap:<payload type> <encoding>/<clock rate>[/<channels>]``."""

    __slots__ = ("channels", "clock", "encoding", "pt")

    def __init__(self, pt: int, encoding: bytes, clock: int, channels: int) -> None:
        self.pt = pt
        self.encoding = encoding
        self.clock = clock
        self.channels = channels  # 0: not given

    def line(self) -> bytes:
        if self.channels:
            return b"a=rtpmap:%d %s/%d/%d" % (self.pt, self.encoding, self.clock, self.channels)
        return b"a=rtpmap:%d %s/%d" % (self.pt, self.encoding, self.clock)


class Fmtp(Attribute):
    """``a=fmtp:<format> <parameters>``: named codec parameters, or the bare event or
    payload type lists of telephone-event (``0-15``) and RED (``96/96``)."""

    __slots__ = ("fmt", "params")

    def __init__(self, fmt: bytes, params: list[tuple[bytes, bytes]]) -> None:
        self.fmt = fmt
        self.params = params  # (name, value); an empty name for a bare list

    def line(self) -> bytes:
        items = [name + b"=" + value if name else value for name, value in self.params]
        return b"a=fmtp:" + self.fmt + b" " + b";".join(items)


class Rtcp(Attribute):
    """``a=rtcp:<port> [IN IP4|IP6 <address>]`` (RFC 3605)."""

    __slots__ = ("address", "port")

    def __init__(self, port: int, address: Address | None) -> None:
        self.port = port
        self.address = address

    def line(self) -> bytes:
        if self.address is None:
            return b"a=rtcp:%d" % self.port
        return b"a=rtcp:%d IN %s %s" % (self.port, self.address[0], self.address[1])


class RtcpFb(Attribute):
    """``a=rtcp-fb:<payload type|*> <type> [<parameters>]`` (RFC 4585)."""

    __slots__ = ("fmt", "kind", "params")

    def __init__(self, fmt: bytes, kind: bytes, params: list[bytes]) -> None:
        self.fmt = fmt
        self.kind = kind
        self.params = params

    def line(self) -> bytes:
        return b" ".join([b"a=rtcp-fb:" + self.fmt, self.kind, *self.params])


class CryptoKey(NamedTuple):
    """One ``inline:`` key of ``a=crypto``: base64 key and salt, lifetime, MKI."""

    key: bytes
    lifetime: bytes  # b"" when absent; decimal or 2^n
    mki: tuple[int, int] | None  # (value, length)


class Crypto(Attribute):
    """``a=crypto:<tag> <suite> inline:<key>[|<lifetime>][|<mki>:<len>] [<params>]``
    (RFC 4568): the SRTP keys of the party, which media passing end to end needs."""

    __slots__ = ("keys", "params", "suite", "tag")

    def __init__(self, tag: int, suite: bytes, keys: list[CryptoKey], params: list[bytes]) -> None:
        self.tag = tag
        self.suite = suite
        self.keys = keys
        self.params = params

    def line(self) -> bytes:
        keys = []
        for k in self.keys:
            text = b"inline:" + k.key
            if k.lifetime:
                text += b"|" + k.lifetime
            if k.mki is not None:
                text += b"|%d:%d" % k.mki
            keys.append(text)
        head = b"a=crypto:%d %s %s" % (self.tag, self.suite, b";".join(keys))
        return b" ".join([head, *self.params]) if self.params else head


class Fingerprint(Attribute):
    """``a=fingerprint:<hash> <hex pairs>`` (RFC 8122): a certificate hash."""

    __slots__ = ("digest", "hash_func")

    def __init__(self, hash_func: bytes, digest: bytes) -> None:
        self.hash_func = hash_func
        self.digest = digest

    def line(self) -> bytes:
        return b"a=fingerprint:" + self.hash_func + b" " + self.digest


class SilenceSupp(Attribute):
    """``a=silenceSupp:<on|off> <timer> <pref> <sid use> <fxnslevel>`` (RFC 3108)."""

    __slots__ = ("fields",)

    def __init__(self, fields: list[bytes]) -> None:
        self.fields = fields

    def line(self) -> bytes:
        return b"a=silenceSupp:" + b" ".join(self.fields)


# -- parsers -----------------------------------------------------------------------------

SESSION = 1
MEDIA = 2
BOTH = 3

# (spelling, value or None when the attribute has no ':', the m= line's formats or None
# at session level, whether they are RTP payload types) -> the attribute, or None.
AttributeParser = Callable[[bytes, bytes | None, list[bytes] | None, bool], Attribute | None]


def _flag(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    return Flag(name) if value is None else None


def _number(limit: int) -> AttributeParser:
    def parse(
        name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
    ) -> Attribute | None:
        n = uint(value.strip(), limit) if value is not None else -1
        return Number(name, n) if n >= 0 else None

    return parse


def _flag_or_bit(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None:
        return Flag(name)
    n = uint(value.strip(), 1)
    return Number(name, n) if n >= 0 else None


def _words(*allowed: bytes) -> AttributeParser:
    table = {w.lower(): w for w in allowed}

    def parse(
        name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
    ) -> Attribute | None:
        word = table.get(value.strip().lower()) if value is not None else None
        return Word(name, word) if word is not None else None

    return parse


def _payload_type(fmt: bytes, formats: list[bytes] | None, rtp: bool) -> int:
    """``fmt`` as a payload type listed on the section's m= line, or -1."""
    if formats is None or not rtp:
        return -1
    pt = uint(fmt, 127)
    return pt if pt >= 0 and fmt in formats else -1


def _rtpmap(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None:
        return None
    fmt, _, rest = value.partition(b" ")
    pt = _payload_type(fmt, formats, rtp)
    if pt < 0:
        return None
    parts = rest.strip().split(b"/")
    if not 2 <= len(parts) <= 3:
        return None
    encoding = parts[0]
    if not is_token(encoding) or not encoding[0:1].isalpha():
        return None
    clock = uint(parts[1], 10_000_000)
    channels = uint(parts[2], 255) if len(parts) == 3 else 0
    if clock <= 0 or channels < 0:
        return None
    return Rtpmap(pt, encoding, clock, channels)


# Codec parameters of fmtp, by the RFCs and ITU recommendations registering them (opus,
# AMR and AMR-WB, EVS, G.729/G.723.1/G.722.1, iLBC, Speex, H.263, H.264, H.265, VP8/VP9,
# rtx, T.140). Other names are left out of the line, as an unknown codec parameter
# leaves the receiver with its default; a line left with none is not written.
_FMTP_NAMES = {
    n.lower(): n
    for n in (
        b"maxplaybackrate", b"sprop-maxcapturerate", b"maxptime", b"ptime", b"minptime",
        b"maxaveragebitrate", b"stereo", b"sprop-stereo", b"cbr", b"useinbandfec", b"usedtx",
        b"octet-align", b"mode-set", b"mode-change-period", b"mode-change-capability",
        b"mode-change-neighbor", b"crc", b"robust-sorting", b"interleaving", b"max-red",
        b"channels", b"evs-mode-switch", b"hf-only", b"dtx", b"dtx-recv", b"br", b"br-send",
        b"br-recv", b"bw", b"bw-send", b"bw-recv", b"cmr", b"ch-aw-recv", b"ch-send",
        b"ch-recv", b"annexa", b"annexb", b"bitrate", b"mode", b"vbr", b"cng",
        b"CIF", b"QCIF", b"SQCIF", b"CIF4", b"CIF16", b"MAXBR", b"BPP", b"HRD", b"CUSTOM",
        b"D", b"E", b"F", b"G", b"I", b"J", b"K", b"N", b"P", b"T",
        b"profile-level-id", b"packetization-mode", b"sprop-parameter-sets",
        b"sprop-level-parameter-sets", b"max-mbps", b"max-smbps", b"max-fs", b"max-cpb",
        b"max-dpb", b"max-br", b"level-asymmetry-allowed", b"redundant-pic-cap",
        b"max-rcmd-nalu-size", b"sar-understood", b"sar-supported", b"in-band-parameter-sets",
        b"profile-space", b"profile-id", b"tier-flag", b"level-id", b"sprop-vps", b"sprop-sps",
        b"sprop-pps", b"max-lsr", b"max-lps", b"max-fr", b"apt", b"rtx-time", b"cps",
    )
}  # fmt: skip
# Values: numbers, words, lists, hex and base64; no spaces, quotes, '@' or '<'.
_FMTP_VALUE = ALPHA + DIGITS + b"+/=.,:_-"


def _digit_run(value: bytes) -> int:
    """The longest run of consecutive digits in ``value``."""
    longest = run = 0
    for c in value:
        if 0x30 <= c <= 0x39:
            run += 1
            if run > longest:
                longest = run
        else:
            run = 0
    return longest


def _fmtp_value(name: bytes, value: bytes) -> bool:
    limit = 512 if name.startswith(b"sprop-") else 64
    return len(value) <= limit and only(value, _FMTP_VALUE) and _digit_run(value) < NUMBER_DIGITS


def _number_list(value: bytes, sep: bytes, ranges: bool, limit: int) -> bool:
    """``0-15,66`` (telephone-event, ranges allowed) or ``96/96`` (RED)."""
    for piece in value.split(sep):
        low, dash, high = piece.partition(b"-")
        if uint(low, limit) < 0 or (dash and (not ranges or uint(high, limit) < 0)):
            return False
    return True


def _fmtp(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None or formats is None:
        return None
    fmt, _, rest = value.strip().partition(b" ")
    if rtp:
        if _payload_type(fmt, formats, rtp) < 0:
            return None
    elif fmt not in formats:
        return None
    params: list[tuple[bytes, bytes]] = []
    for item in rest.split(b";"):
        item = item.strip()
        if not item:
            continue
        key, eq, val = item.partition(b"=")
        if eq:
            spelled = _FMTP_NAMES.get(key.strip().lower())
            val = val.strip()
            if spelled is not None and _fmtp_value(spelled, val):
                params.append((spelled, val))
        elif _number_list(item, b",", True, 255) or _number_list(item, b"/", False, 127):
            params.append((b"", item))
    return Fmtp(fmt, params) if params else None


def _rtcp(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None:
        return None
    port_raw, _, rest = value.strip().partition(b" ")
    port = uint(port_raw, 65535)
    if port <= 0:
        return None
    address = None
    if rest:
        address = parse_connection(rest)
        if address is None:
            return None
    return Rtcp(port, address)


_RTCP_FB_TYPES = (b"ack", b"nack", b"trr-int", b"ccm", b"goog-remb", b"transport-cc")
_RTCP_FB_PARAMS = (b"rpsi", b"app", b"sli", b"pli", b"fir", b"tmmbr", b"tstr", b"vbcm")


def _rtcp_fb(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None or formats is None:
        return None
    parts = value.split()
    if len(parts) < 2:
        return None
    fmt = parts[0]
    if fmt != b"*" and _payload_type(fmt, formats, rtp) < 0:
        return None
    kind = parts[1].lower()
    if kind not in _RTCP_FB_TYPES:
        return None
    params = []
    for param in parts[2:]:
        low = param.lower()
        if low in _RTCP_FB_PARAMS:
            params.append(low)
        elif uint(param, 99999) >= 0:
            params.append(param)
        else:
            return None
    return RtcpFb(fmt, kind, params)


_CRYPTO_SUITES = {
    s.lower(): s
    for s in (
        b"AES_CM_128_HMAC_SHA1_80",
        b"AES_CM_128_HMAC_SHA1_32",
        b"AES_192_CM_HMAC_SHA1_80",
        b"AES_192_CM_HMAC_SHA1_32",
        b"AES_256_CM_HMAC_SHA1_80",
        b"AES_256_CM_HMAC_SHA1_32",
        b"F8_128_HMAC_SHA1_80",
        b"AEAD_AES_128_GCM",
        b"AEAD_AES_256_GCM",
    )
}
_CRYPTO_FLAGS = {
    s.lower(): s for s in (b"UNENCRYPTED_SRTP", b"UNENCRYPTED_SRTCP", b"UNAUTHENTICATED_SRTP")
}
_CRYPTO_NUMBERS = {s.lower(): s for s in (b"KDR", b"WSH")}


def _crypto_key(text: bytes) -> CryptoKey | None:
    if text[:7].lower() != b"inline:":
        return None
    fields = text[7:].split(b"|")
    key = fields[0]
    if not 16 <= len(key) <= 128 or not only(key, BASE64):
        return None
    lifetime = b""
    mki: tuple[int, int] | None = None
    for field in fields[1:]:
        m, colon, length = field.partition(b":")
        if colon:
            value, size = uint(m, 2**32), uint(length, 128)
            if value < 0 or size <= 0 or mki is not None:
                return None
            mki = (value, size)
        elif (field[:2] == b"2^" and uint(field[2:], 64) >= 0) or uint(field, 2**64) > 0:
            lifetime = field
        else:
            return None
    return CryptoKey(key, lifetime, mki)


def _crypto(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None:
        return None
    parts = value.split()
    if len(parts) < 3:
        return None
    tag = uint(parts[0], 999_999_999)
    suite = _CRYPTO_SUITES.get(parts[1].lower())
    if tag < 0 or suite is None:
        return None
    keys = []
    for text in parts[2].split(b";"):
        key = _crypto_key(text)
        if key is None:
            return None
        keys.append(key)
    params = []
    for param in parts[3:]:
        pname, eq, pvalue = param.partition(b"=")
        if not eq:
            flag = _CRYPTO_FLAGS.get(pname.lower())
            if flag is None:
                return None
            params.append(flag)
        else:
            known = _CRYPTO_NUMBERS.get(pname.lower())
            if known is None or uint(pvalue, 2**32) < 0:
                return None
            params.append(b"%s=%d" % (known, int(pvalue)))
    return Crypto(tag, suite, keys, params)


_HASHES = (b"sha-1", b"sha-224", b"sha-256", b"sha-384", b"sha-512")


def _fingerprint(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None:
        return None
    parts = value.split()
    if len(parts) != 2 or parts[0].lower() not in _HASHES:
        return None
    digest = parts[1].upper()
    pairs = digest.split(b":")
    if not 16 <= len(pairs) <= 64 or any(len(p) != 2 or not only(p, HEX) for p in pairs):
        return None
    return Fingerprint(parts[0].lower(), digest)


def _silence_supp(
    name: bytes, value: bytes | None, formats: list[bytes] | None, rtp: bool
) -> Attribute | None:
    if value is None:
        return None
    fields = value.split()
    if not 1 <= len(fields) <= 5 or fields[0].lower() not in (b"on", b"off"):
        return None
    out = [fields[0].lower()]
    for field in fields[1:]:
        if field == b"-" or uint(field, 99999) >= 0 or is_word(field, 16):
            out.append(field)
        else:
            return None
    return SilenceSupp(out)


# The allow-list. Each kept attribute and why it names no one:
#   rtpmap, fmtp, ptime, maxptime, rtcp-fb: the codec description (payload types listed
#     on the m= line, encoding names as tokens, integers, registered codec parameters);
#     needed for the answer to match the offer.
#   sendrecv, sendonly, recvonly, inactive: direction (hold and resume).
#   rtcp, rtcp-mux, rtcp-rsize: where RTCP flows (a port and, optionally, the party's
#     media address, like c=).
#   silenceSupp: comfort noise, on/off and numbers (RFC 3108).
#   crypto: SDES-SRTP keys (RFC 4568). With media end to end the far party must have
#     them for the call to have audio; they are random per call and name no one.
#   fingerprint, setup, connection: DTLS-SRTP (RFC 8122, RFC 4145), a certificate hash
#     and roles.
#   T38*: fax over UDPTL (ITU-T T.38 Annex D): version, rates, buffer sizes, error
#     correction, written in Annex D's spelling.
# Left out on purpose, among others: label, tool, X-*, cat, keywds (free text); ssrc and
# ssrc-group (cname/msid/mslabel/label are identities; see sdp.SdpBuilder); msid,
# msid-semantic, mid, group (WebRTC track and bundle names); candidate, ice-ufrag,
# ice-pwd, ice-options, ice-lite, end-of-candidates, remote-candidates (ICE: every
# address of the party's host, LAN and VPN ones included, and checks ansim cannot take
# part in; media falls back to c=/m=); T38VendorInfo (names the equipment's maker);
# curr, des, conf (preconditions, an option ansim does not implement); extmap,
# framerate, imageattr, minptime, sdplang, lang, content, zrtp-hash, key-mgmt, path and
# accept-types (MSRP URIs).
ATTRIBUTES: dict[bytes, tuple[bytes, AttributeParser, int]] = {
    b"rtpmap": (b"rtpmap", _rtpmap, MEDIA),
    b"fmtp": (b"fmtp", _fmtp, MEDIA),
    b"ptime": (b"ptime", _number(10000), MEDIA),
    b"maxptime": (b"maxptime", _number(10000), MEDIA),
    b"sendrecv": (b"sendrecv", _flag, BOTH),
    b"sendonly": (b"sendonly", _flag, BOTH),
    b"recvonly": (b"recvonly", _flag, BOTH),
    b"inactive": (b"inactive", _flag, BOTH),
    b"rtcp": (b"rtcp", _rtcp, MEDIA),
    b"rtcp-mux": (b"rtcp-mux", _flag, MEDIA),
    b"rtcp-rsize": (b"rtcp-rsize", _flag, MEDIA),
    b"rtcp-fb": (b"rtcp-fb", _rtcp_fb, MEDIA),
    b"silencesupp": (b"silenceSupp", _silence_supp, MEDIA),
    b"crypto": (b"crypto", _crypto, MEDIA),
    b"fingerprint": (b"fingerprint", _fingerprint, BOTH),
    b"setup": (b"setup", _words(b"active", b"passive", b"actpass", b"holdconn"), BOTH),
    b"connection": (b"connection", _words(b"new", b"existing"), BOTH),
    b"t38faxversion": (b"T38FaxVersion", _number(99), MEDIA),
    b"t38maxbitrate": (b"T38MaxBitRate", _number(1_000_000), MEDIA),
    b"t38faxfillbitremoval": (b"T38FaxFillBitRemoval", _flag_or_bit, MEDIA),
    b"t38faxtranscodingmmr": (b"T38FaxTranscodingMMR", _flag_or_bit, MEDIA),
    b"t38faxtranscodingjbig": (b"T38FaxTranscodingJBIG", _flag_or_bit, MEDIA),
    b"t38faxratemanagement": (
        b"T38FaxRateManagement",
        _words(b"localTCF", b"transferredTCF"),
        MEDIA,
    ),
    b"t38faxmaxbuffer": (b"T38FaxMaxBuffer", _number(1_000_000), MEDIA),
    b"t38faxmaxdatagram": (b"T38FaxMaxDatagram", _number(1_000_000), MEDIA),
    b"t38faxudpec": (
        b"T38FaxUdpEC",
        _words(b"t38UDPRedundancy", b"t38UDPFEC", b"t38UDPNoEC"),
        MEDIA,
    ),
}
