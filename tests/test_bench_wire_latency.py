"""``bench/wire_latency.py``: INVITE->200 per call and its split between the engine and
the callee, read from pcap files written here byte by byte (every link type and both
timestamp resolutions and byte orders it reads), with the traffic a SIPp run puts on
the wire: retransmitted INVITEs, 100 and 180 before the 200, 200s to other methods,
compact headers, datagrams of other ports and protocols, and a call never answered."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
import wire_latency

ENGINE, CARRIER, CALLEE = 5060, 7000, 7100


def ipv4_udp(src: int, dst: int, payload: bytes, proto: int = 17) -> bytes:
    udp = struct.pack("!HHHH", src, dst, 8 + len(payload), 0) + payload
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, proto, 0,
        bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]),
    )  # fmt: skip
    return header + udp


LINKS = {
    0: b"\x02\x00\x00\x00",
    1: b"\x00" * 12 + b"\x08\x00",
    113: b"\x00" * 16,
    276: b"\x00" * 20,
}


def pcap(
    path: Path,
    packets: list[tuple[float, bytes]],
    link: int = 1,
    nanos: bool = False,
    endian: str = "<",
) -> Path:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, link)]
    for t, packet in packets:
        frame = LINKS[link] + packet
        sec = int(t)
        frac = round((t - sec) * (1e9 if nanos else 1e6))
        out.append(struct.pack(endian + "IIII", sec, frac, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))
    return path


def invite(user: str, call_id: str, compact: bool = False) -> bytes:
    cid = f"i: {call_id}" if compact else f"Call-ID: {call_id}"
    return (
        f"INVITE sip:{user}@127.0.0.1:{ENGINE} SIP/2.0\r\nVia: SIP/2.0/UDP x\r\n{cid}\r\n"
        "CSeq: 1 INVITE\r\n\r\n"
    ).encode()


def response(status: str, call_id: str, method: str = "INVITE") -> bytes:
    return f"SIP/2.0 {status}\r\nCall-ID: {call_id}\r\nCSeq: 1 {method}\r\n\r\n".encode()


def two_calls() -> list[tuple[float, bytes]]:
    """Call a (carrier a1, callee leg b1 to 0101) and call b (a2, b2 to 0102), with
    their milestones at known times; call c is never answered."""
    t = 1_700_000_000.0
    return [
        (t + 0.000, ipv4_udp(CARRIER, ENGINE, invite("+82101", "a1"))),
        (t + 0.001, ipv4_udp(CARRIER, ENGINE, invite("+82102", "a2", compact=True))),
        (t + 0.0015, ipv4_udp(ENGINE, CARRIER, response("100 Trying", "a1"))),
        (t + 0.002, ipv4_udp(ENGINE, CALLEE, invite("0101", "b1"))),
        (t + 0.003, ipv4_udp(ENGINE, CALLEE, invite("0102", "b2"))),
        (t + 0.004, ipv4_udp(CALLEE, ENGINE, response("180 Ringing", "b1"))),
        (t + 0.010, ipv4_udp(CALLEE, ENGINE, response("200 OK", "b1"))),
        (t + 0.012, ipv4_udp(ENGINE, CARRIER, response("200 OK", "a1"))),
        (t + 0.013, ipv4_udp(ENGINE, CARRIER, response("200 OK", "a1"))),  # resent 200
        (t + 0.020, ipv4_udp(CALLEE, ENGINE, response("200 OK", "b2"))),
        (t + 0.021, ipv4_udp(ENGINE, CARRIER, response("200 OK", "a2", "BYE"))),  # not INVITE's
        (t + 0.025, ipv4_udp(ENGINE, CARRIER, response("200 OK", "a2"))),
        (t + 0.026, ipv4_udp(CARRIER, ENGINE, invite("+82103", "a3"))),  # never answered
        (t + 0.027, ipv4_udp(9, 9, b"INVITE sip:x@y SIP/2.0\r\n\r\n", proto=6)),  # not UDP
        (t + 0.050, ipv4_udp(CARRIER, ENGINE, invite("+82101", "a1"))),  # resent: not the start
    ]


def callee_of(user: bytes) -> bytes:
    return b"0" + user[3:]  # +82101 -> 0101, as a national number


@pytest.mark.parametrize("link", sorted(LINKS))
@pytest.mark.parametrize(("nanos", "endian"), [(False, "<"), (True, "<"), (False, ">")])
def test_each_call_is_timed_from_its_first_invite_to_its_first_200(
    tmp_path: Path, link: int, nanos: bool, endian: str
) -> None:
    path = pcap(tmp_path / "sip.pcap", two_calls(), link, nanos, endian)
    got = sorted(round(v * 1e6) for v in wire_latency.invite_to_200(path, ENGINE))
    assert got == [12_000, 24_000]  # a1: 0 -> 12 ms; a2: 1 -> 25 ms; a3 has no 200


def test_the_split_between_the_engine_and_the_callee(tmp_path: Path) -> None:
    path = pcap(tmp_path / "sip.pcap", two_calls())
    legs = wire_latency.breakdown(path, ENGINE, CALLEE, callee_of)
    micros = {k: sorted(round(v * 1e6) for v in vs) for k, vs in legs.items()}
    # a1: INVITE 0 -> 2 ms to the callee, its 200 at 10 ms -> 12 ms to the carrier
    # a2: INVITE 1 -> 3 ms, its 200 at 20 ms -> 25 ms
    assert micros == {
        "total": [12_000, 24_000],
        "engine": [4_000, 7_000],
        "callee": [8_000, 17_000],
    }
    for total, engine, callee in zip(legs["total"], legs["engine"], legs["callee"], strict=True):
        assert abs(total - engine - callee) < 1e-9


def test_not_a_pcap_file_or_an_unknown_link_type_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\x00" * 40)  # pcapng: dumpcap without -P
    with pytest.raises(ValueError, match="not a pcap file"):
        list(wire_latency.datagrams(bad))
    odd = pcap(tmp_path / "odd.pcap", [], link=1)
    odd.write_bytes(odd.read_bytes()[:20] + struct.pack("<I", 147))
    with pytest.raises(ValueError, match="link type 147"):
        list(wire_latency.datagrams(odd))
