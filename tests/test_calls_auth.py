"""Digest authentication through ``ansim serve``, against real peers.

Inbound: trunks with ``auth`` have their INVITEs challenged before any lookup; a SIPp
caller answering with MD5 (SIPp's ``[authentication]``) and a test caller answering
with SHA-256 or SHA-512-256 (its digest code of its own, checked here against RFC 7616's
worked example) get through; a wrong password, a replayed nonce count and a stale
nonce are refused (the stale one challenged again with ``stale=true``, and the retry
succeeds); CANCEL and in-dialog requests of an authenticated call are not challenged.

Outbound: a SIPp callee trunk that challenges ansim's INVITE and BYE with 401 (MD5,
checked by SIPp's ``verifyauth``) and a test trunk that challenges INVITE, re-INVITE and
BYE with 407 and SHA-256 get the right answers (the same Call-ID and From tag, the next
CSeq); a trunk that refuses ansim's credentials fails over to the next trunk, or the
caller gets 503.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import digest_peer
import pytest
from call_env import (
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    Sipp,
    UdpSink,
    run_call,
    trunk,
    user_part,
)
from conftest import free_port
from digest_peer import AuthCaller, ChallengingCallee

SERVICE = user_part(VIRTUAL_AX)


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


def test_the_test_clients_digest_matches_rfc7616() -> None:
    """RFC 7616 §3.9.1: the test peers' own digest code, with SHA-256 and MD5."""
    args = ("Mufasa", "http-auth@example.org", "Circle of Life", "GET", "/dir/index.html",
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "00000001",
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ")  # fmt: skip
    assert digest_peer.response("SHA-256", *args) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )
    assert digest_peer.response("MD5", *args) == "8ca523f5e9506fed4657c9700eebdbec"


# -- inbound ------------------------------------------------------------------------------------

MD5_AUTH = {"username": "carrier-md5", "password": "md5-secret", "algorithms": ["MD5"]}
SHA_AUTH = {
    "username": "carrier-sha",
    "password": "sha-secret",
    "algorithms": ["SHA-512-256", "SHA-256", "MD5"],
}


def inbound_engine(
    tmp_path: Path, callee_port: int, *, md5_status: int = 407, **settings: Any
) -> Ansim:
    """ansim with three trunks: ``md5`` accepting 127.0.0.2 with MD5 credentials, ``sha``
    known by its credentials alone (any address no trunk accepts), and the callee trunk,
    which accepts nothing."""
    return Ansim(
        tmp_path / "ansim",
        trunks=[
            {
                "name": "md5",
                "accept_from": ["127.0.0.2/32"],
                "auth": {**MD5_AUTH, "status": md5_status},
            },
            {"name": "sha", "auth": {**SHA_AUTH, "realm": "ansim.test"}},
            {**trunk("callee", callee_port, invite_timeout=4.0), "accept_from": []},
        ],
        routes=[{"prefix": "+", "trunks": ["callee"]}],
        metrics=True,
        trunk_settings=settings,
    )


def test_sipp_caller_answers_md5_challenge(tmp_path: Path, sipp: Sipp) -> None:
    uas_port = free_port()
    with inbound_engine(tmp_path, uas_port) as ansim:
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"))
        uac = sipp.start(
            "auth_uac",
            port=free_port(),
            remote=ansim.addr,
            service=SERVICE,
            keys=CALLER.sipp_keys("caller"),
            ip="127.0.0.2",
            extra=["-d", "100"],
        )
        assert uac.wait(20) == 0, uac.report() + ansim.log_text()
        assert uas.wait(20) == 0, uas.report()
        statuses = uac.received_statuses("INVITE")
        assert statuses[0] == 407 and statuses[-1] == 200, statuses
        challenge = next(m for m in uac.received() if m.status == 407)
        assert challenge.headers("Proxy-Authenticate") == [
            challenge.header("Proxy-Authenticate")
        ]  # one algorithm offered: one challenge
        p = digest_peer.params(challenge.header("Proxy-Authenticate"))
        assert (p["realm"], p["algorithm"], p["qop"]) == ("ansim", "MD5", "auth")
        # the authenticated INVITE went on; the challenged one left no record
        rows = ansim.cdr_rows(1)
        assert len(rows) == 1, rows
        assert (rows[0]["status"], rows[0]["in_trunk"], rows[0]["src_ip"]) == (
            200,
            "md5",
            "127.0.0.2",
        )
        m = ansim.metrics()
        assert m['ansim_auth_inbound_total{result="challenged"}'] == 1
        assert m['ansim_auth_inbound_total{result="ok"}'] == 1


