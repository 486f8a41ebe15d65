"""SDP toward each leg, built from what ansim understands (sans-IO).

What a party sends is parsed into a small model (``SessionDescription`` holding
``Media`` sections, each field typed and validated), and the SDP the other leg gets is
serialized anew from that model by the leg's ``SdpBuilder``. Nothing of the received
text is copied: a line is either understood and written from its parsed fields, or it
is not written. ansim has its own parser because the SDP libraries for Python keep
unknown attributes and free text, which is what must never cross, and because this
runs on every offer and answer.

What is written (RFC 8866 order):

- ``v=0``; ``o=ansim <session id> <version> IN IP4|IP6 <ansim's address>``: the session
  id is the leg's own, the version moves exactly when the sender's does
  (``OriginRewriter``), the address is the one ansim advertises for the leg's transport.
- ``s=-``; ``t=0 0`` (SIP sessions are unbounded, RFC 3264 §5). ``i=``, ``u=``, ``e=``,
  ``p=``, ``k=``, ``r=``, ``z=`` and unknown line types are never written.
- ``c=`` and ``m=`` keep the party's media address and port (media passes end to end),
  validated (``sdp_fields.valid_address``): an IP literal of the stated address type, or
  a strict host name. ``SdpBuilder.build`` takes the addresses and ports to write
  instead (``MediaTarget``), for when media is anchored.
- ``b=`` of the types CT, AS, TIAS, RR and RS, with an integer value.
- Attributes of the allow-list ``sdp_attributes.ATTRIBUTES``, each rebuilt from its
  parsed fields; everything else (``a=label``, ``a=tool``, ``a=X-*``, vendor attributes,
  ICE, ``a=msid``, ...) is left out.
- With the relay anchoring the media (``SdpBuilder.srtp`` set), the anchored section's
  profile and ``a=crypto`` lines are ansim's own for the leg (``b2bua.sdes``); the
  sender's keys are never written.
- ``a=ssrc`` only when the builder is given the CNAME to write (the media relay, which
  rewrites RTCP SDES to match): ``a=ssrc:<id> cname:<that cname>`` for each SSRC, and
  ``a=ssrc-group`` over them. With media end to end the party's own CNAME travels in
  RTCP, and another one in the SDP would contradict it, so none is written.

Every ``m=`` line is written, in order (RFC 3264 §6: the answer has as many as the
offer). A section that cannot be rebuilt (unknown protocol, no valid format, an invalid
address, port 0) becomes a rejected stream: port 0, its media type, protocol and formats
written only where they are plain tokens, no attributes. A body that is not an SDP at
all (no ``v=0`` first) raises ``SdpError``; what then happens to the message is decided
in ``bodies``. Input may use CRLF, bare LF or both, and may lack the last line end;
output uses CRLF.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .sdp_attributes import ATTRIBUTES, MEDIA, SESSION, Attribute, Crypto, Flag, Rtcp
from .sdp_fields import Address, address_type, is_word, parse_connection, uint


class SdpError(ValueError):
    """The body is not an SDP that can be parsed."""


class OriginRewriter:
    """Origin state of one direction of one leg: its session id, and versions that move
    exactly when the sender's do (RFC 3264 §8) and continue across a change of sender."""

    __slots__ = ("_base", "_first", "_last", "session_id")

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        self._first: int | None = None
        self._base = 1
        self._last = 0  # the last version written, 0 before the first

    def version(self, sender_version: int) -> int:
        """The version to write for an SDP whose sender numbered it ``sender_version``."""
        if self._first is None:
            self._first = sender_version
        new_version = self._base + max(0, sender_version - self._first)
        self._last = new_version
        return new_version

    def new_sender(self) -> None:
        """The SDP written from now on comes from another party (a failover to the next
        trunk): its versions continue above the last one written, whatever the new
        sender's own numbering."""
        if self._last:
            self._first = None
            self._base = self._last + 1


class SsrcGroup(NamedTuple):
    """``a=ssrc-group:<semantics> <ssrc>...`` (RFC 5576)."""

    semantics: bytes
    ssrcs: list[int]


