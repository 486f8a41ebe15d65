"""SRTP (SDES ``a=crypto``) through ansim's relay with real user agents: baresip A
(127.0.0.2, a 440 Hz tone) calls X, baresip B (127.0.0.3, 1000 Hz) answers, both with
baresip's ``srtp`` module.

Everything each party received is captured on ``lo``. With both on ``RTP/SAVP``
(``mediaenc=srtp-mand``): each hears the other's tone, before and after a hold and
resume; the keys each was sent are ansim's, none of the other party's; every RTP packet
on each leg decrypts with that leg's keys only (A's packets with A's key, what ansim
sends B with the key ansim gave B's leg) and none is plain; the recording holds both
tones. With A on SRTP and B on plain RTP (termination): A's leg is SRTP, B receives
plain RTP it can play, and both hear each other.
"""

from __future__ import annotations

import base64
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from baresip_helpers import BARESIP, MODULES, Baresip, peak_hz
from call_env import (
    CALLEE,
    CALLER,
    VIRTUAL_AX,
    Ansim,
    Party,
    Sipp,
    UdpSink,
    number_map,
    trunk,
    user_part,
)
from capture import Datagram, LoopbackCapture
from conftest import free_port
from media_helpers import Party as MediaParty
from media_helpers import make_keys, relay_media, rtpengine_process
from pylibsrtp import Error, Policy, Session
from raw_sip import Body, RawCaller
from test_calls_media import decrypt, stereo

from media.g711 import decode
from media.srtp import SUITES

pytestmark = [
    pytest.mark.skipif(
        BARESIP is None or not (MODULES / "srtp.so").exists(),
        reason="baresip (Debian baresip-core) with its srtp module not installed",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="the loopback capture needs a raw socket (root)"),
]

A_UA = Party("+821055516677")
B_UA = Party("+821088829933")
A_IP, B_IP = "127.0.0.2", "127.0.0.3"
A_TONE, B_TONE = 440, 1000


@dataclass
class Crypto:
    tag: int
    suite: str
    key: bytes


def cryptos(body: str) -> list[Crypto]:
    out = []
    for line in body.splitlines():
        if line.startswith("a=crypto:"):
            tag, suite, inline = line[len("a=crypto:") :].split()[:3]
            key = inline.removeprefix("inline:").split("|")[0]
            out.append(Crypto(int(tag), suite, base64.b64decode(key + "=" * (-len(key) % 4))))
    return out


def proto(body: str) -> str:
    return next(line.split()[2] for line in body.splitlines() if line.startswith("m=audio "))


@dataclass
class CallResult:
    engine: Ansim
    caller: Baresip
    callee: Baresip
    packets: list[Datagram]

    def ports_of(self, party: Baresip) -> set[int]:
        ports = set()
        for m in party.sent(party.address):
            for line in m.body.splitlines():
                if line.startswith("m=audio "):
                    ports.add(int(line.split()[1]))
        return ports

    def rtp_to(self, party: Baresip) -> list[bytes]:
        """RTP the party received (its RTP port, at its address or 127.0.0.1)."""
        ports = self.ports_of(party)
        return [
            p.payload
            for p in self.packets
            if p.is_rtp and p.dst[0] in (party.address, "127.0.0.1") and p.dst[1] in ports
        ]

    def rtp_from(self, party: Baresip) -> list[bytes]:
        ports = self.ports_of(party)
        return [
            p.payload
            for p in self.packets
            if p.is_rtp and p.src[0] in (party.address, "127.0.0.1") and p.src[1] in ports
        ]


def agent_config(agent: Baresip, mediaenc: str | None) -> None:
    if mediaenc is None:
        return
    config = agent.home / "config"
    # loaded before the account module reads the account's mediaenc
    config.write_text(
        config.read_text().replace("module account.so", "module srtp.so\nmodule account.so")
    )
    accounts = agent.home / "accounts"
    accounts.write_text(accounts.read_text().rstrip("\n") + f";mediaenc={mediaenc}\n")


