"""RFC 4475 torture messages against a running ``ansim serve`` (issue 3, "Must show" 1).

Each message of ``../shared/sip-torture/`` is sent over UDP, from a socket of its own,
to an engine started for this module, and the answer is checked against what its
MANIFEST.tsv line asks for. The expected outcome is derived from the manifest text:

* a response (the file starts with ``SIP/``) or "drop": nothing comes back;
* status codes named in the text: the final response is one of them ("not NNN" names
  a code that must not come);
* "or process" / "or ignore" / "lenient acceptance allowed": the alternative, normal
  processing, is allowed too;
* "parse" / "process" without a code: any final response but 400.

Where the text cannot be read that way ``EXPLICIT`` says what it means, and a test
checks that every manifest line is covered by one or the other. "parse" and
"process" also mean the parser must take the message: that, and the manifest's
particular remarks (escaped user parts, the multipart body, the long values, the
second request of dblreq), are checked on ``parse_datagram`` directly as well.
After all 49 the engine must still answer OPTIONS.
"""

from __future__ import annotations

import csv
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from conftest import TORTURE
from engine_process import EngineProcess

from b2bua.sip.errors import SipParseError
from b2bua.sip.message import Request, Response
from b2bua.sip.parser import parse_datagram
from b2bua.sip.transaction import ack_for
from b2bua.sip.uri import parse_name_addr, parse_uri
from b2bua.sip.validate import check_request, check_response

MANIFEST = TORTURE / "MANIFEST.tsv"
ANSWER_WAIT = 5.0  # bound on waiting for a final response
DROP_WAIT = 0.5  # how long "no response" is watched for


def _manifest() -> list[dict[str, str]]:
    with MANIFEST.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


ROWS = {row["file"]: row for row in _manifest()}
FILES = sorted(ROWS)


@dataclass(frozen=True)
class Expect:
    """What a torture message must get from the engine."""

    answer: bool  # a final response must come back (False: nothing may come back)
    allowed: frozenset[int] | None  # final statuses allowed; None: any
    forbidden: frozenset[int]  # final statuses never allowed
    must_parse: bool  # parse_datagram must accept it

    def admits(self, status: int) -> bool:
        if status in self.forbidden:
            return False
        return self.allowed is None or status in self.allowed


_ANY_REJECTION = frozenset(range(300, 700))

# Manifest lines whose text does not map onto the rules above.
EXPLICIT: dict[str, Expect] = {
    # "483 (OPTIONS may be answered locally)": the engine answers OPTIONS itself.
    "zeromf.dat": Expect(True, frozenset({483, 200}), frozenset(), True),
    # "reject (not a registrar)": any refusal; the request is well-formed, so not 400.
    "regaut01.dat": Expect(True, _ANY_REJECTION, frozenset({400}), False),
}

_CODE = re.compile(r"(?<![\d.])([1-6]\d\d)(?![\d.])")
_NOT_CODE = re.compile(r"\bnot ([1-6]\d\d)\b")
_ALTERNATIVE = ("or process", "or ignore", "lenient acceptance allowed")


def derive(text: str, is_response: bool) -> Expect | None:
    """The expected outcome read from a manifest line, or None when the text is too loose."""
    low = text.lower()
    must_parse = re.search(r"\b(parse|process)", low) is not None
    if is_response or re.search(r"\bdrop\b", low):
        return Expect(False, None, frozenset(), must_parse)
    negated = {int(c) for c in _NOT_CODE.findall(low)}
    codes = {int(c) for c in _CODE.findall(text)} - negated
    alternative = any(a in low for a in _ALTERNATIVE)
    if codes:
        if alternative:  # the named codes, or normal processing (anything but 400)
            forbidden = frozenset() if 400 in codes else frozenset({400})
            return Expect(True, None, forbidden | negated, must_parse)
        return Expect(True, frozenset(codes), frozenset(negated), must_parse)
    if must_parse:
        return Expect(True, None, frozenset({400}) | negated, True)
    return None


def expectation(name: str) -> Expect:
    if name in EXPLICIT:
        return EXPLICIT[name]
    data = (TORTURE / name).read_bytes()
    exp = derive(ROWS[name]["what a B2BUA must do with it"], data.startswith(b"SIP/"))
    assert exp is not None, f"{name}: manifest text not understood; add it to EXPLICIT"
    return exp


