"""Calls over TLS with real user agents: baresip (Debian ``baresip-core``, built with
OpenSSL) calls through ansim over ``sip:...;transport=tls`` (its TLS connections come
from 127.0.0.1),
and ansim calls a second baresip on 127.0.0.3 over a TLS trunk; each side plays its own
tone and the other's must be the peak of what it received. With SRTP (SDES
``a=crypto``, ``RTP/SAVP``) the offer and answer cross with their keys intact, as media
is not anchored. Mutual TLS refuses a caller whose certificate is not of the trunk's CA;
a renewed certificate is taken while a call goes on, and the call is not dropped.
Certificates are made by the test (``tls_certs``); every process is started and stopped
by the test with bounded waits.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from baresip_helpers import BARESIP, MODULES, Baresip, peak_hz
from call_env import VIRTUAL_AX, Ansim, SipMsg, user_part
from conftest import free_port, free_ports
from cryptography import x509
from test_calls_baresip import CALLEE_TONE, CALLEE_UA, CALLER_TONE, CALLER_UA
from tls_certs import Authority, Pem

pytestmark = pytest.mark.skipif(
    BARESIP is None or not MODULES.is_dir(), reason="baresip (Debian baresip-core) not installed"
)


def tls_port_pair() -> int:
    """A port p free with p+1 free too: baresip listens for TLS on its SIP port + 1."""
    for _ in range(50):
        p = free_ports(2)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.3", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


class Setup:
    """PKI, engine and the two user agents of one test."""

    def __init__(self, tmp_path: Path, *, verify_caller: bool = False) -> None:
        self.pki = Authority(tmp_path / "pki")
        self.server = self.pki.issue("ansim", "ansim.test")
        self.caller_pem = self.pki.issue("caller", "caller.test", ips=("127.0.0.2",))
        self.callee_pem = self.pki.issue("callee", "callee.test", ips=("127.0.0.3",))
        self.uas_port = tls_port_pair()
        self.tls_port = free_port()
        # baresip opens its TLS connections from 127.0.0.1 whatever it listens on
        caller_trunk: dict[str, Any] = {"name": "caller", "accept_from": ["127.0.0.1/32"]}
        if verify_caller:
            caller_trunk["tls"] = {"verify_client": True, "ca": str(self.pki.path)}
        callee_trunk = {
            "name": "callee",
            "accept_from": ["127.0.0.3/32"],
            "address": f"127.0.0.3:{self.uas_port + 1}",
            "transport": "tls",
            "tls": {"ca": str(self.pki.path), "server_name": "callee.test"},
            "invite_timeout": 4.0,
        }
        self.engine = Ansim(
            tmp_path / "ansim",
            trunks=[caller_trunk, callee_trunk],
            routes=[{"prefix": "+82", "trunks": ["callee"]}],
            numbers={"version": 1, "ax": [{"id": "tls-ax", "x": VIRTUAL_AX, "a": CALLEE_UA.e164}]},
            metrics=True,
            tls_port=self.tls_port,
            config={
                "sip": {
                    "tls": {
                        "certificate": str(self.server.cert),
                        "key": str(self.server.key),
                        "ca": str(self.pki.path),
                    }
                },
                "logging": {"level": "info"},
                "flood": {"allow": []},
            },
        )
        self.caller = Baresip("caller", tmp_path / "caller")
        self.callee = Baresip("callee", tmp_path / "callee")

    def agents(self, *, srtp: bool = False, caller_pem: Pem | None = None) -> None:
        self.callee.write_config(
            CALLEE_UA, "127.0.0.3", self.uas_port, CALLEE_TONE, (21000, 21099), True
        )
        self.caller.write_config(
            CALLER_UA, "127.0.0.2", free_port(), CALLER_TONE, (20000, 20099), False
        )
        for agent, pem in (
            (self.caller, caller_pem or self.caller_pem),
            (self.callee, self.callee_pem),
        ):
            config = agent.home / "config"
            text = config.read_text()
            if srtp:  # loaded before the account module reads the account's mediaenc
                text = text.replace("module account.so", "module srtp.so\nmodule account.so")
            text += f"sip_certificate {pem.bundle}\nsip_cafile {self.pki.path}\n"
            config.write_text(text)
            if srtp:
                accounts = agent.home / "accounts"
                accounts.write_text(accounts.read_text().rstrip("\n") + ";mediaenc=srtp-mand\n")

    def start_callee(self, seconds: int) -> None:
        self.callee.start(seconds)
        deadline = time.monotonic() + 5
        while b"baresip is ready" not in (
            self.callee.log.read_bytes() if self.callee.log.exists() else b""
        ):
            assert time.monotonic() < deadline, self.callee.tail()
            time.sleep(0.05)

    def dial(self, seconds: int) -> None:
        """Call X over TLS (this baresip dials sip: URIs only, so ``transport=tls``;
        ``sips:`` Request-URIs are tested with a Python client in test_tls_connections)."""
        target = f"sip:{user_part(VIRTUAL_AX)}@127.0.0.1:{self.tls_port};transport=tls"
        self.caller.start(seconds, f"/dial {target}")

    def stop(self) -> None:
        self.caller.stop()
        self.callee.stop()

    def to_caller(self) -> list[SipMsg]:
        ansim = f"127.0.0.1:{self.tls_port}"
        return [m for src, _, m in self.caller.trace() if src == ansim]

    def from_caller(self) -> list[SipMsg]:
        ansim = f"127.0.0.1:{self.tls_port}"
        return [m for _, dst, m in self.caller.trace() if dst == ansim]


@pytest.fixture
def setup(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Setup]:
    s = Setup(tmp_path, verify_caller=getattr(request, "param", False))
    with s.engine:
        try:
            yield s
        finally:
            s.stop()


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def crypto_lines(body: str) -> list[str]:
    return sorted(line.strip() for line in body.splitlines() if line.startswith("a=crypto:"))


def check_call(s: Setup) -> None:
    """The call was answered and ended by the caller, over TLS on both legs, with audio
    both ways; the callee trunk was reached over one connection of ansim's."""
    to_caller, to_callee = s.to_caller(), s.callee.received("127.0.0.3")
    assert [m.status for m in to_caller if m.cseq_method == "INVITE"][-1:] == [200], s.caller.tail()
    assert [m.method for m in to_callee if m.method] == ["INVITE", "ACK", "BYE"], s.callee.tail()
    assert all(m.header("Via").startswith("SIP/2.0/TLS") for m in to_callee if m.method)
    sources = {src for src, dst, _ in s.callee.trace() if dst.startswith("127.0.0.3:")}
    assert len(sources) == 1, sources
    row = s.engine.cdr()
    assert (row["status"], row["src_transport"], row["ended_by"]) == (200, "tls", "caller")
    assert abs(peak_hz(s.caller.recording()) - CALLEE_TONE) <= 10
    assert abs(peak_hz(s.callee.recording()) - CALLER_TONE) <= 10


