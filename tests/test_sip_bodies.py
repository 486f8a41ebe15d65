"""What body crosses (b2bua/sip/bodies.py) and which option tags and timers
(b2bua/sip/extensions.py), sans-IO: for every kind of message, every body type real
equipment sends, and the headers that describe them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from body_samples import (
    ISUP_HEADERS,
    info_bodies,
    isup_acm,
    isup_anm,
    isup_iam,
    multipart,
    pidf_lo,
    sdp_offer,
    sip_i,
    with_location,
)
from call_env import CALLEE, CALLER, scan
from pydantic import ValidationError

from b2bua.sip import bodies
from b2bua.sip.bodies import (
    ACK,
    ANSWER,
    EARLY,
    INFO,
    OFFER,
    OTHER,
    BodyPolicy,
    ContentType,
    Numbers,
    outgoing_body,
    parse_content_type,
    pass_body_problem,
    split_multipart,
)
from b2bua.sip.extensions import min_se, required, rseq, session_expires, supported, unsupported
from b2bua.sip.message import SipMessage
from b2bua.sip.parser import parse_datagram
from b2bua.sip.sdp import SdpBuilder, parse_sdp
from b2bua.trunks import TrunkConfig

SESSION_KINDS = [OFFER, ACK, EARLY, ANSWER]
ALL_KINDS = [OFFER, ACK, EARLY, ANSWER, INFO, OTHER]


def message(
    content_type: str | None, body: bytes, *headers: str, method: str = "INVITE"
) -> SipMessage:
    head = [
        f"{method} sip:x@192.0.2.1 SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.2;branch=z9hG4bK1",
        "From: <sip:a@192.0.2.2>;tag=1",
        "To: <sip:x@192.0.2.1>",
        "Call-ID: 1",
        f"CSeq: 1 {method}",
        *headers,
    ]
    if content_type is not None:
        head.append(f"Content-Type: {content_type}")
    head.append(f"Content-Length: {len(body)}")
    return parse_datagram(("\r\n".join(head) + "\r\n\r\n").encode() + body)


def out_of(msg: SipMessage, kind: int = OFFER, policy: BodyPolicy | None = None) -> bodies.OutBody:
    return outgoing_body(msg, kind, SdpBuilder(7, b"198.51.100.1"), policy or BodyPolicy())


def assert_clean(out: bodies.OutBody) -> None:
    for party in (CALLER, CALLEE):
        for raw in (out.body, out.content_type or b"", out.disposition or b""):
            hits = scan(raw, party)
            assert not hits, hits


def rebuilt_sdp() -> bytes:
    """The caller's sample SDP as the first SDP a fresh leg builder writes."""
    return SdpBuilder(7, b"198.51.100.1").build(parse_sdp(sdp_offer(CALLER)))


# -- plain SDP ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_sdp_is_rebuilt_in_every_offer_answer_message(kind: int) -> None:
    out = out_of(message("application/sdp", sdp_offer(CALLER)), kind)
    assert out.status == 0 and out.content_type == b"application/sdp" and out.disposition is None
    assert out.body == rebuilt_sdp()
    assert_clean(out)
    assert scan(sdp_offer(CALLER), CALLER)  # the input did hold the number


@pytest.mark.parametrize("kind", [INFO, OTHER])
def test_sdp_elsewhere_is_dropped(kind: int) -> None:
    out = out_of(message("application/sdp", sdp_offer(CALLER), method="OPTIONS"), kind)
    assert (out.body, out.content_type, out.status) == (b"", None, 415 if kind == INFO else 0)


@pytest.mark.parametrize(
    "content_type",
    ["application/sdp", "Application/SDP", "application/sdp; charset=utf-8", "application/sdp;x=1"],
)
def test_content_type_spellings(content_type: str) -> None:
    out = out_of(message(content_type, sdp_offer(CALLER)))
    assert out.content_type == b"application/sdp" and out.body.startswith(b"v=0\r\no=ansim ")