def run_call(
    tmp_path: Path,
    a_enc: str | None,
    b_enc: str | None,
    hold: bool = False,
    trunk_srtp: str | None = None,
    mode: str = "relay",
) -> Iterator[CallResult]:
    pub, _, _ = make_keys(tmp_path)
    uas_port = free_port()
    media, base = relay_media(
        tmp_path,
        mode=mode,
        latch="any",  # baresip's RTP leaves from 127.0.0.1 whatever its SDP says
        media_timeout=20,
        recording={"directory": str(tmp_path / "recordings"), "public_key": str(pub)},
    )
    numbers = {
        "version": 1,
        "ax": [{"id": "srtp-ax", "x": VIRTUAL_AX, "a": B_UA.e164, "record": True}],
    }
    daemon = None
    if mode == "rtpengine":
        daemon = rtpengine_process(tmp_path, base + 100)
        media["rtpengine"] = {"ng": f"127.0.0.1:{daemon.__enter__().ng_port}"}
    callee_trunk = trunk("callee", uas_port) | {"address": f"{B_IP}:{uas_port}"}
    if trunk_srtp is not None:
        callee_trunk["srtp"] = trunk_srtp
    caller = Baresip("caller", tmp_path / "caller")
    callee = Baresip("callee", tmp_path / "callee")
    try:
        with (
            Ansim(
                tmp_path / "ansim",
                trunks=[callee_trunk],
                routes=[{"prefix": "+82", "trunks": ["callee"]}],
                numbers=numbers,
                media=media,
                metrics=True,  # up once calls are taken, not only OPTIONS
            ) as engine,
            LoopbackCapture(A_IP, B_IP, "127.0.0.1") as capture,
        ):
            callee.write_config(
                B_UA, B_IP, uas_port, B_TONE, (base + 200, base + 299), True, free_port()
            )
            caller.write_config(
                A_UA, A_IP, free_port(), A_TONE, (base + 300, base + 399), False, free_port()
            )
            agent_config(callee, b_enc)
            agent_config(caller, a_enc)
            callee.start(30)
            callee.wait_log(b"baresip is ready", 5)
            caller.start(30, f"/dial sip:{user_part(VIRTUAL_AX)}@127.0.0.1:{engine.port}")
            caller.wait_log(b"Call established", 10)
            time.sleep(3.0)
            if hold:
                caller.command("hold")
                time.sleep(1.5)
                caller.command("resume")
                time.sleep(2.5)
            caller.command("hangup")
            deadline = time.monotonic() + 5
            while not any(m.method == "BYE" for m in callee.received(B_IP)):
                assert time.monotonic() < deadline, callee.tail()
                time.sleep(0.1)
            time.sleep(0.5)
            caller.stop()
            callee.stop()
            yield CallResult(engine, caller, callee, list(capture.packets))
    finally:
        caller.stop()
        callee.stop()
        if daemon is not None:
            daemon.__exit__(None, None, None)


def sdp_of(msgs: list[Any], *, request: bool) -> list[str]:
    return [
        m.body for m in msgs if m.body and "m=audio" in m.body and (m.method == "INVITE") == request
    ]


def rx_session(crypto: Crypto) -> Session:
    return Session(
        Policy(crypto.key, Policy.SSRC_ANY_INBOUND, srtp_profile=SUITES[crypto.suite].profile)
    )


def decrypted(packets: list[bytes], crypto: Crypto) -> list[bytes]:
    """The RTP packets of those of ``packets`` that authenticate with ``crypto``'s key."""
    session = rx_session(crypto)
    out = []
    for p in packets:
        try:
            out.append(session.unprotect(p))
        except Error:
            continue
    return out


def decrypts(packets: list[bytes], crypto: Crypto) -> int:
    return len(decrypted(packets, crypto))


def tone_of(packets: list[bytes]) -> float:
    samples: list[int] = []
    for p in packets:
        if p[1] & 0x7F == 0:
            pcm = bytes(decode("PCMU", p[12:]))
            samples += [
                int.from_bytes(pcm[i : i + 2], "little", signed=True) for i in range(0, len(pcm), 2)
            ]
    return peak_hz(samples, 4096)


