"""The media package's sans-IO cores, without sockets: RTP, RTCP, DTMF, control, sessions."""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.control import (
    ControlError,
    RelayControl,
    Reply,
    decode_message,
    decode_request,
    encode_event,
    encode_reply,
)
from media.dtmf import DtmfDetector, digit_packets, event_code, parse_event
from media.events import DtmfDigit, MediaTimeout, StatsReport
from media.g711 import alaw_to_linear, decode, linear_to_alaw, linear_to_ulaw, ulaw_to_linear
from media.inject import STREAM_WAIT_S, DtmfInjector
from media.ports import PortPool, PortsExhausted
from media.rtcp import RtcpError, iter_compound, rewrite_compound, sdes_items
from media.rtp import RtpError, build_rtp, is_rtcp, parse_rtp
from media.session import DROP, KEEP, LATCH, SessionError, SessionTable
from media.settings import MediaSettings, RelayProcessSettings, relay_argv, resolve_mode


def test_rtp_header_with_csrc_extension_and_padding() -> None:
    hdr = struct.pack(">BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | 8, 7, 1234, 99)
    csrc = struct.pack(">II", 1, 2)
    ext = struct.pack(">HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    packet = hdr + csrc + ext + b"P" * 20 + b"\x00\x00\x03"
    h = parse_rtp(packet)
    assert (h.payload_type, h.marker, h.seq, h.timestamp, h.ssrc) == (8, True, 7, 1234, 99)
    assert packet[h.payload_start : h.payload_end] == b"P" * 20
    assert parse_rtp(build_rtp(0, 1, 2, 3, b"x")).payload_start == 12
    for bad in (b"", b"\x80" * 11, b"\x40" + bytes(11), hdr[:12], b"\xa0\x00" + bytes(9) + b"\x00"):
        with pytest.raises(RtpError):
            parse_rtp(bad)
    assert is_rtcp(200) and is_rtcp(223) and not is_rtcp(0x80 | 0) and not is_rtcp(224)


def sdes(ssrc: int, items: list[tuple[int, bytes]]) -> bytes:
    chunk = struct.pack(">I", ssrc) + b"".join(bytes((k, len(v))) + v for k, v in items) + b"\x00"
    chunk += bytes((-len(chunk)) % 4)
    return struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk


def rr(ssrc: int) -> bytes:
    return struct.pack(">BBHI", 0x80, 201, 1, ssrc)


def test_rtcp_rewrite_keeps_reports_replaces_sdes_drops_the_rest() -> None:
    real = b"sip:+821012345678@10.0.0.5"
    compound = rr(5) + sdes(5, [(1, real), (2, b"Kim"), (8, b"\x03abcPRIV")])
    out = rewrite_compound(compound, b"opaque")
    assert out is not None and real not in out and b"Kim" not in out and b"PRIV" not in out
    assert out.startswith(rr(5)) and sdes_items(out) == [(5, 1, b"opaque")]
    # Every CNAME length pads to a word boundary.
    for n in range(1, 12):
        out = rewrite_compound(rr(1) + sdes(1, [(1, b"x")]), b"c" * n)
        assert out is not None and len(out) % 4 == 0 and sdes_items(out) == [(1, 1, b"c" * n)]
    assert (
        rewrite_compound(struct.pack(">BBHI", 0x80, 204, 2, 1) + b"NAME", b"c") is None
    )  # APP alone
    padded = bytes([0xA0]) + b"\xc9\x00\x02" + struct.pack(">I", 1) + b"\x00\x00\x00\x04"
    assert [p.packet_type for p in iter_compound(padded)] == [201]
    for bad in (
        b"\x80\xc9",
        b"\x80\xc9\x00\x05" + bytes(4),
        b"\x40\xc9\x00\x00",
        rr(1) + b"\x81\xca\x00\x01" + b"\x00\x00\x00\x01",
    ):
        with pytest.raises(RtcpError):
            rewrite_compound(bad, b"c")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_rtcp_rewrite_of_any_bytes_raises_only_rtcp_error_and_leaks_no_sdes(data: bytes) -> None:
    try:
        out = rewrite_compound(data, b"opaque")
    except RtcpError:
        return
    if out is not None:
        for _, kind, value in sdes_items(out):
            assert (kind, value) == (1, b"opaque")


def test_dtmf_detector_end_three_times_reorder_and_stale() -> None:
    d = DtmfDetector(stale_ms=500)

    def ev(code: int, end: bool, dur: int) -> bytes:
        return struct.pack(">BBH", code, (0x80 if end else 0) | 10, dur)

    out = d.feed(1, 800, ev(3, False, 160), 0) + d.feed(1, 800, ev(3, False, 320), 20)
    out += d.feed(1, 800, ev(3, True, 800), 40) * 1 + d.feed(1, 800, ev(3, True, 800), 60)
    out += d.feed(1, 800, ev(3, True, 800), 80) + d.feed(1, 800, ev(3, False, 480), 90)  # late
    assert [(e.digit, e.end, e.duration_ms) for e in out] == [("3", False, 20), ("3", True, 100)]
    # An event whose end never comes is ended by tick after stale_ms.
    assert [e.digit for e in d.feed(1, 2000, ev(10, False, 160), 100)] == ["*"]
    assert d.tick(400) == []
    assert [(e.digit, e.end) for e in d.tick(700)] == [("*", True)]
    assert d.feed(1, 3000, b"\x01", 800) == []  # short payload ignored
    assert parse_event(ev(16, True, 1))[:2] == (16, True)
    assert event_code("a") == 12 and event_code("#") == 11
    with pytest.raises(ValueError):
        event_code("x")


def test_digit_packets_shape() -> None:
    packets = digit_packets("7", 100)
    assert packets[0].marker and not any(p.marker for p in packets[1:])
    ends = [p for p in packets if parse_event(p.payload)[1]]
    assert len(ends) == 3 and all(parse_event(p.payload)[3] == 800 for p in ends)
    offsets = [p.offset_ms for p in packets]
    assert offsets == sorted(offsets) and offsets[0] == 0
    with pytest.raises(ValueError):
        digit_packets("1", 10)


def test_injector_numbers_digits_into_the_stream() -> None:
    inj = DtmfInjector(101)
    assert inj.queue("1", 0.0) == 1 and inj.next_due() == pytest.approx(STREAM_WAIT_S)
    audio = bytearray(build_rtp(0, 500, 16000, 77, b"a" * 160))
    inj.forwarded(audio, 0.01)
    sent = inj.due(1.0)
    assert len(sent) == len(digit_packets("1", 100))
    heads = [parse_rtp(p) for p in sent]
    assert [h.seq for h in heads] == list(range(501, 501 + len(sent)))
    assert {h.ssrc for h in heads} == {77} and len({h.timestamp for h in heads}) == 1
    later = bytearray(build_rtp(0, 501, 16160, 77, b"a" * 160))
    inj.forwarded(later, 1.1)
    assert parse_rtp(later).seq == 501 + len(sent)  # shifted past the inserted packets
    other = bytearray(build_rtp(0, 9, 0, 78, b"a" * 160))
    inj.forwarded(other, 1.2)
    assert parse_rtp(other).seq == 9  # a new SSRC is not shifted


def test_g711_tables() -> None:
    assert all(linear_to_alaw(alaw_to_linear(c)) == c for c in range(256))
    assert all(linear_to_ulaw(ulaw_to_linear(c)) == c for c in range(256) if c != 0x7F)
    pcm = decode("PCMA", bytes([0xD5, 0x2A]))
    assert struct.unpack("<2h", pcm) == (alaw_to_linear(0xD5), alaw_to_linear(0x2A))


def test_control_codec_and_retries() -> None:
    ctl = RelayControl(retry_s=0.1, attempts=2)
    rid, data = ctl.request("leg", 0.0, call="c", leg="a", remote=["127.0.0.2", 4000])
    req = decode_request(data)
    assert (req.request_id, req.op, req.fields["remote"]) == (rid, "leg", ["127.0.0.2", 4000])
    assert ctl.handle_timeout(0.1) == ([data], [])
    resend, failed = ctl.handle_timeout(0.5)
    assert resend == [] and failed == [Reply(rid, False, {}, "timeout")]
    rid2, _ = ctl.request("ping", 1.0)
    assert ctl.receive(encode_reply(rid2, {"calls": 3})) == Reply(rid2, True, {"calls": 3})
    assert ctl.receive(encode_reply(rid2, {"calls": 3})) is None  # answered already
    for event in (
        MediaTimeout("c", 60.0),
        DtmfDigit("c", "a", "5", 100, True),
        StatsReport("c", {"a": {"rx": 1}}),
    ):
        assert decode_message(encode_event(event)) == event
    assert decode_message(encode_reply(4, error="no")) == Reply(4, False, {}, "no")
    for bad in (b"\xc1", b"\x91\x01", b"\x81\xa2op\xa4ping", b"\x82\xa2id\x01\xa2op\xa3zap"):
        with pytest.raises(ControlError):
            decode_request(bad)
    with pytest.raises(ValueError):
        encode_reply(1, {"id": "x"})


def test_latching_verdicts_and_timeouts() -> None:
    table = SessionTable(media_timeout=10.0, hold_timeout=100.0)
    leg = table.new_leg("c", "a", 30000, "owner", 0.0)
    table.update_leg(leg, {"remote": ["203.0.113.5", 4000], "source_ip": "198.51.100.9"}, 0.0)
    assert leg.accept(("203.0.113.5", 4000), False, 0) == LATCH
    assert leg.accept(("203.0.113.5", 9999), False, 0) == LATCH  # NAT may rewrite the port
    assert leg.accept(("198.51.100.9", 1), False, 0) == LATCH  # the signalling source
    assert leg.accept(("192.0.2.1", 4000), False, 0) == DROP
    assert leg.accept(("203.0.113.5", 4001), True, 0) == LATCH  # RTCP on port + 1
    leg.latch(("203.0.113.5", 4000), False)
    assert leg.accept(("203.0.113.5", 4000), False, 0) == KEEP
    assert leg.accept(("203.0.113.5", 4002), False, 0) == DROP
    # Moving: unlatched, the old address refused during the grace period only.
    table.update_leg(leg, {"remote": ["203.0.113.5", 5000]}, 1.0)
    assert leg.latched is None and leg.rtp_target() == ("203.0.113.5", 5000)
    assert leg.accept(("203.0.113.5", 4000), False, 2.0) == DROP
    assert leg.accept(("203.0.113.5", 4000), False, 4.0) == LATCH
    with pytest.raises(SessionError):
        table.update_leg(leg, {"remote": "x"}, 0)
    assert leg.rtp_target() == ("203.0.113.5", 5000)  # a refused command changed nothing
    # Timeouts: media expected, then none expected (hold), with the longer hold_timeout.
    assert table.tick(5.0) == []
    assert table.tick(11.5) == [("owner", MediaTimeout("c", 10.5))]
    assert table.tick(12.0) == []  # once
    leg.rx_packets += 1
    assert table.tick(13.0) == [] and table.tick(22.9) == []
    assert [e for _, e in table.tick(23.1)] == [MediaTimeout("c", 10.1)]
    table.update_leg(leg, {"direction": "inactive"}, 30.0)
    assert table.tick(50.0) == [] and [e for _, e in table.tick(130.5)] == [
        MediaTimeout("c", 100.5)
    ]


def test_ports_and_settings() -> None:
    pool = PortPool(30001, 30006)
    assert [pool.take(), pool.take()] == [30002, 30004]
    with pytest.raises(PortsExhausted):
        pool.take()
    pool.release(30002)
    pool.unusable(30004)
    assert pool.take() == 30002
    pool.retry_unusable()
    assert pool.take() == 30004
    assert resolve_mode("relay", None, False) == "relay"
    assert resolve_mode("relay", "rtpengine", False) == "rtpengine"
    assert resolve_mode(None, None, True) == "relay"  # a recorded call is anchored
    s = MediaSettings(relays=[RelayProcessSettings(control="/run/r.sock", ports="30000-30999")])
    assert relay_argv(s, 0)[2:6] == ["media.relay", "--control", "/run/r.sock", "--address"]
    with pytest.raises(ValueError):
        MediaSettings(relays=[{"control": "x", "ports": "9-1"}])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        MediaSettings(mode="tunnel")  # type: ignore[arg-type]


def test_rtcp_sink_setting_and_socket() -> None:
    from media.rtcp_sink import RtcpSink
    from media.settings import RtpengineSettings

    assert RtpengineSettings().sink_address() == ("127.0.0.1", 0)
    assert RtpengineSettings(rtcp_sink="[::1]:4000").sink_address() == ("::1", 4000)
    for bad in ("127.0.0.1", "localhost:4000", "0.0.0.0:4000", "[::]:1", "127.0.0.1:70000"):
        with pytest.raises(ValueError):
            RtpengineSettings(rtcp_sink=bad)
    sink = RtcpSink("127.0.0.1")
    try:
        assert sink.port > 0
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            for _ in range(200):  # the kernel drops what the small buffer cannot hold
                out.sendto(b"\x81\xcb\x00\x01" + bytes(4), ("127.0.0.1", sink.port))
    finally:
        sink.close()