def test_content_disposition_rebuilt() -> None:
    out = out_of(
        message(
            "application/sdp",
            sdp_offer(CALLER),
            f"Content-Disposition: session;handling=required;x-by={CALLER.e164}",
        )
    )
    assert out.disposition == b"session;handling=required"
    assert_clean(out)


@pytest.mark.parametrize(("kind", "status"), [(OFFER, 488), (ANSWER, 502), (EARLY, 0), (ACK, 0)])
@pytest.mark.parametrize(
    "body",
    [b"hello " + CALLER.e164.encode(), b"", b"\r\n\r\n", b"o=x\r\nv=0\r\n", b"\x00\x01"],
)
def test_unusable_sdp_per_kind(kind: int, status: int, body: bytes) -> None:
    out = out_of(message("application/sdp", body), kind)
    if not body:
        assert (out.status, out.body) == (0, b"")  # no body at all: nothing to decide
        return
    assert out.status == status and out.body == b"" and out.content_type is None


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "x-vendor"])
def test_encoded_body_is_not_read(encoding: str) -> None:
    msg = message("application/sdp", sdp_offer(CALLER), f"Content-Encoding: {encoding}")
    assert out_of(msg, OFFER).status == 488
    assert out_of(msg, EARLY).body == b""
    identity = message("application/sdp", sdp_offer(CALLER), "Content-Encoding: identity")
    assert out_of(identity).body == rebuilt_sdp()


def test_no_content_type_is_no_body() -> None:
    assert out_of(message(None, sdp_offer(CALLER))).body == b""


# -- multipart -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/mixed; boundary="unique-boundary-1"',
        "multipart/mixed;boundary=unique-boundary-1",
        'Multipart/Mixed ; Boundary = "unique-boundary-1" ; x-note="a;b"',
        "multipart/alternative;boundary=unique-boundary-1",
        'multipart/related;type="application/sdp";boundary=unique-boundary-1',
    ],
)
@pytest.mark.parametrize("kind", SESSION_KINDS)
def test_sip_i_multipart_leaves_the_sdp_alone(content_type: str, kind: int) -> None:
    body = sip_i(sdp_offer(CALLER), isup_iam(CALLER, CALLEE))
    assert scan(body, CALLER) and scan(body, CALLEE)  # BCD in the ISUP part, text in the SDP
    out = out_of(message(content_type, body), kind)
    assert (out.status, out.content_type, out.body) == (0, b"application/sdp", rebuilt_sdp())
    assert out.disposition is None
    assert_clean(out)


@pytest.mark.parametrize("isup", [isup_iam(CALLER, CALLEE), isup_acm(CALLEE), isup_anm(CALLEE)])
def test_the_bcd_scan_sees_every_isup_message(isup: bytes) -> None:
    party = CALLER if isup[0] == 0x01 else CALLEE
    labels = {label for label, _ in scan(isup, party)}
    assert labels and all(label.startswith("bcd:") for label in labels), labels


def test_multipart_line_endings_and_part_headers() -> None:
    sdp = sdp_offer(CALLER)
    body = (
        b"--b1\n"
        b"content-type:   APPLICATION/SDP\n"
        b"Content-Disposition: session;\n"
        b"  handling=optional\n"
        b"\n" + sdp + b"\n"
        b"--b1\r\n" + ISUP_HEADERS + b"\r\n" + isup_iam(CALLER, CALLEE) + b"\n--b1--"
    )
    out = out_of(message("multipart/mixed;boundary=b1", body))
    assert out.body == rebuilt_sdp() and out.disposition == b"session;handling=optional"
    assert_clean(out)


def test_multipart_without_close_delimiter_or_with_padding() -> None:
    sdp = sdp_offer(CALLER)
    open_ended = b"--b\r\nContent-Type: application/sdp\r\n\r\n" + sdp
    assert out_of(message("multipart/mixed;boundary=b", open_ended)).body == rebuilt_sdp()
    padded = b"--b  \r\nContent-Type: application/sdp\r\n\r\n" + sdp + b"\r\n--b--  \r\n"
    assert out_of(message("multipart/mixed;boundary=b", padded)).body == rebuilt_sdp()


