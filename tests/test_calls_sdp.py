"""SDP as the far leg sees it (b2bua/sip/sdp.py), sans-IO: built from the parsed model,
never filtered from the text received.

The inputs are SDPs of the kinds real equipment sends (softphones, PBXs, SBCs, media
gateways, fax gateways, WebRTC gateways), with the caller's number written into every
place such equipment puts one; the output must hold it in no written form, keep every
m= line, carry the attributes of the allow-list in their canonical form, and be an SDP
that parses again to the same model.
"""

from __future__ import annotations

import pytest
from call_env import CALLEE, CALLER, Party, scan
from hypothesis import given, settings
from hypothesis import strategies as st

from b2bua.sip.sdp import MediaTarget, OriginRewriter, SdpBuilder, SdpError, parse_sdp
from b2bua.sip.sdp_attributes import ATTRIBUTES

N = CALLER.national  # 01047382916
E = CALLER.e164  # +821047382916


def build(body: bytes, builder: SdpBuilder | None = None) -> bytes:
    return (builder or SdpBuilder(42, b"198.51.100.1")).build(parse_sdp(body))


def sdp(*lines: str, eol: str = "\r\n") -> bytes:
    return (eol.join(lines) + eol).encode()


def lines_of(body: bytes) -> list[bytes]:
    assert body.endswith(b"\r\n") and b"\n" not in body.replace(b"\r\n", b"")
    return body[:-2].split(b"\r\n")


def assert_clean(out: bytes, party: Party = CALLER) -> None:
    hits = scan(out, party)
    assert not hits, hits


def assert_valid(out: bytes, cname: bytes | None = None) -> None:
    """``out`` is an SDP in RFC 8866 order that parses to a model written back the same."""
    lines = lines_of(out)
    assert lines[0] == b"v=0" and lines[1].startswith(b"o=ansim ") and lines[2] == b"s=-"
    order = b"vosicbtam"
    session = [
        line[:1]
        for line in lines[: next((i for i, x in enumerate(lines) if x[:2] == b"m="), len(lines))]
    ]
    assert [order.index(t) for t in session] == sorted(order.index(t) for t in session), session
    assert all(len(line) > 2 and line[1:2] == b"=" for line in lines)
    again = SdpBuilder(42, b"198.51.100.1", cname)
    assert again.build(parse_sdp(out)).split(b"\r\n")[2:] == out.split(b"\r\n")[2:]


def origin_of(body: bytes) -> list[bytes]:
    return next(line for line in lines_of(body) if line.startswith(b"o=")).split()


# -- origin, session fields ----------------------------------------------------------------

BASIC = sdp(
    "v=0",
    f"o={N} 53655765 7 IN IP4 192.0.2.1",
    f"s=call from {E}",
    f"i={CALLER.dashed}",
    f"u=http://example.com/{CALLER.short}",
    f"e={N}@example.com",
    f"p={CALLER.spaced}",
    "c=IN IP4 192.0.2.1",
    "b=AS:64",
    "t=3034423619 3042462419",
    f"r=604800 3600 0 {CALLER.subscriber}",
    "z=2882844526 -1h",
    f"k=clear:{N}",
    "m=audio 4000 RTP/AVP 0",
    "a=rtpmap:0 PCMU/8000",
)


def test_origin_session_and_free_text_built_fresh() -> None:
    out = build(BASIC)
    assert lines_of(out) == [
        b"v=0",
        b"o=ansim 42 1 IN IP4 198.51.100.1",
        b"s=-",
        b"c=IN IP4 192.0.2.1",
        b"b=AS:64",
        b"t=0 0",
        b"m=audio 4000 RTP/AVP 0",
        b"a=rtpmap:0 PCMU/8000",
    ]
    assert_clean(out)


def test_origin_address_is_ansims_own_of_its_family() -> None:
    out = SdpBuilder(7, b"2001:db8::5").build(parse_sdp(BASIC))
    assert origin_of(out) == [b"o=ansim", b"7", b"1", b"IN", b"IP6", b"2001:db8::5"]
    assert b"192.0.2.1" not in lines_of(out)[1]


