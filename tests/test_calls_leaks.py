"""Neither party's real number reaches the other leg (DESIGN.md, "What the far leg may see").

The carrier's SIPp writes the caller's real number into every place a phone or carrier
puts it (P-Asserted-Identity, P-Preferred-Identity, Remote-Party-ID, Diversion,
History-Info, Reply-To, Call-Info, the Contact user part, the Call-ID, From, free-text
headers, and the SDP o=, s=, i=, u=, e= and p= lines); the callee trunk's SIPp does the
same with the callee's number in its responses and requests. SIPp's ``-trace_msg`` log
of what each end received is everything ansim sent on that leg, and it is searched for
the other party's number in every form (E.164, without +, national, with dashes, dots
or spaces, without the trunk prefix, the subscriber digits alone). The flow tests in
test_calls_flows.py run the same scan on every flow; the tests here show that the scan
has something to find and cover the paths that carry numbers in less usual places.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from body_samples import (
    ISUP_HEADERS,
    isup_acm,
    isup_anm,
    isup_iam,
    multipart,
    pidf_lo,
    sdp_offer,
    sip_i,
)
from call_env import (
    BINDING_AX,
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    CallRun,
    Party,
    SipMsg,
    Sipp,
    UdpSink,
    assert_no_leaks,
    leaks,
    run_call,
    scan,
    trunk,
    user_part,
)
from conftest import free_port
from raw_sip import Body, RawCallee, RawCaller, Reply

from b2bua.sip.sdp import SessionDescription, parse_sdp
from b2bua.sip.validate import ALLOW_HEADER


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


@pytest.fixture
def callee_port() -> int:
    return free_port()


@pytest.fixture
def ansim(tmp_path: Path, callee_port: int) -> Iterator[Ansim]:
    with Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee-trunk", callee_port)],
        routes=[{"prefix": "+82", "trunks": ["callee-trunk"]}],
    ) as engine:
        yield engine


def carries(msg: SipMsg, number: str, *headers: str) -> list[str]:
    """The names among ``headers`` (or SDP lines such as ``o=``) of ``msg`` without ``number``."""
    missing = []
    for name in headers:
        if name.endswith("="):
            values = [line for line in msg.body.splitlines() if line.startswith(name)]
        else:
            values = msg.headers(name)
        if not any(number in v for v in values):
            missing.append(name)
    return missing


def test_real_numbers_everywhere_on_the_way_in_nowhere_on_the_way_out(
    sipp: Sipp, ansim: Ansim, callee_port: int
) -> None:
    run = run_call(sipp, ansim, "call_uac_basic", "call_uas_answer", uas_port=callee_port)
    assert run.uas is not None
    # What the carrier sent ansim carries the caller's number in every usual place...
    invite = run.uac.sent()[0]
    assert invite.method == "INVITE"
    assert CALLER.national in invite.header("Call-ID")
    assert invite.header("Contact").split("<sip:", 1)[1].startswith(CALLER.e164 + "@")
    assert not carries(
        invite,
        CALLER.e164,
        "P-Asserted-Identity",
        "Reply-To",
        "Contact",
    )
    assert not carries(
        invite, CALLER.national, "From", "Remote-Party-ID", "History-Info", "o=", "e="
    )
    assert not carries(invite, CALLER.short, "Diversion", "u=")
    assert not carries(invite, CALLER.digits, "P-Preferred-Identity", "X-Original-Caller")
    assert not carries(invite, CALLER.dashed, "Call-Info", "Subject", "i=")
    assert not carries(invite, CALLER.spaced, "Organization", "p=")
    # ...and what the callee's trunk answered carries the callee's.
    answer = next(m for m in run.uas.sent() if m.status == 200 and m.cseq_method == "INVITE")
    assert not carries(answer, CALLEE.e164, "Contact", "P-Asserted-Identity", "X-Real-Callee", "p=")
    assert not carries(answer, CALLEE.national, "Remote-Party-ID", "Warning", "o=")
    assert not carries(answer, CALLEE.dashed, "Call-Info", "Organization", "s=")
    assert not carries(answer, CALLEE.spaced, "Server", "i=")
    # The scan finds these numbers where they legitimately are (a check of the scan itself).
    assert leaks([invite], CALLER) and leaks([answer], CALLEE)
    assert {form for form, _ in leaks([invite, answer], CALLER)} >= {
        CALLER.e164,
        CALLER.digits,
        CALLER.national,
        CALLER.dashed,
        CALLER.spaced,
        CALLER.short,
    }
    # Zero hits on either leg.
    assert_no_leaks(run)
    # What each side sees instead: the virtual number, and ansim's own identifiers.
    b_invite = run.uas.received()[0]
    virtual = "+82" + user_part(VIRTUAL_AX)[1:]
    assert virtual in b_invite.header("From") and virtual in b_invite.header("P-Asserted-Identity")
    assert b_invite.header("Call-ID") != invite.header("Call-ID")
    assert "o=ansim " in b_invite.body and "s=-" in b_invite.body
    a_answer = next(m for m in run.uac.received() if m.status == 200 and m.cseq_method == "INVITE")
    assert a_answer.header("To").startswith(f"<sip:{user_part(VIRTUAL_AX)}@")
    assert a_answer.header("Contact").startswith("<sip:ansim@")
    assert not a_answer.headers("P-Asserted-Identity") and not a_answer.headers("Remote-Party-ID")
    assert ansim.cdr()["binding_id"] == BINDING_AX


def test_redirect_to_the_callee_is_not_relayed(sipp: Sipp, ansim: Ansim, callee_port: int) -> None:
    run = run_call(sipp, ansim, "call_uac_reject_480", "call_uas_302", uas_port=callee_port)
    assert run.uac.received_statuses("INVITE") == [100, 180, 480]
    final = run.uac.received()[-1]
    assert not final.headers("Contact") and not final.headers("Diversion")
    row = ansim.cdr()
    assert (row["status"], row["ended_by"], row["reason"]) == (480, "callee", "b_302")
    assert_no_leaks(run)


def test_in_dialog_info_options_update_relayed_without_numbers(
    sipp: Sipp, ansim: Ansim, callee_port: int
) -> None:
    run: CallRun = run_call(sipp, ansim, "call_uac_info", "call_uas_info", uas_port=callee_port)
    assert run.uas is not None
    assert run.uac.received_statuses("INFO") == [469]
    assert run.uac.received_statuses("OPTIONS") == [200]
    assert run.uac.received_requests() == ["UPDATE"]
    info = next(m for m in run.uas.received() if m.method == "INFO")
    assert info.header("Content-Type") == "application/dtmf-relay" and "Signal=5" in info.body
    options_ok = next(m for m in run.uac.received() if m.cseq_method == "OPTIONS")
    assert "UPDATE" in options_ok.header("Allow")
    assert run.uas.received_statuses("UPDATE") == [200]
    row = ansim.cdr()
    assert (row["status"], row["ended_by"]) == (200, "caller")
    assert_no_leaks(run)


# -- bodies, attributes and option tags of real equipment -----------------------------------------


def sdp_model(msg: SipMsg) -> SessionDescription:
    """The SDP ``msg`` carries, parsed; it must be a plain SDP that ansim built."""
    assert msg.header("Content-Type") == "application/sdp", msg.text
    body = msg.raw.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"v=0\r\no=ansim ") and body.endswith(b"\r\n")
    return parse_sdp(body)


def test_vendor_bodies_attributes_and_options_both_ways(
    sipp: Sipp, ansim: Ansim, callee_port: int
) -> None:
    """A PBX behind the carrier and a gateway behind the callee's trunk: multipart bodies
    (SDP with vendor, ICE, ssrc/msid/cname and T.38 lines; PIDF-LO; text and vendor
    parts), INFO with non-DTMF bodies, re-INVITE, and option tags and methods ansim does
    not implement, on the way in and on the way back."""
    run = run_call(sipp, ansim, "call_uac_vendor", "call_uas_vendor", uas_port=callee_port)
    assert run.uas is not None
    sent_in, sent_back = run.uac.sent(), run.uas.sent()
    assert leaks(sent_in, CALLER) and leaks(sent_back, CALLEE)  # the scan has things to find
    assert_no_leaks(run)
    assert run.uac.received_statuses("INVITE") == [100, 183, 200]
    assert run.uac.received_statuses("INFO") == [415, 200]
    assert run.uas.received_statuses("INFO") == [415, 200]
    assert run.uac.received_requests() == ["INVITE", "ACK", "INFO"]
    assert run.uas.received_requests() == ["INVITE", "ACK", "INFO", "BYE"]
    own_allow = ALLOW_HEADER.decode()
    b_invite = run.uas.received()[0]
    # Option tags: what the caller offered and ansim implements; ansim's own methods.
    assert b_invite.header("Allow") == own_allow
    assert b_invite.header("Supported") == "100rel, timer"
    assert b_invite.header("Session-Expires") == "1800;refresher=uac"
    assert b_invite.header("Min-SE") == "90"
    assert not b_invite.headers("Accept") and not b_invite.headers("Geolocation")
    assert not b_invite.headers("MIME-Version")
    assert b_invite.header("Content-Disposition") == "session;handling=required"  # the part's
    offer = sdp_model(b_invite)  # the multipart taken apart: the SDP alone
    assert [(m.kind, m.proto, m.rejected) for m in offer.media] == [
        (b"audio", b"RTP/AVP", False),
        (b"video", b"RTP/AVPF", False),
        (b"image", b"udptl", False),
    ]
    answer_a = next(m for m in run.uac.received() if m.status == 200 and m.cseq_method == "INVITE")
    assert answer_a.header("Allow") == own_allow
    assert answer_a.header("Supported") == "100rel, timer"
    assert answer_a.header("Require") == "timer"
    assert answer_a.header("Session-Expires") == "1800;refresher=uac"
    answer = sdp_model(answer_a)
    assert len(answer.media) == len(offer.media)
    assert [m.port == 0 for m in answer.media] == [False, True, False]
    early = next(m for m in run.uac.received() if m.status == 183)
    assert len(sdp_model(early).media) == 3
    # The callee's re-INVITE and the caller's answer to it, rebuilt the same way.
    reinvite = next(m for m in run.uac.received() if m.method == "INVITE")
    assert reinvite.header("Allow") == own_allow and reinvite.header("Supported") == "timer"
    assert reinvite.header("Session-Expires") == "1800;refresher=uas"
    assert [b"a=sendonly" in m.attributes[-1].line() for m in sdp_model(reinvite).media[:1]] == [
        True
    ]
    reanswer = next(m for m in run.uas.received() if m.status == 200 and m.cseq_method == "INVITE")
    assert reanswer.header("Allow") == own_allow and reanswer.header("Supported") == "timer"
    assert len(sdp_model(reanswer).media) == 3
    # INFO: DTMF rebuilt from its Signal and Duration; other bodies answered 415, never relayed.
    info_b = next(m for m in run.uas.received() if m.method == "INFO")
    assert info_b.body == "Signal=7\nDuration=180\n"
    info_a = next(m for m in run.uac.received() if m.method == "INFO")
    assert (info_a.header("Content-Type"), info_a.header("Content-Length")) == (
        "application/dtmf",
        "1",
    )
    assert info_a.body.strip() == "#"
    refusal = next(m for m in run.uac.received() if m.status == 415)
    assert refusal.header("Accept") == "application/dtmf-relay, application/dtmf"
    # The 200s answering INFO carried text bodies: dropped.
    info_answers = [
        m for m in run.uac.received() + run.uas.received() if m.status and m.cseq_method == "INFO"
    ]
    assert len(info_answers) == 4 and all(m.header("Content-Length") == "0" for m in info_answers)
    row = ansim.cdr()
    assert (row["status"], row["ended_by"]) == (200, "caller")


# -- what SIPp cannot send: mixed line endings, binary ISUP (a raw socket sends them) ---------

# The number the caller dialled, as a SIP-I carrier writes it in the IAM's called party number.
DIALLED = Party("+82" + user_part(VIRTUAL_AX)[1:])


def mixed_endings(body: bytes) -> bytes:
    """``body`` with every other line end a bare LF and no line end after the last line."""
    lines = body.rstrip(b"\r\n").split(b"\r\n")
    return b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines))[:-1]


def lf_multipart(parts: list[tuple[bytes, bytes]], boundary: bytes) -> bytes:
    out = [b"preamble\n"]
    for headers, content in parts:
        out.append(b"--" + boundary + b"\n" + headers + b"\n" + content + b"\n")
    return b"".join(out) + b"--" + boundary + b"--\n"


def raw_offers() -> dict[str, tuple[Body, int]]:
    """Bodies of the carrier's INVITE: (body, media sections the callee must be offered)."""
    sdp = sdp_offer(CALLER, host="127.0.0.1")
    iam = isup_iam(CALLER, DIALLED)
    return {
        "sip-i": (
            Body(
                'multipart/mixed;boundary="unique-boundary-1"',
                sip_i(mixed_endings(sdp), iam),
                ["MIME-Version: 1.0"],
            ),
            1,
        ),
        "sip-t": (
            Body(
                "multipart/mixed; boundary=sip-t-1",
                sip_i(sdp, iam, "sip-t-1").replace(b"itu-t92+", b"ansi00"),
            ),
            1,
        ),
        "sdp-mixed-endings": (Body("application/sdp", mixed_endings(sdp)), 1),
        "lf-multipart-sdp-location-isup": (
            Body(
                "multipart/mixed;boundary=lf",
                lf_multipart(
                    [
                        (b"Content-Type: application/sdp\n", sdp.replace(b"\r\n", b"\n")),
                        (b"Content-Type: application/pidf+xml\n", pidf_lo(CALLER)),
                        (ISUP_HEADERS.replace(b"\r\n", b"\n"), iam),
                    ],
                    b"lf",
                ),
                [f"Geolocation: <cid:{CALLER.national}@example.com>"],
            ),
            1,
        ),
        "alternative-with-text": (
            Body(
                "multipart/alternative;boundary=alt",
                multipart(
                    [
                        (b"Content-Type: text/plain\r\n", f"call {CALLER.dashed}".encode()),
                        (b"Content-Type: application/sdp\r\n", mixed_endings(sdp)),
                    ],
                    "alt",
                ),
            ),
            1,
        ),
        "isup-only": (
            Body("multipart/mixed;boundary=unique-boundary-1", multipart([(ISUP_HEADERS, iam)])),
            0,
        ),
    }