def test_split_multipart() -> None:
    parts = split_multipart(
        b"pre\r\n--x\r\nA: 1\r\n\r\none\r\n--x\r\n\r\ntwo\r\n--x--\r\nepi", b"x"
    )
    assert parts == [({b"a": b"1"}, b"one"), ({}, b"two")]
    assert split_multipart(b"no delimiter here", b"x") is None
    assert split_multipart(b"--x\r\n\r\n\r\n--x--", b"x") == [({}, b"")]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/mixed", sip_i(sdp_offer(CALLER), b"")),  # no boundary
        ("multipart/mixed;boundary=other", sip_i(sdp_offer(CALLER), b"")),
        ('multipart/mixed;boundary="unterminated', sip_i(sdp_offer(CALLER), b"")),
    ],
)
def test_multipart_that_cannot_be_split_is_dropped(content_type: str, body: bytes) -> None:
    out = out_of(message(content_type, body))
    assert (out.status, out.body) == (0, b"")  # no SDP found: the INVITE goes without an offer


def test_multipart_with_an_unusable_sdp_part() -> None:
    body = sip_i(b"not an sdp " + CALLER.e164.encode(), isup_iam(CALLER, CALLEE))
    msg = message("multipart/mixed;boundary=unique-boundary-1", body)
    assert [out_of(msg, k).status for k in SESSION_KINDS] == [488, 0, 0, 502]


def test_multipart_with_location_keeps_the_sdp_only() -> None:
    body = with_location(sdp_offer(CALLER), CALLER)
    out = out_of(message("multipart/mixed;boundary=boundary1", body, "Geolocation: <cid:x>"))
    assert (out.content_type, out.body) == (b"application/sdp", rebuilt_sdp())
    assert_clean(out)


def test_only_isup_or_only_location_is_no_body() -> None:
    for body, boundary in (
        (multipart([(ISUP_HEADERS, isup_iam(CALLER, CALLEE))]), "unique-boundary-1"),
        (multipart([(b"Content-Type: application/pidf+xml\r\n", pidf_lo(CALLER))], "z"), "z"),
    ):
        out = out_of(message(f"multipart/mixed;boundary={boundary}", body))
        assert (out.status, out.body, out.content_type) == (0, b"", None)


def test_nested_multipart_and_several_sdps() -> None:
    inner = multipart(
        [
            (b"Content-Type: application/sdp\r\n", sdp_offer(CALLER)),
            (b"Content-Type: application/sdp\r\n", sdp_offer(CALLEE)),  # a second SDP: dropped
        ],
        "inner",
    )
    outer = multipart(
        [
            (b"Content-Type: multipart/alternative; boundary=inner\r\n", inner),
            (ISUP_HEADERS, isup_iam(CALLER, CALLEE)),
        ],
        "outer",
    )
    out = out_of(message("multipart/mixed;boundary=outer", outer))
    assert out.body == rebuilt_sdp()
    assert_clean(out)


def test_early_session_part_is_dropped() -> None:
    body = multipart(
        [
            (
                b"Content-Type: application/sdp\r\nContent-Disposition: early-session\r\n",
                sdp_offer(CALLEE),
            ),
            (
                b"Content-Type: application/sdp\r\nContent-Disposition: session\r\n",
                sdp_offer(CALLER),
            ),
        ]
    )
    out = out_of(message("multipart/mixed;boundary=unique-boundary-1", body))
    assert (out.body, out.disposition) == (rebuilt_sdp(), b"session")


def test_part_with_a_transfer_encoding_is_not_read() -> None:
    body = multipart(
        [(b"Content-Type: application/sdp\r\nContent-Transfer-Encoding: base64\r\n", b"dj0w")]
    )
    assert out_of(message("multipart/mixed;boundary=unique-boundary-1", body)).status == 488


