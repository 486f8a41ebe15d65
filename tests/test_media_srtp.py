"""SRTP on the relay's legs, with pylibsrtp's own sessions on the parties' side: each
leg decrypted with its party's key and encrypted toward it with a key of its own (for
every suite), SRTCP likewise, one leg SRTP and the other plain, a tampered or replayed
packet dropped and counted, a re-key taken, DTMF detected on the decrypted stream, and
malformed keys refused."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pylibsrtp import Error, Policy, Session

from media.client import RelayClient, RelayError
from media.events import DtmfDigit
from media.rtcp import sdes_items
from media.srtp import SUITES, new_key
from tests.media_helpers import EventLog, Party, RelayProcess, relay_process, run_async
from tests.test_media_relay import REAL, dtmf_packets, rtcp_compound


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    with relay_process(tmp_path_factory.mktemp("relay"), "--media-timeout", "30") as proc:
        yield proc


@pytest.fixture
def parties() -> Iterator[tuple[Party, Party]]:
    a, b = Party("127.0.0.2"), Party("127.0.0.3")
    yield a, b
    a.close()
    b.close()


class Keys:
    """One leg's keys as its party holds them: it encrypts with ``mine`` and decrypts
    what the relay sends it with ``relays``."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.mine = new_key(suite)
        self.relays = new_key(suite)
        profile = SUITES[suite].profile
        self.tx = Session(Policy(self.mine, Policy.SSRC_ANY_OUTBOUND, srtp_profile=profile))
        self.rx = Session(Policy(self.relays, Policy.SSRC_ANY_INBOUND, srtp_profile=profile))

    def field(self) -> dict[str, object]:
        return {"suite": self.suite, "rx": self.mine, "tx": self.relays}


def decrypted(keys: Keys, got: list[tuple[bytes, tuple[str, int]]]) -> list[bytes]:
    return [keys.rx.unprotect(d) for d, _ in got]


@pytest.mark.parametrize("suite", list(SUITES))
def test_each_leg_decrypted_and_encrypted_with_keys_of_its_own(
    relay: RelayProcess, parties: tuple[Party, Party], suite: str
) -> None:
    a, b = parties
    ka, kb = Keys(suite), Keys(suite)

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            call = f"srtp-{suite}"
            la = await client.leg(
                call, "a", remote=a.address, rtcp=a.rtcp_address, peer="b", srtp=ka.field()
            )
            lb = await client.leg(
                call, "b", remote=b.address, rtcp=b.rtcp_address, peer="a", srtp=kb.field()
            )
            plain_ab = [a.rtp(bytes([i]) * 160) for i in range(20)]
            wire_ab = [ka.tx.protect(p) for p in plain_ab]
            for p in wire_ab:
                a.send(p, (la.address, la.port))
            got = b.recv_all()
            # B gets A's audio encrypted with B's leg key: not what A sent, and A's key
            # cannot read it.
            assert decrypted(kb, got) == plain_ab
            assert not {d for d, _ in got} & set(wire_ab)
            with pytest.raises(Error):
                ka.rx.unprotect(got[0][0])
            plain_ba = [b.rtp(bytes([100 + i]) * 160) for i in range(20)]
            for p in plain_ba:
                b.send(kb.tx.protect(p), (lb.address, lb.port))
            assert decrypted(ka, a.recv_all()) == plain_ba
            # SRTCP: decrypted, its SDES rebuilt, encrypted toward the other party.
            a.rtcp.sendto(
                ka.tx.protect_rtcp(rtcp_compound(a.ssrc, REAL)), (la.address, la.rtcp_port)
            )
            got = b.recv_all(0.3, sock=b.rtcp)
            assert len(got) == 1 and REAL not in got[0][0]
            clear = kb.rx.unprotect_rtcp(got[0][0])
            assert sdes_items(clear) == [(a.ssrc, 1, lb.cname.encode())]
            stats = await client.delete(call)
            assert stats["a"]["srtp"] == stats["b"]["srtp"] == suite
            assert stats["a"]["rx_packets"] == 20 and stats["b"]["tx_packets"] == 20
            assert stats["a"]["srtp_auth_failures"] == stats["a"]["srtp_replays"] == 0
        finally:
            client.close()

    run_async(scenario)