@pytest.mark.parametrize("variant", list(raw_offers()))
def test_carrier_bodies_sipp_cannot_send(
    variant: str, sipp: Sipp, ansim: Ansim, callee_port: int
) -> None:
    """Mixed line endings and SIP-I/SIP-T ISUP parts (the caller's number in BCD) from a
    raw socket as the carrier; the callee trunk is SIPp. The call completes, the callee
    is offered the SDP alone, and nothing of the caller reaches it in any form."""
    body, media = raw_offers()[variant]
    callee = sipp.start("call_uas_answer", port=callee_port, keys=CALLEE.sipp_keys("callee"))
    with RawCaller(("127.0.0.1", ansim.port)) as caller:
        assert caller.call(user_part(VIRTUAL_AX), body) == 200
        assert callee.wait(20) == 0, callee.report()
        sent = caller.messages("sent")
        to_caller = leaks(caller.messages(), CALLEE)
    found = {form for form, _ in leaks(sent, CALLER)}
    assert CALLER.e164 in found
    if b"isup" in body.content.lower():
        assert any(form.startswith("bcd:") for form in found), found  # the scan reads BCD
    assert not to_caller, to_caller
    to_callee = leaks(callee.received(), CALLER)
    assert not to_callee, to_callee
    invite = callee.received()[0]
    if media:
        assert len(sdp_model(invite).media) == media
        assert invite.raw.count(b"\no=") == 1
    else:  # no SDP in what the carrier sent: the callee gets no offer
        assert invite.header("Content-Length") == "0" and not invite.headers("Content-Type")
    assert callee.received_requests() == ["INVITE", "ACK", "BYE"]