def test_sipp_caller_known_by_credentials_alone_with_401(tmp_path: Path, sipp: Sipp) -> None:
    """A trunk with no address list, challenging with 401 and MD5: the caller's address
    matches no trunk, its credentials name the trunk."""
    uas_port = free_port()
    ansim = Ansim(
        tmp_path / "ansim",
        trunks=[
            {"name": "open", "auth": {**MD5_AUTH, "status": 401}},
            {**trunk("callee", uas_port), "accept_from": []},
        ],
        routes=[{"prefix": "+", "trunks": ["callee"]}],
    )
    with ansim:
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"))
        uac = sipp.start(
            "auth_uac", port=free_port(), remote=ansim.addr, service=SERVICE,
            keys=CALLER.sipp_keys("caller"), ip="127.0.0.3", extra=["-d", "100"],
        )  # fmt: skip
        assert uac.wait(20) == 0, uac.report() + ansim.log_text()
        assert uas.wait(20) == 0, uas.report()
        assert uac.received_statuses("INVITE")[0] == 401
        row = ansim.cdr()
        assert (row["status"], row["in_trunk"], row["src_ip"]) == (200, "open", "127.0.0.3")


@pytest.mark.parametrize("algorithm", ["SHA-256", "SHA-512-256", "MD5"])
def test_caller_answering_with_each_algorithm_gets_through(
    tmp_path: Path, sipp: Sipp, algorithm: str
) -> None:
    uas_port = free_port()
    with inbound_engine(tmp_path, uas_port) as ansim:
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"))
        with AuthCaller(ansim.udp, "127.0.0.3") as caller:
            call_id, tag, offered, first = caller.challenged_invite(SERVICE)
            assert first.status == 407
            # one challenge per algorithm, strongest first, one nonce, qop=auth, the realm
            assert [c["algorithm"] for c in offered] == ["SHA-512-256", "SHA-256", "MD5"]
            assert len({c["nonce"] for c in offered}) == 1
            assert all(c["realm"] == "ansim.test" and c["qop"] == "auth" for c in offered)
            challenge = next(c for c in offered if c["algorithm"] == algorithm)
            creds = digest_peer.credentials(
                challenge, "carrier-sha", "sha-secret", "INVITE", caller.uri(SERVICE)
            )
            ok = caller.answer(SERVICE, call_id, tag, 2, creds)
            assert ok.status == 200, ansim.log_text()
            # the BYE of the authenticated caller is not challenged
            assert caller.hang_up(SERVICE, call_id, tag, 2, ok) == 200
        assert uas.wait(20) == 0, uas.report()
        row = ansim.cdr()
        assert (row["status"], row["in_trunk"], row["a_call_id"]) == (200, "sha", call_id)


