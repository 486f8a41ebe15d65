"""Calls over TCP through ansim, and in-dialog requests over the connection a party uses.

A party that reaches ansim over TCP may have no listening socket (a phone behind NAT, or
SIPp with ``-t t1``), so a request toward it in its dialog (the other party's BYE) must
go over the connection its own messages came on while it is open, and to its Contact
(or route set) only once that connection is gone. Peers: SIPp over TCP on either leg,
and a caller written here on a plain TCP socket, whose Contact names a listening socket
of the test's own, so that the test can see which of the two the BYE takes.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from call_env import (
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    CallRun,
    Sipp,
    assert_no_leaks,
    tcp_listening,
    trunk,
    user_part,
)
from conftest import free_port

from b2bua.sip.message import Request, Response, SipMessage
from b2bua.sip.parser import StreamParser


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


def start_engine(
    tmp_path: Path, port: int, transport: str = "udp", idle: float | None = None
) -> Ansim:
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("t1", port, transport=transport)],
        routes=[{"prefix": "+82", "trunks": ["t1"]}],
        tcp=True,
        tcp_idle_timeout=idle,
    )
    return engine.start()


def run(
    sipp: Sipp,
    engine: Ansim,
    uac: str,
    uas: str,
    uas_port: int,
    *,
    uas_transport: str = "udp",
    keys: dict[str, str] | None = None,
    hold_ms: int = 200,
) -> CallRun:
    uas_run = sipp.start(
        uas,
        port=uas_port,
        keys=CALLEE.sipp_keys("callee"),
        timeout=15,
        extra=["-d", str(hold_ms)],
        transport=uas_transport,
    )
    uac_run = sipp.start(
        uac,
        port=free_port(),
        remote=engine.addr,
        service=user_part(VIRTUAL_AX),
        keys={**CALLER.sipp_keys("caller"), **(keys or {})},
        timeout=15,
        call_id=f"{CALLER.national}-%u-%p@%s",
        extra=["-d", str(hold_ms)],
        transport="tcp",
    )
    call = CallRun(uac_run, uas_run)
    codes = (uac_run.wait(25), uas_run.wait(25))
    assert codes == (0, 0), f"SIPp exit codes {codes}\n{call.report()}\n{engine.log_text()}"
    return call


def tcp_only(call: CallRun, side: str) -> None:
    run = call.uac if side == "uac" else call.uas
    assert run is not None
    text = run.message_file.read_text(errors="replace")
    assert "TCP message" in text and "UDP message" not in text, side


def test_callee_bye_reaches_a_tcp_caller_without_a_listener(sipp: Sipp, tmp_path: Path) -> None:
    port = free_port()
    contact_port = free_port()  # named in the caller's Contact; nothing listens there
    engine = start_engine(tmp_path, port)
    try:
        call = run(
            sipp,
            engine,
            "tcp_uac_callee_bye",
            "call_uas_bye",
            port,
            keys={"contact_port": str(contact_port)},
        )
        assert not tcp_listening(contact_port)
        assert call.uac.received_requests() == ["BYE"]
        assert call.uac.received_statuses("INVITE") == [100, 180, 200]
        assert call.uas is not None and call.uas.received_statuses("BYE") == [200]
        tcp_only(call, "uac")
        row = engine.cdr()
        assert (row["src_transport"], row["src_ip"], row["ended_by"]) == (
            "tcp",
            "127.0.0.1",
            "callee",
        )
        assert_no_leaks(call)
    finally:
        assert engine.stop() == 0, engine.log_text()


@pytest.mark.parametrize(
    ("uac", "uas", "ended_by"),
    [
        ("call_uac_basic", "call_uas_answer", "caller"),
        ("tcp_uac_callee_bye", "call_uas_bye", "callee"),
    ],
)
def test_tcp_on_both_legs(sipp: Sipp, tmp_path: Path, uac: str, uas: str, ended_by: str) -> None:
    """Requests and responses in both directions over TCP on both legs: the callee
    trunk is TCP, the callee SIPp listens on it and answers over ansim's connection."""
    port = free_port()
    engine = start_engine(tmp_path, port, transport="tcp")
    try:
        call = run(
            sipp,
            engine,
            uac,
            uas,
            port,
            uas_transport="tcp",
            keys={"contact_port": str(free_port())},
        )
        tcp_only(call, "uac")
        tcp_only(call, "uas")
        assert call.uas is not None
        if ended_by == "caller":
            assert call.uac.received_statuses("BYE") == [200]
            assert call.uas.received_requests() == ["INVITE", "ACK", "BYE"]
        else:
            assert call.uac.received_requests() == ["BYE"]
            assert call.uas.received_statuses("BYE") == [200]
        row = engine.cdr()
        assert (row["status"], row["ended_by"], row["src_transport"]) == (200, ended_by, "tcp")
        assert_no_leaks(call)
    finally:
        assert engine.stop() == 0, engine.log_text()