def test_callee_sip_i_answers_on_the_way_back(sipp: Sipp, ansim: Ansim, callee_port: int) -> None:
    """A SIP-I callee network answers with ISUP ACM and ANM (the connected number, the
    callee's real one, in BCD) beside SDPs with mixed and bare-LF line endings; the
    caller (SIPp) is sent the SDP alone, nothing of the callee."""
    sdp = sdp_offer(CALLEE, host="127.0.0.1", port=41000)
    headers = [
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY, MESSAGE",
        "Supported: gruu, outbound, replaces",
    ]
    replies = [
        Reply(
            183,
            "Session Progress",
            Body(
                "multipart/mixed;boundary=acm",
                lf_multipart(
                    [
                        (b"Content-Type: application/sdp\n", sdp.replace(b"\r\n", b"\n")),
                        (ISUP_HEADERS.replace(b"\r\n", b"\n"), isup_acm(CALLEE)),
                    ],
                    b"acm",
                ),
                headers,
            ),
        ),
        Reply(
            200,
            "OK",
            Body(
                'multipart/mixed; boundary="anm"',
                sip_i(mixed_endings(sdp.replace(b" 1 IN", b" 2 IN")), isup_anm(CALLEE), "anm"),
                headers,
            ),
        ),
    ]
    callee = RawCallee(replies, port=callee_port).start()
    try:
        run = run_call(sipp, ansim, "call_uac_basic")
    finally:
        callee.join()
        callee.close()
    found = {form for form, _ in leaks(callee.messages("sent"), CALLEE)}
    assert CALLEE.e164 in found and any(form.startswith("bcd:") for form in found), found
    assert_no_leaks(run)
    assert not leaks(callee.messages(), CALLER)
    assert run.uac.received_statuses("INVITE") == [100, 183, 200]
    for msg in run.uac.received():
        if msg.status in (183, 200) and msg.cseq_method == "INVITE":
            assert len(sdp_model(msg).media) == 1
            assert msg.header("Allow") == ALLOW_HEADER.decode() and not msg.headers("Supported")
    assert [r.method for r in callee.requests] == [b"INVITE", b"ACK", b"BYE"]