def test_version_follows_the_sender() -> None:
    rw = OriginRewriter(9)
    assert [rw.version(v) for v in (100, 100, 101, 105)] == [1, 1, 2, 6]
    builder = SdpBuilder(9, b"198.51.100.1")
    bodies = [BASIC.replace(b" 7 IN", b" %d IN" % v) for v in (100, 100, 101)]
    assert [origin_of(build(b, builder))[2] for b in bodies] == [b"1", b"1", b"2"]


def test_new_sender_continues_above_the_last_version() -> None:
    rw = OriginRewriter(9)
    rw.version(100)
    rw.version(101)
    rw.new_sender()  # failover: the next trunk numbers its SDP from 1
    assert [rw.version(v) for v in (1, 1, 2)] == [3, 3, 4]
    assert rw.session_id == 9


def test_new_sender_before_any_sdp_changes_nothing() -> None:
    rw = OriginRewriter(3)
    rw.new_sender()
    assert rw.version(50) == 1


@pytest.mark.parametrize(
    "origin",
    [f"o={N}", f"o={N} x y IN IP4 192.0.2.1", f"o={N} 1 -5 IN IP4 h", "o=", ""],
)
def test_missing_or_malformed_origin_still_gets_ansims(origin: str) -> None:
    body = sdp("v=0", *([origin] if origin else []), "s=-", "c=IN IP4 192.0.2.1", "t=0 0")
    out = build(body)
    assert origin_of(out) == [b"o=ansim", b"42", b"1", b"IN", b"IP4", b"198.51.100.1"]
    assert_clean(out)


# -- line endings ----------------------------------------------------------------------------

MIXED = (
    b"v=0\r\n"
    b"o=" + N.encode() + b" 1 1 IN IP4 192.0.2.1\n"
    b"s=" + E.encode() + b"\r\n"
    b"i=" + CALLER.dashed.encode() + b"\n"
    b"c=IN IP4 192.0.2.1\r\n"
    b"t=0 0\n"
    b"a=tool:" + N.encode() + b"\r\n"
    b"m=audio 4000 RTP/AVP 8 101\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=label:" + E.encode() + b"\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\n"
    b"m=video 4002 RTP/AVP 96\r\n"
    b"a=rtpmap:96 H264/90000"  # no final line end
)


