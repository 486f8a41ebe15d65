"""The relay process with real sockets: forwarding, latching, hold, timeouts, RTCP, DTMF."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from media.client import RelayClient, RelayError
from media.dtmf import DtmfDetector
from media.events import DtmfDigit, MediaTimeout
from media.rtcp import iter_compound, sdes_items
from media.rtp import build_rtp, parse_rtp
from tests.media_helpers import EventLog, Party, RelayProcess, relay_process, run_async

RELAY_IP = "127.0.0.1"


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


async def bridge(
    client: RelayClient, call: str, a: Party, b: Party, **extra: object
) -> tuple[tuple[str, int], tuple[str, int]]:
    """Two legs of ``call`` bridged; return the relay addresses a and b send to."""
    la = await client.leg(call, "a", remote=a.address, rtcp=a.rtcp_address, peer="b", **extra)
    lb = await client.leg(call, "b", remote=b.address, rtcp=b.rtcp_address, peer="a", **extra)
    assert la.address == lb.address == RELAY_IP
    assert la.port != lb.port and la.rtcp_port == la.port + 1
    return (la.address, la.port), (lb.address, lb.port)


def payloads(received: list[tuple[bytes, tuple[str, int]]]) -> list[bytes]:
    return [data[12:] for data, _ in received]


def test_forwards_both_ways_from_its_own_addresses(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            to_a, to_b = await bridge(client, "fwd", a, b)
            sent_ab = [a.rtp(bytes([i]) * 160) for i in range(20)]
            for p in sent_ab:
                a.send(p, to_a)
            got = b.recv_all()
            assert [d for d, _ in got] == sent_ab  # unchanged, in order
            assert {addr for _, addr in got} == {to_b}  # from the relay's B-side port only
            sent_ba = [b.rtp(bytes([100 + i]) * 160) for i in range(20)]
            for p in sent_ba:
                b.send(p, to_b)
            got = a.recv_all()
            assert [d for d, _ in got] == sent_ba
            assert {addr for _, addr in got} == {to_a}
            stats = await client.delete("fwd")
            assert stats["a"]["rx_packets"] == 20 and stats["b"]["tx_packets"] == 20
            assert stats["b"]["rx_packets"] == 20 and stats["a"]["tx_packets"] == 20
            assert stats["a"]["latched"] == list(a.address)
        finally:
            client.close()

    run_async(scenario)


def test_latching_takes_the_expected_address_then_only_that_source(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    stranger = Party("127.0.0.9")
    a_other_port = Party("127.0.0.2")

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            to_a, to_b = await bridge(client, "latch", a, b)
            # Before latching: a packet from an address the SDP did not name is dropped.
            stranger.send(stranger.rtp(b"X" * 160), to_a)
            assert b.recv_all(0.2) == []
            # The expected IP from another port latches ("address" mode: NAT may change ports).
            a_other_port.send(a_other_port.rtp(b"N" * 160), to_a)
            assert payloads(b.recv_all(0.2)) == [b"N" * 160]
            # Latched: the SDP port itself, and strangers, are now refused.
            a.send(a.rtp(b"S" * 160), to_a)
            stranger.send(stranger.rtp(b"X" * 160), to_a)
            assert b.recv_all(0.2) == []
            a_other_port.send(a_other_port.rtp(b"M" * 160), to_a)
            assert payloads(b.recv_all(0.2)) == [b"M" * 160]
            # Toward A the relay now sends to the latched source, not the SDP address.
            b.send(b.rtp(b"B" * 160), to_b)
            assert payloads(a_other_port.recv_all(0.2)) == [b"B" * 160]
            assert a.recv_all(0.1) == []
            stats = (await client.query("latch"))["legs"]
            assert stats["a"]["dropped"] >= 1
            await client.delete("latch")

            # strict: only the SDP's exact address latches.
            to_a, to_b = await bridge(client, "strict", a, b, latch="strict")
            a_other_port.send(a_other_port.rtp(b"N" * 160), to_a)
            assert b.recv_all(0.2) == []
            a.send(a.rtp(b"S" * 160), to_a)
            assert payloads(b.recv_all(0.2)) == [b"S" * 160]
            await client.delete("strict")

            # any: the first source at all (a party behind NAT with a private SDP address).
            la = await client.leg("any", "a", remote=("10.1.2.3", 4000), peer="b", latch="any")
            await client.leg("any", "b", remote=b.address, peer="a")
            stranger.send(stranger.rtp(b"F" * 160), (la.address, la.port))
            assert payloads(b.recv_all(0.2)) == [b"F" * 160]
            b.send(b.rtp(b"R" * 160), to_b := (la.address, (await client.leg("any", "b")).port))
            assert payloads(stranger.recv_all(0.2)) == [b"R" * 160]
            del to_b
            await client.delete("any")
        finally:
            client.close()

    try:
        run_async(scenario)
    finally:
        stranger.close()
        a_other_port.close()


def test_reinvite_with_a_new_address_relatches(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    a_new = Party("127.0.0.4")

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            to_a, to_b = await bridge(client, "relatch", a, b)
            a.send(a.rtp(b"1" * 160), to_a)
            assert payloads(b.recv_all(0.2)) == [b"1" * 160]
            # The re-INVITE moves A to a new address: same relay ports, new remote.
            info = await client.leg("relatch", "a", remote=a_new.address, rtcp=a_new.rtcp_address)
            assert (info.address, info.port) == to_a
            # Toward A at once to the new SDP address, before A's first packet from there.
            b.send(b.rtp(b"2" * 160), to_b)
            assert payloads(a_new.recv_all(0.2)) == [b"2" * 160]
            assert a.recv_all(0.1) == []
            # Late packets of the old stream are refused; the new address latches.
            a.send(a.rtp(b"3" * 160), to_a)
            assert b.recv_all(0.2) == []
            a_new.send(a_new.rtp(b"4" * 160), to_a)
            a.send(a.rtp(b"5" * 160), to_a)
            assert payloads(b.recv_all(0.2)) == [b"4" * 160]
            stats = (await client.query("relatch"))["legs"]
            assert stats["a"]["latched"] == list(a_new.address)
            # An update that keeps the address (a codec change, hold by attribute) keeps the latch.
            await client.leg("relatch", "a", remote=a_new.address, direction="sendrecv")
            a_new.send(a_new.rtp(b"6" * 160), to_a)
            assert payloads(b.recv_all(0.2)) == [b"6" * 160]
            await client.delete("relatch")
        finally:
            client.close()

    try:
        run_async(scenario)
    finally:
        a_new.close()


def test_hold_and_resume(relay: RelayProcess, parties: tuple[Party, Party]) -> None:
    a, b = parties

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            to_a, to_b = await bridge(client, "hold", a, b)
            # A puts B on hold (A: sendonly, B answers recvonly): A's music still reaches B,
            # B's packets are not sent to A.
            await client.leg("hold", "a", direction="sendonly")
            await client.leg("hold", "b", direction="recvonly")
            a.send(a.rtp(b"M" * 160), to_a)
            b.send(b.rtp(b"b" * 160), to_b)
            assert payloads(b.recv_all(0.2)) == [b"M" * 160]
            assert a.recv_all(0.1) == []
            # RFC 2543 hold: B's address 0.0.0.0: nothing goes to B.
            await client.leg("hold", "b", remote=("0.0.0.0", b.address[1]), direction="sendrecv")
            a.send(a.rtp(b"Z" * 160), to_a)
            assert b.recv_all(0.2) == []
            # Resume: both sendrecv, B back at its address.
            await client.leg("hold", "a", direction="sendrecv")
            await client.leg("hold", "b", remote=b.address, direction="sendrecv")
            a.send(a.rtp(b"R" * 160), to_a)
            b.send(b.rtp(b"r" * 160), to_b)
            assert payloads(b.recv_all(0.2)) == [b"R" * 160]
            assert payloads(a.recv_all(0.2)) == [b"r" * 160]
            await client.delete("hold")
        finally:
            client.close()

    run_async(scenario)


def test_early_media_flows_before_the_answer(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            la = await client.leg("early", "a", remote=a.address, peer="b")
            # The B-leg's offer goes out with the relay's port before B has answered.
            lb = await client.leg("early", "b", peer="a")
            a.send(a.rtp(b"x" * 160), (la.address, la.port))  # nowhere to go yet: dropped
            # Control and media arrive on different sockets: wait until the relay has
            # seen the packet before B's address is given, or the packet could be sent on.
            for _ in range(100):
                legs = (await client.query("early"))["legs"]
                if legs["a"]["rx_packets"] + legs["a"]["dropped"] >= 1:
                    break
                await asyncio.sleep(0.01)
            assert legs["a"]["rx_packets"] + legs["a"]["dropped"] == 1
            # 183 Session Progress with SDP: B's address is known, ringback flows to A.
            await client.leg("early", "b", remote=b.address)
            b.send(b.rtp(b"ring" * 40), (lb.address, lb.port))
            assert payloads(a.recv_all(0.2)) == [b"ring" * 40]
            assert b.recv_all(0.1) == []
            a.send(a.rtp(b"y" * 160), (la.address, la.port))
            assert payloads(b.recv_all(0.2)) == [b"y" * 160]
            await client.delete("early")
        finally:
            client.close()

    run_async(scenario)


def test_media_timeout_reported_when_no_rtp_in_either_direction(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    events = EventLog()

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control, events)
        try:
            to_a, _ = await bridge(client, "quiet", a, b, media_timeout=1.0)
            # Media in one direction keeps the call alive.
            for _ in range(15):
                a.send(a.rtp(), to_a)
                await asyncio.sleep(0.1)
            assert not [e for e in events.events if isinstance(e, MediaTimeout)]
            event = await events.wait_for(lambda e: isinstance(e, MediaTimeout), 4)
            assert isinstance(event, MediaTimeout) and event.call == "quiet" and event.idle_s >= 1.0
            await asyncio.sleep(1.2)
            assert len([e for e in events.events if isinstance(e, MediaTimeout)]) == 1  # once
            # While both sides are on hold no RTP is expected: no timeout (hold_timeout unset).
            await bridge(client, "held", a, b, media_timeout=1.0, direction="inactive")
            await asyncio.sleep(2.0)
            assert not [
                e for e in events.events if isinstance(e, MediaTimeout) and e.call == "held"
            ]
            await client.delete("quiet")
            await client.delete("held")
        finally:
            client.close()

    run_async(scenario)


def rtcp_compound(ssrc: int, real: bytes) -> bytes:
    """SR + SDES (CNAME, NAME, EMAIL, PHONE, TOOL, NOTE carrying identity) + APP + BYE with reason."""
    sr_body = struct.pack(">IIIIII", ssrc, 1, 2, 3, 4, 5)
    sr = struct.pack(">BBH", 0x80, 200, len(sr_body) // 4) + sr_body
    items = b""
    for kind, value in (
        (1, b"sip:" + real + b"@192.168.1.10"),
        (2, b"Kim " + real),
        (3, b"kim@example.com"),
        (4, b"tel:" + real),
        (6, b"baresip 3.0 192.168.1.10"),
        (7, real),
    ):
        items += bytes((kind, len(value))) + value
    chunk = struct.pack(">I", ssrc) + items + b"\x00"
    chunk += bytes((-len(chunk)) % 4)
    sdes = struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk
    app_body = struct.pack(">I", ssrc) + b"NAME" + real[:8]
    app = struct.pack(">BBH", 0x80, 204, len(app_body) // 4) + app_body
    reason = b"\x0b" + b"bye " + real[:6] + b"\x00"
    bye_body = struct.pack(">I", ssrc) + reason
    bye = struct.pack(">BBH", 0x81, 203, len(bye_body) // 4) + bye_body
    return sr + sdes + app + bye


REAL = b"+821012345678"
FORMS = (
    b"821012345678",
    b"01012345678",
    b"1012345678",
    b"192.168.1.10",
    b"127.0.0.2",
    b"kim@",
    b"Kim",
    b"baresip",
)


@pytest.mark.parametrize("mux", [False, True])
def test_rtcp_sdes_rewritten_and_nothing_of_the_party_crosses(
    relay: RelayProcess, parties: tuple[Party, Party], mux: bool
) -> None:
    a, b = parties

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            call = f"rtcp-{mux}"
            la = await client.leg(
                call, "a", remote=a.address, rtcp=None if mux else a.rtcp_address, mux=mux, peer="b"
            )
            lb = await client.leg(
                call, "b", remote=b.address, rtcp=b.rtcp_address, peer="a", cname="ansim-leg-b"
            )
            a_rtcp_dest = (la.address, la.port if mux else la.rtcp_port)
            a_rtcp_sock = a.sock if mux else a.rtcp
            a_rtcp_sock.sendto(rtcp_compound(a.ssrc, REAL), a_rtcp_dest)
            got = b.recv_all(0.3, sock=b.rtcp)
            assert len(got) == 1
            data, source = got[0]
            assert source == (lb.address, lb.rtcp_port)
            for form in FORMS:
                assert form not in data, form
            assert sdes_items(data) == [(a.ssrc, 1, b"ansim-leg-b")]
            kinds = [p.packet_type for p in iter_compound(data)]
            assert kinds == [
                200,
                202,
                203,
            ]  # SR kept, SDES rebuilt, APP dropped, BYE without reason
            # The other way, B's real CNAME is replaced by A's (relay-chosen) CNAME.
            b.rtcp.sendto(rtcp_compound(b.ssrc, b"+821099998888"), (lb.address, lb.rtcp_port))
            got = a.recv_all(0.3, sock=a_rtcp_sock)
            assert len(got) == 1
            assert sdes_items(got[0][0]) == [(b.ssrc, 1, la.cname.encode())]
            assert b"99998888" not in got[0][0] and b"127.0.0.3" not in got[0][0]
            assert got[0][1] == (la.address, la.port if mux else la.rtcp_port)
            await client.delete(call)
        finally:
            client.close()

    run_async(scenario)


def dtmf_packets(party: Party, digit_code: int, ts: int, pt: int = 101) -> list[bytes]:
    out = []
    for i, (end, duration) in enumerate(
        [(0, 160), (0, 320), (0, 480), (1, 640), (1, 640), (1, 640)]
    ):
        party.seq = (party.seq + 1) & 0xFFFF
        payload = struct.pack(">BBH", digit_code, (0x80 if end else 0) | 10, duration)
        out.append(build_rtp(pt, party.seq, ts, party.ssrc, payload, marker=i == 0))
    return out


def test_dtmf_detected_once_and_relayed_when_negotiated(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties
    events = EventLog()

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control, events)
        try:
            to_a, _ = await bridge(client, "dtmf", a, b, events=101)
            sent = dtmf_packets(a, 5, 80000) + dtmf_packets(a, 11, 82000)
            for p in sent:
                a.send(p, to_a)
            got = [d for d, _ in b.recv_all(0.3)]
            assert got == sent  # relayed unchanged: B negotiated telephone-event
            await events.wait_for(lambda e: isinstance(e, DtmfDigit) and e.digit == "#" and e.end)
            digits = [
                (e.leg, e.digit, e.end, e.duration_ms)
                for e in events.events
                if isinstance(e, DtmfDigit)
            ]
            assert digits == [
                ("a", "5", False, 20),
                ("a", "5", True, 80),
                ("a", "#", False, 20),
                ("a", "#", True, 80),
            ]
            # A new event whose end packets were lost is ended by the next event's first packet.
            lost_end = dtmf_packets(a, 1, 90000)[:3] + dtmf_packets(a, 2, 92000)
            for p in lost_end:
                a.send(p, to_a)
            assert len(b.recv_all(0.2)) == len(lost_end)
            await events.wait_for(lambda e: isinstance(e, DtmfDigit) and e.digit == "2" and e.end)
            ends = [e.digit for e in events.events if isinstance(e, DtmfDigit) and e.end]
            assert ends == ["5", "#", "1", "2"]
            await client.delete("dtmf")

            # B did not negotiate telephone-event: detected, not relayed (the engine sends INFO).
            events.events.clear()
            la = await client.leg("dtmf2", "a", remote=a.address, peer="b", events=101)
            await client.leg("dtmf2", "b", remote=b.address, peer="a")
            for p in dtmf_packets(a, 9, 70000):
                a.send(p, (la.address, la.port))
            a.send(a.rtp(b"v" * 160), (la.address, la.port))
            assert payloads(b.recv_all(0.3)) == [b"v" * 160]
            await events.wait_for(lambda e: isinstance(e, DtmfDigit) and e.digit == "9" and e.end)
            await client.delete("dtmf2")
        finally:
            client.close()

    run_async(scenario)


def test_dtmf_generated_into_a_leg_continues_its_stream(
    relay: RelayProcess, parties: tuple[Party, Party]
) -> None:
    a, b = parties

    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            to_a, _ = await bridge(client, "gen", a, b, events=101)
            with pytest.raises(RelayError):
                await client.send_dtmf("gen", "b", "12X")
            for _ in range(3):
                a.send(a.rtp(), to_a)
            assert await client.send_dtmf("gen", "b", "1#", duration_ms=100, pause_ms=60) == 2
            # Audio keeps flowing from A while the digits go in.
            for _ in range(25):
                a.send(a.rtp(), to_a)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            got = [(*parse_rtp(d), d) for d, _ in b.recv_all(0.3)]
            events_pk = [g for g in got if g[0] == 101]
            audio = [g for g in got if g[0] == 0]
            assert len(audio) == 28 and len(events_pk) >= 8
            # One stream: A's SSRC, sequence numbers without a gap or a repeat.
            assert {g[4] for g in got} == {a.ssrc}
            seqs = sorted(g[2] for g in got)
            assert seqs == list(range(seqs[0], seqs[0] + len(got)))
            detector = DtmfDetector()
            digits = []
            for g in events_pk:
                for e in detector.feed(g[4], g[3], g[7][g[5] : g[6]], 0):
                    if e.end:
                        digits.append((e.digit, e.duration_ms))
            assert digits == [("1", 100), ("#", 100)]
            stats = (await client.query("gen"))["legs"]
            assert stats["b"]["dtmf_sent"] == len(events_pk)
            await client.delete("gen")
        finally:
            client.close()

    run_async(scenario)


def test_commands_are_checked_and_idempotent(relay: RelayProcess, tmp_path: Path) -> None:
    async def scenario() -> None:
        client = await RelayClient.connect(relay.control)
        try:
            first = await client.leg("idem", "a", remote=("127.0.0.2", 4000))
            again = await client.leg("idem", "a", remote=("127.0.0.2", 4000))
            assert first == again
            for bad in (
                {"direction": "sideways"},
                {"latch": "maybe"},
                {"events": 300},
                {"remote": ["127.0.0.2"]},
                {"bogus": 1},
                {"channel": 7},
            ):
                with pytest.raises(RelayError):
                    await client.leg("idem", "a", **bad)  # type: ignore[arg-type]
            assert await client.delete("idem") and await client.delete("idem") == {}
            with pytest.raises(RelayError):
                await client.query("idem")
            with pytest.raises(RelayError, match="recording"):
                await client.leg("norec", "a")
                await client.record("norec")
            await client.delete("norec")
            ping = await client.ping()
            assert ping["calls"] == 0 or isinstance(ping["calls"], int)
        finally:
            client.close()

    run_async(scenario)
