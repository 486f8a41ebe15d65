"""Encrypted recordings: the file format, and a recorded call through the relay and the CLI."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest

from media.client import RelayClient
from media.events import RecordingClosed
from media.recording import (
    CorruptRecording,
    RecordingReader,
    RecordingWriter,
    TruncatedRecording,
    WrongKey,
    read_header,
)
from media.recordings import iter_recordings, purge_recordings
from media.render import render_wav
from media.rtp import build_rtp
from tests.media_helpers import (
    ROOT,
    EventLog,
    Party,
    make_keys,
    relay_process,
    run_async,
    tone_power,
    ulaw_tone,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
def other_keys(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    return make_keys(tmp_path_factory.mktemp("other-keys"))


def tone_packets(freq: float, count: int, ssrc: int, pt: int = 0) -> list[bytes]:
    return [
        build_rtp(pt, 100 + i, 160 * i, ssrc, ulaw_tone(freq, 160, 160 * i)) for i in range(count)
    ]


def small_recording(public_key, chunks: int = 3) -> bytes:  # type: ignore[no-untyped-def]
    writer = RecordingWriter(public_key, "rec-1", 1_700_000_000.0, {"call": "call-1"})
    out = bytearray(writer.header())
    left = tone_packets(440, 50 * chunks, 1)
    right = tone_packets(1000, 50 * chunks, 2)
    for i in range(50 * chunks):
        writer.add_rtp(0, 20 * i, left[i])
        writer.add_rtp(1, 20 * i + 3, right[i])
        if i % 50 == 49:
            out += writer.take_chunk() or b""
    out += writer.finish()
    return bytes(out)


def test_round_trip_to_stereo_wav_with_both_directions(keys) -> None:  # type: ignore[no-untyped-def]
    _pub, _, private = keys
    data = small_recording(private.public_key())
    reader = RecordingReader(io.BytesIO(data), private)
    records = list(reader.records())
    assert reader.complete and reader.chunks == 4
    assert records[0].meta == {"call": "call-1"}
    assert len(records) == 1 + 300
    wav_bytes = io.BytesIO()
    report = render_wav(records, wav_bytes)
    assert report.seconds == pytest.approx(3.0, abs=0.05)
    wav_bytes.seek(0)
    with wave.open(wav_bytes) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        frames = w.readframes(w.getnframes())
    left = b"".join(frames[i : i + 2] for i in range(0, len(frames), 4))
    right = b"".join(frames[i + 2 : i + 4] for i in range(0, len(frames), 4))
    assert tone_power(left, 440) > 100 * tone_power(left, 1000)
    assert tone_power(right, 1000) > 100 * tone_power(right, 440)


def test_wrong_key_fails_loudly(keys, other_keys) -> None:  # type: ignore[no-untyped-def]
    data = small_recording(keys[2].public_key())
    with pytest.raises(WrongKey):
        RecordingReader(io.BytesIO(data), other_keys[2])


def test_every_changed_byte_is_detected(keys) -> None:  # type: ignore[no-untyped-def]
    private = keys[2]
    data = small_recording(private.public_key(), chunks=1)
    header_end = read_header(io.BytesIO(data)).data_offset
    # Every byte of a short recording, header included; each change must fail, never decrypt.
    positions = [
        *list(range(0, len(data), max(1, len(data) // 400))),
        8,
        header_end - 1,
        header_end,
        len(data) - 1,
    ]
    for pos in positions:
        changed = bytearray(data)
        changed[pos] ^= 0x01
        with pytest.raises((CorruptRecording, TruncatedRecording, WrongKey, Exception)) as info:
            list(RecordingReader(io.BytesIO(bytes(changed)), private).records())
        assert info.type.__module__ == "media.recording", (pos, info.value)


def test_truncated_and_reordered_files_are_detected(keys) -> None:  # type: ignore[no-untyped-def]
    private = keys[2]
    data = small_recording(private.public_key(), chunks=3)
    header = read_header(io.BytesIO(data))
    # Find chunk boundaries.
    bounds = [header.data_offset]
    while bounds[-1] < len(data):
        (length,) = struct.unpack_from(">I", data, bounds[-1])
        bounds.append(bounds[-1] + 4 + length)
    assert bounds[-1] == len(data) and len(bounds) == 5
    # Cut at a chunk boundary (a crash between chunks): what is there decrypts, then truncated.
    reader = RecordingReader(io.BytesIO(data[: bounds[3]]), private)
    got = []
    with pytest.raises(TruncatedRecording):
        for rec in reader.records():
            got.append(rec)
    assert len(got) == 1 + 300 and not reader.complete
    # Cut anywhere else.
    for cut in (bounds[1] + 2, bounds[2] - 1, len(data) - 1, header.data_offset + 3):
        with pytest.raises(TruncatedRecording):
            list(RecordingReader(io.BytesIO(data[:cut]), private).records())
    # Chunks swapped, dropped or repeated.
    c = [data[bounds[i] : bounds[i + 1]] for i in range(4)]
    head = data[: bounds[0]]
    for body in (c[1] + c[0] + c[2] + c[3], c[0] + c[2] + c[3], c[0] + c[1] + c[1] + c[2] + c[3]):
        with pytest.raises(CorruptRecording):
            list(RecordingReader(io.BytesIO(head + body), private).records())
    # Bytes appended after the end marker.
    with pytest.raises(CorruptRecording):
        list(RecordingReader(io.BytesIO(data + b"\x00"), private).records())


def scan(folders: list[Path], needles: list[bytes]) -> list[str]:
    hits = []
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = Path(root) / name
                try:
                    content = path.read_bytes()
                except OSError:
                    continue
                for needle in needles:
                    if needle in content:
                        hits.append(f"{path}: {needle[:8].hex()}")
    return hits


def test_recorded_call_through_the_relay_and_the_cli(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    pub, priv, _private = keys
    recordings = tmp_path / "recordings"
    relay_tmp = tmp_path / "relay-tmp"
    relay_tmp.mkdir()
    audit_log = tmp_path / "audit.log"
    a, b = Party("127.0.0.2"), Party("127.0.0.3")
    events = EventLog()
    tone_a = [ulaw_tone(440, 160, 160 * i) for i in range(150)]
    tone_b = [ulaw_tone(1000, 160, 160 * i) for i in range(150)]
    # What must never be on disk in the clear: the G.711 payloads and their PCM.
    from media.g711 import decode

    needles = [
        tone_a[10][:32],
        tone_b[10][:32],
        bytes(decode("PCMU", tone_a[10]))[:32],
        bytes(decode("PCMU", tone_b[10]))[:32],
    ]
    scans: list[str] = []

    with relay_process(
        tmp_path,
        "--recordings",
        str(recordings),
        "--recording-key",
        str(pub),
        env={"TMPDIR": str(relay_tmp)},
    ) as relay:

        async def scenario() -> str:
            client = await RelayClient.connect(relay.control, events)
            try:
                la = await client.leg(
                    "rec-call",
                    "a",
                    remote=a.address,
                    peer="b",
                    channel=0,
                    codecs={0: "PCMU/8000", 101: "telephone-event/8000"},
                )
                lb = await client.leg(
                    "rec-call", "b", remote=b.address, peer="a", channel=1, codecs={0: "PCMU/8000"}
                )
                info = await client.record("rec-call", meta={"binding": "trip-0001"})
                assert (await client.record("rec-call"))["recording"] == info[
                    "recording"
                ]  # idempotent
                for i in range(150):
                    a.send(build_rtp(0, 10 + i, 160 * i, a.ssrc, tone_a[i]), (la.address, la.port))
                    b.send(
                        build_rtp(0, 500 + i, 9000 + 160 * i, b.ssrc, tone_b[i]),
                        (lb.address, lb.port),
                    )
                    await asyncio.sleep(0.02)
                    if i % 50 == 25:
                        scans.extend(scan([recordings, relay_tmp], needles))
                assert len(b.recv_all(0.2)) == 150 and len(a.recv_all(0.2)) == 150
                scans.extend(scan([recordings, relay_tmp], needles))
                await client.delete("rec-call")
                closed = await events.wait_for(lambda e: isinstance(e, RecordingClosed))
                assert (
                    isinstance(closed, RecordingClosed)
                    and closed.error == ""
                    and closed.packets == 300
                )
                return str(info["recording"])
            finally:
                client.close()

        recording_id = run_async(scenario)
    a.close()
    b.close()
    assert scans == []
    files = list(recordings.iterdir())
    assert [f.name for f in files] == [f"{recording_id}.rec"]
    assert (files[0].stat().st_mode & 0o777) == 0o600 and (
        recordings.stat().st_mode & 0o777
    ) == 0o700

    ansim = [sys.executable, "-m", "b2bua.cli", "recordings"]
    out = tmp_path / "call.wav"
    # --reason is required.
    r = subprocess.run(
        [
            *ansim,
            "decrypt",
            recording_id,
            "--dir",
            str(recordings),
            "--key",
            str(priv),
            "--out",
            str(out),
            "--audit",
            str(audit_log),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode != 0 and "--reason" in r.stderr and not out.exists()
    r = subprocess.run(
        [
            *ansim,
            "decrypt",
            recording_id,
            "--dir",
            str(recordings),
            "--key",
            str(priv),
            "--out",
            str(out),
            "--audit",
            str(audit_log),
            "--reason",
            "complaint 4711",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    with wave.open(str(out)) as w:
        assert w.getnchannels() == 2 and w.getframerate() == 8000
        frames = w.readframes(w.getnframes())
        assert w.getnframes() == pytest.approx(3 * 8000, rel=0.1)
    left = b"".join(frames[i : i + 2] for i in range(0, len(frames), 4))
    right = b"".join(frames[i + 2 : i + 4] for i in range(0, len(frames), 4))
    assert tone_power(left, 440) > 100 * tone_power(left, 1000)
    assert tone_power(right, 1000) > 100 * tone_power(right, 440)
    lines = [json.loads(line) for line in audit_log.read_text().splitlines()]
    assert lines[0]["recording"] == recording_id and lines[0]["call"] == "rec-call"
    assert lines[0]["reason"] == "complaint 4711" and lines[0]["user"] and "time" in lines[0]
    assert lines[-1]["result"] == "ok"
    # list: without the key the clear header only; with it, the call and its state.
    r = subprocess.run(
        [*ansim, "list", "--dir", str(recordings), "--key", str(priv)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert (
        r.returncode == 0
        and recording_id in r.stdout
        and "call rec-call" in r.stdout
        and "complete" in r.stdout
    )
    # A wrong key fails loudly and writes nothing.
    _, other_priv, _ = make_keys(tmp_path)
    out2 = tmp_path / "wrong.wav"
    r = subprocess.run(
        [
            *ansim,
            "decrypt",
            recording_id,
            "--dir",
            str(recordings),
            "--key",
            str(other_priv),
            "--out",
            str(out2),
            "--audit",
            str(audit_log),
            "--reason",
            "test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "another key" in r.stderr and not out2.exists()
    assert json.loads(audit_log.read_text().splitlines()[-1])["result"].startswith("failed")
    # One changed byte fails loudly.
    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0x40
    files[0].write_bytes(bytes(data))
    r = subprocess.run(
        [
            *ansim,
            "decrypt",
            recording_id,
            "--dir",
            str(recordings),
            "--key",
            str(priv),
            "--out",
            str(out2),
            "--audit",
            str(audit_log),
            "--reason",
            "test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "authentication" in r.stderr and not out2.exists()
    # A truncated file is detected; --allow-truncated writes what was sealed, still exit 1.
    data[len(data) // 2] ^= 0x40
    files[0].write_bytes(bytes(data[: len(data) - 10]))
    r = subprocess.run(
        [
            *ansim,
            "decrypt",
            recording_id,
            "--dir",
            str(recordings),
            "--key",
            str(priv),
            "--out",
            str(out2),
            "--audit",
            str(audit_log),
            "--reason",
            "test",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "cut" in r.stderr and not out2.exists()
    r = subprocess.run(
        [
            *ansim,
            "decrypt",
            recording_id,
            "--dir",
            str(recordings),
            "--key",
            str(priv),
            "--out",
            str(out2),
            "--audit",
            str(audit_log),
            "--reason",
            "test",
            "--allow-truncated",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "truncated" in r.stderr and out2.exists()


def test_retention_deletes_only_recordings_past_the_age(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    private = keys[2]
    now = time.time()
    for name, age_days in (("old", 40), ("recent", 5), ("today", 0)):
        writer = RecordingWriter(private.public_key(), name, now - age_days * 86400, {"call": name})
        (tmp_path / f"{name}.rec").write_bytes(writer.header() + writer.finish())
    (tmp_path / "cut.rec").write_bytes(b"ANSIM")  # no header: judged by mtime
    os.utime(tmp_path / "cut.rec", (now - 50 * 86400, now - 50 * 86400))
    (tmp_path / "notes.txt").write_text("not a recording")
    removed = purge_recordings(tmp_path, 30 * 86400, now)
    assert sorted(e.recording_id for e in removed) == ["cut", "old"]
    assert sorted(e.recording_id for e in iter_recordings(tmp_path)) == ["recent", "today"]
    assert (tmp_path / "notes.txt").exists()
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "b2bua.cli",
            "recordings",
            "purge",
            "--dir",
            str(tmp_path),
            "--max-age-days",
            "1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0 and "deleted recent" in r.stdout
    assert [e.recording_id for e in iter_recordings(tmp_path)] == ["today"]


def test_keygen_passphrase_and_openssl_keys_decrypt(tmp_path: Path) -> None:
    env = {**os.environ, "ANSIM_RECORDING_KEY_PASSPHRASE": "correct horse"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "b2bua.cli",
            "recordings",
            "keygen",
            "--out",
            str(tmp_path / "k"),
            "--bits",
            "2048",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    pairs = [(tmp_path / "k" / "recording-pub.pem", tmp_path / "k" / "recording-key.pem")]
    assert (
        b"ENCRYPTED" in pairs[0][1].read_bytes() and (pairs[0][1].stat().st_mode & 0o777) == 0o600
    )
    if shutil.which("openssl"):
        o = tmp_path / "o"
        o.mkdir()
        subprocess.run(
            [
                "openssl",
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-aes256",
                "-pass",
                "pass:correct horse",
                "-out",
                str(o / "key.pem"),
            ],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                "openssl",
                "pkey",
                "-in",
                str(o / "key.pem"),
                "-passin",
                "pass:correct horse",
                "-pubout",
                "-out",
                str(o / "pub.pem"),
            ],
            check=True,
            capture_output=True,
        )
        pairs.append((o / "pub.pem", o / "key.pem"))
    from media.recording import load_public_key

    for n, (pub, priv) in enumerate(pairs):
        folder = tmp_path / f"rec{n}"
        folder.mkdir()
        writer = RecordingWriter(
            load_public_key(pub.read_bytes()), "r1", time.time(), {"call": "c"}
        )
        packets = tone_packets(440, 50, 1)
        for i, p in enumerate(packets):
            writer.add_rtp(0, 20 * i, p)
        (folder / "r1.rec").write_bytes(
            writer.header() + (writer.take_chunk() or b"") + writer.finish()
        )
        args = [
            sys.executable,
            "-m",
            "b2bua.cli",
            "recordings",
            "decrypt",
            "r1",
            "--dir",
            str(folder),
            "--key",
            str(priv),
            "--reason",
            "test",
            "--out",
            str(folder / "out.wav"),
            "--audit",
            str(folder / "audit"),
        ]
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        with wave.open(str(folder / "out.wav")) as w:
            assert w.getnframes() == 8000
        bad = {**env, "ANSIM_RECORDING_KEY_PASSPHRASE": "wrong"}
        r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=bad)
        assert r.returncode != 0 and "cannot load the private key" in r.stderr