@pytest.mark.parametrize("variant", ["mixed", "lf", "crlf", "cr-before-lf-only-at-end"])
def test_line_endings(variant: str) -> None:
    body = {
        "mixed": MIXED,
        "lf": MIXED.replace(b"\r\n", b"\n"),
        "crlf": MIXED.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n",
        "cr-before-lf-only-at-end": MIXED.replace(b"\r\n", b"\n") + b"\r\n",
    }[variant]
    out = build(body)
    assert lines_of(out) == [
        b"v=0",
        b"o=ansim 42 1 IN IP4 198.51.100.1",
        b"s=-",
        b"c=IN IP4 192.0.2.1",
        b"t=0 0",
        b"m=audio 4000 RTP/AVP 8 101",
        b"a=rtpmap:8 PCMA/8000",
        b"a=rtpmap:101 telephone-event/8000",
        b"a=fmtp:101 0-15",
        b"m=video 4002 RTP/AVP 96",
        b"a=rtpmap:96 H264/90000",
    ]
    assert_clean(out)
    assert_valid(out)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\r\n",
        b"hello",
        b"o=x 1 1 IN IP4 h\r\nv=0\r\n",
        b"v=1\r\n",
        b"<xml/>",
        b"\x00\x01\x02",
    ],
)
def test_not_an_sdp_raises(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_sdp(body)


# -- attributes --------------------------------------------------------------------------------

# Attributes as equipment writes them, with the caller's number where it carries one.
DROPPED = [
    f"a=tool:softphone {N}",
    f"a=label:{E}",
    "a=label:1",
    f"a=X-nat:{CALLER.dashed}",
    f"a=X-orig-caller:{E}",
    f"a=x-cisco-media:{N}",
    f"a=X-sqn:{CALLER.short}",
    f"a=cat:{CALLER.spaced}",
    f"a=keywds:{N}",
    f"a=sdplang:{CALLER.digits}",
    "a=lang:ko",
    f"a=ssrc:2188878967 cname:sip:{E}@127.0.0.2",
    f"a=ssrc:2188878967 msid:{N} a0",
    f"a=ssrc:2188878967 mslabel:{N}",
    f"a=ssrc:2188878967 label:{N}a0",
    f"a=msid:{N} audio0",
    "a=msid-semantic: WMS " + N,
    f"a=mid:{CALLER.short}",
    f"a=group:BUNDLE {CALLER.short}",
    f"a=candidate:1 1 UDP 2130706431 {N}.local 4000 typ host",
    "a=candidate:2 1 UDP 1694498815 203.0.113.7 4000 typ srflx raddr 10.0.0.2 rport 4000",
    f"a=ice-ufrag:{CALLER.subscriber}",
    f"a=ice-pwd:{CALLER.digits}asdfghjklqwerty",
    "a=ice-options:trickle",
    "a=ice-lite",
    "a=end-of-candidates",
    "a=T38VendorInfo:0 0 0",
    f"a=T38VendorInfo:181 0 {N}",
    "a=curr:qos local none",
    "a=des:qos mandatory local sendrecv",
    "a=conf:qos remote sendrecv",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    f"a=extmap:2 http://example.com/{N}",
    "a=rtcp-xr:rcvr-rtt=all voip-metrics",
    "a=minptime:20",
    "a=framerate:30",
    f"a=path:msrp://192.0.2.1:2855/{N};tcp",
    f"a=accept-types:message/cpim text/{N}",
    "a=record:on",
    f"a=zrtp-hash:1.10 {CALLER.digits}{CALLER.digits}",
    "a=key-mgmt:mikey AQAFgM0XflABAAAAAAAAAAAAAAsAyO7JmL",
    "a=content:main",
    f"a=fax-identity:{E}",
    f"a=Xvendor-caller-id:{CALLER.dashed}",
    "a=sendrecv:extra",
    f"a=ptime:{N}",
    f"a=rtpmap:0 {N}/8000",
    "a=rtpmap:0 PCMU/eight",
    "a=rtpmap:9 G722/8000",  # payload type not on the m= line
    f"a=fmtp:101 caller={E}",
    f"a=fmtp:101 0-{N}",
    f"a=fmtp:96 maxplaybackrate={N}",
    f"a=fmtp:96 x-caller={CALLER.dashed}",
    f"a=fmtp:101 from sip:{N}@x",
    "a=fmtp:18",
    "a=rtcp:0",
    f"a=rtcp:4001 IN IP4 {N}.example.com",
    "a=rtcp:4001 IN IP4 300.1.1.1",
    f"a=rtcp-fb:0 nack {N}",
    "a=rtcp-fb:0 x-vendor",
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{N}@example.com",
    f"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32 X-CALLER={N}",
    "a=crypto:1 X_VENDOR_SUITE inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz",
    f"a=fingerprint:sha-256 {N}",
    f"a=setup:{N}",
    "a=silenceSupp:maybe - - - -",
    f"a=silenceSupp:off {E} - - -",
    f"a=T38FaxRateManagement:{N}",
    "a=T38FaxUdpEC:t38UDPVendor",
    f"a=T38FaxVersion:{N}",
]

KEPT = [
    ("a=rtpmap:0 PCMU/8000", b"a=rtpmap:0 PCMU/8000"),
    ("a=rtpmap:101 telephone-event/8000", b"a=rtpmap:101 telephone-event/8000"),
    ("a=rtpmap:96 opus/48000/2", b"a=rtpmap:96 opus/48000/2"),
    ("a=fmtp:101 0-16", b"a=fmtp:101 0-16"),
    ("a=fmtp:18 annexb=no", b"a=fmtp:18 annexb=no"),
    (
        "a=fmtp:96 maxplaybackrate=48000; stereo=1;useinbandfec=1",
        b"a=fmtp:96 maxplaybackrate=48000;stereo=1;useinbandfec=1",
    ),
    ("a=ptime:20", b"a=ptime:20"),
    ("a=maxptime:40", b"a=maxptime:40"),
    ("a=sendrecv", b"a=sendrecv"),
    ("a=sendonly", b"a=sendonly"),
    ("a=recvonly", b"a=recvonly"),
    ("a=inactive", b"a=inactive"),
    ("a=rtcp:4001", b"a=rtcp:4001"),
    ("a=rtcp:4001 IN IP4 192.0.2.1", b"a=rtcp:4001 IN IP4 192.0.2.1"),
    ("a=rtcp-mux", b"a=rtcp-mux"),
    ("a=rtcp-rsize", b"a=rtcp-rsize"),
    ("a=rtcp-fb:96 nack pli", b"a=rtcp-fb:96 nack pli"),
    ("a=rtcp-fb:* trr-int 100", b"a=rtcp-fb:* trr-int 100"),
    ("a=silenceSupp:off - - - -", b"a=silenceSupp:off - - - -"),
    (
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",
        b"a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:32",
    ),
    (
        "a=crypto:2 aes_cm_128_hmac_sha1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj KDR=1 UNENCRYPTED_SRTCP",
        b"a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:NzB4d1BINUAvLEw6UzF3WSJ+PSdFcGdUJShpX1Zj KDR=1 UNENCRYPTED_SRTCP",
    ),
    (
        "a=fingerprint:SHA-256 4a:ad:b9:b1:3f:82:18:3b:54:02:12:df:3e:5d:49:6b:19:e5:7c:ab:3c:0e:2b:3c:6c:1b:1c:5c:62:88:3a:74",
        b"a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3C:0E:2B:3C:6C:1B:1C:5C:62:88:3A:74",
    ),
    ("a=setup:actpass", b"a=setup:actpass"),
    ("a=connection:new", b"a=connection:new"),
]


def media_with(*attrs: str, formats: str = "0 18 96 101") -> bytes:
    return sdp(
        "v=0",
        f"o={N} 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        f"m=audio 4000 RTP/AVP {formats}",
        *attrs,
    )


@pytest.mark.parametrize("attr", DROPPED)
def test_attribute_not_on_the_allow_list_or_malformed_is_dropped(attr: str) -> None:
    out = build(media_with(attr))
    assert out == build(media_with()), attr
    assert_clean(out)


@pytest.mark.parametrize(("attr", "written"), KEPT)
def test_allow_listed_attribute_rebuilt_in_canonical_form(attr: str, written: bytes) -> None:
    out = build(media_with(attr))
    assert lines_of(out)[6:] == [written]
    assert_valid(out)


def test_every_allow_list_entry_is_covered_above() -> None:
    kept = {k.split(":")[0][2:].lower() for k, _ in KEPT} | {
        "t38faxversion", "t38maxbitrate", "t38faxfillbitremoval", "t38faxtranscodingmmr",
        "t38faxtranscodingjbig", "t38faxratemanagement", "t38faxmaxbuffer",
        "t38faxmaxdatagram", "t38faxudpec",
    }  # fmt: skip
    assert {k.decode() for k in ATTRIBUTES} == kept


def test_session_level_attributes_only_those_meaningful_there() -> None:
    body = sdp(
        "v=0",
        "o=- 1 1 IN IP4 192.0.2.1",
        "s=-",
        "c=IN IP4 192.0.2.1",
        "t=0 0",
        "a=sendonly",
        "a=rtpmap:0 PCMU/8000",
        f"a=tool:{N}",
        "a=setup:active",
        "m=audio 4000 RTP/AVP 0",
    )
    out = build(body)
    assert lines_of(out)[4:] == [
        b"t=0 0",
        b"a=sendonly",
        b"a=setup:active",
        b"m=audio 4000 RTP/AVP 0",
    ]


# -- whole SDPs of real equipment ---------------------------------------------------------------

PBX_OFFER = sdp(
    "v=0",
    f"o=PBX-{N} 1234 5678 IN IP4 10.1.2.3",
    f"s=Asterisk PBX {CALLER.dashed}",
    "c=IN IP4 10.1.2.3",
    "b=CT:384",
    "t=0 0",
    f"a=X-caller-id:{E}",
    "a=msid-semantic: WMS *",
    "m=audio 10000 RTP/AVP 8 0 18 9 101 13",
    "a=rtpmap:8 PCMA/8000",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:18 G729/8000",
    "a=fmtp:18 annexb=no",
    "a=rtpmap:9 G722/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-16",
    "a=rtpmap:13 CN/8000",
    "a=ptime:20",
    "a=maxptime:150",
    f"a=label:caller-{N}",
    f"a=X-Avaya-UCID:{CALLER.digits}00001",
    f"a=ssrc:1122334455 cname:{N}@pbx.example.com",
    "a=sendrecv",
    "m=video 10002 RTP/AVPF 96 97",
    "b=AS:2000",
    "a=rtpmap:96 H264/90000",
    "a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9k,aM48gA==",
    "a=rtpmap:97 VP8/90000",
    "a=rtcp-fb:96 nack pli",
    "a=rtcp-fb:96 ccm fir",
    "a=rtcp-fb:* goog-remb",
    "a=imageattr:96 send [x=640,y=480] recv [x=640,y=480]",
    f"a=content:{CALLER.short}",
    "a=sendrecv",
    "m=image 10004 udptl t38",
    "a=T38FaxVersion:0",
    "a=T38MaxBitRate:14400",
    "a=T38FaxFillBitRemoval",
    "a=t38faxtranscodingmmr:0",
    "a=T38FaxTranscodingJBIG:0",
    "a=T38FaxRateManagement:transferredTCF",
    "a=T38FaxMaxBuffer:262",
    "a=T38FaxMaxDatagram:176",
    "a=T38FaxUdpEC:t38UDPRedundancy",
    f"a=T38VendorInfo:0 0 {N}",
    f"m=application 5060 TCP/BFCP {CALLER.short}",
    f"a=floorid:{N} m-stream:10",
    "m=text 10006 RTP/AVP 98",
    "a=rtpmap:98 t140/1000",
)


def test_pbx_offer_with_audio_video_fax_and_an_unknown_stream() -> None:
    out = build(PBX_OFFER)
    assert_clean(out)
    assert_valid(out)
    lines = lines_of(out)
    assert [line for line in lines if line.startswith(b"m=")] == [
        b"m=audio 10000 RTP/AVP 8 0 18 9 101 13",
        b"m=video 10002 RTP/AVPF 96 97",
        b"m=image 10004 udptl t38",
        b"m=application 0 TCP/BFCP 0",  # rejected: a protocol ansim does not carry
        b"m=text 10006 RTP/AVP 98",
    ]
    t38 = lines[
        lines.index(b"m=image 10004 udptl t38") + 1 : lines.index(b"m=application 0 TCP/BFCP 0")
    ]
    assert t38 == [
        b"a=T38FaxVersion:0",
        b"a=T38MaxBitRate:14400",
        b"a=T38FaxFillBitRemoval",
        b"a=T38FaxTranscodingMMR:0",
        b"a=T38FaxTranscodingJBIG:0",
        b"a=T38FaxRateManagement:transferredTCF",
        b"a=T38FaxMaxBuffer:262",
        b"a=T38FaxMaxDatagram:176",
        b"a=T38FaxUdpEC:t38UDPRedundancy",
    ]
    assert b"b=AS:2000" in lines and b"b=CT:384" in lines
    assert (
        b"a=fmtp:96 profile-level-id=42e01f;packetization-mode=1;sprop-parameter-sets=Z0IAHpWoKA9k,aM48gA=="
        in lines
    )


BARESIP = sdp(
    "v=0",
    "o=- 3215873142 2080990483 IN IP4 127.0.0.2",
    "s=-",
    "c=IN IP4 127.0.0.2",
    "t=0 0",
    "a=tool:baresip 1.0.0",
    "m=audio 5238 RTP/AVP 0 101",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000",
    "a=fmtp:101 0-15",
    "a=sendrecv",
    "a=label:1",
    "a=rtcp-rsize",
    f"a=ssrc:2188878967 cname:sip:{E}@127.0.0.2",
    "a=minptime:20",
    "a=ptime:20",
)

WEBRTC_GATEWAY = sdp(
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic: WMS " + N,
    "a=fingerprint:sha-256 4A:AD:B9:B1:3F:82:18:3B:54:02:12:DF:3E:5D:49:6B:19:E5:7C:AB:3C:0E:2B:3C:6C:1B:1C:5C:62:88:3A:74",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111 0 126",
    "c=IN IP4 203.0.113.7",
    "a=rtcp:9 IN IP4 0.0.0.0",
    f"a=candidate:842163049 1 udp 1677729535 203.0.113.7 50000 typ srflx raddr {N}.local rport 50000",
    f"a=ice-ufrag:{CALLER.subscriber}",
    "a=ice-pwd:asd88fgpdd777uzjYhagZg",
    "a=ice-options:trickle",
    "a=setup:actpass",
    "a=mid:0",
    "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
    "a=sendrecv",
    f"a=msid:{N} 7ac7bd33",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=rtcp-fb:111 transport-cc",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:126 telephone-event/8000",
    "a=ssrc-group:FID 3735928559 3735928560",
    f"a=ssrc:3735928559 cname:{E}",
    f"a=ssrc:3735928559 msid:{N} 7ac7bd33",
    f"a=ssrc:3735928559 mslabel:{N}",
    f"a=ssrc:3735928559 label:{N}-audio",
    f"a=ssrc:3735928560 cname:{E}",
)


@pytest.mark.parametrize("body", [BARESIP, WEBRTC_GATEWAY], ids=["baresip", "webrtc-gateway"])
def test_user_agent_sdps(body: bytes) -> None:
    out = build(body)
    assert_clean(out)
    assert_valid(out)
    assert b"ssrc" not in out and b"candidate" not in out and b"ice-" not in out
    assert out.count(b"\r\nm=") == body.count(b"\nm=")


def test_cname_is_written_only_when_the_builder_is_given_one() -> None:
    builder = SdpBuilder(5, b"198.51.100.1", cname=b"ansim-leg-5")
    out = build(WEBRTC_GATEWAY, builder)
    assert_clean(out)
    assert [line for line in lines_of(out) if b"ssrc" in line] == [
        b"a=ssrc:3735928559 cname:ansim-leg-5",
        b"a=ssrc:3735928560 cname:ansim-leg-5",
        b"a=ssrc-group:FID 3735928559 3735928560",
    ]
    assert_valid(out, b"ansim-leg-5")


def test_media_targets_replace_the_partys_addresses_and_ports() -> None:
    targets = [
        MediaTarget((b"IP4", b"198.51.100.1"), 30000, 30001),
        MediaTarget((b"IP4", b"198.51.100.1"), 30002),
        MediaTarget((b"IP6", b"2001:db8::1"), 30004),
        MediaTarget((b"IP4", b"198.51.100.1"), 30006),
        MediaTarget((b"IP4", b"198.51.100.1"), 30008),
    ]
    body = PBX_OFFER.replace(b"a=ptime:20", b"a=ptime:20\r\na=rtcp:10001 IN IP4 10.1.2.3")
    out = SdpBuilder(1, b"198.51.100.1").build(parse_sdp(body), targets)
    assert b"10.1.2.3" not in out
    assert not [p for p in (b"10000", b"10001", b"10002", b"10004", b"10006") if p in out]
    lines = lines_of(out)
    assert [line for line in lines if line[:2] in (b"m=", b"c=")] == [
        b"m=audio 30000 RTP/AVP 8 0 18 9 101 13",
        b"c=IN IP4 198.51.100.1",
        b"m=video 30002 RTP/AVPF 96 97",
        b"c=IN IP4 198.51.100.1",
        b"m=image 30004 udptl t38",
        b"c=IN IP6 2001:db8::1",
        b"m=application 0 TCP/BFCP 0",
        b"c=IN IP4 0.0.0.0",
        b"m=text 30008 RTP/AVP 98",
        b"c=IN IP4 198.51.100.1",
    ]
    assert b"a=rtcp:30001" in lines


# -- m= and c= ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("m_line", "written"),
    [
        ("m=audio 4000 RTP/AVP 0", b"m=audio 4000 RTP/AVP 0"),
        ("m=audio 4000/2 RTP/AVP 0", b"m=audio 4000/2 RTP/AVP 0"),
        ("m=audio 4000 rtp/avp 0 0 8", b"m=audio 4000 RTP/AVP 0 8"),
        ("m=audio 4000 RTP/SAVP 0", b"m=audio 4000 RTP/SAVP 0"),
        ("m=image 4000 UDPTL T38", b"m=image 4000 UDPTL t38"),
        ("m=audio 0 RTP/AVP 0", b"m=audio 0 RTP/AVP 0"),
        ("m=audio  4000   RTP/AVP  0 ", b"m=audio 4000 RTP/AVP 0"),
        # rejected streams: port 0, only plain tokens kept
        (f"m=audio 4000 RTP/AVP {N}", b"m=audio 0 RTP/AVP 0"),
        (f"m=audio {N} RTP/AVP 0", b"m=audio 0 RTP/AVP 0"),
        ("m=audio 70000 RTP/AVP 0", b"m=audio 0 RTP/AVP 0"),
        (f"m=audio 4000/{N} RTP/AVP 0", b"m=audio 0 RTP/AVP 0"),
        (f"m=audio 4000 RTP/{N} 0", b"m=audio 0 RTP/AVP 0"),
        (f"m=x-{N} 4000 RTP/AVP 0", b"m=application 0 RTP/AVP 0"),
        ("m=vendor 4000 RTP/AVP 0", b"m=vendor 0 RTP/AVP 0"),
        ("m=message 2855 TCP/MSRP *", b"m=message 0 TCP/MSRP 0"),
        ("m=application 9 UDP/DTLS/SCTP webrtc-datachannel", b"m=application 0 UDP/DTLS/SCTP 0"),
        ("m=image 4000 udptl fax", b"m=image 0 udptl t38"),
        ("m=audio", b"m=audio 0 RTP/AVP 0"),
        ("m=", b"m=application 0 RTP/AVP 0"),
    ],
)
def test_every_m_line_is_written_rebuilt_or_rejected(m_line: str, written: bytes) -> None:
    body = media_with(formats="0").replace(b"m=audio 4000 RTP/AVP 0", m_line.encode())
    out = build(body + b"a=rtpmap:0 PCMU/8000\r\n")
    lines = lines_of(out)
    assert lines[5] == written
    if written.split()[1] == b"0":
        assert lines[6:] == []  # a rejected stream carries no attributes
    assert_clean(out)
    assert_valid(out)