def test_wrong_password_unknown_user_and_another_trunks_credentials_are_refused(
    tmp_path: Path,
) -> None:
    with (
        UdpSink(free_port()) as sink,
        inbound_engine(tmp_path, sink.sock.getsockname()[1]) as ansim,
    ):
        with AuthCaller(ansim.udp, "127.0.0.3") as caller:
            for user, password in (
                ("carrier-sha", "guess"),  # wrong password
                ("nobody", "sha-secret"),  # no such user
                ("carrier-md5", "md5-secret"),  # the md5 trunk's, from an address not its own
            ):
                call_id, tag, offered, _ = caller.challenged_invite(SERVICE)
                creds = digest_peer.credentials(
                    offered[1], user, password, "INVITE", caller.uri(SERVICE)
                )
                assert caller.answer(SERVICE, call_id, tag, 2, creds).status == 403
        rows = ansim.cdr_rows(3)
        assert [(r["status"], r["reason"]) for r in rows] == [(403, "auth_failed")] * 3
        assert rows[0]["in_trunk"] == "sha" and rows[1]["in_trunk"] is None
        assert sink.datagrams() == []  # nothing reached the callee trunk
        assert ansim.metrics()['ansim_auth_inbound_total{result="auth_failed"}'] == 3


def test_replayed_nonce_count_is_refused_and_a_higher_count_accepted(
    tmp_path: Path, sipp: Sipp
) -> None:
    uas_port = free_port()
    with inbound_engine(tmp_path, uas_port) as ansim:
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"), calls=2)
        with AuthCaller(ansim.udp, "127.0.0.3") as caller:
            call_id, tag, offered, _ = caller.challenged_invite(SERVICE)
            challenge = offered[1]  # SHA-256
            uri = caller.uri(SERVICE)
            creds = digest_peer.credentials(challenge, "carrier-sha", "sha-secret", "INVITE", uri)
            ok = caller.answer(SERVICE, call_id, tag, 2, creds)
            assert ok.status == 200
            assert caller.hang_up(SERVICE, call_id, tag, 2, ok) == 200
            # the same Proxy-Authorization (same nonce, nc=1) on a new call: a replay
            call2, tag2 = caller.new_call()
            assert caller.answer(SERVICE, call2, tag2, 1, creds).status == 403
            # the nonce with a count above the last one used is a new request
            creds3 = digest_peer.credentials(
                challenge, "carrier-sha", "sha-secret", "INVITE", uri, nc=2
            )
            call3, tag3 = caller.new_call()
            ok3 = caller.answer(SERVICE, call3, tag3, 1, creds3)
            assert ok3.status == 200
            assert caller.hang_up(SERVICE, call3, tag3, 1, ok3) == 200
        assert uas.wait(20) == 0, uas.report()
        rows = ansim.cdr_rows(3)
        assert [(r["a_call_id"], r["status"], r["reason"]) for r in rows] == [
            (call_id, 200, rows[0]["reason"]),
            (call2, 403, "auth_replay"),
            (call3, 200, rows[2]["reason"]),
        ]


def test_stale_nonce_is_challenged_again_and_the_retry_succeeds(tmp_path: Path, sipp: Sipp) -> None:
    uas_port = free_port()
    with inbound_engine(tmp_path, uas_port, nonce_lifetime=1) as ansim:
        uas = sipp.start("call_uas_answer", port=uas_port, keys=CALLEE.sipp_keys("callee"))
        with AuthCaller(ansim.udp, "127.0.0.3") as caller:
            call_id, tag, offered, _ = caller.challenged_invite(SERVICE)
            time.sleep(1.3)  # the nonce is past its lifetime
            uri = caller.uri(SERVICE)
            creds = digest_peer.credentials(offered[1], "carrier-sha", "sha-secret", "INVITE", uri)
            stale = caller.answer(SERVICE, call_id, tag, 2, creds)
            assert stale.status == 407
            again = digest_peer.challenges(stale, "Proxy-Authenticate")
            assert all(c.get("stale", "").lower() == "true" for c in again), again
            assert again[1]["nonce"] != offered[1]["nonce"]
            creds = digest_peer.credentials(again[1], "carrier-sha", "sha-secret", "INVITE", uri)
            ok = caller.answer(SERVICE, call_id, tag, 3, creds)
            assert ok.status == 200
            assert caller.hang_up(SERVICE, call_id, tag, 3, ok) == 200
        assert uas.wait(20) == 0, uas.report()
        assert ansim.cdr()["status"] == 200
        assert ansim.metrics()['ansim_auth_inbound_total{result="stale"}'] == 1