# -- the manifest and the derivation ----------------------------------------------------------
def test_manifest_covers_every_file() -> None:
    on_disk = sorted(p.name for p in TORTURE.glob("*.dat"))
    assert on_disk == FILES
    assert len(FILES) == 49
    assert set(EXPLICIT) <= set(FILES)
    for name in FILES:
        expectation(name)  # derived or explicit, never left out


def test_derivation_reads_the_manifest_as_written() -> None:
    assert expectation("badvers.dat") == Expect(True, frozenset({505}), frozenset(), False)
    assert expectation("intmeth.dat") == Expect(True, frozenset({405, 501}), frozenset({400}), True)
    assert expectation("sdp01.dat") == Expect(True, None, frozenset({400}), True)
    assert expectation("trws.dat") == Expect(True, None, frozenset(), False)
    assert expectation("baddate.dat") == Expect(True, None, frozenset(), False)
    assert expectation("bigcode.dat").answer is False
    assert expectation("unreason.dat") == Expect(False, None, frozenset(), True)
    assert expectation("inv2543.dat") == Expect(True, None, frozenset({400}), True)
    assert derive("reject (not a registrar)", False) is None


# -- parser-level checks ------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in FILES if expectation(n).must_parse])
def test_parser_accepts(name: str) -> None:
    msg = parse_datagram((TORTURE / name).read_bytes())
    if isinstance(msg, Request):
        rej = check_request(msg)
        exp = expectation(name)
        if rej is not None:
            assert exp.admits(rej.status), f"{name}: {rej.status} {rej.reason}"
    else:
        assert isinstance(msg, Response)


def _parse(name: str) -> Request:
    msg = parse_datagram((TORTURE / name).read_bytes())
    assert isinstance(msg, Request)
    return msg


def test_esc01_user_parts_equal_their_unescaped_form() -> None:
    req = _parse("esc01.dat")
    ruri = parse_uri(req.uri)
    assert ruri.user == b"sips%3Auser%40example.com"
    assert ruri.user_unescaped == b"sips:user@example.com"
    assert ruri.host == b"example.net"
    assert req.to.uri.user_unescaped == b"user"
    assert req.from_.uri.user_unescaped == b"I have spaces"
    contact = parse_name_addr(req.get(b"contact") or b"").uri
    assert contact.user_unescaped == b"caller"
    assert check_request(req) is None


def test_escnull_keeps_the_null_byte() -> None:
    req = _parse("escnull.dat")
    assert req.to.uri.user_unescaped == b"null-\x00-null"
    assert [parse_name_addr(c).uri.user_unescaped for c in req.values(b"contact")] == [
        b"\x00",
        b"\x00\x00",
    ]


def test_esc02_escaped_method_is_not_register() -> None:
    req = _parse("esc02.dat")
    assert req.method == b"RE%47IST%45R"
    assert req.cseq == (29344, b"RE%47IST%45R")
    assert req.count(b"contact") == 2  # C%6Fntact is another header
    assert req.has(b"c%6fntact")
    rej = check_request(req)
    assert rej is not None and rej.status == 501


def test_dblreq_only_the_first_request() -> None:
    data = (TORTURE / "dblreq.dat").read_bytes()
    req = _parse("dblreq.dat")
    assert req.method == b"REGISTER"
    assert req.call_id == b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert req.body == b""
    assert b"INVITE" not in b"\r\n".join(req.lines)
    assert b"INVITE sip:joe@example.com" in data  # the part that was discarded


def test_mpart01_body_passed_intact() -> None:
    data = (TORTURE / "mpart01.dat").read_bytes()
    req = _parse("mpart01.dat")
    body = data[data.index(b"\r\n\r\n") + 4 :]
    assert len(body) == 553 == int(req.get(b"content-length") or b"0")
    assert req.body == body
    assert req.body.startswith(b"--7a9cbec02ceef655\r\n") and req.body.endswith(
        b"--7a9cbec02ceef655--\r\n"
    )
    assert req.get(b"content-type") == b"multipart/mixed;boundary=7a9cbec02ceef655"
    assert check_request(req) is not None  # MESSAGE is not taken part in, but not for its body
    assert req.serialize() == data