def test_tampered_and_replayed_packets_are_dropped_and_counted(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    ka, kb = Keys("AES_CM_128_HMAC_SHA1_80"), Keys("AES_CM_128_HMAC_SHA1_80")

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            la = await client.leg(
                "bad", "a", remote=a.address, rtcp=a.rtcp_address, peer="b", srtp=ka.field()
            )
            await client.leg(
                "bad", "b", remote=b.address, rtcp=b.rtcp_address, peer="a", srtp=kb.field()
            )
            to_a = (la.address, la.port)
            first_plain = a.rtp(b"1" * 160)
            first = ka.tx.protect(first_plain)
            a.send(first, to_a)
            assert decrypted(kb, b.recv_all(0.2)) == [first_plain]
            # One bit of the payload, one of the tag, a packet under another key.
            for position in (20, -1):
                bad = bytearray(ka.tx.protect(a.rtp(b"2" * 160)))
                bad[position] ^= 0x01
                a.send(bytes(bad), to_a)
            stranger = Session(Policy(new_key("AES_CM_128_HMAC_SHA1_80"), Policy.SSRC_ANY_OUTBOUND))
            a.send(stranger.protect(a.rtp(b"3" * 160)), to_a)
            # The same packet again (a replay), and a plain RTP packet.
            a.send(first, to_a)
            a.send(a.rtp(b"4" * 160), to_a)
            assert b.recv_all(0.3) == []
            good = a.rtp(b"5" * 160)
            a.send(ka.tx.protect(good), to_a)
            assert decrypted(kb, b.recv_all(0.2)) == [good]
            # SRTCP tampered: dropped too.
            bad_rtcp = bytearray(ka.tx.protect_rtcp(rtcp_compound(a.ssrc, REAL)))
            bad_rtcp[10] ^= 0x01
            a.rtcp.sendto(bytes(bad_rtcp), (la.address, la.rtcp_port))
            assert b.recv_all(0.3, sock=b.rtcp) == []
            stats = (await client.query("bad"))["legs"]["a"]
            assert stats["srtp_auth_failures"] == 5, (
                stats
            )  # 2 tampered, 1 foreign, 1 plain, 1 SRTCP
            assert stats["srtp_replays"] == 1, stats
            assert stats["rx_packets"] == 2  # only what authenticated reached the relay's path
            await client.delete("bad")
        finally:
            client.close()

    run_async(scenario)


def test_one_leg_srtp_the_other_plain(relay: RelayProcess, parties: tuple[Party, Party]) -> None:
    a, b = parties
    ka = Keys("AEAD_AES_128_GCM")

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            la = await client.leg("term", "a", remote=a.address, peer="b", srtp=ka.field())
            lb = await client.leg("term", "b", remote=b.address, peer="a")
            plain = [a.rtp(bytes([i]) * 160) for i in range(10)]
            for p in plain:
                a.send(ka.tx.protect(p), (la.address, la.port))
            assert [d for d, _ in b.recv_all()] == plain  # B gets plain RTP
            back = [b.rtp(bytes([50 + i]) * 160) for i in range(10)]
            for p in back:
                b.send(p, (lb.address, lb.port))
            got = a.recv_all()
            assert [d for d, _ in got] != back and decrypted(ka, got) == back
            # The leg becomes plain again (a re-INVITE without crypto): plain both ways.
            await client.leg("term", "a", srtp=None)
            p = a.rtp(b"p" * 160)
            a.send(p, (la.address, la.port))
            assert [d for d, _ in b.recv_all(0.2)] == [p]
            await client.delete("term")
        finally:
            client.close()

    run_async(scenario)


def test_rekey_takes_the_new_keys_and_refuses_the_old(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    ka, kb = Keys("AES_CM_128_HMAC_SHA1_32"), Keys("AES_CM_128_HMAC_SHA1_80")

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            la = await client.leg("rekey", "a", remote=a.address, peer="b", srtp=ka.field())
            lb = await client.leg("rekey", "b", remote=b.address, peer="a", srtp=kb.field())
            to_a, to_b = (la.address, la.port), (lb.address, lb.port)
            p = a.rtp()
            a.send(ka.tx.protect(p), to_a)
            assert decrypted(kb, b.recv_all(0.2)) == [p]
            # The same keys again (a re-INVITE that kept them): the context stays.
            await client.leg("rekey", "a", srtp=ka.field())
            p = a.rtp()
            a.send(ka.tx.protect(p), to_a)
            assert decrypted(kb, b.recv_all(0.2)) == [p]
            # New keys for leg a, both ways, and another suite.
            new = Keys("AEAD_AES_256_GCM")
            await client.leg("rekey", "a", srtp=new.field())
            a.send(ka.tx.protect(a.rtp()), to_a)  # the old key: refused
            assert b.recv_all(0.2) == []
            p = a.rtp()
            a.send(new.tx.protect(p), to_a)
            assert decrypted(kb, b.recv_all(0.2)) == [p]
            q = b.rtp()
            b.send(kb.tx.protect(q), to_b)
            got = a.recv_all(0.2)
            assert decrypted(new, got) == [q]
            stats = (await client.query("rekey"))["legs"]["a"]
            assert stats["srtp"] == "AEAD_AES_256_GCM" and stats["srtp_auth_failures"] == 1
            await client.delete("rekey")
        finally:
            client.close()

    run_async(scenario)


def test_dtmf_detected_in_the_decrypted_stream(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    ka, kb = Keys("AES_CM_128_HMAC_SHA1_80"), Keys("AES_CM_128_HMAC_SHA1_80")
    events = EventLog()

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control, events)
        try:
            la = await client.leg(
                "dtmf", "a", remote=a.address, peer="b", events=101, srtp=ka.field()
            )
            await client.leg("dtmf", "b", remote=b.address, peer="a", events=101, srtp=kb.field())
            sent = dtmf_packets(a, 7, 60000)
            for p in sent:
                a.send(ka.tx.protect(p), (la.address, la.port))
            assert decrypted(kb, b.recv_all(0.3)) == sent
            await events.wait_for(lambda e: isinstance(e, DtmfDigit) and e.digit == "7" and e.end)
            # A digit ansim generates toward an SRTP leg is encrypted too.
            assert await client.send_dtmf("dtmf", "a", "3", duration_ms=60) == 1
            got = decrypted(ka, a.recv_all(0.5))
            assert got and all(p[1] & 0x7F == 101 for p in got)
            await client.delete("dtmf")
        finally:
            client.close()

    run_async(scenario)


def test_bad_srtp_fields_are_refused(relay: RelayProcess) -> None:
    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            for bad in (
                {"suite": "F8_128_HMAC_SHA1_80", "rx": os.urandom(30), "tx": None},
                {"suite": "AES_CM_128_HMAC_SHA1_80", "rx": os.urandom(29), "tx": None},
                {"suite": "AEAD_AES_256_GCM", "rx": None, "tx": "not bytes"},
                {"suite": "AES_CM_128_HMAC_SHA1_80", "key": os.urandom(30)},
                "AES_CM_128_HMAC_SHA1_80",
            ):
                with pytest.raises(RelayError, match="srtp"):
                    await client.leg("refused", "a", srtp=bad)
            ok = await client.leg(
                "refused", "a", srtp={"suite": "AEAD_AES_128_GCM", "rx": None, "tx": None}
            )
            assert ok.port
            await client.delete("refused")
        finally:
            client.close()

    run_async(scenario)


def test_only_a_packet_that_authenticates_latches_an_srtp_leg(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    stranger = Party("127.0.0.9")
    ka, kb = Keys("AES_CM_128_HMAC_SHA1_80"), Keys("AES_CM_128_HMAC_SHA1_80")

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            # latch "any": the first source at all would do for a plain leg
            la = await client.leg(
                "latch", "a", remote=a.address, peer="b", latch="any", srtp=ka.field()
            )
            await client.leg("latch", "b", remote=b.address, peer="a", srtp=kb.field())
            to_a = (la.address, la.port)
            forged = Session(Policy(new_key("AES_CM_128_HMAC_SHA1_80"), Policy.SSRC_ANY_OUTBOUND))
            stranger.send(forged.protect(stranger.rtp(b"x" * 160)), to_a)
            stranger.send(stranger.rtp(b"y" * 160), to_a)
            assert b.recv_all(0.2) == []
            p = a.rtp(b"a" * 160)
            a.send(ka.tx.protect(p), to_a)
            assert decrypted(kb, b.recv_all(0.2)) == [p]
            stats = (await client.query("latch"))["legs"]["a"]
            assert stats["latched"] == list(a.address) and stats["srtp_auth_failures"] == 2
            # Latched: the stranger is refused even with a packet of the right key.
            stranger.send(ka.tx.protect(stranger.rtp(b"z" * 160)), to_a)
            assert b.recv_all(0.2) == []
            await client.delete("latch")
        finally:
            client.close()

    try:
        run_async(scenario)
    finally:
        stranger.close()