@pytest.mark.parametrize("srtp", [False, True], ids=["rtp", "srtp"])
def test_baresip_calls_over_tls_with_audio_both_ways(setup: Setup, srtp: bool) -> None:
    s = setup
    s.agents(srtp=srtp)
    s.start_callee(14)
    s.dial(6)
    assert s.caller.wait(15) is not None, s.caller.tail()
    wait_for(
        lambda: any(m.method == "BYE" for m in s.callee.received("127.0.0.3")), 5, s.callee.tail()
    )
    s.callee.stop()
    check_call(s)
    metrics = s.engine.metrics()
    assert metrics['ansim_tls_handshakes_total{side="server"}'] >= 1
    assert metrics['ansim_tls_handshakes_total{side="client"}'] == 1
    offer_sent = next(m for m in s.from_caller() if m.method == "INVITE" and m.body)
    offer_got = next(m for m in s.callee.received("127.0.0.3") if m.method == "INVITE")
    answer_sent = next(
        m for m in s.callee.sent("127.0.0.3") if m.status == 200 and m.cseq_method == "INVITE"
    )
    answer_got = next(m for m in s.to_caller() if m.status == 200 and m.cseq_method == "INVITE")
    if srtp:
        # SDES keys cross as offered and answered, on an RTP/SAVP stream
        for sent, got in ((offer_sent, offer_got), (answer_sent, answer_got)):
            assert "RTP/SAVP" in got.body and crypto_lines(got.body)
            assert crypto_lines(got.body) == crypto_lines(sent.body)
    else:
        assert "RTP/AVP" in offer_got.body and not crypto_lines(offer_got.body)


@pytest.mark.parametrize("setup", [True], indirect=True)
def test_mutual_tls_refuses_a_caller_with_a_wrong_certificate(setup: Setup, tmp_path: Path) -> None:
    s = setup
    wrong = s.pki.issue("wrong", "caller.test", ips=("127.0.0.2",), self_signed=True)
    s.agents(caller_pem=wrong)
    s.start_callee(10)
    s.dial(3)
    s.caller.wait(10)
    assert not [m for m in s.callee.received("127.0.0.3") if m.method == "INVITE"]
    assert not [m for m in s.to_caller() if m.status is not None]
    metrics = s.engine.metrics()
    failures = sum(
        v for k, v in metrics.items() if k.startswith("ansim_tls_handshake_failures_total")
    )
    assert failures >= 1
    assert metrics['ansim_tls_handshakes_total{side="server"}'] == 0
    assert s.engine.cdr_rows(expect=0, timeout=0.5) == []


def test_a_renewed_certificate_is_taken_during_a_call_without_dropping_it(setup: Setup) -> None:
    s = setup
    s.agents()
    s.start_callee(16)
    s.dial(8)
    wait_for(
        lambda: any(m.method == "ACK" for m in s.callee.received("127.0.0.3")), 8, s.caller.tail()
    )
    renewed = s.pki.issue("ansim-renewed", "ansim.test")
    for src, dst in ((renewed.key, s.server.key), (renewed.cert, s.server.cert)):
        tmp = dst.with_name("." + dst.name + ".new")
        tmp.write_bytes(src.read_bytes())
        os.replace(tmp, dst)
    os.kill(s.engine.pid, signal.SIGHUP)
    wait_for(lambda: "TLS certificate reloaded" in s.engine.log_text(), 5, s.engine.log_text())
    ctx = ssl.create_default_context(cafile=str(s.pki.path))
    with (
        socket.create_connection(("127.0.0.1", s.tls_port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="ansim.test") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        assert x509.load_der_x509_certificate(der).serial_number == renewed.serial
    assert s.caller.wait(15) is not None, s.caller.tail()
    wait_for(
        lambda: any(m.method == "BYE" for m in s.callee.received("127.0.0.3")), 5, s.callee.tail()
    )
    s.callee.stop()
    check_call(s)
    # the BYE crossed the connections made before the reload, both answered 200
    assert [m.status for m in s.to_caller() if m.cseq_method == "BYE"] == [200]