def test_longreq_values_not_truncated() -> None:
    data = (TORTURE / "longreq.dat").read_bytes()
    req = _parse("longreq.dat")
    head = data[: data.index(b"\r\n\r\n")].split(b"\r\n")
    assert req.lines == head  # every line whole, in order
    to = req.to
    assert to.display is not None
    assert to.display.startswith(b"I have a user name of ") and to.display.endswith(b" proportion")
    assert b"extreme" * 10 in to.display
    to_uri = to.uri
    assert to_uri.port == 6000
    assert to_uri.params[b"unknownparam1"] == b"very" + b"long" * 20 + b"value"
    assert to_uri.params[b"longparamname" + b"name" * 24] == b"shortvalue"
    long_flag = b"very" + b"long" * 25 + b"parameternamewithnovalue"
    assert long_flag in to_uri.params and to_uri.params[long_flag] is None
    frm = req.from_
    assert frm.uri.user == b"amazinglylongcallername" * 5
    f_line = next(line for line in head if line.startswith(b"F: "))
    assert frm.tag == f_line.split(b";tag=")[1].split(b";")[0]
    assert frm.tag is not None and len(frm.tag) > 150
    param, value = f_line.split(b";")[2].split(b"=")
    assert frm.params[param.lower()] == value and len(value) > 90
    assert req.call_id.startswith(b"longreq.onereally") and req.call_id.endswith(b"longcallid")
    assert req.count(b"via") == 34
    assert req.via.host == b"sip33.example.com"
    vias = req.values(b"via")
    assert len(vias) == 34 and vias[-1].startswith(
        b"SIP/2.0/TCP host.example.com;received=192.0.2.5"
    )
    assert vias[-1].endswith(b"long" * 50 + b"branchvalue")
    contact = parse_name_addr(req.get(b"contact") or b"")
    assert contact.uri.user == b"amazinglylongcallername" * 5
    assert len(req.body) == 150


def test_lwsdisp_semiuri_transports_wsinv_details() -> None:
    assert _parse("lwsdisp.dat").from_.display == b"caller"
    semi = parse_uri(_parse("semiuri.dat").uri)
    assert (semi.user, semi.host) == (b"user;par=u%40example.net", b"example.com")
    tr = _parse("transports.dat")
    assert [v.split(b" ")[0].rsplit(b"/", 1)[1] for v in tr.values(b"via")] == [
        b"UDP",
        b"SCTP",
        b"TLS",
        b"UNKNOWN",
        b"TCP",
    ]
    ws = _parse("wsinv.dat")
    assert ws.to.tag == b"1918181833n"
    assert ws.from_.tag == b"98asjd8"
    assert ws.from_.display == b'J Rosenberg \\\\\\"'
    assert ws.cseq == (9, b"INVITE")
    assert ws.get(b"max-forwards") == b"0068"
    assert (ws.via.transport, ws.via.host, ws.via.branch) == (b"UDP", b"192.0.2.2", b"390skdjuw")
    assert ws.count(b"via") == 2 and len(ws.values(b"via")) == 3
    assert ws.get(b"subject") == b""
    assert ws.get(b"newfangledheader") == b"newfangled value continued newfangled value"
    contact = parse_name_addr(ws.get(b"contact") or b"")
    assert contact.params == {b"newparam": b"newvalue", b"secondparam": None, b"q": b"0.33"}
    assert check_request(ws) is None


def test_intmeth_method_and_response_reasons() -> None:
    req = _parse("intmeth.dat")
    assert req.method == b"!interesting-Method0123456789_*+`.%indeed'~"
    assert req.cseq == (139122385, req.method)
    uri = parse_uri(req.uri)
    assert uri.user == b"1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*"
    assert uri.password == b"&it+has=1,weird!*pas$wo~d_too.(doesn't-it)"
    un = parse_datagram((TORTURE / "unreason.dat").read_bytes())
    assert isinstance(un, Response) and un.status == 200
    assert un.reason.decode("utf-8").endswith("простое")
    assert check_response(un) is None
    no = parse_datagram((TORTURE / "noreason.dat").read_bytes())
    assert isinstance(no, Response) and (no.status, no.reason) == (100, b"")
    assert check_response(no) is None


def test_responses_that_must_be_dropped_fail_validation() -> None:
    with pytest.raises(SipParseError):
        parse_datagram((TORTURE / "bigcode.dat").read_bytes())
    for name in ("scalarlg.dat", "bcast.dat"):
        msg = parse_datagram((TORTURE / name).read_bytes())
        assert isinstance(msg, Response)
        assert check_response(msg) is not None, name


# -- against the running engine -----------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    with EngineProcess(tmp_path_factory.mktemp("torture")) as proc:
        yield proc


