"""Mutation fuzzing of the SIP parser (issue 3, "Must show" 5).

More than 100,000 messages, each the torture corpus or a typical INVITE/200/BYE/OPTIONS
mutated one to four times (byte flips, insertions of SIP punctuation and odd bytes,
deletions, truncations, header duplication, CRLF games, odd scalar values, splices of
two messages), from a seeded ``random.Random`` so that every run is the same. Each one
goes through everything the endpoint does with a datagram: ``parse_datagram``; for a
request ``check_request``, and for an accepted one Via stamping, the response
destination and a response; for a response ``check_response``; the fields every layer
reads (``via``, ``from_``, ``to``, ``cseq``, ``call_id``, tags); serialization and a
re-parse of the result; for a failure, the 400 built from what was parsed. The same
bytes are also fed in random chunks to a ``StreamParser``. Nothing may raise anything
but ``SipParseError`` where that is the documented failure, and nothing at all where
it is not. A small hypothesis test builds messages from SIP-shaped fragments.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from conftest import TORTURE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from b2bua.sip.errors import SipParseError
from b2bua.sip.message import Request, Response, SipMessage
from b2bua.sip.parser import StreamParser, parse_datagram
from b2bua.sip.responses import make_response
from b2bua.sip.routing import response_destination, stamp_received
from b2bua.sip.transaction import TransactionLayer
from b2bua.sip.validate import check_request, check_response

MESSAGES = 100_000
SEED = 4475
SOURCE = ("udp", "203.0.113.7", 40123)

SDP = (
    b"v=0\r\no=- 3912048771 3912048771 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\nm=audio 40000 RTP/AVP 8 0 18 101\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
)
TYPICAL = [
    b"INVITE sip:+825012345678@198.51.100.7:5060;user=phone SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK-524287-1---a1b2c3d4e5f6;rport\r\n"
    b"Max-Forwards: 69\r\n"
    b"Contact: <sip:+821012345678@192.0.2.10:5060;transport=udp>\r\n"
    b"To: <sip:+825012345678@198.51.100.7;user=phone>\r\n"
    b'From: "Parent" <sip:+821012345678@192.0.2.10;user=phone>;tag=8a7b6c5d\r\n'
    b"Call-ID: 4f3e2d1c0b9a8776@192.0.2.10\r\n"
    b"CSeq: 1 INVITE\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, PRACK, UPDATE\r\n"
    b"Supported: 100rel, timer, replaces\r\n"
    b"Session-Expires: 1800\r\n"
    b"P-Asserted-Identity: <sip:+821012345678@192.0.2.10;user=phone>\r\n"
    b"Route: <sip:198.51.100.7;lr>, <sip:198.51.100.8;lr>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP) + SDP,
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsrv1;rport=5060;received=127.0.0.1\r\n"
    b"Record-Route: <sip:198.51.100.7;lr>\r\n"
    b"From: <sip:a@127.0.0.1>;tag=f1\r\n"
    b"To: <sip:b@127.0.0.1>;tag=t1\r\n"
    b"Call-ID: ok1\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"Contact: <sip:b@127.0.0.1:5080>\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: %d\r\n\r\n" % len(SDP) + SDP,
    b"BYE sip:b@127.0.0.1:5080 SIP/2.0\r\n"
    b"v: SIP/2.0/TCP [2001:db8::1]:5060;branch=z9hG4bKbye1\r\n"
    b"f: <sip:a@127.0.0.1>;tag=f1\r\nt: <sip:b@127.0.0.1>;tag=t1\r\ni: ok1\r\n"
    b"CSeq: 8 BYE\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n",
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKopt;rport\r\n"
    b"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1>\r\nCall-ID: o1\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
]
CORPUS = [p.read_bytes() for p in sorted(TORTURE.glob("*.dat"))] + TYPICAL

INTERESTING = [
    b":", b";", b",", b"<", b">", b'"', b"\\", b"%", b"%0", b"%00", b"%zz", b"=", b"@", b"[", b"]",
    b"/", b"?", b"&", b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n ", b"\r\n\r\n", b"\x00",
    b"\xff", b"\xc3\xa9", b"0", b"-1", b"4294967296", b"99999999999999999999", b"SIP/2.0", b"SIP/",
    b"sip:", b"sips:", b"tel:", b"z9hG4bK", b";branch=", b";tag=", b";rport", b";received=",
    b";lr", b"<sip:", b"Via: ", b"v: ", b"Content-Length: ", b"l: ", b"CSeq: ", b"To: ", b"From: ",
    b"Call-ID: ", b"Max-Forwards: ", b"Contact: *", b"Require: x", b"INVITE", b"ACK", b"\x80",
]  # fmt: skip
SCALARS = [
    b"0", b"-1", b"-999", b"70", b"255", b"256", b"2147483647", b"2147483648", b"4294967295",
    b"4294967296", b"999999999", b"1000000000", b"99999999999999999999999", b"", b" ", b"1 2",
    b"0x10", b"\xd9\xa1",
]  # fmt: skip
LAYER = TransactionLayer()  # accepted messages go on to transaction matching
SCALAR_HEADERS = [b"Content-Length: ", b"l: ", b"CSeq: ", b"Max-Forwards: ", b"Expires: "]


def _flip(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(b))
        b[i] = b[i] ^ (1 << rng.randrange(8)) if rng.random() < 0.5 else rng.randrange(256)
    return bytes(b)


def _insert(rng: random.Random, data: bytes) -> bytes:
    i = rng.randint(0, len(data))
    piece = rng.choice(INTERESTING) if rng.random() < 0.8 else rng.randbytes(rng.randint(1, 8))
    return data[:i] + piece * rng.choice((1, 1, 1, 2, 50)) + data[i:]


def _delete(rng: random.Random, data: bytes) -> bytes:
    if not data:
        return data
    i = rng.randrange(len(data))
    return data[:i] + data[i + rng.randint(1, 40) :]


def _truncate(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randint(0, len(data))]


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return data.split(b"\r\n"), b""
    return data[:end].split(b"\r\n"), data[end:]


def _duplicate_header(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    line = lines[rng.randrange(1, len(lines))]
    where = rng.randint(1, len(lines))
    lines.insert(where, line if rng.random() < 0.7 else line.upper())
    return b"\r\n".join(lines) + rest


def _drop_header(rng: random.Random, data: bytes) -> bytes:
    lines, rest = _lines(data)
    if len(lines) < 2:
        return data
    del lines[rng.randrange(1, len(lines))]
    return b"\r\n".join(lines) + rest


def _crlf_games(rng: random.Random, data: bytes) -> bytes:
    choice = rng.randrange(7)
    if choice == 0:  # bare LF line ends
        return data.replace(b"\r\n", b"\n", rng.choice((1, 3, -1)))
    if choice == 1:  # bare CR
        return data.replace(b"\r\n", b"\r", rng.choice((1, 3, -1)))
    if choice == 2:  # an early end of headers
        i = data.find(b"\r\n", rng.randrange(max(1, len(data))))
        return data if i < 0 else data[:i] + b"\r\n\r\n" + data[i:]
    if choice == 3:  # folding in odd places
        i = data.find(b"\r\n", rng.randrange(max(1, len(data))))
        return (
            data
            if i < 0
            else data[:i] + rng.choice((b"\r\n ", b"\r\n\t", b"\r\n  \r\n ")) + data[i + 2 :]
        )
    if choice == 4:  # no final empty line
        return data.replace(b"\r\n\r\n", b"\r\n", 1)
    if choice == 5:  # leading and trailing CRLFs
        return b"\r\n" * rng.randint(1, 3) + data + b"\r\n" * rng.randint(0, 3)
    return data.replace(b": ", b":" + b" " * rng.randint(0, 3) + b"\r\n ", 1)


def _scalar(rng: random.Random, data: bytes) -> bytes:
    name = rng.choice(SCALAR_HEADERS)
    i = data.find(name)
    if i < 0:
        lines, rest = _lines(data)
        lines.insert(rng.randint(1, max(1, len(lines))), name + rng.choice(SCALARS))
        return b"\r\n".join(lines) + rest
    j = data.find(b"\r\n", i)
    j = len(data) if j < 0 else j
    value = rng.choice(SCALARS)
    if name == b"CSeq: " and rng.random() < 0.7:
        value += b" " + rng.choice((b"INVITE", b"ACK", b"BYE", b"OPTIONS", b"X"))
    return data[: i + len(name)] + value + data[j:]


def _splice(rng: random.Random, data: bytes) -> bytes:
    other = rng.choice(CORPUS)
    return data[: rng.randint(0, len(data))] + other[rng.randint(0, len(other)) :]


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    _flip, _flip, _insert, _insert, _delete, _truncate, _duplicate_header, _duplicate_header,
    _drop_header, _crlf_games, _crlf_games, _scalar, _scalar, _splice,
]  # fmt: skip


def mutate(rng: random.Random, data: bytes) -> bytes:
    for _ in range(rng.choice((1, 1, 2, 2, 3, 4))):
        data = rng.choice(MUTATORS)(rng, data)
    return data


def _fields(msg: SipMessage) -> None:
    """Read what the transaction and dialog layers read; only SipParseError may come out."""
    for get in (
        lambda: msg.via,
        lambda: msg.via.branch,
        lambda: msg.via.rport,
        lambda: msg.from_,
        lambda: msg.to,
        lambda: msg.from_tag,
        lambda: msg.to_tag,
        lambda: msg.cseq,
        lambda: msg.call_id,
        lambda: msg.to.uri,
        lambda: msg.from_.uri.user_unescaped,
    ):
        try:
            get()
        except SipParseError:
            pass
    msg.values(b"contact")
    msg.header_items()


def _transaction(msg: SipMessage) -> None:
    """A validated message must match (or start) a transaction without raising."""
    if len(LAYER.server) > 5000:
        LAYER.server.clear()
    for event in LAYER.receive(msg, SOURCE, 0.0):
        txn = getattr(event, "txn", None)
        if txn is not None and isinstance(msg, Request) and msg.method != b"ACK":
            LAYER.reply(txn, 486, 0.0, to_tag=b"t")
            if msg.method == b"CANCEL":
                LAYER.find_invite(msg)
    LAYER.take_outbox()


def _stream_agrees(data: bytes, msg: SipMessage) -> None:
    """Where a datagram is framed exactly by its one Content-Length, TCP framing of the
    same bytes gives the same message."""
    end = data.find(b"\r\n\r\n")
    if data[:1] == b"\r" or end < 0 or msg.count(b"content-length") != 1:
        return
    if int(msg.get(b"content-length") or b"") != len(data) - end - 4:
        return
    items = StreamParser().feed(data)
    assert len(items) == 1, items
    item = items[0]
    if isinstance(item, SipMessage):
        assert item.lines == msg.lines and item.body == msg.body
    else:  # a parse error over TCP must be one over UDP too, which it was not
        raise AssertionError(f"stream: {item.reason}, datagram: parsed")


def exercise(data: bytes, rng: random.Random) -> str:
    """Everything the endpoint does with a datagram, then the same bytes over a stream."""
    try:
        msg = parse_datagram(data)
    except SipParseError as exc:
        outcome = "error"
        partial = exc.message
        if isinstance(partial, Request) and partial.has(b"via"):  # the endpoint's 400
            try:
                dest = response_destination(partial.via, SOURCE, symmetric=False)
            except SipParseError:
                dest = SOURCE
            assert dest[0] == "udp"
            make_response(partial, exc.status, exc.reason.encode(), to_tag=b"sl1").serialize()
    else:
        _fields(msg)
        if isinstance(msg, Request):
            rej = check_request(msg)
            outcome = "rejected" if rej is not None else "accepted"
            if rej is None:
                via = msg.via  # validated: must parse
                stamped = stamp_received(msg.get(b"via") or b"", via, SOURCE)
                assert stamped is None or stamped.startswith(via.raw.split(b";", 1)[0].rstrip())
                response_destination(via, SOURCE, symmetric=False)
                make_response(msg, 200, to_tag=b"t").serialize()
                assert msg.cseq[1] == msg.method
                _transaction(msg)
            else:
                assert 400 <= rej.status <= 699 and rej.reason
                make_response(
                    msg, rej.status, rej.phrase, to_tag=b"t", headers=rej.headers
                ).serialize()
        else:
            assert isinstance(msg, Response)
            reason = check_response(msg)
            outcome = "response" if reason is None else "dropped"
            if reason is None:
                assert 100 <= msg.status <= 699
                _transaction(msg)
        _stream_agrees(data, msg)
        again = parse_datagram(msg.serialize())  # what is forwarded parses the same way
        assert again.lines[0] == msg.lines[0] and again.body == msg.body
    sp = StreamParser()
    pos = 0
    try:
        while pos < len(data):
            step = rng.choice((1, 7, 64, 512, 4096))
            for item in sp.feed(data[pos : pos + step]):
                if isinstance(item, SipMessage):
                    _fields(item)
                else:
                    assert isinstance(item, SipParseError)
            pos += step
    except SipParseError:
        pass  # a framing error: the connection would be closed
    return outcome


def test_mutated_messages_raise_nothing_but_sip_parse_error() -> None:
    rng = random.Random(SEED)
    outcomes: dict[str, int] = {}
    for i in range(MESSAGES):
        seed = CORPUS[i % len(CORPUS)]
        data = mutate(rng, seed)
        try:
            outcome = exercise(data, rng)
        except Exception as exc:
            raise AssertionError(f"message {i} from a seed of {len(seed)} bytes: {data!r}") from exc
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    assert sum(outcomes.values()) == MESSAGES
    # the mutations reach every path, not only the parse error
    assert all(
        outcomes.get(k, 0) > MESSAGES // 200 for k in ("error", "rejected", "accepted", "response")
    )
    assert outcomes.get("dropped", 0) > 0


def test_unmutated_corpus_datagram_and_stream_agree() -> None:
    rng = random.Random(SEED)
    for data in CORPUS:
        exercise(data, rng)
        try:
            msg = parse_datagram(data)
        except SipParseError:
            continue
        if not msg.has(b"content-length") or b"\r\n\r\n" not in data:
            continue  # UDP takes the datagram's end as the body's end; a stream cannot
        clen = int(msg.get(b"content-length") or b"0")
        if len(data) - data.index(b"\r\n\r\n") - 4 != clen or msg.count(b"content-length") > 1:
            continue  # trailing bytes (dblreq) or a short body (clerr): framed differently
        items = StreamParser().feed(data)
        assert len(items) == 1 and isinstance(items[0], SipMessage), data[:60]
        assert items[0].lines == msg.lines and items[0].body == msg.body


# -- a small hypothesis test on SIP-shaped input ---------------------------------------------------
_FRAGMENT = st.sampled_from(INTERESTING + SCALARS + [b"a", b"b.example", b"5060", b"UDP", b"tag"])
_VALUE = st.lists(_FRAGMENT, max_size=12).map(b"".join)
_NAME = st.sampled_from(
    [b"Via", b"v", b"From", b"f", b"To", b"t", b"Call-ID", b"i", b"CSeq", b"Max-Forwards",
     b"Contact", b"m", b"Content-Length", b"l", b"Content-Type", b"Require", b"Route", b"X-Odd"]
)  # fmt: skip
_START = st.one_of(
    st.builds(
        lambda m, u, v: m + b" " + u + b" " + v,
        st.sampled_from([b"INVITE", b"ACK", b"BYE", b"OPTIONS", b"REGISTER", b"FOO", b""]),
        _VALUE,
        st.sampled_from([b"SIP/2.0", b"sip/2.0", b"SIP/3.0", b""]),
    ),
    st.builds(
        lambda c, r: b"SIP/2.0 " + c + b" " + r,
        st.sampled_from([b"100", b"200", b"486", b"999", b"abc"]),
        _VALUE,
    ),
)
_MESSAGE = st.builds(
    lambda start, headers, sep, body: (
        start + b"".join(b"\r\n" + n + b":" + v for n, v in headers) + sep + body
    ),
    _START,
    st.lists(st.tuples(_NAME, _VALUE), max_size=12),
    st.sampled_from([b"\r\n\r\n", b"\r\n", b""]),
    st.binary(max_size=64),
)


@settings(
    max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(_MESSAGE, st.randoms(use_true_random=False))
def test_hypothesis_sip_shaped_messages(data: bytes, rnd: random.Random) -> None:
    exercise(data, rnd)