def test_srtp_both_legs_re_keyed_per_leg_with_audio_and_recording(tmp_path: Path) -> None:
    for r in run_call(tmp_path, "srtp-mand", "srtp-mand", hold=True):
        a, b = r.caller, r.callee
        a_heard, b_heard = a.recording(), b.recording()
        assert abs(peak_hz(a_heard) - B_TONE) <= 10, a.tail()
        assert abs(peak_hz(b_heard) - A_TONE) <= 10, b.tail()
        # after the hold and resume (the end of each dump)
        assert abs(peak_hz(a_heard, 4096, len(a_heard) - 4096 - 2000) - B_TONE) <= 10
        assert abs(peak_hz(b_heard, 4096, len(b_heard) - 4096 - 2000) - A_TONE) <= 10

        # SDP: RTP/SAVP on both legs; the keys each party was sent are ansim's own.
        a_sent = [c for body in sdp_of(a.sent(A_IP), request=True) for c in cryptos(body)]
        a_got = [c for m in a.received(A_IP) if m.body for c in cryptos(m.body)]
        b_sent = [c for m in b.sent(B_IP) if m.body for c in cryptos(m.body)]
        b_got = [c for m in b.received(B_IP) if m.body for c in cryptos(m.body)]
        assert a_sent and a_got and b_sent and b_got
        for m in [*a.received(A_IP), *b.received(B_IP)]:
            if m.body and "m=audio" in m.body:
                assert proto(m.body) == "RTP/SAVP", m.body
        assert not {c.key for c in a_got} & {c.key for c in b_sent}
        assert not {c.key for c in b_got} & {c.key for c in a_sent}
        assert not {c.key for c in a_got} & {c.key for c in b_got}

        # The wire: each leg's packets decrypt with that leg's keys, and not with the
        # other leg's; none is plain G.711.
        answer_to_a = cryptos(sdp_of(a.received(A_IP), request=False)[0])[0]
        a_key = next(c for c in a_sent if c.tag == answer_to_a.tag)
        b_answer = cryptos(sdp_of(b.sent(B_IP), request=False)[0])[0]
        offer_to_b = cryptos(sdp_of(b.received(B_IP), request=True)[0])
        to_b_key = next(c for c in offer_to_b if c.tag == b_answer.tag)
        from_a, to_a = r.rtp_from(a), r.rtp_to(a)
        from_b, to_b = r.rtp_from(b), r.rtp_to(b)
        for packets, right, wrong, tone in (
            (from_a, a_key, to_b_key, A_TONE),
            (to_a, answer_to_a, b_answer, B_TONE),
            (from_b, b_answer, answer_to_a, B_TONE),
            (to_b, to_b_key, a_key, A_TONE),
        ):
            assert len(packets) > 150
            clear = decrypted(packets, right)
            assert len(clear) >= len(packets) - 2
            assert decrypts(packets, wrong) == 0
            # What the wire carried is not the audio; what it decrypts to is the tone.
            assert not {p[12:] for p in packets} & {p[12:] for p in clear}
            assert abs(tone_of(clear) - tone) <= 10

        # The relay decrypted what it recorded: both tones.
        files = sorted((tmp_path / "recordings").glob("*.rec"))
        assert len(files) == 1, files
        out = tmp_path / "call.wav"
        done = decrypt(r.engine, files[0].stem, tmp_path / "recording-key.pem", out)
        assert done.returncode == 0, done.stderr
        left, right = stereo(out)
        assert abs(peak_hz(left, 8192, 4000) - A_TONE) <= 10
        assert abs(peak_hz(right, 8192, 4000) - B_TONE) <= 10


def test_srtp_on_one_leg_plain_rtp_on_the_other(tmp_path: Path) -> None:
    # A offers SRTP best effort (RTP/AVP with a=crypto); B has no srtp module.
    for r in run_call(tmp_path, "srtp", None):
        a, b = r.caller, r.callee
        assert abs(peak_hz(a.recording()) - B_TONE) <= 10, a.tail()
        assert abs(peak_hz(b.recording()) - A_TONE) <= 10, b.tail()
        answer_to_a = cryptos(sdp_of(a.received(A_IP), request=False)[0])
        a_sent = cryptos(sdp_of(a.sent(A_IP), request=True)[0])
        assert len(answer_to_a) == 1 and answer_to_a[0].key not in {c.key for c in a_sent}
        assert not cryptos(sdp_of(b.sent(B_IP), request=False)[0])
        a_key = next(c for c in a_sent if c.tag == answer_to_a[0].tag)
        # A's leg is SRTP both ways; B's is plain RTP both ways, its tone in the clear.
        from_a, to_a = r.rtp_from(a), r.rtp_to(a)
        for packets, crypto, tone in ((from_a, a_key, A_TONE), (to_a, answer_to_a[0], B_TONE)):
            clear = decrypted(packets, crypto)
            assert len(clear) >= len(packets) - 2 > 100
            assert abs(tone_of(clear) - tone) <= 10
        assert len(r.rtp_to(b)) > 100 and len(r.rtp_from(b)) > 100
        assert abs(tone_of(r.rtp_to(b)) - A_TONE) <= 10
        assert abs(tone_of(r.rtp_from(b)) - B_TONE) <= 10