def _send(engine: EngineProcess, data: bytes, *, answer: bool) -> list[bytes]:
    """Send ``data`` from a fresh socket; collect what comes back until a final response
    (when one is expected) or for DROP_WAIT (when none is). Non-2xx finals to a
    parseable INVITE are acknowledged so the engine stops retransmitting them."""
    got: list[bytes] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, engine.udp)
        deadline = time.monotonic() + (ANSWER_WAIT if answer else DROP_WAIT)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                reply = sock.recv(65536)
            except TimeoutError:
                break
            got.append(reply)
            status = _status(reply)
            if status >= 200:
                _ack(sock, engine, data, reply)
                if answer:
                    break
    return got


def _status(data: bytes) -> int:
    msg = parse_datagram(data)
    assert isinstance(msg, Response), f"the engine sent a request: {data[:200]!r}"
    return msg.status


def _ack(sock: socket.socket, engine: EngineProcess, request: bytes, response: bytes) -> None:
    try:
        req = parse_datagram(request)
        resp = parse_datagram(response)
        if (
            isinstance(req, Request)
            and req.method == b"INVITE"
            and isinstance(resp, Response)
            and resp.status >= 300
            and resp.has(b"to")
        ):
            sock.sendto(ack_for(req, resp).serialize(), engine.udp)
    except SipParseError:
        pass  # a request the engine could not parse was answered statelessly


@pytest.mark.parametrize("name", FILES)
def test_engine_outcome(engine: EngineProcess, name: str) -> None:
    data = (TORTURE / name).read_bytes()
    exp = expectation(name)
    what = ROWS[name]["what a B2BUA must do with it"]
    got = _send(engine, data, answer=exp.answer)
    if not exp.answer:
        assert got == [], f"{name} ({what}): expected no response, got {[g[:40] for g in got]}"
        return
    finals = [g for g in got if _status(g) >= 200]
    assert finals, f"{name} ({what}): no final response within {ANSWER_WAIT} s"
    resp = parse_datagram(finals[0])
    assert isinstance(resp, Response)
    assert exp.admits(resp.status), f"{name} ({what}): got {resp.status} {resp.reason!r}"
    # The response answers this request: Call-ID, CSeq and the top Via's branch come back.
    try:
        req = parse_datagram(data)
    except SipParseError as exc:
        req = exc.message  # type: ignore[assignment]
    if isinstance(req, Request):
        if req.has(b"call-id"):
            assert resp.get(b"call-id") == req.get(b"call-id")
        if req.has(b"cseq"):
            assert resp.get(b"cseq") == req.get(b"cseq")
        first_via = req.get(b"via")
        if first_via is not None:
            assert (resp.get(b"via") or b"").startswith(first_via.split(b";", 1)[0])
    _extra_checks(engine, name, resp, data)


def _extra_checks(engine: EngineProcess, name: str, resp: Response, data: bytes) -> None:
    if name == "dblreq.dat":
        # answered as the REGISTER it starts with, and only once
        assert resp.call_id == b"dblreq.0ha0isndaksdj99sdfafnl3lk233412"
        assert resp.cseq == (8, b"REGISTER")
        assert resp.status != 400
    elif name == "bext01.dat":
        unsupported = resp.values(b"unsupported")
        assert sorted(unsupported) == [b"nothingSupportsThis", b"nothingSupportsThisEither"]
        assert resp.to_tag is not None
    elif name == "invut.dat":
        assert resp.get(b"accept") is not None
    elif name in ("intmeth.dat", "esc02.dat"):
        assert resp.get(b"allow") is not None
    elif name in ("clerr.dat", "ncl.dat", "badinv01.dat"):
        assert resp.reason  # a reason phrase naming the problem
        assert resp.reason != b"Bad Request"


def test_dblreq_gets_a_single_answer(engine: EngineProcess) -> None:
    data = (TORTURE / "dblreq.dat").read_bytes()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.sendto(data, engine.udp)
        sock.settimeout(ANSWER_WAIT)
        first = parse_datagram(sock.recv(65536))
        assert isinstance(first, Response) and first.cseq[1] == b"REGISTER"
        sock.settimeout(DROP_WAIT)
        with pytest.raises(TimeoutError):
            sock.recv(65536)


def test_engine_still_answers_options_after_all(engine: EngineProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        for name in FILES:  # all 49 again, back to back
            sock.sendto((TORTURE / name).read_bytes(), engine.udp)
    assert engine.alive()
    resp = engine.options()
    assert resp is not None and resp.status == 200
    assert engine.alive()
