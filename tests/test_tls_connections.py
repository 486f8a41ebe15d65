"""SIP over TLS from Python ``ssl`` clients: connection reuse by 200 clients, handshake
timeouts, mutual TLS required of one trunk's sources, and a renewed certificate taken
without a restart. Certificates are made by the test (``tls_certs``)."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from call_env import Ansim, trunk
from conftest import free_port
from cryptography import x509
from engine_process import options_request
from tls_certs import Authority, Pem

from b2bua.sip.message import Response
from b2bua.sip.parser import StreamParser

HANDSHAKE_TIMEOUT = 1.0


@pytest.fixture
def pki(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


def tls_engine(tmp_path: Path, pki: Authority, server: Pem, **trunk_tls: object) -> Ansim:
    caller = trunk("caller", free_port()) | {"accept_from": ["127.0.0.2/32"]}
    if trunk_tls:
        caller["tls"] = trunk_tls
    return Ansim(
        tmp_path / "ansim",
        trunks=[caller, trunk("callee", free_port())],
        routes=[{"prefix": "+82", "trunks": ["callee"]}],
        metrics=True,
        tls_port=free_port(),
        config={
            "sip": {
                "tls": {
                    "certificate": str(server.cert),
                    "key": str(server.key),
                    "ca": str(pki.path),
                    "handshake_timeout": HANDSHAKE_TIMEOUT,
                }
            },
            "logging": {"level": "info"},
        },
    )


def client_context(pki: Authority, pem: Pem | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.path))
    if pem is not None:
        ctx.load_cert_chain(pem.cert, pem.key)
    return ctx


def connect(engine: Ansim, ctx: ssl.SSLContext, source: str = "127.0.0.1") -> ssl.SSLSocket:
    assert engine.tls_port is not None
    raw = socket.create_connection(
        ("127.0.0.1", engine.tls_port), timeout=5, source_address=(source, 0)
    )
    return ctx.wrap_socket(raw, server_hostname="ansim.test")


class Client:
    """One TLS connection that sends OPTIONS and reads the answers off the stream."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.parser = StreamParser()
        self.port = sock.getsockname()[1]

    def send_options(self, engine: Ansim) -> str:
        assert engine.tls_port is not None
        call_id = uuid.uuid4().hex
        self.sock.sendall(
            options_request(engine.tls_port, self.port, call_id=call_id, transport="TLS")
        )
        return call_id

    def response(self, timeout: float = 5.0) -> Response:
        self.sock.settimeout(timeout)
        while True:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            items = self.parser.feed(data)
            if items:
                item = items[0]
                assert isinstance(item, Response), item
                return item


def serial(sock: ssl.SSLSocket) -> int:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


@pytest.fixture
def engine(tmp_path: Path, pki: Authority) -> Iterator[Ansim]:
    server = pki.issue("ansim", "ansim.test")
    with tls_engine(tmp_path, pki, server) as running:
        yield running


def test_two_hundred_connections_are_reused_and_answered_on_themselves(
    engine: Ansim, pki: Authority
) -> None:
    before = engine.metrics()
    ctx = client_context(pki)
    clients = [Client(connect(engine, ctx)) for _ in range(200)]
    try:
        assert {c.sock.version() for c in clients} <= {"TLSv1.2", "TLSv1.3"}
        for _ in range(3):
            sent = [c.send_options(engine) for c in clients]
            for client, call_id in zip(clients, sent, strict=True):
                resp = client.response()
                assert resp.status == 200
                assert resp.get(b"call-id") == call_id.encode()
                # answered over the connection it came on: rport is that connection's port
                assert resp.via.params.get(b"rport") == str(client.port).encode()
        after = engine.metrics()
    finally:
        for c in clients:
            c.sock.close()
    assert (
        after['ansim_tls_handshakes_total{side="server"}']
        - before['ansim_tls_handshakes_total{side="server"}']
        == 200
    )
    assert after['ansim_sip_connections{transport="tls"}'] == 200
    assert (
        after["ansim_sip_options_answered_total"] - before["ansim_sip_options_answered_total"]
        == 600
    )


def test_handshakes_that_do_not_end_in_time_are_closed(engine: Ansim, pki: Authority) -> None:
    assert engine.tls_port is not None
    silent = [socket.create_connection(("127.0.0.1", engine.tls_port)) for _ in range(20)]
    partial = [socket.create_connection(("127.0.0.1", engine.tls_port)) for _ in range(5)]
    for s in partial:
        s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello cut short
    plain = socket.create_connection(("127.0.0.1", engine.tls_port))
    plain.sendall(options_request(engine.tls_port, plain.getsockname()[1], transport="TCP"))
    start = time.monotonic()
    closed: dict[int, float] = {}
    socks = [*silent, *partial, plain]
    while len(closed) < len(socks) and time.monotonic() - start < 10:
        for i, s in enumerate(socks):
            if i in closed:
                continue
            s.settimeout(0.01)
            try:
                data = s.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                data = b""
            if not data or i == len(socks) - 1:
                closed[i] = time.monotonic() - start
    for s in socks:
        s.close()
    assert len(closed) == len(socks)
    # the timeout is 1 s; allow for the scheduler, far below the 10 s message deadline
    assert max(closed[i] for i in range(25)) < HANDSHAKE_TIMEOUT + 1.5, closed
    # a good client is not affected
    client = Client(connect(engine, client_context(pki)))
    client.send_options(engine)
    assert client.response().status == 200
    client.sock.close()
    metrics = engine.metrics()
    failures = sum(
        v for k, v in metrics.items() if k.startswith("ansim_tls_handshake_failures_total")
    )
    assert failures >= 26