def test_a_plain_caller_reaches_an_srtp_callee_through_a_trunk_that_requires_it(
    tmp_path: Path,
) -> None:
    # A has no srtp module; B requires RTP/SAVP; the callee trunk says srtp: mandatory.
    for r in run_call(tmp_path, None, "srtp-mand", trunk_srtp="mandatory"):
        a, b = r.caller, r.callee
        assert abs(peak_hz(a.recording()) - B_TONE) <= 10, a.tail()
        assert abs(peak_hz(b.recording()) - A_TONE) <= 10, b.tail()
        offer_to_b = sdp_of(b.received(B_IP), request=True)[0]
        answer_to_a = sdp_of(a.received(A_IP), request=False)[0]
        assert proto(offer_to_b) == "RTP/SAVP" and cryptos(offer_to_b)
        assert proto(answer_to_a) == "RTP/AVP" and not cryptos(answer_to_a)
        b_answer = cryptos(sdp_of(b.sent(B_IP), request=False)[0])[0]
        to_b_key = next(c for c in cryptos(offer_to_b) if c.tag == b_answer.tag)
        for packets, crypto, tone in (
            (r.rtp_from(b), b_answer, B_TONE),
            (r.rtp_to(b), to_b_key, A_TONE),
        ):
            clear = decrypted(packets, crypto)
            assert len(clear) >= len(packets) - 2 > 100
            assert abs(tone_of(clear) - tone) <= 10
        assert abs(tone_of(r.rtp_to(a)) - B_TONE) <= 10  # plain toward A
        assert abs(tone_of(r.rtp_from(a)) - A_TONE) <= 10