def test_allow_listed_part_crosses_beside_the_sdp_in_ansims_own_multipart() -> None:
    policy = BodyPolicy((b"application/vnd.example.routing+xml",))
    extra = b"<routing>queue 7</routing>"
    body = multipart(
        [
            (b"Content-Type: application/sdp\r\n", sdp_offer(CALLER)),
            (ISUP_HEADERS, isup_iam(CALLER, CALLEE)),
            (
                b"Content-Type: application/vnd.example.routing+xml; charset=utf-8; x-caller="
                + CALLER.e164.encode()
                + b"\r\nContent-Disposition: render;handling=optional\r\nContent-ID: <"
                + CALLER.national.encode()
                + b">\r\n",
                extra,
            ),
        ]
    )
    out = out_of(message('multipart/mixed; boundary="unique-boundary-1"', body), OFFER, policy)
    assert out.content_type == b"multipart/mixed;boundary=ansim-part-boundary"
    assert out.body == (
        b"--ansim-part-boundary\r\nContent-Type: application/sdp\r\n\r\n"
        + rebuilt_sdp()
        + b"\r\n--ansim-part-boundary\r\n"
        b"Content-Type: application/vnd.example.routing+xml;charset=utf-8\r\n"
        b"Content-Disposition: render;handling=optional\r\n\r\n"
        + extra
        + b"\r\n--ansim-part-boundary--\r\n"
    )
    assert_clean(out)
    # ansim's multipart is itself taken apart the same way
    again = out_of(message(out.content_type.decode(), out.body), OFFER, policy)
    assert again.content_type == out.content_type


def test_own_boundary_never_occurs_in_a_part() -> None:
    policy = BodyPolicy((b"text/plain",))
    body = multipart(
        [
            (b"Content-Type: text/plain\r\n", b"--ansim-part-boundary\r\n"),
            (b"Content-Type: application/sdp\r\n", sdp_offer(CALLER)),
        ]
    )
    out = out_of(message("multipart/mixed;boundary=unique-boundary-1", body), OFFER, policy)
    assert out.content_type == b"multipart/mixed;boundary=ansim-part-boundary-1"


def test_single_allow_listed_body_crosses_alone() -> None:
    policy = BodyPolicy((b"application/vnd.example+xml",))
    msg = message(
        "application/vnd.example+xml", b"<x/>", "Content-Disposition: render", method="BYE"
    )
    out = out_of(msg, OTHER, policy)
    assert (out.body, out.content_type, out.disposition) == (
        b"<x/>",
        b"application/vnd.example+xml",
        b"render",
    )
    assert out_of(msg, OTHER).body == b""  # not allow-listed: dropped


# -- INFO ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "rebuilt"),
    [
        (b"Signal=5\r\nDuration=160\r\n", b"Signal=5\r\nDuration=160\r\n"),
        (b"signal= 5\nduration =250", b"Signal=5\r\nDuration=250\r\n"),
        (b"Signal=#\r\nDuration=100\r\nVolume=10\r\n", b"Signal=#\r\nDuration=100\r\n"),
        (b"Signal=a\r\n", b"Signal=A\r\n"),
        (b"Signal=16\r\nDuration=2000\r\n", b"Signal=16\r\nDuration=2000\r\n"),
    ],
)
def test_dtmf_relay_rebuilt(body: bytes, rebuilt: bytes) -> None:
    out = out_of(message("application/dtmf-relay", body, method="INFO"), INFO)
    assert (out.body, out.content_type) == (rebuilt, b"application/dtmf-relay")


@pytest.mark.parametrize(
    "body",
    [
        f"Signal={CALLER.national}\r\nDuration=160\r\n".encode(),
        f"Signal=5\r\nDuration={CALLER.national}\r\n".encode(),
        f"Signal=5\r\ncaller {CALLER.e164}\r\n".encode(),
        b"Duration=160\r\n",
    ],
)
def test_malformed_dtmf_relay_is_answered_400(body: bytes) -> None:
    assert out_of(message("application/dtmf-relay", body, method="INFO"), INFO).status == 400


def test_dtmf_rebuilt() -> None:
    out = out_of(message("application/dtmf", b"7\r\n", method="INFO"), INFO)
    assert (out.body, out.content_type) == (b"7", b"application/dtmf")
    assert (
        out_of(message("application/dtmf", CALLER.national.encode(), method="INFO"), INFO).status
        == 400
    )