def test_cancel_of_an_authenticated_invite_is_not_challenged(tmp_path: Path) -> None:
    with (
        UdpSink(free_port()) as sink,
        inbound_engine(tmp_path, sink.sock.getsockname()[1]) as ansim,
    ):
        with AuthCaller(ansim.udp, "127.0.0.3") as caller:
            call_id, tag, offered, _ = caller.challenged_invite(SERVICE)
            creds = digest_peer.credentials(
                offered[1], "carrier-sha", "sha-secret", "INVITE", caller.uri(SERVICE)
            )
            invite = caller.request(
                "INVITE", SERVICE, call_id, tag, 2, extra=(f"Proxy-Authorization: {creds}",)
            )
            deadline = time.monotonic() + 5
            while not any(b"INVITE sip:" in d for d in sink.datagrams()):
                assert time.monotonic() < deadline, "the INVITE did not reach the callee trunk"
                time.sleep(0.02)
            branch = invite.split(b"branch=", 1)[1].split(b";", 1)[0].decode()
            caller.request("CANCEL", SERVICE, call_id, tag, 2, branch=branch)
            assert caller.final(call_id, 2, "CANCEL", b"").status == 200
            final = caller.final(call_id, 2, "INVITE", b"")
            assert final.status == 487
            caller.ack_failure(SERVICE, call_id, tag, 2, invite, final)
        row = ansim.cdr()
        assert (row["status"], row["reason"], row["ended_by"]) == (487, "cancelled", "caller")


# -- outbound -----------------------------------------------------------------------------------


def outbound_engine(tmp_path: Path, trunks: list[dict[str, Any]], route: list[str]) -> Ansim:
    """ansim taking calls from 127.0.0.1 without credentials, routing them to ``route``."""
    return Ansim(
        tmp_path / "ansim",
        trunks=[{"name": "carrier", "accept_from": ["127.0.0.1/32"]}, *trunks],
        routes=[{"prefix": "+", "trunks": route}],
        metrics=True,
    )


def test_sipp_callee_challenging_invite_and_bye_with_md5(tmp_path: Path, sipp: Sipp) -> None:
    uas_port = free_port()
    creds = {"username": "ansim-md5", "password": "md5-secret"}
    callee = {**trunk("callee", uas_port), "accept_from": [], "credentials": creds}
    with outbound_engine(tmp_path, [callee], ["callee"]) as ansim:
        run = run_call(sipp, ansim, "call_uac_basic", "auth_uas", uas_port=uas_port)
        assert run.uac.received_statuses("INVITE")[-1] == 200
        got = [m for m in run.uas.received() if m.method in ("INVITE", "BYE")]
        invites = [m for m in got if m.method == "INVITE"]
        byes = [m for m in got if m.method == "BYE"]
        assert len(invites) == 2 and len(byes) == 2, [m.first_line for m in got]
        first, second = invites
        assert first.header("Authorization") == "" and second.header("Authorization")
        assert second.header("Call-ID") == first.header("Call-ID")
        assert second.header("From") == first.header("From")  # same From tag
        assert int(second.header("CSeq").split()[0]) == int(first.header("CSeq").split()[0]) + 1
        assert second.header("Via") != first.header("Via")  # a new branch
        assert int(byes[1].header("CSeq").split()[0]) == int(byes[0].header("CSeq").split()[0]) + 1
        assert byes[1].header("Authorization")
        row = ansim.cdr()
        assert (row["status"], row["trunk"]) == (200, "callee")
        m = ansim.metrics()
        assert m['ansim_auth_outbound_total{method="INVITE",result="answered"}'] == 1
        assert m['ansim_auth_outbound_total{method="BYE",result="answered"}'] == 1