class Media:
    """One media section: its ``m=`` fields, connection, bandwidths and kept attributes."""

    __slots__ = (
        "attributes",
        "bandwidths",
        "connection",
        "formats",
        "kind",
        "port",
        "port_count",
        "proto",
        "rejected",
        "rtp",
        "ssrc_groups",
        "ssrcs",
    )

    def __init__(self) -> None:
        self.kind = b"application"
        self.port = 0
        self.port_count = 0  # 0: not given
        self.proto = b"RTP/AVP"
        self.formats: list[bytes] = [b"0"]
        self.rtp = True  # an RTP profile: formats are payload types
        self.connection: Address | None = None
        self.bandwidths: list[tuple[bytes, int]] = []
        self.attributes: list[Attribute] = []
        self.ssrcs: list[int] = []
        self.ssrc_groups: list[SsrcGroup] = []
        self.rejected = False  # written as port 0, without attributes


class SessionDescription:
    """A parsed SDP: the sender's origin version, session-level fields, media sections."""

    __slots__ = ("attributes", "bandwidths", "connection", "media", "version")

    def __init__(self) -> None:
        self.version = 0  # the sender's o= session version
        self.connection: Address | None = None
        self.bandwidths: list[tuple[bytes, int]] = []
        self.attributes: list[Attribute] = []
        self.media: list[Media] = []


class MediaTarget(NamedTuple):
    """Where the far leg is to send one section's media, when ansim anchors it."""

    address: Address
    port: int
    rtcp_port: int | None = None  # None: no a=rtcp written
    # Set: the leg's RTCP goes to (rtcp_address, rtcp_port) instead (written with its
    # address even when the party's SDP had no a=rtcp), and a=rtcp-mux is not written.
    rtcp_address: Address | None = None


# -- parsing -----------------------------------------------------------------------------

MEDIA_KINDS = (b"audio", b"video", b"image", b"text", b"application", b"message")
# Transport protocols whose media ansim can carry (and later anchor): RTP profiles over
# UDP, DTLS-SRTP over UDP, T.38's UDPTL. Spellings as registered; matched without case.
_RTP_PROTOS = {
    p.lower(): p
    for p in (
        b"RTP/AVP",
        b"RTP/AVPF",
        b"RTP/SAVP",
        b"RTP/SAVPF",
        b"UDP/TLS/RTP/SAVP",
        b"UDP/TLS/RTP/SAVPF",
    )
}
_UDPTL = (b"udptl", b"UDPTL")
_BANDWIDTH_TYPES = (b"CT", b"AS", b"TIAS", b"RR", b"RS")
_SSRC_GROUPS = {s.lower(): s for s in (b"FID", b"FEC", b"FEC-FR", b"SIM")}
_MAX_SSRC = 2**32 - 1
MAX_MEDIA = 64


def _bandwidth(value: bytes) -> tuple[bytes, int] | None:
    kind, colon, amount = value.partition(b":")
    kind = kind.strip().upper()
    n = uint(amount.strip(), 10**10)
    if not colon or kind not in _BANDWIDTH_TYPES or n < 0:
        return None
    return (kind, n)


def _media_line(value: bytes) -> Media:
    """The m= line parsed; a section that cannot be carried comes back ``rejected``."""
    media = Media()
    parts = value.split()
    kind = parts[0].lower() if parts else b""
    if kind in MEDIA_KINDS:
        media.kind = kind
    else:
        media.rejected = True
        if is_word(kind, 16):
            media.kind = kind
    if len(parts) < 4:
        media.rejected = True
        return media
    port_raw, slash, count = parts[1].partition(b"/")
    port = uint(port_raw, 65535)
    if slash:
        media.port_count = uint(count, 64)
        if media.port_count <= 0:
            media.port_count = 0
            media.rejected = True
    if port <= 0:
        media.rejected = True
        port = 0
    media.port = port
    proto = parts[2]
    rtp_proto = _RTP_PROTOS.get(proto.lower())
    formats: list[bytes] = []
    if rtp_proto is not None:
        media.proto = rtp_proto
        for fmt in parts[3:]:
            pt = uint(fmt, 127)
            if pt >= 0 and b"%d" % pt not in formats:
                formats.append(b"%d" % pt)
    elif proto in _UDPTL:
        media.proto = proto
        media.rtp = False
        if any(f.lower() == b"t38" for f in parts[3:]):
            formats.append(b"t38")
    else:
        media.rejected = True
        media.rtp = False
        media.proto = proto if is_word(proto) else b"RTP/AVP"
        for fmt in parts[3:]:
            if (uint(fmt, 999) >= 0 or is_word(fmt, 16)) and fmt not in formats:
                formats.append(fmt)
    if not formats:
        media.rejected = True
        formats.append(b"t38" if media.proto in _UDPTL else b"0")
    media.formats = formats
    return media