@pytest.mark.parametrize(
    ("connection", "usable"),
    [
        ("c=IN IP4 192.0.2.1", True),
        ("c=IN IP4 0.0.0.0", True),
        ("c=IN IP6 2001:db8::7", True),
        ("c=IN IP6 ::ffff:192.0.2.1", True),
        ("c=IN IP4 media.example.com", True),
        ("c=IN IP6 media-1.example.net", True),
        (f"c=IN IP4 {N}.example.com", False),
        (f"c=IN IP4 pbx-{CALLER.dashed}.example.com", False),
        ("c=IN IP4 192.0.2.256", False),
        ("c=IN IP4 192.0.2", False),
        ("c=IN IP4 2001:db8::7", False),
        ("c=IN IP6 192.0.2.1", False),
        ("c=IN IP4 224.2.1.1/127/3", False),
        ("c=IN IP4 -bad-.example.com", False),
        ("c=IN IP4 media.123", False),
        (f"c=IN IP4 sip:{N}@x", False),
        ("c=ATM NSAP 47.0091.8100.0000.0060.3e64.fd01.0060.3e64.fd01.00", False),
        ("c=IN IP4", False),
    ],
)
def test_connection_address_validated(connection: str, usable: bool) -> None:
    body = sdp("v=0", "o=- 1 1 IN IP4 h", "s=-", "t=0 0", "m=audio 4000 RTP/AVP 0", connection)
    out = build(body)
    lines = lines_of(out)
    if usable:
        assert lines[4:] == [b"m=audio 4000 RTP/AVP 0", connection.encode()]
    else:
        assert lines[4:] == [b"m=audio 0 RTP/AVP 0", b"c=IN IP4 0.0.0.0"]
    assert_clean(out)
    assert_valid(out)