@pytest.mark.parametrize("status", [407, 401])
def test_sha256_trunk_challenging_invite_reinvite_and_bye(
    tmp_path: Path, sipp: Sipp, status: int
) -> None:
    with ChallengingCallee(status=status) as callee_trunk:
        creds = {"username": "ansim-sha", "password": "sha-secret", "realm": "callee.test"}
        callee = {**trunk("callee", callee_trunk.port), "accept_from": [], "credentials": creds}
        with outbound_engine(tmp_path, [callee], ["callee"]) as ansim:
            callee_trunk.start()
            run = run_call(sipp, ansim, "call_uac_hold")
            callee_trunk.join()
        seen = [(c.method, c.authorization is not None, c.problem) for c in callee_trunk.checked]
        # every request challenged once, then answered right: INVITE, the two re-INVITEs
        # (hold, resume), the BYE
        assert seen == [("INVITE", False, None), ("INVITE", True, None)] * 3 + [
            ("BYE", False, None),
            ("BYE", True, None),
        ], seen
        c = callee_trunk.checked
        assert c[1].call_id == c[0].call_id and c[1].from_tag == c[0].from_tag
        assert [x.cseq for x in c] == list(range(c[0].cseq, c[0].cseq + 8))
        finals = [s for s in run.uac.received_statuses("INVITE") if s >= 200]
        assert finals == [200, 200, 200], finals  # the call, the hold, the resume


def test_sipp_callee_refuses_wrong_md5_credentials(tmp_path: Path, sipp: Sipp) -> None:
    """The check above can fail: with a wrong password configured, SIPp's verifyauth
    refuses ansim's answer (403, passed to the caller) and its scenario fails."""
    uas_port = free_port()
    creds = {"username": "ansim-md5", "password": "not-the-secret"}
    callee = {**trunk("callee", uas_port), "accept_from": [], "credentials": creds}
    with outbound_engine(tmp_path, [callee], ["callee"]) as ansim:
        uas = sipp.start("auth_uas", port=uas_port, timeout=4)
        uac = sipp.start(
            "call_uac_reject_403", port=free_port(), remote=ansim.addr, service=SERVICE,
            keys=CALLER.sipp_keys("caller"),
        )  # fmt: skip
        assert uac.wait(15) == 0, uac.report()
        assert uas.wait(15) != 0
        assert ansim.cdr()["status"] == 403


def test_refused_credentials_fail_over_to_the_next_trunk(tmp_path: Path, sipp: Sipp) -> None:
    uas_port = free_port()
    with ChallengingCallee(status=401, refuse=True, max_invites=2) as refusing:
        creds = {"username": "ansim-sha", "password": "sha-secret"}
        first = {**trunk("strict", refusing.port), "accept_from": [], "credentials": creds}
        second = {**trunk("open", uas_port), "accept_from": []}
        with outbound_engine(tmp_path, [first, second], ["strict", "open"]) as ansim:
            refusing.start()
            run_call(sipp, ansim, "call_uac_basic", "call_uas_answer", uas_port=uas_port)
            refusing.join()
            row = ansim.cdr()
        assert [(c.method, c.authorization is not None) for c in refusing.checked] == [
            ("INVITE", False),
            ("INVITE", True),
        ]
        assert (row["status"], row["trunk"]) == (200, "open")