def test_mutual_tls_is_required_of_the_trunk_that_asks_for_it(
    tmp_path: Path, pki: Authority
) -> None:
    server = pki.issue("ansim", "ansim.test")
    good = pki.issue("caller", "caller.test", ips=("127.0.0.2",))
    other = pki.issue("other", "other.test", ips=("127.0.0.2",))
    stranger = pki.issue("stranger", "caller.test", self_signed=True)
    with tls_engine(
        tmp_path, pki, server, verify_client=True, ca=str(pki.path), peer_names=["caller.test"]
    ) as engine:
        # the trunk's source with the certificate the CA gave it: answered
        client = Client(connect(engine, client_context(pki, good), source="127.0.0.2"))
        client.send_options(engine)
        assert client.response().status == 200
        client.sock.close()
        # no certificate, a certificate of no trusted CA: refused in the handshake
        for pem in (None, stranger):
            with pytest.raises((ssl.SSLError, ConnectionError, TimeoutError)):
                sock = connect(engine, client_context(pki, pem), source="127.0.0.2")
                # TLS 1.3 servers refuse the client's certificate after the client's
                # side of the handshake: the refusal shows on the first read
                Client(sock).send_options(engine)
                Client(sock).response(2.0)
        # a certificate of the CA but not for this trunk's names: closed after it
        with pytest.raises((ssl.SSLError, ConnectionError, AssertionError, TimeoutError)):
            sock = connect(engine, client_context(pki, other), source="127.0.0.2")
            Client(sock).send_options(engine)
            Client(sock).response(2.0)
        # another source needs no certificate
        client = Client(connect(engine, client_context(pki), source="127.0.0.1"))
        client.send_options(engine)
        assert client.response().status == 200
        client.sock.close()
        metrics = engine.metrics()
    assert metrics['ansim_tls_handshake_failures_total{error="peer_name"}'] == 1


def replace(pem: Pem, new: Pem) -> None:
    """Put ``new`` in place of ``pem`` as a renewal would: each file renamed over the old."""
    for src, dst in ((new.key, pem.key), (new.cert, pem.cert)):
        tmp = dst.with_name("." + dst.name + ".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)


def test_a_renewed_certificate_is_used_for_new_handshakes_after_reload(
    tmp_path: Path, pki: Authority
) -> None:
    server = pki.issue("ansim", "ansim.test")
    with tls_engine(tmp_path, pki, server) as engine:
        ctx = client_context(pki)
        old = Client(connect(engine, ctx))
        assert serial(old.sock) == server.serial
        # renewed on disk: the watcher loads it once the files have settled
        renewed = pki.issue("ansim-2026", "ansim.test")
        replace(server, renewed)
        deadline = time.monotonic() + 10
        while "TLS certificate reloaded" not in engine.log_text():
            assert time.monotonic() < deadline, engine.log_text()
            time.sleep(0.1)
        fresh = Client(connect(engine, ctx))
        assert serial(fresh.sock) == renewed.serial
        # the connection made before keeps working on its certificate
        old.send_options(engine)
        assert old.response().status == 200
        # a broken file is refused and the renewed certificate stays
        server.cert.write_bytes(b"-----BEGIN CERTIFICATE-----\nMIIB")
        os.kill(engine.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "TLS certificate not reloaded" not in engine.log_text():
            assert time.monotonic() < deadline, engine.log_text()
            time.sleep(0.1)
        third = Client(connect(engine, ctx))
        assert serial(third.sock) == renewed.serial
        third.send_options(engine)
        assert third.response().status == 200
        # SIGHUP reloads at once once the files are whole again
        again = pki.issue("ansim-2027", "ansim.test")
        replace(server, again)
        os.kill(engine.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while True:
            fourth = connect(engine, ctx)
            if serial(fourth) == again.serial:
                break
            fourth.close()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        metrics = engine.metrics()
        for c in (old, fresh, third):
            c.sock.close()
    assert metrics["ansim_tls_reloads_total"] >= 2
    assert metrics["ansim_tls_reload_failures_total"] >= 1


def test_a_sips_request_uri_is_routed(tmp_path: Path, pki: Authority) -> None:
    """An INVITE to ``sips:X@...`` over TLS: X is read from the sips: URI, looked up and
    the call placed toward the callee's trunk; answers come back on the connection."""
    from call_env import CALLER, VIRTUAL_AX, UdpSink, user_part

    server = pki.issue("ansim", "ansim.test")
    engine = tls_engine(tmp_path, pki, server)
    callee_port = free_port()
    engine.trunks[1] = trunk("callee", callee_port)
    with engine, UdpSink(callee_port) as callee:
        client = Client(connect(engine, client_context(pki)))
        assert engine.tls_port is not None
        x = user_part(VIRTUAL_AX)
        invite = (
            f"INVITE sips:{x}@127.0.0.1:{engine.tls_port} SIP/2.0\r\n"
            f"Via: SIP/2.0/TLS 127.0.0.1:{client.port};branch=z9hG4bK{uuid.uuid4().hex[:10]}\r\n"
            f"From: <sips:{CALLER.e164}@127.0.0.1>;tag=s1\r\nTo: <sips:{x}@127.0.0.1>\r\n"
            f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            f"Contact: <sips:c@127.0.0.1:{client.port}>\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        client.sock.sendall(invite)
        assert client.response().status == 100
        deadline = time.monotonic() + 5
        while not callee.datagrams():
            assert time.monotonic() < deadline, engine.log_text()
            time.sleep(0.05)
        b_invite = callee.datagrams()[0]
        assert b_invite.startswith(b"INVITE sip:+821058293714@127.0.0.1:")
        # nobody answers on the callee's trunk: 503 once its invite_timeout has passed
        assert client.response().status == 503
        client.sock.close()
        row = engine.cdr()
    assert (row["src_transport"], row["reason"]) == ("tls", "trunks_failed")