def test_media_level_connection_overrides_an_unusable_session_one() -> None:
    body = sdp(
        "v=0",
        "o=- 1 1 IN IP4 h",
        "s=-",
        f"c=IN IP4 {N}.example.com",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        "c=IN IP4 192.0.2.9",
        "m=video 4002 RTP/AVP 96",
    )
    out = build(body)
    assert lines_of(out)[3:] == [
        b"t=0 0",
        b"m=audio 4000 RTP/AVP 0",
        b"c=IN IP4 192.0.2.9",
        b"m=video 0 RTP/AVP 96",
        b"c=IN IP4 0.0.0.0",
    ]
    assert_valid(out)


def test_unknown_and_malformed_lines_are_left_out() -> None:
    body = sdp(
        "v=0",
        f"o={N} 1 1 IN IP4 192.0.2.1",
        "s=-",
        f"x=vendor {N}",
        f"{E}",
        "c=IN IP4 192.0.2.1",
        f"b=X-vendor:{N}",
        f"b=AS:{E}",
        "t=0 0",
        "m=audio 4000 RTP/AVP 0",
        f"y={CALLER.dashed}",
        f"i=audio of {N}",
        f"k=base64:{N}",
        "a=rtpmap:0 PCMU/8000",
    )
    out = build(body)
    assert lines_of(out)[3:] == [
        b"c=IN IP4 192.0.2.1",
        b"t=0 0",
        b"m=audio 4000 RTP/AVP 0",
        b"a=rtpmap:0 PCMU/8000",
    ]


