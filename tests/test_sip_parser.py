"""The sans-IO SIP message layer: message model, parser, URIs, Via, routing, validation.

Covers ``b2bua.sip.message`` (header access by name, compact forms, multi-valued
headers, raw lines kept, edits and serialization), ``b2bua.sip.parser`` (datagrams and
the TCP ``StreamParser``: several messages per read, partial reads down to one byte at
a time, keep-alive CRLFs, oversize and framing errors), ``b2bua.sip.uri`` (sip, sips,
tel and other schemes, escapes, name-addr), ``b2bua.sip.via`` (branch, received,
rport), ``b2bua.sip.routing`` (where responses go, ``received``/``rport`` stamping),
``b2bua.sip.validate`` (every rejection and its status) and
``b2bua.sip.responses``.
"""

from __future__ import annotations

import random

import pytest

from b2bua.sip.errors import SipParseError
from b2bua.sip.headers import COMPACT, canonical, split_values
from b2bua.sip.message import Request, Response
from b2bua.sip.parser import MAX_MESSAGE, StreamParser, parse_datagram
from b2bua.sip.responses import make_response
from b2bua.sip.routing import response_destination, stamp_received
from b2bua.sip.uri import parse_name_addr, parse_params, parse_uri, unescape
from b2bua.sip.validate import ACCEPT_HEADER, ALLOW_HEADER, check_request, check_response
from b2bua.sip.via import parse_via

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
)


def invite(
    *,
    extra: bytes = b"",
    body: bytes = SDP,
    method: bytes = b"INVITE",
    uri: bytes = b"sip:+825012345678@198.51.100.7",
) -> bytes:
    head = (
        method + b" " + uri + b" SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-abc123;rport\r\n"
        b"Max-Forwards: 70\r\n"
        b'From: "Alice" <sip:+821012345678@192.0.2.10>;tag=a1\r\n'
        b"To: <sip:+825012345678@198.51.100.7>\r\n"
        b"Call-ID: c1@192.0.2.10\r\n"
        b"CSeq: 1 " + method + b"\r\n"
        b"Contact: <sip:+821012345678@192.0.2.10:5060>\r\n"
        b"Content-Type: application/sdp\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body)
    )
    return head + body


OK = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsrv1;rport=5060;received=127.0.0.1\r\n"
    b"From: <sip:a@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:b@127.0.0.1>;tag=t1\r\n"
    b"Call-ID: ok1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def req(data: bytes) -> Request:
    msg = parse_datagram(data)
    assert isinstance(msg, Request)
    return msg


def resp(data: bytes) -> Response:
    msg = parse_datagram(data)
    assert isinstance(msg, Response)
    return msg


# -- message model ------------------------------------------------------------------------------
def test_request_fields() -> None:
    r = req(invite())
    assert (r.method, r.uri, r.version) == (
        b"INVITE",
        b"sip:+825012345678@198.51.100.7",
        b"SIP/2.0",
    )
    assert r.call_id == b"c1@192.0.2.10"
    assert r.cseq == (1, b"INVITE")
    assert r.from_tag == b"a1" and r.to_tag is None
    assert r.from_.display == b"Alice"
    assert r.via.branch == b"z9hG4bK-abc123"
    assert r.body == SDP
    assert repr(r) == "<Request INVITE sip:+825012345678@198.51.100.7>"


def test_response_fields() -> None:
    r = resp(OK)
    assert (r.status, r.reason, r.version) == (200, b"OK", b"SIP/2.0")
    assert r.to_tag == b"t1" and r.cseq == (7, b"INVITE")
    assert r.via.received == b"127.0.0.1" and r.via.rport == 5060
    assert repr(r) == "<Response 200 OK>"


def test_header_access_is_case_insensitive_and_compact_forms_expand() -> None:
    lines = [b"OPTIONS sip:x@h SIP/2.0"]
    for short, full in COMPACT.items():
        lines.append(short.upper() + b": " + (b"0" if short == b"l" else b"v-" + full))
    data = b"\r\n".join(lines) + b"\r\n\r\n"
    r = req(data)
    assert len(COMPACT) == 19
    for short, full in COMPACT.items():
        assert r.get(full) == (b"0" if short == b"l" else b"v-" + full), short
    assert set(COMPACT) == set(b"v f t i m l c k s e o r u x y b a d j".split())
    r2 = req(b"OPTIONS sip:x@h SIP/2.0\r\nCALL-id: A\r\ncall-ID :  B \r\nl: 0\r\n\r\n")
    assert r2.get_all(b"call-id") == [b"A", b"B"]
    assert r2.get(b"content-length") == b"0"


