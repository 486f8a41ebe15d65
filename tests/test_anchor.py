"""The engine's media seams without a relay: what a party's SDP tells the relay
(``leg_fields``), the SDP found in a message (``session_of``), rtpengine's address
(``target_of``), and the SDP a party is sent with media anchored (``SdpBuilder.anchor``)."""

from __future__ import annotations

from b2bua.anchor import leg_fields, session_of, target_of
from b2bua.sip.parser import parse_datagram
from b2bua.sip.sdp import MediaTarget, SdpBuilder, parse_sdp

OFFER = (
    b"v=0\r\no=alice 1 1 IN IP4 198.51.100.7\r\ns=call from +821012345678\r\n"
    b"c=IN IP4 198.51.100.7\r\nt=0 0\r\n"
    b"m=audio 4000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\na=rtcp:4001\r\na=rtcp-mux\r\na=sendonly\r\n"
    b"a=ssrc:1234 cname:sip:+821012345678@198.51.100.7\r\n"
    b"m=video 5000 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
)


def test_leg_fields_of_a_party_sdp() -> None:
    fields, events = leg_fields(parse_sdp(OFFER))
    assert events == 101
    assert fields == {
        "remote": ["198.51.100.7", 4000],
        "rtcp": ["198.51.100.7", 4001],
        "mux": True,
        "direction": "sendonly",
        "events": 101,
        "codecs": {101: "telephone-event/8000", 8: "PCMA/8000", 0: "PCMU/8000"},
    }


def test_leg_fields_without_audio_and_on_hold() -> None:
    fields, events = leg_fields(
        parse_sdp(b"v=0\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n")
    )
    assert (fields["remote"], fields["direction"], events) == (["0.0.0.0", 4000], "sendrecv", None)
    fields, events = leg_fields(
        parse_sdp(b"v=0\r\nc=IN IP4 1.2.3.4\r\nt=0 0\r\nm=video 4000 RTP/AVP 96\r\n")
    )
    assert (fields, events) == ({"remote": None}, None)


def test_anchored_sdp_names_only_the_media_engine() -> None:
    builder = SdpBuilder(77, b"192.0.2.1")
    builder.anchor = MediaTarget((b"IP4", b"192.0.2.9"), 30000, 30001)
    builder.cname = b"0011223344556677"
    out = builder.build(parse_sdp(OFFER))
    assert b"198.51.100.7" not in out and b"12345678" not in out
    lines = out.split(b"\r\n")
    assert b"m=audio 30000 RTP/AVP 8 0 101" in lines and b"c=IN IP4 192.0.2.9" in lines
    assert b"a=rtcp:30001" in lines and b"a=ssrc:1234 cname:0011223344556677" in lines
    assert b"m=video 0 RTP/AVP 96" in lines  # only the first audio section is carried
    assert target_of(parse_sdp(out)) == MediaTarget((b"IP4", b"192.0.2.9"), 30000, 30001)


def test_rtcp_sent_to_a_sink_written_with_its_address_and_no_mux() -> None:
    """rtpengine mode: the party's RTCP goes to the engine's sink, not rtpengine's port,
    whether or not the SDP it is built from had a=rtcp, and rtcp-mux is not written."""
    sink = MediaTarget((b"IP4", b"192.0.2.9"), 30000, 41000, (b"IP4", b"192.0.2.1"))
    v6 = MediaTarget((b"IP4", b"192.0.2.9"), 30000, 41000, (b"IP6", b"2001:db8::5"))
    no_rtcp = OFFER.replace(b"a=rtcp:4001\r\n", b"")
    for sdp, target, line in (
        (OFFER, sink, b"a=rtcp:41000 IN IP4 192.0.2.1"),
        (no_rtcp, sink, b"a=rtcp:41000 IN IP4 192.0.2.1"),
        (OFFER, v6, b"a=rtcp:41000 IN IP6 2001:db8::5"),
    ):
        builder = SdpBuilder(77, b"192.0.2.1")
        builder.anchor = target
        lines = builder.build(parse_sdp(sdp)).split(b"\r\n")
        rtcp = [x for x in lines if x.startswith(b"a=rtcp")]
        assert rtcp == [line], lines
    # Without a sink, rtcp-mux is written as the party's SDP has it (relay mode muxes).
    builder = SdpBuilder(77, b"192.0.2.1")
    builder.anchor = MediaTarget((b"IP4", b"192.0.2.9"), 30000, 30001)
    assert b"a=rtcp-mux" in builder.build(parse_sdp(OFFER)).split(b"\r\n")


def test_session_of_plain_and_multipart_bodies() -> None:
    head = (
        b"INVITE sip:x@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.5;branch=z9hG4bK1\r\n"
        b"From: <sip:a@h>;tag=1\r\nTo: <sip:x@h>\r\nCall-ID: c1\r\nCSeq: 1 INVITE\r\n"
        b"Max-Forwards: 70\r\n"
    )
    plain = head + b"Content-Type: application/sdp\r\nContent-Length: %d\r\n\r\n" % len(OFFER)
    desc = session_of(parse_datagram(plain + OFFER))
    assert desc is not None and desc.media[0].port == 4000
    part = b"--b1\r\nContent-Type: application/sdp\r\n\r\n" + OFFER + b"\r\n--b1--\r\n"
    multi = head + b"Content-Type: multipart/mixed;boundary=b1\r\nContent-Length: %d\r\n\r\n" % len(
        part
    )
    desc = session_of(parse_datagram(multi + part))
    assert desc is not None and desc.media[0].port == 4000
    none = head + b"Content-Length: 0\r\n\r\n"
    assert session_of(parse_datagram(none)) is None