@pytest.mark.parametrize(("content_type", "body"), info_bodies(CALLER))
def test_other_info_bodies_are_answered_415(content_type: str, body: bytes) -> None:
    assert scan(body, CALLER)
    out = out_of(message(content_type, body, method="INFO"), INFO)
    assert (out.status, out.body) == (415, b"")


def test_info_without_body_crosses_and_accept_lists_what_crosses() -> None:
    assert out_of(message(None, b"", method="INFO"), INFO).status == 0
    assert BodyPolicy().accept_info == b"application/dtmf-relay, application/dtmf"
    assert BodyPolicy((b"application/vnd.x",)).accept_info.endswith(b", application/vnd.x")


def test_info_in_a_multipart_with_dtmf() -> None:
    body = multipart(
        [
            (b"Content-Type: application/dtmf-relay\r\n", b"Signal=1\r\nDuration=100\r\n"),
            (b"Content-Type: text/plain\r\n", CALLER.e164.encode()),
        ]
    )
    out = out_of(message("multipart/mixed;boundary=unique-boundary-1", body, method="INFO"), INFO)
    assert (out.body, out.content_type) == (
        b"Signal=1\r\nDuration=100\r\n",
        b"application/dtmf-relay",
    )


# -- other messages --------------------------------------------------------------------------------


@pytest.mark.parametrize(("content_type", "body"), info_bodies(CALLER))
@pytest.mark.parametrize("kind", [OFFER, ACK, EARLY, ANSWER, OTHER])
def test_any_other_body_is_dropped_in_any_message(
    content_type: str, body: bytes, kind: int
) -> None:
    out = out_of(message(content_type, body, method="BYE"), kind)
    assert (out.status, out.body, out.content_type) == (0, b"", None)


# -- the rebuild hook and the setting ------------------------------------------------------


@pytest.fixture
def numbers_rebuilder() -> Iterator[list[tuple[ContentType, bytes, Numbers | None]]]:
    """A rebuilder for a made-up type that writes the numbers the leg may see, as an
    ISUP rewriter would; registered for the test only."""
    seen: list[tuple[ContentType, bytes, Numbers | None]] = []

    def rebuild(ctype: ContentType, body: bytes, numbers: Numbers | None) -> bytes | None:
        seen.append((ctype, body, numbers))
        if numbers is None or not body.startswith(b"numbers"):
            return None
        return f"numbers {numbers.calling} {numbers.called}".encode()

    bodies.REBUILDERS[b"application/isup"] = rebuild
    try:
        yield seen
    finally:
        del bodies.REBUILDERS[b"application/isup"]


def test_a_rebuilder_makes_a_numbers_type_passable(
    numbers_rebuilder: list[tuple[ContentType, bytes, Numbers | None]],
) -> None:
    assert pass_body_problem("application/ISUP") is None
    policy = BodyPolicy((b"application/isup",))
    body = sip_i(sdp_offer(CALLER), b"numbers " + CALLER.e164.encode())
    numbers = Numbers("+825077004001", "+821058293714")
    msg = message("multipart/mixed;boundary=unique-boundary-1", body)
    out = outgoing_body(msg, OFFER, SdpBuilder(7, b"198.51.100.1"), policy, numbers)
    assert out.content_type == b"multipart/mixed;boundary=ansim-part-boundary"
    assert b"numbers +825077004001 +821058293714" in out.body
    assert not scan(out.body, CALLER)
    assert numbers_rebuilder[0][0].params == {b"version": b"itu-t92+", b"base": b"itu-t92+"}
    assert b"Content-Disposition: signal;handling=optional" in out.body


def test_pass_body_problem() -> None:
    assert pass_body_problem("application/vnd.example+xml") is None
    assert pass_body_problem("text/plain") is None
    for mime in (
        "application/sdp",
        "multipart/mixed",
        "Multipart/Related",
        "application/dtmf-relay",
    ):
        assert "always rebuilt" in (pass_body_problem(mime) or ""), mime
    for mime in ("application/isup", "application/QSIG"):
        assert "no rewriter" in (pass_body_problem(mime) or ""), mime
    for mime in ("nonsense", "text/plain; charset=utf-8", "a b/c"):
        assert "expected a content type" in (pass_body_problem(mime) or ""), mime