def escaped(text: str, which: str, upper: bool) -> str:
    """``text`` with the characters in ``which`` written as URI escapes."""
    return "".join(
        (f"%{ord(c):02X}" if upper else f"%{ord(c):02x}") if c in which else c for c in text
    )


@pytest.mark.parametrize("party", [CALLER, CALLEE])
def test_the_scan_finds_every_written_form(party: Party) -> None:
    """What the leak tests rely on: every form of a number is found, in text, behind URI
    escapes and BCD-packed in binary, and random bytes hold none."""
    for form in party.forms():
        assert {f for f, _ in scan(f"x={form};".encode(), party)} >= {form}, form
    e = party.e164
    for text in (
        escaped(e, "+", True),  # %2B821047382916
        escaped(e, "+", False),
        escaped(e, "+0123456789", True),  # every digit %3X
        escaped(e, "+0123456789", False),
        "".join(escaped(c, c, i % 2 == 0) if i % 3 else c for i, c in enumerate(e)),  # mixed
        escaped(party.national, "0123456789", True),
    ):
        hits = scan(f"<sip:{text}@192.0.2.1>".encode(), party)
        assert any(f.endswith("(URI-escaped)") for f, _ in hits), text
    for digits in (party.digits, party.national, party.short, party.subscriber):
        for prefix in ("", "9"):  # even and odd offsets in the octets
            run = prefix + digits
            for pad in ("0", "F"):  # ISUP and TBCD fillers of an odd-length number
                nibbles = [int(c, 16) for c in run + (pad if len(run) % 2 else "")]
                pairs = list(zip(nibbles[::2], nibbles[1::2], strict=True))
                low_first = bytes(a | b << 4 for a, b in pairs)
                high_first = bytes(a << 4 | b for a, b in pairs)
                for packed in (low_first, high_first):
                    data = b"\x01\x00\x0a" + packed + b"\x00"
                    assert any(f.startswith("bcd:") for f, _ in scan(data, party)), (run, pad)
    rng = random.Random(7)
    noise = bytes(rng.randrange(256) for _ in range(200_000))
    assert not scan(noise, party)