# -- a caller on a plain socket ------------------------------------------------------------


class TcpCaller:
    """A caller over one TCP connection, its Contact at ``contact_port``."""

    def __init__(self, ansim_port: int, contact_port: int) -> None:
        self.ansim_port = ansim_port
        self.contact_port = contact_port
        self.sock = socket.create_connection(("127.0.0.1", ansim_port), timeout=5)
        self.local_port = self.sock.getsockname()[1]
        self.parser = StreamParser()
        self.inbox: list[SipMessage] = []
        self.call_id = uuid.uuid4().hex + "@tcp-caller"
        self.tag = uuid.uuid4().hex[:10]
        self.to_tag = b""

    def invite(self) -> None:
        x = user_part(VIRTUAL_AX)
        body = (
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\n"
        )
        self.send(
            f"INVITE sip:{x}@127.0.0.1:{self.ansim_port};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"From: <sip:{CALLER.national}@127.0.0.1>;tag={self.tag}\r\n"
            f"To: <sip:{x}@127.0.0.1>\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 INVITE\r\n"
            f"Contact: <sip:{CALLER.e164}@127.0.0.1:{self.contact_port};transport=tcp>\r\n"
            "Max-Forwards: 70\r\nContent-Type: application/sdp\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        ok = self.expect(lambda m: isinstance(m, Response) and m.status == 200)
        assert isinstance(ok, Response) and ok.to_tag
        self.to_tag = ok.to_tag
        self.send(
            f"ACK sip:ansim@127.0.0.1:{self.ansim_port};transport=tcp SIP/2.0\r\n"
            f"Via: SIP/2.0/TCP 127.0.0.1:{self.local_port};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
            f"From: <sip:{CALLER.national}@127.0.0.1>;tag={self.tag}\r\n"
            f"To: <sip:{x}@127.0.0.1>;tag={self.to_tag.decode()}\r\n"
            f"Call-ID: {self.call_id}\r\nCSeq: 1 ACK\r\nMax-Forwards: 70\r\n"
            "Content-Length: 0\r\n\r\n"
        )

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode())

    def expect(self, want: object, timeout: float = 10.0) -> SipMessage:
        return read_until(self.sock, self.parser, self.inbox, want, timeout)

    def close(self) -> None:
        self.sock.close()


def read_until(
    sock: socket.socket,
    parser: StreamParser,
    inbox: list[SipMessage],
    want: object,
    timeout: float,
) -> SipMessage:
    """The first message from ``sock`` for which ``want(msg)`` holds (bounded wait)."""
    assert callable(want)
    deadline = time.monotonic() + timeout
    while True:
        for msg in inbox:
            if want(msg):
                inbox.remove(msg)
                return msg
        left = deadline - time.monotonic()
        assert left > 0, f"not received in {timeout} s; got {[m.lines[0] for m in inbox]}"
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        assert data, "connection closed"
        inbox.extend(m for m in parser.feed(data) if isinstance(m, SipMessage))


def answer_bye(sock: socket.socket, bye: Request) -> None:
    lines = [b"SIP/2.0 200 OK"]
    for name, value in bye.header_items():
        if name in (b"via", b"from", b"to", b"call-id", b"cseq"):
            lines.append(name + b": " + value)
    sock.sendall(b"\r\n".join([*lines, b"Content-Length: 0", b"", b""]))


