"""The rtpengine driver: its codecs without sockets, and a real rtpengine daemon (userspace)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from media import bencode
from media.client import RelayClient
from media.events import RecordingClosed
from media.g711 import decode
from media.recording import RecordingReader
from media.render import render_wav
from media.rtp import build_rtp
from media.rtpengine import NgControl, RtpengineClient, RtpengineError, RtpengineTimeout
from media.rtpengine_tap import parse_tap_offer, start_recording_tap, stop_recording_tap, tap_answer
from tests.media_helpers import (
    EventLog,
    Party,
    RtpengineProcess,
    make_keys,
    relay_process,
    rtpengine_process,
    run_async,
    tone_power,
    ulaw_tone,
)


def test_bencode_round_trip_and_refusals() -> None:
    value = {
        "command": "offer",
        "flags": ["trust-address", "no-rtcp-attribute"],
        "n": -42,
        "sdp": "v=0\r\n",
        "nested": {"list": [1, "x", {"k": ""}]},
    }
    data = bencode.encode(value)
    assert data.startswith(b"d7:command5:offer") and bencode.decode(data) == value
    assert bencode.encode({"b": 1, "a": 2}) == b"d1:ai2e1:bi1ee"  # sorted keys
    for bad in (b"", b"i12", b"l", b"d3:key", b"5:abc", b"x", b"di1ei2ee", b"i1ei2e", b"ixe"):
        with pytest.raises(bencode.BencodeError):
            bencode.decode(bad)
    with pytest.raises(TypeError):
        bencode.encode(True)


def test_ng_control_cookies_retries_and_timeouts() -> None:
    ng = NgControl(retry_s=0.5, attempts=3)
    cookie, data = ng.request("ping", 10.0, {})
    assert data == cookie.encode() + b" d7:command4:pinge"
    assert ng.next_deadline() == 10.5
    assert ng.handle_timeout(10.4) == ([], [])
    assert ng.handle_timeout(10.5) == ([data], [])  # same cookie: rtpengine answers from its cache
    assert ng.next_deadline() == 11.5
    assert ng.handle_timeout(11.5) == ([data], [])
    assert ng.handle_timeout(13.5) == ([], [cookie])
    cookie2, _ = ng.request("query", 20.0, {"call-id": "c"})
    assert ng.receive(b"unknown_1 d6:result2:oke") is None
    reply = ng.receive(cookie2.encode() + b" d6:result2:oke")
    assert reply is not None and reply.result == {"result": "ok"}
    assert ng.receive(cookie2.encode() + b" d6:result2:oke") is None  # a late repeat
    assert ng.next_deadline() is None


SUB_OFFER = (
    "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=rtpengine\r\nt=0 0\r\n"
    "m=audio 23026 RTP/AVP 0 101\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:0 PCMU/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=sendonly\r\na=rtcp:23027\r\n"
    "m=audio 23046 RTP/AVP 8\r\nc=IN IP4 127.0.0.5\r\na=mid:1\r\na=sendonly\r\n"
)


def test_tap_offer_parsed_and_answered() -> None:
    a, b = parse_tap_offer(SUB_OFFER)
    assert (a.address, a.port, a.formats, a.rtcp_port) == ("127.0.0.1", 23026, [0, 101], 23027)
    assert a.rtpmap == {0: "PCMU/8000", 101: "telephone-event/8000"}
    assert (b.address, b.port, b.formats, b.mid) == ("127.0.0.5", 23046, [8], "1")
    answer = tap_answer([a, b], "127.0.0.1", [30000, 30002])
    assert "m=audio 30000 RTP/AVP 0 101\r\n" in answer and "m=audio 30002 RTP/AVP 8\r\n" in answer
    assert answer.count("a=recvonly") == 2 and "a=mid:1" in answer and "a=rtcp:30001" in answer


def offer_sdp(ip: str, port: int, session: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    )


def media_port(sdp: str) -> tuple[str, int]:
    ip = re.search(r"c=IN IP4 (\S+)", sdp)
    port = re.search(r"m=audio (\d+) ", sdp)
    assert ip and port
    return ip.group(1), int(port.group(1))


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RtpengineProcess]:
    if shutil.which("rtpengine") is None:
        pytest.skip("rtpengine not installed (bash .ci/setup --test installs it)")
    folder = tmp_path / "rtpengine"
    folder.mkdir()
    with rtpengine_process(folder) as proc:
        yield proc


async def setup_call(
    ng: RtpengineClient, call: str, a: Party, b: Party
) -> tuple[tuple[str, int], tuple[str, int]]:
    """Offer from A, answer from B; return where A and B must send."""
    offered = await ng.offer(
        call, "tag-a", offer_sdp(*a.address, 1), options={"ICE": "remove", "replace": ["origin"]}
    )
    answered = await ng.answer(
        call,
        "tag-a",
        "tag-b",
        offer_sdp(*b.address, 2),
        options={"ICE": "remove", "replace": ["origin"]},
    )
    for sdp in (offered["sdp"], answered["sdp"]):
        assert "127.0.0.2" not in sdp and "127.0.0.3" not in sdp  # c=, m= and o= are rtpengine's
    return media_port(answered["sdp"]), media_port(offered["sdp"])


def test_offer_answer_media_query_delete_against_the_daemon(daemon: RtpengineProcess) -> None:
    a, b = Party("127.0.0.2"), Party("127.0.0.3")

    async def scenario() -> None:
        ng = await RtpengineClient("127.0.0.1", daemon.ng_port).open()
        try:
            assert await ng.ping()
            to_rtpe_a, to_rtpe_b = await setup_call(ng, "call-1", a, b)
            sent = [a.rtp(bytes([i]) * 160) for i in range(10)]
            for p in sent:
                a.send(p, to_rtpe_a)
                await asyncio.sleep(0.01)
            got = b.recv_all(0.5)
            assert [d[12:] for d, _ in got] == [p[12:] for p in sent]
            assert {addr for _, addr in got} == {to_rtpe_b}
            for i in range(10):
                b.send(b.rtp(bytes([50 + i]) * 160), to_rtpe_b)
                await asyncio.sleep(0.01)
            assert len(a.recv_all(0.5)) == 10
            query = await ng.query("call-1")
            assert set(query["tags"]) == {"tag-a", "tag-b"}
            await ng.delete("call-1")
            with pytest.raises(RtpengineError, match=r"[Uu]nknown call"):
                await ng.query("call-1")
        finally:
            ng.close()

    try:
        run_async(scenario)
    finally:
        a.close()
        b.close()


def test_timeout_when_nothing_answers() -> None:
    async def scenario() -> None:
        from tests.conftest import free_port

        ng = await RtpengineClient("127.0.0.1", free_port(), retry_s=0.05, attempts=3).open()
        try:
            with pytest.raises(RtpengineTimeout):
                await ng.ping()
        finally:
            ng.close()

    run_async(scenario)


def scan(folders: list[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                content = (Path(root) / name).read_bytes()
                hits.extend(f"{root}/{name}" for needle in needles if needle in content)
    return hits


def test_recording_through_rtpengine_media_copy(tmp_path: Path, daemon: RtpengineProcess) -> None:
    pub, _, private = make_keys(tmp_path)
    recordings = tmp_path / "recordings"
    relay_tmp = tmp_path / "relay-tmp"
    relay_tmp.mkdir()
    a, b = Party("127.0.0.2"), Party("127.0.0.3")
    events = EventLog()
    tone_a = [ulaw_tone(440, 160, 160 * i) for i in range(100)]
    tone_b = [ulaw_tone(1000, 160, 160 * i) for i in range(100)]
    needles = [
        tone_a[10][:32],
        tone_b[10][:32],
        bytes(decode("PCMU", tone_a[10]))[:32],
        bytes(decode("PCMU", tone_b[10]))[:32],
    ]
    watched = [recordings, relay_tmp, daemon.folder]
    hits: list[str] = []

    with relay_process(
        tmp_path,
        "--recordings",
        str(recordings),
        "--recording-key",
        str(pub),
        env={"TMPDIR": str(relay_tmp)},
    ) as relay:

        async def scenario() -> str:
            ng = await RtpengineClient("127.0.0.1", daemon.ng_port).open()
            client = await RelayClient.connect(relay.control, events)
            try:
                to_rtpe_a, to_rtpe_b = await setup_call(ng, "call-rec", a, b)
                tap = await start_recording_tap(
                    ng, client, "call-rec", ["tag-a", "tag-b"], meta={"binding": "x"}
                )
                for i in range(100):
                    a.send(build_rtp(0, 10 + i, 160 * i, a.ssrc, tone_a[i]), to_rtpe_a)
                    b.send(build_rtp(0, 900 + i, 7000 + 160 * i, b.ssrc, tone_b[i]), to_rtpe_b)
                    await asyncio.sleep(0.02)
                    if i % 40 == 20:
                        hits.extend(scan(watched, needles))
                # The parties still hear each other through rtpengine.
                assert len(b.recv_all(0.3)) == 100 and len(a.recv_all(0.3)) == 100
                stats = await stop_recording_tap(ng, client, tap)
                assert stats["tap0"]["rx_packets"] >= 95 and stats["tap1"]["rx_packets"] >= 95
                closed = await events.wait_for(lambda e: isinstance(e, RecordingClosed))
                assert isinstance(closed, RecordingClosed) and closed.error == ""
                await ng.delete("call-rec")
                return tap.path
            finally:
                client.close()
                ng.close()

        path = run_async(scenario)
    a.close()
    b.close()
    assert hits == []
    assert scan(watched, needles) == []
    # rtpengine wrote no recording of its own: its folder holds its log and pid file only.
    assert sorted(p.name for p in daemon.folder.iterdir()) == ["rtpengine.log", "rtpengine.pid"]
    with open(path, "rb") as fp:
        reader = RecordingReader(fp, private)
        records = list(reader.records())
        assert reader.complete
    assert (
        records[0].meta
        and records[0].meta["call"] == "call-rec"
        and records[0].meta["binding"] == "x"
    )
    out = io.BytesIO()
    render_wav(records, out)
    out.seek(0)
    with wave.open(out) as w:
        frames = w.readframes(w.getnframes())
        assert w.getnframes() == pytest.approx(2 * 8000, rel=0.15)
    left = b"".join(frames[i : i + 2] for i in range(0, len(frames), 4))
    right = b"".join(frames[i + 2 : i + 4] for i in range(0, len(frames), 4))
    assert tone_power(left, 440) > 100 * tone_power(left, 1000)
    assert tone_power(right, 1000) > 100 * tone_power(right, 440)


def rtcp_sdp(ip: str, port: int, rtcp: int, session: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=rtcp:{rtcp}\r\na=sendrecv\r\n"
    )


@pytest.mark.parametrize("privacy", [True, False])
def test_rtcp_sdes_through_rtpengine(daemon: RtpengineProcess, privacy: bool) -> None:
    """With the driver's privacy options rtpengine sends its own RTCP; without, the
    party's SDES (real number, private address) reaches the other party unchanged."""
    from tests.test_media_relay import rtcp_compound

    a, b = Party("127.0.0.2"), Party("127.0.0.3")

    async def scenario() -> bytes:
        ng = await RtpengineClient("127.0.0.1", daemon.ng_port).open()
        try:
            offered = await ng.offer(
                "call-rtcp", "ta", rtcp_sdp(*a.address, a.rtcp_address[1], 1), privacy=privacy
            )
            answered = await ng.answer(
                "call-rtcp", "ta", "tb", rtcp_sdp(*b.address, b.rtcp_address[1], 2), privacy=privacy
            )
            to_a = media_port(answered["sdp"])
            to_b = media_port(offered["sdp"])
            rtcp_a = int(re.search(r"a=rtcp:(\d+)", answered["sdp"]).group(1))  # type: ignore[union-attr]
            # rtpengine sends its own reports every few seconds: go on until B has RTCP.
            got: list[bytes] = []
            b.rtcp.settimeout(0.001)
            for i in range(750):
                a.send(a.rtp(), to_a)
                b.send(b.rtp(), to_b)
                if i % 50 == 0:
                    a.rtcp.sendto(rtcp_compound(a.ssrc, b"+821012345678"), ("127.0.0.1", rtcp_a))
                with contextlib.suppress(TimeoutError):
                    got.append(b.rtcp.recv(65536))
                if got and i % 50 == 49:
                    break
                await asyncio.sleep(0.02)
            b.rtcp.settimeout(0.05)
            got += [data for data, _ in b.recv_all(0.3, sock=b.rtcp)]
            await ng.delete("call-rtcp")
            assert got, "no RTCP reached B"
            return b"".join(got)
        finally:
            ng.close()

    try:
        blob = run_async(scenario)
    finally:
        a.close()
        b.close()
    leaked = b"821012345678" in blob or b"192.168.1.10" in blob or b"Kim" in blob
    assert leaked is not privacy