def test_challenge_without_answer_ends_in_503(tmp_path: Path, sipp: Sipp) -> None:
    """One trunk that refuses ansim's credentials, and none after it: the caller gets 503;
    a trunk that challenges and has no credentials configured is the same."""
    with ChallengingCallee(status=407, refuse=True, max_invites=2) as refusing:
        creds = {"username": "ansim-sha", "password": "sha-secret"}
        strict = {**trunk("strict", refusing.port), "accept_from": [], "credentials": creds}
        with outbound_engine(tmp_path, [strict], ["strict"]) as ansim:
            refusing.start()
            run = run_call(sipp, ansim, "call_uac_reject_503")
            refusing.join()
            row = ansim.cdr()
            m = ansim.metrics()
        assert run.uac.received_statuses("INVITE")[-1] == 503
        assert (row["status"], row["reason"], row["trunk"]) == (503, "trunks_failed", "strict")
        assert m['ansim_auth_outbound_total{method="INVITE",result="answered"}'] == 1
        assert m['ansim_auth_outbound_total{method="INVITE",result="failed"}'] == 1
    # no credentials for a trunk that challenges: nothing to answer with
    with ChallengingCallee(status=407, max_invites=1) as challenging:
        bare = {**trunk("bare", challenging.port), "accept_from": []}
        with outbound_engine(tmp_path / "bare", [bare], ["bare"]) as ansim:
            challenging.start()
            run = run_call(sipp, ansim, "call_uac_reject_503")
            challenging.join()
            assert (
                ansim.metrics()['ansim_auth_outbound_total{method="INVITE",result="failed"}'] == 1
            )
        assert [c.authorization for c in challenging.checked] == [None]
        assert run.uac.received_statuses("INVITE")[-1] == 503


def _loopback_ok() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.3", 0))
        return True
    except OSError:
        return False


assert _loopback_ok(), "the tests need 127.0.0.2 and 127.0.0.3 (the whole 127.0.0.0/8 is loopback)"


# -- registration -------------------------------------------------------------------------------


def test_register_at_a_sipp_registrar_refresh_and_remove(tmp_path: Path, sipp: Sipp) -> None:
    """REGISTER challenged then granted for 4 s; the refresh comes before the binding
    expires (the registrar's scenario fails otherwise); stopping ansim removes it. The
    state is in the metrics and each change in the log, once."""
    reg_port = free_port()
    registrar = {
        "name": "carrier",
        "address": f"127.0.0.1:{reg_port}",
        "credentials": {"username": "ansim-reg", "password": "reg-secret"},
        "registration": {"expires": 600, "aor": "sip:+825070001000@registrar.test"},
    }
    ansim = Ansim(tmp_path / "ansim", trunks=[registrar], routes=[], metrics=True,
                  log_level="info")  # fmt: skip
    run = sipp.start("auth_registrar", port=reg_port, timeout=20)
    with ansim:
        deadline = time.monotonic() + 15
        key = 'ansim_auth_outbound_total{method="REGISTER",result="answered"}'
        while ansim.metrics().get(key, 0) < 2:  # the first registration and the refresh
            assert time.monotonic() < deadline, run.report() + ansim.log_text()
            assert run.proc.poll() is None, run.report() + ansim.log_text()
            time.sleep(0.1)
        time.sleep(0.2)  # the refresh's 200
        m = ansim.metrics()
        assert m['ansim_registration_state{state="registered",trunk="carrier"}'] == 1
        assert 0 < m['ansim_registration_expires_seconds{trunk="carrier"}'] <= 4
    assert run.wait(10) == 0, run.report()
    registers = [m for m in run.received() if m.method == "REGISTER"]
    assert len(registers) == 5, [m.first_line for m in registers]
    assert len({m.header("Call-ID") for m in registers}) == 1
    cseqs = [int(m.header("CSeq").split()[0]) for m in registers]
    assert cseqs == sorted(cseqs) and len(set(cseqs)) == 5
    assert [m.header("Expires") for m in registers] == ["600"] * 4 + ["0"]
    assert [bool(m.header("Authorization")) for m in registers] == [False, True] * 2 + [False]
    first = registers[0]
    assert first.first_line == f"REGISTER sip:127.0.0.1:{reg_port} SIP/2.0"
    assert first.header("To") == "<sip:+825070001000@registrar.test>"
    assert first.header("Contact") == f"<sip:+825070001000@127.0.0.1:{ansim.port}>"
    log = ansim.log_path.read_text()
    assert log.count("registration registered") == 1, log
    assert log.count("registration unregistered") == 1, log