def test_the_answer_to_the_callee_number_is_clean_too() -> None:
    body = PBX_OFFER.replace(N.encode(), CALLEE.national.encode()).replace(
        E.encode(), CALLEE.e164.encode()
    )
    out = build(body)
    assert scan(body, CALLEE) and not scan(out, CALLEE)


# -- property: any input ------------------------------------------------------------------------

LINE = st.one_of(
    st.sampled_from([line.decode() for line in PBX_OFFER.split(b"\r\n")] + DROPPED),
    st.text(alphabet="vosicbtamkrz=:/ .-+0123456789abcdefINP4", max_size=40),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(LINE, max_size=40), st.sampled_from(["\r\n", "\n"]))
def test_any_input_gives_an_sdp_error_or_a_valid_sdp(lines: list[str], eol: str) -> None:
    body = ("v=0" + eol + eol.join(lines)).encode()
    out = build(body)
    assert_valid(out)
    assert out.count(b"\r\nm=") == sum(
        1 for line in body.split(eol.encode()) if line.startswith(b"m=")
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_sdp_error(data: bytes) -> None:
    try:
        out = build(data)
    except SdpError:
        return
    assert_valid(out)


def test_fmtp_keeps_registered_codec_parameters_only() -> None:
    out = build(
        media_with(
            f"a=fmtp:101 0-15;caller={E};x-pbx-line={N}",
            f"a=fmtp:96 stereo=1;x-origin={CALLER.dashed};useinbandfec=1;maxplaybackrate={N}",
        )
    )
    assert lines_of(out)[6:] == [b"a=fmtp:96 stereo=1;useinbandfec=1", b"a=fmtp:101 0-15"][::-1]
    assert_clean(out)