def is_bye(msg: object) -> bool:
    return isinstance(msg, Request) and msg.method == b"BYE"


@pytest.fixture
def contact_listener() -> Iterator[socket.socket]:
    """A listening socket where the TCP caller's Contact points."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", free_port()))
    sock.listen(8)
    sock.settimeout(0.2)
    try:
        yield sock
    finally:
        sock.close()


def accepted(listener: socket.socket, timeout: float) -> socket.socket | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn, _ = listener.accept()
            return conn
        except TimeoutError:
            continue
    return None


def test_bye_takes_the_callers_connection_while_it_is_open(
    sipp: Sipp, tmp_path: Path, contact_listener: socket.socket
) -> None:
    port = free_port()
    engine = start_engine(tmp_path, port)
    try:
        uas = sipp.start(
            "call_uas_bye", port=port, keys=CALLEE.sipp_keys("callee"), extra=["-d", "300"]
        )
        caller = TcpCaller(engine.port, contact_listener.getsockname()[1])
        try:
            caller.invite()
            bye = caller.expect(is_bye)
            assert isinstance(bye, Request) and bye.to_tag == caller.tag.encode()
            answer_bye(caller.sock, bye)
            assert uas.wait(15) == 0, uas.report()
        finally:
            caller.close()
        # Nothing was sent to the Contact: the connection was open.
        assert accepted(contact_listener, 0.5) is None
        assert engine.cdr()["ended_by"] == "callee"
    finally:
        assert engine.stop() == 0, engine.log_text()


def test_bye_goes_to_the_contact_once_the_connection_is_gone(
    sipp: Sipp, tmp_path: Path, contact_listener: socket.socket
) -> None:
    port = free_port()
    engine = start_engine(tmp_path, port)
    try:
        uas = sipp.start(
            "call_uas_bye", port=port, keys=CALLEE.sipp_keys("callee"), extra=["-d", "1000"]
        )
        caller = TcpCaller(engine.port, contact_listener.getsockname()[1])
        caller.invite()
        caller.close()  # the callee hangs up a second later
        conn = accepted(contact_listener, 10.0)
        assert conn is not None, f"no connection to the Contact\n{engine.log_text()}"
        with conn:
            bye = read_until(conn, StreamParser(), [], is_bye, 10.0)
            assert isinstance(bye, Request) and bye.get(b"call-id") == caller.call_id.encode()
            answer_bye(conn, bye)
            assert uas.wait(15) == 0, uas.report()
        assert engine.cdr()["ended_by"] == "callee"
    finally:
        assert engine.stop() == 0, engine.log_text()


def test_an_idle_callers_connection_stays_open_while_the_call_lasts(
    sipp: Sipp, tmp_path: Path, contact_listener: socket.socket
) -> None:
    """Idle TCP connections are closed after ``tcp_idle_timeout`` (1 s here), but not
    one that a call's party is reached over: the callee's BYE, 4 s into a silent call,
    still takes it. Once the call has ended the connection is closed as idle."""
    port = free_port()
    engine = start_engine(tmp_path, port, idle=1.0)
    try:
        uas = sipp.start(
            "call_uas_bye", port=port, keys=CALLEE.sipp_keys("callee"), extra=["-d", "4000"]
        )
        caller = TcpCaller(engine.port, contact_listener.getsockname()[1])
        try:
            caller.invite()
            bye = caller.expect(is_bye, timeout=15)
            assert isinstance(bye, Request)
            answer_bye(caller.sock, bye)
            assert uas.wait(15) == 0, uas.report()
            assert accepted(contact_listener, 0.2) is None
            caller.sock.settimeout(10)
            deadline = time.monotonic() + 10
            closed = False
            while not closed and time.monotonic() < deadline:
                closed = caller.sock.recv(65536) == b""
            assert closed, "the connection was not closed once idle"
        finally:
            caller.close()
    finally:
        assert engine.stop() == 0, engine.log_text()