# -- an SDP that cannot be parsed at all ----------------------------------------------------------


def test_invite_whose_sdp_cannot_be_parsed_is_refused_488(ansim: Ansim, callee_port: int) -> None:
    garbage = f"SDP? call from {CALLER.e164}\r\nm=audio 4000 RTP/AVP 0\r\n".encode()
    with UdpSink(callee_port) as callee_trunk, RawCaller(("127.0.0.1", ansim.port)) as caller:
        assert caller.call(user_part(VIRTUAL_AX), Body("application/sdp", garbage)) == 488
        assert callee_trunk.datagrams() == []
        assert not leaks(caller.messages(), CALLEE)
    row = ansim.cdr()
    assert (row["status"], row["reason"], row["ended_by"]) == (488, "bad_sdp", "engine")


def test_answer_whose_sdp_cannot_be_parsed_gives_502_and_hangs_up_the_callee(
    ansim: Ansim, callee_port: int
) -> None:
    garbage = f"answer from {CALLEE.e164}\r\n".encode()
    callee = RawCallee(
        [Reply(180, "Ringing"), Reply(200, "OK", Body("application/sdp", garbage))],
        port=callee_port,
    ).start()
    try:
        with RawCaller(("127.0.0.1", ansim.port)) as caller:
            offer = Body("application/sdp", sdp_offer(CALLER, host="127.0.0.1"))
            assert caller.call(user_part(VIRTUAL_AX), offer) == 502
            assert [r.status for r in caller.responses] == [100, 180, 502]
            assert not leaks(caller.messages(), CALLEE)
    finally:
        callee.join()
        callee.close()
    assert [r.method for r in callee.requests] == [b"INVITE", b"ACK", b"BYE"]
    assert not leaks(callee.messages(), CALLER)
    row = ansim.cdr()
    assert (row["status"], row["reason"], row["ended_by"]) == (502, "bad_sdp_answer", "engine")