def test_a_reinvite_with_new_keys_rekeys_the_leg(tmp_path: Path) -> None:
    """SIPp signals (A re-keys by re-INVITE after 2.5 s); the media is played from here:
    A sends every packet twice, under its first key and its second, and B must get
    exactly the first key's copies before the re-INVITE and the second's after."""
    media, _ = relay_media(tmp_path)
    uas_port = free_port()
    suite = "AES_CM_128_HMAC_SHA1_80"
    key1, key2, keyb = (os.urandom(30) for _ in range(3))
    keys = {
        name: base64.b64encode(k).decode()
        for name, k in (("key1", key1), ("key2", key2), ("keyb", keyb))
    }
    a, b = MediaParty("127.0.0.1"), MediaParty("127.0.0.1")
    profile = SUITES[suite].profile
    a_tx = [
        Session(Policy(k, Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile)) for k in (key1, key2)
    ]
    b_tx = Session(Policy(keyb, Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
    to_b: list[bytes] = []
    to_a: list[bytes] = []
    stop = threading.Event()
    try:
        with (
            Ansim(
                tmp_path / "ansim",
                trunks=[trunk("callee", uas_port)],
                routes=[{"prefix": "+82", "trunks": ["callee"]}],
                numbers=number_map(),
                media=media,
                metrics=True,  # up once calls are taken, not only OPTIONS
            ) as engine,
            Sipp(tmp_path) as sipp,
        ):
            uas = sipp.start(
                "srtp_uas_rekey", port=uas_port, keys={**CALLEE.sipp_keys("callee"), **keys}
            )
            uac = sipp.start(
                "srtp_uac_rekey",
                port=free_port(),
                remote=engine.addr,
                service=user_part(VIRTUAL_AX),
                keys={**CALLER.sipp_keys("caller"), **keys},
            )
            deadline = time.monotonic() + 10
            while not (
                answers := [
                    m for m in uac.received() if m.status == 200 and m.cseq_method == "INVITE"
                ]
            ):
                uac._messages = None
                assert time.monotonic() < deadline, uac.report() + uas.report()
                time.sleep(0.05)
            relay_a = ("127.0.0.1", int(answers[0].body.split("m=audio ", 1)[1].split()[0]))
            invite_b = next(m for m in uas.received() if m.method == "INVITE")
            relay_b = ("127.0.0.1", int(invite_b.body.split("m=audio ", 1)[1].split()[0]))
            b_key = next(c for c in cryptos(invite_b.body) if c.tag == 1)
            a_key = cryptos(answers[0].body)[0]
            b_rx, a_rx = rx_session(b_key), rx_session(a_key)

            def talk() -> None:
                while not stop.is_set():
                    packet = bytearray(a.rtp(b"\x00" * 160))
                    for marker, session in zip(b"12", a_tx, strict=True):
                        packet[12] = marker
                        a.send(session.protect(bytes(packet)), relay_a)
                    b.send(b_tx.protect(b.rtp(b"b" * 160)), relay_b)
                    time.sleep(0.02)

            def listen(party: MediaParty, session: Session, out: list[bytes]) -> None:
                while not stop.is_set():
                    try:
                        data, _ = party.sock.recvfrom(2048)
                    except TimeoutError:
                        continue
                    out.append(session.unprotect(data))  # raises if not from the leg's key

            threads = [
                threading.Thread(target=talk, daemon=True),
                threading.Thread(target=listen, args=(b, b_rx, to_b), daemon=True),
                threading.Thread(target=listen, args=(a, a_rx, to_a), daemon=True),
            ]
            for t in threads:
                t.start()
            assert (uac.wait(30), uas.wait(30)) == (0, 0), uac.report() + uas.report()
            stop.set()
            for t in threads:
                t.join(5)
            uac._messages = uas._messages = None  # read again: the calls are over
            answers = [m for m in uac.received() if m.status == 200 and m.cseq_method == "INVITE"]
            reinvite_b = [m for m in uas.received() if m.method == "INVITE"][1]
    finally:
        stop.set()
        a.close()
        b.close()
    # Before the re-INVITE the relay took A's first key only, after it the second only.
    markers = bytes(p[12] for p in to_b)
    first, second = markers.count(b"1"), markers.count(b"2")
    assert first > 50 and second > 50 and markers == b"1" * first + b"2" * second, markers
    # B's leg kept its keys (ansim re-offered its own line), and so did ansim toward A.
    assert cryptos(reinvite_b.body) == [b_key]
    assert [cryptos(m.body) for m in answers] == [[a_key], [a_key]]
    assert not {a_key.key, b_key.key} & {key1, key2, keyb}
    assert len(to_a) > 150 and all(p[12:] == b"b" * 160 for p in to_a)


@pytest.mark.skipif(shutil.which("rtpengine") is None, reason="rtpengine-daemon not installed")
def test_rtpengine_mode_writes_rtpengines_own_sdes_lines(tmp_path: Path) -> None:
    """In rtpengine mode each party is sent the a=crypto lines rtpengine wrote for its leg
    (a suite the caller did not offer shows they are rtpengine's), and SRTP works both
    ways through it. For the suite both parties share, rtpengine offers the callee the
    caller's own key (and the caller the callee's): keys are not kept apart in this
    mode, which README says."""
    for r in run_call(tmp_path, "srtp-mand", "srtp-mand", mode="rtpengine"):
        a, b = r.caller, r.callee
        assert abs(peak_hz(a.recording()) - B_TONE) <= 10, a.tail()
        assert abs(peak_hz(b.recording()) - A_TONE) <= 10, b.tail()
        a_sent = cryptos(sdp_of(a.sent(A_IP), request=True)[0])
        offer_to_b = cryptos(sdp_of(b.received(B_IP), request=True)[0])
        assert {c.suite for c in offer_to_b} - {c.suite for c in a_sent}
        b_answer = cryptos(sdp_of(b.sent(B_IP), request=False)[0])
        answer_to_a = cryptos(sdp_of(a.received(A_IP), request=False)[0])
        assert {c.key for c in a_sent} & {c.key for c in offer_to_b}
        assert {c.key for c in b_answer} & {c.key for c in answer_to_a}
        for m in [*a.received(A_IP), *b.received(B_IP)]:
            if m.body and "m=audio" in m.body:
                assert proto(m.body) == "RTP/SAVP", m.body


def test_an_srtp_offer_ansim_cannot_carry_is_refused_488(tmp_path: Path) -> None:
    """RTP/SAVP whose only keys are of a suite pylibsrtp lacks, or have an MKI: 488 at
    once, the callee never called, CDR reason srtp_unsupported."""
    media, _ = relay_media(tmp_path)
    key44 = base64.b64encode(os.urandom(46)).decode()
    key30 = base64.b64encode(os.urandom(30)).decode()
    sink_port = free_port()
    with (
        UdpSink(sink_port) as callee,
        Ansim(
            tmp_path / "ansim",
            trunks=[trunk("callee", sink_port)],
            routes=[{"prefix": "+82", "trunks": ["callee"]}],
            numbers=number_map(),
            media=media,
            metrics=True,  # up once calls are taken, not only OPTIONS
        ) as engine,
    ):
        for i, line in enumerate(
            (
                f"1 AES_256_CM_HMAC_SHA1_80 inline:{key44}",
                f"1 AES_CM_128_HMAC_SHA1_80 inline:{key30}|2^31|1:4",
            )
        ):
            sdp = (
                "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=audio 4000 RTP/SAVP 0\r\na=crypto:{line}\r\n"
            ).encode()
            with RawCaller(("127.0.0.1", engine.port)) as caller:
                assert caller.call(user_part(VIRTUAL_AX), Body("application/sdp", sdp)) == 488
            rows = engine.cdr_rows(expect=i + 1)
            assert (rows[-1]["status"], rows[-1]["reason"]) == (488, "srtp_unsupported"), rows[-1]
        assert callee.datagrams() == []