def test_multi_valued_headers() -> None:
    r = req(
        b"OPTIONS sip:x@h SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP a;branch=z9hG4bK1, SIP/2.0/UDP b;branch=z9hG4bK2\r\n"
        b"v: SIP/2.0/UDP c;branch=z9hG4bK3\r\n"
        b'Contact: "A, B" <sip:a@h>;q=0.5, <sip:b@h;x=1,2>\r\n'
        b"Supported: timer,100rel\r\n"
        b"Supported: replaces\r\n\r\n"
    )
    assert r.count(b"via") == 2
    assert [parse_via(v).host for v in r.values(b"via")] == [b"a", b"b", b"c"]
    assert r.via.host == b"a"
    assert r.values(b"contact") == [b'"A, B" <sip:a@h>;q=0.5', b"<sip:b@h;x=1,2>"]
    assert r.values(b"supported") == [b"timer", b"100rel", b"replaces"]
    assert r.get_all(b"supported") == [b"timer,100rel", b"replaces"]
    assert r.has(b"supported") and not r.has(b"require")
    assert r.get(b"require") is None and r.get_all(b"require") == [] and r.values(b"require") == []


def test_untouched_headers_are_forwarded_byte_for_byte() -> None:
    data = invite(extra=b"X-Odd-Header:   keep   this ;spacing\r\nsubject:lower\r\n")
    r = req(data)
    assert r.serialize() == data
    assert bytes(r) == data
    assert b"X-Odd-Header:   keep   this ;spacing" in r.lines


def test_edits_and_serialize() -> None:
    r = req(invite())
    assert r.via.host == b"192.0.2.10"
    r.set(b"via", b"SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKnew")
    assert r.via.host == b"10.0.0.1"  # cached Via dropped on edit
    r.add(b"via", b"SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKtop", first=True)
    assert r.via.host == b"10.0.0.2" and r.count(b"via") == 2
    r.add(b"record-route", b"<sip:10.0.0.2;lr>")
    assert r.get(b"record-route") == b"<sip:10.0.0.2;lr>"
    assert b"Record-Route: <sip:10.0.0.2;lr>" in r.lines
    r.set(b"cseq", b"2 INVITE")
    assert r.cseq == (2, b"INVITE")
    r.set(b"from", b"<sip:x@h>;tag=zz")
    assert r.from_tag == b"zz"
    r.set(b"to", b"<sip:y@h>;tag=yy")
    assert r.to_tag == b"yy"
    assert r.remove_first(b"via") == b"SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKtop"
    assert r.via.host == b"10.0.0.1"
    assert r.remove_first(b"x-none") is None
    assert r.remove(b"contact") == 1 and r.remove(b"contact") == 0
    r.set_uri(b"sip:b@192.0.2.99")
    assert r.lines[0] == b"INVITE sip:b@192.0.2.99 SIP/2.0" and r.uri == b"sip:b@192.0.2.99"
    r.body = b"new body"
    out = r.serialize()
    again = req(out)
    assert again.body == b"new body" and again.get(b"content-length") == b"8"
    assert again.get(b"call-id") == b"c1@192.0.2.10"
    assert [name for name, _ in again.header_items()].count(b"via") == 1
    assert canonical(b"call-id") == b"Call-ID" and canonical(b"x-my-header") == b"X-My-Header"


def test_serialize_adds_and_repairs_content_length() -> None:
    r = Request(b"OPTIONS", b"sip:x@h")
    r.add(b"call-id", b"1")
    assert r.serialize() == b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: 1\r\nContent-Length: 0\r\n\r\n"
    r.body = b"abc"
    assert r.serialize().endswith(b"Content-Length: 3\r\n\r\nabc")
    twice = req(b"OPTIONS sip:x@h SIP/2.0\r\nl: 0\r\nContent-Length: 0\r\n\r\n")
    assert twice.serialize().count(b"Content-Length") == 1
    resp_ = Response(486, b"Busy Here")
    assert resp_.serialize() == b"SIP/2.0 486 Busy Here\r\nContent-Length: 0\r\n\r\n"


def test_missing_or_malformed_core_fields_raise() -> None:
    r = req(b"OPTIONS sip:x@h SIP/2.0\r\nCSeq: x OPTIONS\r\nFrom: <sip:a@h\r\n\r\n")
    for attr in ("via", "call_id", "to"):
        with pytest.raises(SipParseError):
            getattr(r, attr)
    with pytest.raises(SipParseError, match="bad CSeq"):
        r.cseq  # noqa: B018
    with pytest.raises(SipParseError, match="unterminated"):
        r.from_  # noqa: B018
    for bad in (b"1", b"-1 X", b"2147483648 X", b"99999999999 X", b" X"):
        with pytest.raises(SipParseError):
            req(b"OPTIONS sip:x@h SIP/2.0\r\nCSeq: " + bad + b"\r\n\r\n").cseq  # noqa: B018
    assert req(b"OPTIONS sip:x@h SIP/2.0\r\nCSeq: 2147483647\tOPTIONS\r\n\r\n").cseq == (
        2147483647,
        b"OPTIONS",
    )
    assert req(b"OPTIONS sip:x@h SIP/2.0\r\nCSeq: 5 \t  OPTIONS\r\n\r\n").cseq == (5, b"OPTIONS")