@pytest.mark.parametrize(
    ("setting", "error"),
    [
        ({"pass_bodies": ["application/isup"]}, "no rewriter"),
        ({"pass_bodies": ["application/sdp"]}, "always rebuilt"),
        ({"pass_headers": ["Supported"]}, "written by ansim"),
        ({"pass_headers": ["content-type"]}, "written by ansim"),
    ],
)
def test_trunks_settings_refuse_what_ansim_builds(
    setting: dict[str, list[str]], error: str
) -> None:
    with pytest.raises(ValidationError, match=error):
        TrunkConfig.model_validate(setting)
    TrunkConfig.model_validate(
        {"pass_bodies": ["application/vnd.example+xml"], "pass_headers": ["X-Tenant"]}
    )


def test_parse_content_type() -> None:
    assert parse_content_type(b'Multipart/Mixed; Boundary="a \\"b\\" c"; x=1') == ContentType(
        b"multipart/mixed", {b"boundary": b'a "b" c', b"x": b"1"}
    )
    for bad in (b"", b"text", b"text/", b"/x", b"te xt/plain", b'a/b; c="open', b"a/b; =1"):
        assert parse_content_type(bad) is None, bad


# -- option tags and timers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "written"),
    [
        (["Supported: 100rel, timer, replaces, gruu, outbound, path"], b"100rel, timer"),
        (["Supported: gruu", "k: TIMER"], b"timer"),
        (["Supported: replaces, norefersub, gruu"], None),
        (["Supported:"], None),
        ([], None),
    ],
)
def test_supported_is_what_was_offered_and_ansim_implements(
    headers: list[str], written: bytes | None
) -> None:
    assert supported(message(None, b"", *headers)) == written
    if written is not None:
        assert supported(message(None, b"", *headers), (b"timer",)) == b"timer"


def test_require_in_a_response_only_what_the_request_offered() -> None:
    request = message(None, b"", "Supported: timer", "Require: 100rel")
    response = parse_datagram(
        b"SIP/2.0 183 Session Progress\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@h>;tag=1\r\n"
        b"To: <sip:b@h>;tag=2\r\nCall-ID: 1\r\nCSeq: 1 INVITE\r\nRequire: 100rel, precondition, timer\r\n"
        b"RSeq: 4711\r\nContent-Length: 0\r\n\r\n"
    )
    assert required(response) == b"100rel, timer"
    assert required(response, request=request) == b"100rel, timer"
    assert required(response, request=message(None, b"", "Supported: timer")) == b"timer"
    assert required(response, request=message(None, b"")) is None
    assert rseq(response) == b"4711"


@pytest.mark.parametrize(
    ("header", "written"),
    [
        ("Session-Expires: 1800", b"1800"),
        ("Session-Expires: 1800;refresher=UAC", b"1800;refresher=uac"),
        (f"x: 90 ; refresher=uas ; x-by={CALLER.e164}", b"90;refresher=uas"),
        ("Session-Expires: 1800;refresher=both", b"1800"),
        (f"Session-Expires: {CALLER.digits}", None),
        ("Session-Expires: soon", None),
        ("Session-Expires: 0", None),
    ],
)
def test_session_expires_rebuilt(header: str, written: bytes | None) -> None:
    assert session_expires(message(None, b"", header)) == written


def test_min_se_rseq_unsupported_rebuilt() -> None:
    msg = message(None, b"", "Min-SE: 90;x=1", "RSeq: 12", "Unsupported: 100rel, foo")
    assert (min_se(msg), rseq(msg), unsupported(msg)) == (b"90", b"12", b"100rel")
    bad = message(None, b"", f"Min-SE: {CALLER.digits}", "RSeq: -1", "Unsupported: gruu")
    assert (min_se(bad), rseq(bad), unsupported(bad)) == (None, None, None)