def _attribute(value: bytes, desc: SessionDescription, media: Media | None) -> None:
    """Add what ``a=<value>`` says to the section (or the session) if it is kept."""
    name, colon, rest = value.partition(b":")
    low = name.lower()
    entry = ATTRIBUTES.get(low)
    if entry is not None:
        spelled, parse, levels = entry
        if media is None:
            if levels & SESSION:
                attr = parse(spelled, rest if colon else None, None, False)
                if attr is not None:
                    desc.attributes.append(attr)
        elif levels & MEDIA and not media.rejected:
            attr = parse(spelled, rest if colon else None, media.formats, media.rtp)
            if attr is not None:
                media.attributes.append(attr)
        return
    if media is None or not media.rtp or media.rejected:
        return
    if low == b"ssrc":
        ssrc = uint(rest.partition(b" ")[0], _MAX_SSRC)
        if ssrc >= 0 and ssrc not in media.ssrcs and len(media.ssrcs) < 32:
            media.ssrcs.append(ssrc)
    elif low == b"ssrc-group":
        parts = rest.split()
        semantics = _SSRC_GROUPS.get(parts[0].lower()) if parts else None
        ssrcs = [uint(p, _MAX_SSRC) for p in parts[1:]]
        if semantics is not None and ssrcs and min(ssrcs) >= 0 and len(ssrcs) <= 8:
            media.ssrc_groups.append(SsrcGroup(semantics, ssrcs))


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse ``body`` into the model, keeping only what may be rebuilt.

    Raises ``SdpError`` when the body is not an SDP at all (its first line is not
    ``v=0``); anything else that is wrong is left out of the model, line by line."""
    desc = SessionDescription()
    media: Media | None = None
    started = False
    session_connection_bad = False
    media_connection_bad = False
    for line in body.split(b"\n"):
        if line and line[-1] == 0x0D:
            line = line[:-1]
        if len(line) < 2 or line[1] != 0x3D:  # "=" after the type letter
            if not started and line.strip():
                raise SdpError("not an SDP: no v= line first")
            continue
        kind = line[0]
        value = line[2:]
        if not started:
            if kind != 0x76 or value.strip() != b"0":  # v=0
                raise SdpError("not an SDP: no v=0 line first")
            started = True
        elif kind == 0x61:  # a=
            _attribute(value, desc, media)
        elif kind == 0x6D:  # m=
            if media is not None and media_connection_bad:
                media.rejected = True
            if len(desc.media) >= MAX_MEDIA:
                raise SdpError("too many media sections")
            media = _media_line(value)
            media_connection_bad = False
            desc.media.append(media)
        elif kind == 0x63:  # c=
            connection = parse_connection(value)
            if media is None:
                desc.connection = connection
                session_connection_bad = connection is None
            elif connection is None:
                media_connection_bad = True
            else:
                media.connection = connection
        elif kind == 0x62:  # b=
            bandwidth = _bandwidth(value)
            if bandwidth is not None:
                (media.bandwidths if media is not None else desc.bandwidths).append(bandwidth)
        elif kind == 0x6F and media is None:  # o=
            fields = value.split()
            version = uint(fields[2], 2**64) if len(fields) == 6 else -1
            desc.version = version if version >= 0 else 0
    if not started:
        raise SdpError("empty SDP")
    if media is not None and media_connection_bad:
        media.rejected = True
    if session_connection_bad:
        desc.connection = None
    for m in desc.media:
        if m.connection is None and desc.connection is None:
            m.rejected = True
    return desc


# -- building ----------------------------------------------------------------------------


def anchored_section(desc: SessionDescription) -> int:
    """The index of the section ansim anchors: the first audio section over RTP that is
    not rejected; -1 when there is none."""
    for i, media in enumerate(desc.media):
        if media.kind == b"audio" and media.rtp and not media.rejected:
            return i
    return -1


def anchored_targets(desc: SessionDescription, anchor: MediaTarget) -> list[MediaTarget | None]:
    """``anchor`` for the anchored section, None (a rejected stream) for the others."""
    index = anchored_section(desc)
    return [anchor if i == index else None for i in range(len(desc.media))]


_REJECTED_CONNECTION = b"c=IN IP4 0.0.0.0"


class SdpBuilder:
    """Writes the SDP one leg is sent: ansim's origin for the leg, and what ``parse_sdp``
    kept. ``cname`` is the RTCP CNAME the media relay writes toward this leg; without
    one, no ``a=ssrc`` is written."""

    __slots__ = ("address", "addrtype", "anchor", "cname", "origin", "srtp")

    def __init__(self, session_id: int, address: bytes, cname: bytes | None = None) -> None:
        self.origin = OriginRewriter(session_id)
        self.address = address  # ansim's own address toward the leg, for o=
        self.addrtype = address_type(address)
        self.cname = cname
        # Where the leg sends its audio when ansim anchors it (the media engine's port
        # for the leg): the first audio section is written with it and every other
        # section as a rejected stream. None: addresses written as received.
        self.anchor: MediaTarget | None = None
        # With the relay anchoring the leg's media: the profile to write on the anchored
        # section (None: the sender's) and ansim's own a=crypto lines for the leg, which
        # replace the sender's (b2bua.sdes). None: crypto written as received.
        self.srtp: tuple[bytes | None, list[Attribute]] | None = None

    def build(
        self, desc: SessionDescription, targets: Sequence[MediaTarget | None] | None = None
    ) -> bytes:
        """The SDP for the leg. ``targets`` (one per media section; a section without
        one is rejected) replaces the party's media addresses and ports; without it
        they are written as received, unless the builder has an ``anchor``."""
        if targets is None and self.anchor is not None:
            targets = anchored_targets(desc, self.anchor)
        origin = self.origin
        out = [
            b"v=0",
            b"o=ansim %d %d IN %s %s"
            % (origin.session_id, origin.version(desc.version), self.addrtype, self.address),
            b"s=-",
        ]
        session_connection = desc.connection if targets is None else None
        if session_connection is not None:
            out.append(b"c=IN %s %s" % session_connection)
        for kind, amount in desc.bandwidths:
            out.append(b"b=%s:%d" % (kind, amount))
        out.append(b"t=0 0")
        for attr in desc.attributes:
            out.append(attr.line())
        cname = self.cname
        for i, media in enumerate(desc.media):
            target = targets[i] if targets is not None and i < len(targets) else None
            if media.rejected or (targets is not None and target is None):
                out.append(b"m=%s 0 %s %s" % (media.kind, media.proto, b" ".join(media.formats)))
                if session_connection is None:
                    out.append(_REJECTED_CONNECTION)
                continue
            port = media.port if target is None else target.port
            head = b"m=%s %d" % (media.kind, port)
            if media.port_count:
                head += b"/%d" % media.port_count
            srtp = self.srtp if target is not None else None
            proto = media.proto
            if srtp is not None and srtp[0] is not None:
                proto = srtp[0]
            out.append(head + b" " + proto + b" " + b" ".join(media.formats))
            if target is not None:
                out.append(b"c=IN %s %s" % target.address)
            elif media.connection is not None:
                out.append(b"c=IN %s %s" % media.connection)
            for kind, amount in media.bandwidths:
                out.append(b"b=%s:%d" % (kind, amount))
            sink = target.rtcp_address if target is not None else None
            for attr in media.attributes:
                if target is not None and isinstance(attr, Rtcp):
                    if target.rtcp_port is not None and sink is None:
                        out.append(b"a=rtcp:%d" % target.rtcp_port)
                    continue
                if sink is not None and isinstance(attr, Flag) and attr.name == b"rtcp-mux":
                    continue
                if srtp is not None and isinstance(attr, Crypto):
                    continue
                out.append(attr.line())
            if sink is not None and target is not None and target.rtcp_port is not None:
                out.append(b"a=rtcp:%d IN %s %s" % (target.rtcp_port, sink[0], sink[1]))
            if srtp is not None:
                for attr in srtp[1]:
                    out.append(attr.line())
            if cname is not None:
                ssrcs = media.ssrcs
                for ssrc in ssrcs:
                    out.append(b"a=ssrc:%d cname:%s" % (ssrc, cname))
                for group in media.ssrc_groups:
                    if all(s in ssrcs for s in group.ssrcs):
                        ids = b" ".join([b"%d" % s for s in group.ssrcs])
                        out.append(b"a=ssrc-group:" + group.semantics + b" " + ids)
        out.append(b"")
        return b"\r\n".join(out)