# -- parse_datagram -----------------------------------------------------------------------------
def test_datagram_leading_crlfs_and_missing_final_crlf() -> None:
    assert req(b"\r\n\r\n\r\n" + invite()).method == b"INVITE"
    r = req(b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: 1\r\n")
    assert r.call_id == b"1" and r.body == b""
    with pytest.raises(SipParseError, match="no end of headers"):
        parse_datagram(b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: 1")
    for empty in (b"", b"\r\n", b"\r\n\r\n"):
        with pytest.raises(SipParseError):
            parse_datagram(empty)


def test_datagram_body_and_content_length() -> None:
    no_cl = b"MESSAGE sip:x@h SIP/2.0\r\nCall-ID: 1\r\n\r\nhello"
    assert req(no_cl).body == b"hello"  # UDP: the datagram ends the body
    extra = invite(body=b"0123456789")[:-10] + b"0123456789TRAILING"
    assert req(extra).body == b"0123456789"
    with pytest.raises(SipParseError) as exc:
        parse_datagram(invite(body=b"0123456789")[:-3])
    assert exc.value.status == 400 and isinstance(exc.value.message, Request)
    for bad in (b"-1", b"abc", b"1234567890", b"1 2"):
        data = (
            b"INVITE sip:x@h SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: "
            + bad
            + b"\r\n\r\n"
        )
        with pytest.raises(SipParseError, match="bad Content-Length") as exc:
            parse_datagram(data)
        assert exc.value.status == 400
        assert isinstance(exc.value.message, Request) and exc.value.message.has(b"via")


def test_datagram_oversize() -> None:
    data = invite(body=b"x" * (MAX_MESSAGE + 1))
    with pytest.raises(SipParseError) as exc:
        parse_datagram(data)
    assert exc.value.status == 513


def test_datagram_malformed_header_line_keeps_enough_to_answer() -> None:
    for line in (b"NoColonHere", b"Bad Name: x", b": empty name", b"Tab\tName: x", b"(x): y"):
        req(invite())  # the cache now knows the good names
        data = invite(extra=line + b"\r\n")
        with pytest.raises(SipParseError, match="malformed header line") as exc:
            parse_datagram(data)
        partial = exc.value.message
        assert exc.value.status == 400 and isinstance(partial, Request)
        assert partial.method == b"INVITE" and partial.via.branch == b"z9hG4bK-abc123"
        assert partial.call_id == b"c1@192.0.2.10"


def test_request_line_and_status_line_errors() -> None:
    for start in (
        b"INVITE  sip:x@h SIP/2.0",
        b"INVITE sip:x@h SIP/2.0 ",
        b"INVITE sip:x@h",
        b"INVITE sip:x@h SIP/2.0 x",
    ):
        with pytest.raises(SipParseError, match="malformed request line") as exc:
            parse_datagram(start + b"\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\n\r\n")
        assert isinstance(exc.value.message, Request) and exc.value.message.has(b"via")
    with pytest.raises(SipParseError, match="malformed method"):
        parse_datagram(b"INV(ITE sip:x@h SIP/2.0\r\n\r\n")
    with pytest.raises(SipParseError, match="malformed request line"):
        parse_datagram(b"INVITE sip:x@h HTTP/1.1\r\n\r\n")
    for start in (
        b"SIP/2.0 20 OK",
        b"SIP/2.0 2000 OK",
        b"SIP/2.0 abc OK",
        b"SIP/2.0",
        b"SIP/2.0 4294967301 x",
    ):
        with pytest.raises(SipParseError, match="status line"):
            parse_datagram(start + b"\r\n\r\n")
    with pytest.raises(SipParseError, match="out of range"):
        parse_datagram(b"SIP/2.0 099 Low\r\n\r\n")
    assert resp(b"SIP/2.0 799 High\r\n\r\n").status == 799  # left to check_response
    assert resp(b"SIP/2.0 100\r\n\r\n").reason == b""
    assert resp(b"SIP/2.0 180 Ringing Now\r\n\r\n").reason == b"Ringing Now"


def test_sip_version_is_case_insensitive() -> None:
    r = req(invite().replace(b" SIP/2.0\r\n", b" sip/2.0\r\n", 1))
    assert r.version == b"sip/2.0" and check_request(r) is None
    low = resp(b"sip/2.0 200 OK\r\n\r\n")
    assert low.status == 200
    ok = resp(OK.replace(b"SIP/2.0 200", b"Sip/2.0 200"))
    assert check_response(ok) is None


def test_extension_method_tokens() -> None:
    r = req(b"!interesting-Method0123456789_*+`.%indeed'~ sip:x@h SIP/2.0\r\n\r\n")
    assert r.method == b"!interesting-Method0123456789_*+`.%indeed'~"


def test_line_folding() -> None:
    r = req(
        b"OPTIONS sip:x@h SIP/2.0\r\nSubject: one\r\n  two\r\n\tthree\r\nTo:\r\n <sip:b@h>\r\n\r\n"
    )
    assert r.get(b"subject") == b"one two three"
    assert r.to.uri_raw == b"sip:b@h"
    with pytest.raises(SipParseError, match="malformed header line"):
        parse_datagram(b"OPTIONS sip:x@h SIP/2.0\r\n folded-onto-start: x\r\n\r\n")


# -- StreamParser --------------------------------------------------------------------------------
def _stream_messages() -> list[bytes]:
    return [
        invite(),
        OK,
        b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: o1\r\nContent-Length: 0\r\n\r\n",
        invite(body=b"\r\n\r\nbody with CRLFCRLF inside\r\n\r\n"),
    ]


def test_stream_several_messages_per_read() -> None:
    msgs = _stream_messages()
    sp = StreamParser()
    out = sp.feed(b"".join(msgs))
    assert len(out) == 4 and sp.buffered == 0
    assert [m.serialize() for m in out if not isinstance(m, SipParseError)] == msgs
    assert out[3].body == b"\r\n\r\nbody with CRLFCRLF inside\r\n\r\n"  # type: ignore[union-attr]


def test_stream_byte_by_byte() -> None:
    msgs = _stream_messages()
    data = b"".join(msgs)
    sp = StreamParser()
    out: list = []
    for i in range(len(data)):
        got = sp.feed(data[i : i + 1])
        if got:
            assert i + 1 in {sum(len(m) for m in msgs[: k + 1]) for k in range(len(msgs))}
        out.extend(got)
    assert [m.serialize() for m in out] == msgs
    assert sp.buffered == 0


def test_stream_random_chunks() -> None:
    msgs = _stream_messages() * 5
    data = b"".join(msgs)
    rng = random.Random(4475)
    for _ in range(50):
        sp = StreamParser()
        out: list = []
        pos = 0
        while pos < len(data):
            n = rng.randint(1, 700)
            out.extend(sp.feed(data[pos : pos + n]))
            pos += n
        assert [m.serialize() for m in out] == msgs


def test_stream_body_arriving_later() -> None:
    data = invite()
    head_end = data.index(b"\r\n\r\n") + 4
    sp = StreamParser()
    assert sp.feed(data[:head_end]) == []
    assert sp.buffered == head_end
    assert sp.feed(data[head_end:-1]) == []
    (msg,) = sp.feed(data[-1:])
    assert isinstance(msg, Request) and msg.body == SDP


def test_stream_keepalives() -> None:
    sp = StreamParser()
    assert sp.feed(b"\r\n\r\n") == [] and sp.pings == 1
    for b in b"\r\n\r\n":  # a keep-alive split across reads still counts
        assert sp.feed(bytes([b])) == []
    assert sp.pings == 2
    out = sp.feed(b"\r\n\r\n" + OK + b"\r\n\r\n\r\n" + OK + b"\r\n")
    assert len(out) == 2 and sp.pings == 4
    assert sp.buffered == 2  # a lone CRLF waits: it may be half a keep-alive
    out = sp.feed(b"\r\n" + OK)
    assert len(out) == 1 and sp.pings == 5
    assert sp.feed(b"\r\n") == [] and sp.feed(OK)[0].status == 200  # type: ignore[union-attr]
    assert sp.pings == 5 and sp.feed(b"") == []


def test_stream_missing_content_length_means_empty_body() -> None:
    sp = StreamParser()
    out = sp.feed(b"OPTIONS sip:x@h SIP/2.0\r\nCall-ID: 1\r\n\r\n" + OK)
    assert len(out) == 2 and out[0].body == b""  # type: ignore[union-attr]


def test_stream_oversize() -> None:
    sp = StreamParser(max_message=2000)
    with pytest.raises(SipParseError) as exc:
        sp.feed(b"OPTIONS sip:x@h SIP/2.0\r\nX: " + b"a" * 2100)
    assert exc.value.status == 513
    sp = StreamParser(max_message=2000)
    for _ in range(10):
        sp.feed(b"a" * 150)  # no end of headers yet: buffered
    with pytest.raises(SipParseError, match="too large"):
        sp.feed(b"a" * 600)
    sp = StreamParser(max_message=2000)
    with pytest.raises(SipParseError, match="too large"):
        sp.feed(b"OPTIONS sip:x@h SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    sp = StreamParser(max_message=len(OK))
    assert len(sp.feed(OK)) == 1  # exactly the limit is fine


def test_stream_framing_error_after_good_messages() -> None:
    sp = StreamParser()
    bad = b"INVITE sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: -5\r\n\r\n"
    out = sp.feed(OK + OK + bad + OK)
    assert len(out) == 2 and all(isinstance(m, Response) for m in out)  # handed over first
    with pytest.raises(SipParseError, match="bad Content-Length"):
        sp.feed(OK)  # then the connection is given up
    with pytest.raises(SipParseError) as exc:
        StreamParser().feed(bad)
    assert exc.value.status == 400 and isinstance(exc.value.message, Request)


def test_stream_malformed_but_framed_message_does_not_break_the_stream() -> None:
    sp = StreamParser()
    bad_line = invite(extra=b"Broken header line\r\n")
    bad_start = b"INVITE  sip:x@h SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nContent-Length: 3\r\n\r\nabc"
    out = sp.feed(OK + bad_line + bad_start + OK)
    assert [type(m).__name__ for m in out] == [
        "Response",
        "SipParseError",
        "SipParseError",
        "Response",
    ]
    assert isinstance(out[1], SipParseError) and isinstance(out[1].message, Request)
    assert out[1].message.call_id == b"c1@192.0.2.10"
    assert sp.buffered == 0


# -- URIs and name-addr -------------------------------------------------------------------------
def test_sip_uri_parts() -> None:
    u = parse_uri(
        b"sip:alice:secret@Example.COM:5070;transport=TCP;lr;Maddr=10.0.0.1?subject=hi&x=y"
    )
    assert (u.scheme, u.user, u.password, u.host, u.port) == (
        b"sip",
        b"alice",
        b"secret",
        b"Example.COM",
        5070,
    )
    assert u.params == {b"transport": b"TCP", b"lr": None, b"maddr": b"10.0.0.1"}
    assert u.headers == b"subject=hi&x=y" and u.is_sip and bytes(u) == u.raw
    s = parse_uri(b"SIPS:bob@[2001:db8::1]:5061")
    assert (s.scheme, s.user, s.host, s.port) == (b"sips", b"bob", b"[2001:db8::1]", 5061)
    h = parse_uri(b"sip:[::1]")
    assert (h.user, h.host, h.port) == (None, b"[::1]", None)
    assert parse_uri(b"sip:host.example").host == b"host.example"
    semi = parse_uri(b"sip:user;par=u%40example.net@example.com;lr")
    assert (semi.user, semi.host, semi.params) == (
        b"user;par=u%40example.net",
        b"example.com",
        {b"lr": None},
    )


def test_tel_and_other_schemes() -> None:
    t = parse_uri(b"tel:+1-201-555-0123;phone-context=example.com;ext=12")
    assert (t.scheme, t.user) == (b"tel", b"+1-201-555-0123")
    assert t.params == {b"phone-context": b"example.com", b"ext": b"12"} and not t.is_sip
    o = parse_uri(b"soap.beep://192.0.2.103:3002")
    assert (o.scheme, o.opaque, o.user) == (b"soap.beep", b"//192.0.2.103:3002", None)
    assert parse_uri(b"urn:service:sos").opaque == b"service:sos"


def test_escapes() -> None:
    assert unescape(b"sips%3Auser%40example.com") == b"sips:user@example.com"
    assert unescape(b"%75se%72") == b"user"
    assert unescape(b"null-%00-null") == b"null-\x00-null"
    assert (
        unescape(b"100%") == b"100%" and unescape(b"%4") == b"%4" and unescape(b"%zz%41") == b"%zzA"
    )
    assert unescape(b"plain") == b"plain"
    u = parse_uri(b"sip:%61lice@h;%6C%72")
    assert u.user == b"%61lice" and u.user_unescaped == b"alice" and b"%6c%72" in u.params
    assert parse_uri(b"sip:h").user_unescaped is None


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"nocolon", b":x", b"sip:user@", b"sip:@host", b"sip:a b@h", b"sip:h;", b"sip:h;=v",
        b"sip:h;x=", b"sip:h:", b"sip:h:99999", b"sip:h:5x", b"sip:[::1", b"sip:[::1]x", b"sip:h?",
        b"tel:", b"tel:;x=1", b"9ip:h", b"s_p:h", b"mailto:", b"sip:h<x>",
    ],
)  # fmt: skip
def test_malformed_uris(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_uri(raw)


def test_params() -> None:
    assert parse_params(b";a=1; B = 2 ;c", what="x") == {b"a": b"1", b"b": b"2", b"c": None}
    assert parse_params(b"", what="x") == {}
    with pytest.raises(SipParseError, match="empty x parameter"):
        parse_params(b";a;;b", what="x")


def test_name_addr_forms() -> None:
    q = parse_name_addr(b'"J Rosenberg \\\\\\"" <sip:jdrosen@example.com>;tag=98asjd8;X=Y')
    assert q.display == b'J Rosenberg \\\\\\"' and q.uri_raw == b"sip:jdrosen@example.com"
    assert q.tag == b"98asjd8" and q.params == {b"tag": b"98asjd8", b"x": b"Y"}
    t = parse_name_addr(b"Bell Alexander <sip:a@h>")
    assert t.display == b"Bell Alexander" and t.uri.host == b"h"
    n = parse_name_addr(b"caller<sip:caller@example.com>;tag=323")
    assert n.display == b"caller"
    a = parse_name_addr(b"sip:+12125551212@server.phone2net.com;tag=887s")
    assert (
        a.display is None
        and a.uri_raw == b"sip:+12125551212@server.phone2net.com"
        and a.tag == b"887s"
    )
    assert parse_name_addr(b"<sip:x@h;lr>").uri.params == {b"lr": None}
    assert parse_name_addr(b"  isbn:2983792873  ").uri.scheme == b"isbn"
    assert parse_name_addr(b'""<sip:x@h>').display == b""
    assert parse_name_addr(b"<sip:x@h>").tag is None
    assert "NameAddr" in repr(a) and "Uri" in repr(a.uri)


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"   ", b'"Mr. J. User <sip:j.user@example.com>', b'"x" sip:a@h', b"<sip:a@h",
        b"< sip:a@h >", b"<sip:a@h> junk", b"<>", b"Bell, Alexander <sip:a@h>",
        b"sip:user@example.com?Route=%3Csip:sip.example.com%3E", b"sip:a@h, sip:b@h",
        b"<sip:a@h>;;tag=1", b"<sip:a@h>;tag=",
    ],
)  # fmt: skip
def test_malformed_name_addrs(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_name_addr(raw).uri  # noqa: B018


# -- Via -----------------------------------------------------------------------------------------
def test_via_parts() -> None:
    v = parse_via(b"SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK776;received=10.0.0.1;rport=1234")
    assert (v.transport, v.host, v.port, v.branch) == (b"UDP", b"192.0.2.1", 5070, b"z9hG4bK776")
    assert v.received == b"10.0.0.1" and v.has_rport and v.rport == 1234 and v.rfc3261_branch
    e = parse_via(b"SIP/2.0/tcp host;rport;branch=390skdjuw")
    assert e.transport == b"TCP" and e.port is None and e.has_rport and e.rport is None
    assert not e.rfc3261_branch and e.received is None
    assert parse_via(b"SIP/2.0/UDP host").branch is None
    assert parse_via(b"SIP/2.0/UDP host;branch=z9hG4bK").rfc3261_branch  # the cookie alone
    ws = parse_via(b"SIP  /   2.0 /UDP    192.0.2.2 ;  branch =  z9hG4bKx")
    assert (ws.transport, ws.host, ws.branch) == (b"UDP", b"192.0.2.2", b"z9hG4bKx")
    six = parse_via(b"SIP/2.0/UDP [2001:db8::9]:5062;branch=z9hG4bK1")
    assert (six.host, six.port) == (b"[2001:db8::9]", 5062)
    assert parse_via(b"SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf").transport == b"SCTP"
    assert "Via" in repr(v)


@pytest.mark.parametrize(
    "raw",
    [
        b"", b"SIP/2.0", b"SIP/2.0/", b"SIP//UDP h", b"/2.0/UDP h", b"SIP/2.0/UDP", b"SIP/2.0/UDP ;branch=x",
        b"SIP/2.0/UDP h:;branch=x", b"SIP/2.0/UDP h:70000", b"SIP/2.0/UDP :5060", b"SIP/2.0/UDP [::1",
        b"SIP/2.0/UDP [::1]x", b"SIP/2.0/UDP 192.0.2.15;;,;,,", b"SIP/2.0/UDP h;branch=",
        b"SIP/2.0/UDP h j",
    ],
)  # fmt: skip
def test_malformed_vias(raw: bytes) -> None:
    with pytest.raises(SipParseError):
        parse_via(raw)


# -- routing ---------------------------------------------------------------------------------------
def test_response_destination() -> None:
    plain = parse_via(b"SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1")
    no_port = parse_via(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1")
    rport = parse_via(b"SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bK1;rport")
    src = ("udp", "203.0.113.5", 40000)
    assert response_destination(plain, src, symmetric=True) == src
    assert response_destination(rport, src, symmetric=False) == src
    # §18.2.2: the received address (the source) and the sent-by port, or 5060
    assert response_destination(plain, src, symmetric=False) == ("udp", "203.0.113.5", 5070)
    assert response_destination(no_port, src, symmetric=False) == ("udp", "203.0.113.5", 5060)
    tcp = ("tcp", "203.0.113.5", 40001)
    assert response_destination(plain, tcp, symmetric=False) == tcp  # the same connection


def _stamp(value: bytes, source: tuple[str, str, int]) -> bytes | None:
    return stamp_received(value, parse_via(value.split(b",")[0]), source)


def test_stamp_received_and_rport() -> None:
    src = ("udp", "203.0.113.5", 40000)
    assert _stamp(b"SIP/2.0/UDP 203.0.113.5:5060;branch=z9hG4bK1", src) is None  # nothing to add
    assert (
        _stamp(b"SIP/2.0/UDP host.example.com;branch=z9hG4bK1", src)
        == b"SIP/2.0/UDP host.example.com;branch=z9hG4bK1;received=203.0.113.5"
    )
    # RFC 3581: an empty rport gets the port, and received is added even when equal
    assert (
        _stamp(b"SIP/2.0/UDP 203.0.113.5:5060;rport;branch=z9hG4bK1", src)
        == b"SIP/2.0/UDP 203.0.113.5:5060;rport=40000;branch=z9hG4bK1;received=203.0.113.5"
    )
    assert (
        _stamp(b"SIP/2.0/UDP h;branch=z9hG4bK1; RPORT", src)
        == b"SIP/2.0/UDP h;branch=z9hG4bK1;rport=40000;received=203.0.113.5"
    )
    # a parameter whose name starts with rport is not rport
    assert (
        _stamp(b"SIP/2.0/UDP h;rportal=1;branch=z9hG4bK1;rport", src)
        == b"SIP/2.0/UDP h;rportal=1;branch=z9hG4bK1;rport=40000;received=203.0.113.5"
    )
    # a stale received is replaced; one already right is left alone
    assert (
        _stamp(b"SIP/2.0/UDP h;received=10.9.9.9;branch=z9hG4bK1", src)
        == b"SIP/2.0/UDP h;branch=z9hG4bK1;received=203.0.113.5"
    )
    assert _stamp(b"SIP/2.0/UDP h;received=203.0.113.5;branch=z9hG4bK1", src) is None
    # only the top Via of a comma-separated line changes
    line = (
        b"SIP/2.0/UDP a.example;branch=z9hG4bK1;rport, SIP/2.0/UDP b.example;branch=z9hG4bK0;rport"
    )
    assert _stamp(line, src) == (
        b"SIP/2.0/UDP a.example;branch=z9hG4bK1;rport=40000;received=203.0.113.5,"
        b" SIP/2.0/UDP b.example;branch=z9hG4bK0;rport"
    )
    assert _stamp(b"SIP/2.0/UDP 203.0.113.5;branch=z9hG4bK1;rport=999", src) is None


# -- validate --------------------------------------------------------------------------------------
GOOD = invite()


def _rejection(data: bytes) -> tuple[int, str, dict[bytes, bytes]] | None:
    rej = check_request(req(data))
    return None if rej is None else (rej.status, rej.reason, dict(rej.headers))


def _without(name: bytes) -> bytes:
    return b"\r\n".join(line for line in GOOD.split(b"\r\n") if not line.startswith(name + b":"))


def test_check_request_accepts_good_requests() -> None:
    assert _rejection(GOOD) is None
    for method in (b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"PRACK", b"UPDATE", b"INFO"):
        assert _rejection(invite(method=method)) is None, method
    assert _rejection(invite(uri=b"tel:+825012345678")) is None
    assert _rejection(invite(uri=b"sips:b@h")) is None
    assert _rejection(invite(extra=b"Require: 100rel, Timer\r\n")) is None
    assert _rejection(invite(extra=b"Expires: 4294967295\r\n")) is None
    assert (
        _rejection(
            GOOD.replace(
                b"Content-Type: application/sdp", b"Content-Type: multipart/mixed;boundary=x"
            )
        )
        is None
    )
    assert (
        _rejection(invite(method=b"OPTIONS").replace(b"Max-Forwards: 70", b"Max-Forwards: 0"))
        is None
    )


@pytest.mark.parametrize("name", [b"Via", b"From", b"To", b"Call-ID", b"CSeq"])
def test_check_request_missing_header(name: bytes) -> None:
    got = _rejection(_without(name))
    assert got is not None and got[0] == 400 and name.decode().lower() in got[1].lower()


@pytest.mark.parametrize(
    ("data", "status", "phrase"),
    [
        (GOOD.replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1), 505, "Version Not Supported"),
        (invite(extra=b"To: <sip:other@h>\r\n"), 400, "Multiple To"),
        (invite(extra=b"From: <sip:other@h>;tag=2\r\n"), 400, "Multiple From"),
        (invite(extra=b"i: second\r\n"), 400, "Multiple Call-Id"),
        (invite(extra=b"CSeq: 2 INVITE\r\n"), 400, "Multiple Cseq"),
        (invite(extra=b"Max-Forwards: 5\r\n"), 400, "Multiple Max-Forwards"),
        (invite(extra=b"l: 0\r\n"), 400, "Multiple Content-Length"),
        (invite(extra=b"c: text/plain\r\n"), 400, "Multiple Content-Type"),
        (GOOD.replace(b"CSeq: 1 INVITE", b"CSeq: 1 BYE"), 400, "CSeq method"),
        (GOOD.replace(b"CSeq: 1 INVITE", b"CSeq: 2147483648 INVITE"), 400, "bad CSeq"),
        (GOOD.replace(b"Max-Forwards: 70", b"Max-Forwards: 256"), 400, "Bad Max-Forwards"),
        (GOOD.replace(b"Max-Forwards: 70", b"Max-Forwards: -1"), 400, "Bad Max-Forwards"),
        (invite(extra=b"Expires: 4294967296\r\n"), 400, "Bad Expires"),
        (invite(extra=b"Expires: soon\r\n"), 400, "Bad Expires"),
        (GOOD.replace(b"branch=z9hG4bK-abc123;rport", b"branch=;rport"), 400, "Via"),
        (GOOD.replace(b'From: "Alice" <sip:', b"From: Bell, Alice <sip:"), 400, "display name"),
        (GOOD.replace(b"To: <sip:+825012345678@198.51.100.7>", b"To: <sip:a b@h>"), 400, "URI"),
        (
            GOOD.replace(b"Contact: <sip:+821012345678@192.0.2.10:5060>", b"Contact: sip:a@h?x=y"),
            400,
            "<>",
        ),
        (invite(uri=b"<sip:x@h>"), 400, "Malformed Request-URI"),
        (invite(uri=b"nocolon"), 400, "Malformed Request-URI"),
        (invite(uri=b"sip:x@h:99999"), 400, "port"),
        (invite(uri=b"sip:x@h?Route=%3Csip:y%3E"), 400, "Headers not allowed"),
        (invite(method=b"REGISTER"), 405, "Method Not Allowed"),
        (invite(method=b"SUBSCRIBE"), 405, "Method Not Allowed"),
        (invite(method=b"NEWMETHOD"), 501, "Not Implemented"),
        (invite(uri=b"http://example.com/"), 416, "Unsupported URI Scheme"),
        (GOOD.replace(b"Max-Forwards: 70", b"Max-Forwards: 0"), 483, "Too Many Hops"),
        (GOOD.replace(b"Max-Forwards: 70", b"Max-Forwards: 000"), 483, "Too Many Hops"),
        (invite(extra=b"Require: 100rel, foo\r\nRequire: bar\r\n"), 420, "Bad Extension"),
        (
            GOOD.replace(b"application/sdp", b"application/unknownformat"),
            415,
            "Unsupported Media Type",
        ),
        (_without(b"Content-Type"), 415, "Unsupported Media Type"),
    ],
)
def test_check_request_rejections(data: bytes, status: int, phrase: str) -> None:
    got = _rejection(data)
    assert got is not None, phrase
    assert got[0] == status and phrase.lower() in got[1].lower(), got
    headers = got[2]
    if status in (405, 501):
        assert headers == {b"allow": ALLOW_HEADER}
    if status == 420:
        assert headers == {b"unsupported": b"foo, bar"}
    if status == 415:
        assert headers == {b"accept": ACCEPT_HEADER}


def test_check_request_exemptions() -> None:
    # Require is not checked on ACK and CANCEL; a body type only on INVITE/UPDATE/PRACK
    assert _rejection(invite(method=b"ACK", extra=b"Require: foo\r\n")) is None
    assert _rejection(invite(method=b"CANCEL", extra=b"Require: foo\r\n")) is None
    assert (
        _rejection(invite(method=b"INFO").replace(b"application/sdp", b"application/dtmf-relay"))
        is None
    )
    assert _rejection(invite(body=b"").replace(b"application/sdp", b"text/x-nothing")) is None
    # Proxy-Require is for proxies; the engine acts as a UAS
    assert _rejection(invite(extra=b"Proxy-Require: noProxiesSupportThis\r\n")) is None


def test_check_response() -> None:
    ok = resp(OK)
    assert check_response(ok) is None
    assert check_response(resp(OK.replace(b"200 OK", b"700 Nope"))) == "status code out of range"
    assert check_response(resp(OK.replace(b"SIP/2.0 200", b"SIP/3.0 200"))) == "bad version"
    for name in (b"Via", b"From", b"To", b"Call-ID", b"CSeq"):
        data = b"\r\n".join(line for line in OK.split(b"\r\n") if not line.startswith(name + b":"))
        assert check_response(resp(data)) == f"missing {name.decode().lower()}"
    two = OK.replace(b"From:", b"Via: SIP/2.0/UDP 255.255.255.255;branch=z9hG4bK2\r\nFrom:")
    assert check_response(resp(two)) == "more than one Via"
    comma = OK.replace(b"received=127.0.0.1", b"received=127.0.0.1, SIP/2.0/UDP x;branch=z9hG4bK3")
    assert check_response(resp(comma)) == "more than one Via"
    assert check_response(resp(OK.replace(b"CSeq: 7", b"CSeq: 99999999999"))) == "bad CSeq"
    assert check_response(resp(OK.replace(b"branch=z9hG4bKsrv1", b"branch="))) is not None
    assert (
        check_response(resp(OK.replace(b"To: <sip:b@127.0.0.1>", b"To: <sip:b@127.0.0.1")))
        is not None
    )


# -- responses -------------------------------------------------------------------------------------
def test_make_response() -> None:
    r = req(
        invite().replace(
            b"Max-Forwards", b"Via: SIP/2.0/UDP second;branch=z9hG4bK2\r\nMax-Forwards"
        )
    )
    ringing = make_response(r, 180, to_tag=b"srv")
    assert ringing.lines[0] == b"SIP/2.0 180 Ringing"
    assert ringing.get_all(b"via") == r.get_all(b"via")
    assert ringing.get(b"from") == r.get(b"from") and ringing.call_id == r.call_id
    assert ringing.cseq == r.cseq and ringing.to_tag == b"srv"
    assert not ringing.has(b"contact") and not ringing.has(b"max-forwards")
    trying = make_response(r, 100, to_tag=b"srv")
    assert trying.to_tag is None and trying.reason == b"Trying"
    tagged = req(
        invite().replace(b"To: <sip:+825012345678@198.51.100.7>", b"To: <sip:b@h>;TAG=theirs")
    )
    assert make_response(tagged, 200, to_tag=b"ours").to_tag == b"theirs"
    custom = make_response(r, 400, b"Bad Via", headers=[(b"warning", b'399 ansim "x"')])
    assert custom.reason == b"Bad Via" and custom.get(b"warning") == b'399 ansim "x"'
    assert make_response(r, 299).reason == b"Unknown"
    again = resp(custom.serialize())
    assert again.status == 400 and check_response(again) == "more than one Via"


def test_split_values() -> None:
    assert split_values(b"a") == [b"a"]
    assert split_values(b' "x, \\" y" <sip:a@h;p=1,2>, b ,c') == [
        b'"x, \\" y" <sip:a@h;p=1,2>',
        b"b",
        b"c",
    ]
