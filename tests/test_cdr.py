"""The CDR file: schema versions and the migration of a file as first shipped, who may
read it, the crash journal (a real child process killed with SIGKILL, torn writes, locked
segments, rotation), and the `ansim cdr` exports."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT

from b2bua import cdr
from b2bua.cdr import (
    COLUMNS,
    SCHEMA_VERSION,
    CallRecord,
    CdrSchemaError,
    CdrWriter,
    connect,
    journal_segments,
    read_segment,
    replay,
)
from b2bua.cli import main as cli_main
from translate.history import Attribution

# The calls table exactly as the first release created it (no user_version).
V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY,
    a_call_id TEXT NOT NULL,
    b_call_id TEXT,
    virtual TEXT,
    caller TEXT,
    callee TEXT,
    binding_id TEXT,
    invite_at REAL NOT NULL,
    ring_at REAL,
    answer_at REAL,
    end_at REAL,
    duration REAL,
    status INTEGER NOT NULL,
    ended_by TEXT,
    trunk TEXT,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS calls_invite_at ON calls (invite_at);
"""
T0 = 1_790_000_000.0  # 2026-09-21T14:13:20Z


def record(n: int, **extra: Any) -> CallRecord:
    fields: dict[str, Any] = {
        "a_call_id": f"call-{n}@carrier",
        "b_call_id": f"b-{n}@ansim",
        "call_type": "bridge",
        "binding_kind": "axb",
        "direction": "A->B",
        "virtual": "+825070002001",
        "caller": "+821000002001",
        "callee": "+821000002002",
        "presented": "+825070002001",
        "binding_id": "trip-1",
        "in_trunk": "carrier-a",
        "src_transport": "udp",
        "src_ip": "203.0.113.7",
        "src_port": 5060,
        "trunk": "carrier-b",
        "invite_at": T0 + n,
        "ring_at": T0 + n + 0.25,
        "answer_at": T0 + n + 1.5,
        "end_at": T0 + n + 61.5,
        "ring_ms": 250,
        "setup_ms": 1500,
        "duration_ms": 60000,
        "status": 200,
        "q850_cause": 16,
        "ended_by": "caller",
        "reason": None,
    }
    fields.update(extra)
    return CallRecord(**fields)


def rows(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY id")]
    finally:
        db.close()


def user_version(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute("PRAGMA user_version").fetchone()[0])
    finally:
        db.close()


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# -- schema -------------------------------------------------------------------------------


def make_v1(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript(V1_SCHEMA)
    db.executemany(
        "INSERT INTO calls (a_call_id, b_call_id, virtual, caller, callee, binding_id,"
        " invite_at, ring_at, answer_at, end_at, duration, status, ended_by, trunk, reason)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        [
            # answered, 42.1234 s long
            ("a1@c", "b1@ansim", "+825070001001", "+821011110001", "+821022220001", "ax:1",
             T0, T0 + 0.5, T0 + 2.25, T0 + 44.3734, 42.1234, 200, "caller", "t1", None),
            # busy: rang, never answered
            ("a2@c", "b2@ansim", "+825070001001", "+821011110002", "+821022220001", "ax:1",
             T0 + 10, T0 + 10.125, None, T0 + 11, None, 486, "callee", "t1", "b_486"),
            # refused before any B-leg
            ("a3@c", None, "+825070009999", "+821011110003", None, None,
             T0 + 20, None, None, T0 + 20, None, 404, "engine", None, "unknown"),
        ],
    )  # fmt: skip
    db.commit()
    db.close()


def test_migrates_a_file_as_first_shipped(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    make_v1(path)
    before = rows(path)
    assert user_version(path) == 0

    connect(path).close()

    assert user_version(path) == SCHEMA_VERSION
    after = rows(path)
    assert [r["id"] for r in after] == [r["id"] for r in before]
    kept = [c for c in before[0] if c != "duration"]
    assert [{c: r[c] for c in kept} for r in after] == [{c: r[c] for c in kept} for r in before]
    assert set(after[0]) == {"id", *COLUMNS}
    answered, busy, refused = after
    assert (answered["duration_ms"], answered["ring_ms"], answered["setup_ms"]) == (
        42123,
        500,
        2250,
    )
    assert (busy["duration_ms"], busy["ring_ms"], busy["setup_ms"]) == (None, 125, None)
    assert (refused["duration_ms"], refused["ring_ms"], refused["setup_ms"]) == (None, None, None)
    assert {r["call_type"] for r in after} == {"bridge"}  # the only flow there was
    # What the first layout never recorded stays unknown rather than made up.
    for column in ("record_id", "binding_kind", "direction", "presented", "in_trunk",
                   "src_transport", "src_ip", "src_port", "q850_cause"):  # fmt: skip
        assert {r[column] for r in after} == {None}, column
    db = sqlite3.connect(path)
    indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"calls_invite_at", "calls_record_id"} <= indexes
    assert db.execute("SELECT name FROM sqlite_master WHERE name = 'calls_v1'").fetchone() is None
    db.close()

    connect(path).close()  # opening again changes nothing
    assert rows(path) == after


def test_new_records_go_beside_migrated_ones(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    make_v1(path)
    writer = CdrWriter(path)
    writer.add(record(1))
    writer.close()
    got = rows(path)
    assert len(got) == 4
    assert got[-1]["a_call_id"] == "call-1@carrier" and got[-1]["record_id"]
    assert got[-1]["id"] > max(r["id"] for r in got[:-1])


def test_cli_reads_a_file_not_yet_migrated(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    make_v1(path)
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["cdr", "export", "--db", str(path), "--format", "json"]) == 0
    exported = json.loads(out.getvalue())
    assert [r["a_call_id"] for r in exported] == ["a1@c", "a2@c", "a3@c"]
    assert exported[0]["duration_ms"] == 42123
    assert user_version(path) == SCHEMA_VERSION


def test_a_newer_schema_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cdr.sqlite"
    connect(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.commit()
    db.close()
    with pytest.raises(CdrSchemaError, match="newer"):
        connect(path)
    assert cli_main(["cdr", "list", "--db", str(path)]) == 2
    assert "newer" in capsys.readouterr().err


def test_file_shared_with_the_sms_table(tmp_path: Path) -> None:
    """The SMS records may create the file first: the calls table is then created at
    the current version, and the sms table is left alone."""
    path = tmp_path / "cdr.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE sms (id TEXT PRIMARY KEY)")
    db.execute("INSERT INTO sms VALUES ('m1')")
    db.commit()
    db.close()
    assert cdr.query(str(path), None, None) == []  # no calls table yet: nothing to list
    connect(path).close()
    assert user_version(path) == SCHEMA_VERSION
    db = sqlite3.connect(path)
    assert db.execute("SELECT id FROM sms").fetchall() == [("m1",)]
    db.close()


# -- permissions ----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_are_readable_by_the_engine_user_only(tmp_path: Path, umask_022: None) -> None:
    folder = tmp_path / "var" / "cdr"
    path = folder / "cdr.sqlite"
    writer = CdrWriter(path)
    writer.add(record(1))
    writer.flush()
    deadline = time.monotonic() + 10
    while writer.written < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.written == 1
    assert mode(folder) == 0o700
    assert mode(path) == 0o600
    for suffix in ("-wal", "-shm"):
        assert mode(Path(str(path) + suffix)) == 0o600, suffix
    (segment,) = journal_segments(path)
    assert mode(segment) == 0o600
    writer.close()


def test_an_existing_folder_keeps_its_mode(tmp_path: Path, umask_022: None) -> None:
    folder = tmp_path / "var"
    folder.mkdir(mode=0o755)
    connect(folder / "cdr.sqlite").close()
    assert mode(folder) == 0o755
    assert mode(folder / "cdr.sqlite") == 0o600


# -- the journal ----------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    sys.path.insert(0, {tests!r})
    from test_cdr import record
    from b2bua.cdr import CdrWriter

    path, count, commit = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "commit"
    # A batch and delay that never hand anything to the writer thread by themselves.
    writer = CdrWriter(path, batch=10**9, max_delay=10**9, segment_bytes=int(sys.argv[4]))
    for n in range(count):
        writer.add(record(n))
    if commit:
        writer.flush()
        while writer.written < count:
            time.sleep(0.01)
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def killed_writer(path: Path, count: int, *, commit: bool, segment_bytes: int = 1 << 20) -> None:
    """Run a CdrWriter in a child process that adds ``count`` records (and, with
    ``commit``, waits until the thread has committed them) and is then SIGKILLed."""
    script = CHILD.format(tests=str(ROOT / "tests"))
    args = [str(path), str(count), "commit" if commit else "keep", str(segment_bytes)]
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.strip() == "ready", proc.stderr


def test_records_of_a_killed_process_are_replayed(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    killed_writer(path, 200, commit=False)
    assert rows(path) == []  # nothing reached SQLite
    assert len(journal_segments(path)) == 1

    writer = CdrWriter(path)
    assert writer.replayed == 200
    writer.close()
    got = rows(path)
    assert [r["a_call_id"] for r in got] == [f"call-{n}@carrier" for n in range(200)]
    assert got[7] == {"id": got[7]["id"], **{c: getattr(record(7), c) for c in COLUMNS if c != "record_id"}, "record_id": got[7]["record_id"]}  # fmt: skip
    assert journal_segments(path) == []


def test_full_segments_are_replaced_as_records_come(tmp_path: Path) -> None:
    """Segments small enough to fill between two hand-overs: a full one is handed to
    the thread with the records in it, and deleted only once they are committed, so a
    kill loses none of them, whichever segments the thread had deleted by then."""
    path = tmp_path / "cdr.sqlite"
    killed_writer(path, 300, commit=False, segment_bytes=1024)  # about 19 records a segment
    segments = journal_segments(path)
    assert segments and max(int(p.name.rsplit(".", 1)[1]) for p in segments) > 10
    writer = CdrWriter(path)
    writer.close()
    got = rows(path)
    assert sorted(r["a_call_id"] for r in got) == sorted(f"call-{n}@carrier" for n in range(300))
    assert len({r["record_id"] for r in got}) == 300


def test_replay_skips_what_sqlite_already_has(tmp_path: Path) -> None:
    """Killed after the commit but before its journal was deleted: nothing is doubled."""
    path = tmp_path / "cdr.sqlite"
    killed_writer(path, 150, commit=True)
    assert len(rows(path)) == 150
    assert len(journal_segments(path)) == 1
    writer = CdrWriter(path)
    assert writer.replayed == 0
    writer.close()
    got = rows(path)
    assert len(got) == 150
    assert len({r["record_id"] for r in got}) == 150


def test_replay_twice_is_replay_once(tmp_path: Path) -> None:
    """A replay cut short (the segment not yet deleted) and run again inserts nothing twice."""
    path = tmp_path / "cdr.sqlite"
    killed_writer(path, 50, commit=False)
    (segment,) = journal_segments(path)
    copy = segment.read_bytes()
    db = connect(path)
    assert replay(db, [segment]) == (50, 50)
    segment.write_bytes(copy)  # as if the process died before unlinking it
    assert replay(db, [segment]) == (50, 0)
    db.close()
    assert len(rows(path)) == 50


def test_torn_and_corrupt_tails(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    killed_writer(path, 10, commit=False)
    (segment,) = journal_segments(path)
    data = segment.read_bytes()
    columns, full = read_segment(data)
    assert columns == COLUMNS and len(full) == 10
    ends = frame_ends(data)  # the header's frame, then one per record
    assert len(ends) == 11
    assert data[ends[-1] :].strip(b"\0") == b""  # allocated, not written yet
    cut = bytearray(data)
    cut[ends[-1] - 3 : ends[-1]] = b"\0\0\0"  # the last copy cut short by the kill
    assert len(read_segment(bytes(cut))[1]) == 9
    flipped = bytearray(data)
    flipped[ends[8] - 10] ^= 0xFF  # a byte of the eighth record
    assert len(read_segment(bytes(flipped))[1]) == 7  # stops before the bad one
    assert read_segment(b"") == ([], [])
    assert read_segment(b"not a journal")[1] == []
    assert read_segment(cdr.JOURNAL_MAGIC)[1] == []  # created, header not yet written

    segment.write_bytes(bytes(cut))
    writer = CdrWriter(path)
    assert writer.replayed == 9
    writer.close()


def frame_ends(data: bytes) -> list[int]:
    """Where each frame of a journal segment ends."""
    pos = len(cdr.JOURNAL_MAGIC)
    ends = []
    while True:
        n, _ = cdr._FRAME.unpack_from(data, pos)
        if n == 0:
            return ends
        pos += cdr._FRAME.size + n
        ends.append(pos)


def test_a_live_engines_segment_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    killed_writer(path, 5, commit=False)
    (segment,) = journal_segments(path)
    fd = os.open(segment, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as the process writing it holds it
    try:
        db = connect(path)
        assert replay(db, [segment]) == (0, 0)
        db.close()
        assert segment.exists()
    finally:
        os.close(fd)
    db = connect(path)
    assert replay(db, [segment]) == (5, 5)
    db.close()


def test_replay_maps_columns_by_name(tmp_path: Path) -> None:
    """A journal written by another version (other columns, another order) replays what
    the table has and skips the rest."""
    import msgpack

    path = tmp_path / "cdr.sqlite"
    connect(path).close()
    columns = ["status", "a_call_id", "record_id", "invite_at", "some_future_column"]
    segment = Path(f"{path}.journal.1.1")
    segment.write_bytes(
        cdr.JOURNAL_MAGIC
        + cdr._frame(msgpack.packb(columns))
        + cdr._frame(msgpack.packb([486, "x@c", "r-1", T0, "whatever"]))
    )
    db = connect(path)
    assert replay(db, [segment]) == (1, 1)
    db.close()
    (row,) = rows(path)
    assert (row["status"], row["a_call_id"], row["record_id"], row["invite_at"]) == (
        486, "x@c", "r-1", T0,
    )  # fmt: skip


def test_a_record_is_in_the_journal_when_add_returns(tmp_path: Path) -> None:
    """Nothing handed to the thread yet, no flush: the record is in the journal file
    (as any other process reads it) as soon as ``add`` returns."""
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter(path, batch=10**9, max_delay=10**9)
    (segment,) = journal_segments(path)
    assert read_segment(segment.read_bytes())[1] == []
    for n in (1, 2):
        writer.add(record(n))
        got = read_segment(segment.read_bytes())[1]
        assert [r[COLUMNS.index("a_call_id")] for r in got] == [
            f"call-{k}@carrier" for k in range(1, n + 1)
        ]
    assert rows(path) == []
    writer.close()
    assert len(rows(path)) == 2
    assert journal_segments(path) == []


def test_fsync_setting(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter(path, fsync=True)
    writer.add(record(1))
    (segment,) = journal_segments(path)
    assert len(read_segment(segment.read_bytes())[1]) == 1
    writer.close()
    assert len(rows(path)) == 1
    assert journal_segments(path) == []


def test_segments_rotate_and_go_once_committed(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter(path, segment_bytes=4096, batch=20)
    for n in range(400):
        writer.add(record(n))
    writer.flush()
    deadline = time.monotonic() + 10
    while writer.written < 400 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    # Committed segments are gone; the one being written (and at most one retiring) stay.
    assert len(journal_segments(path)) <= 2
    writer.close()
    assert journal_segments(path) == []
    got = rows(path)
    assert len(got) == 400 and len({r["record_id"] for r in got}) == 400


def test_no_room_for_a_journal_does_not_stop_the_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk too full to allocate a segment: logged and counted, records still go to
    SQLite (and nothing is left mapped over a hole that a write could crash on)."""
    import errno

    def full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter(path)
    assert writer.journal_errors == 1
    assert journal_segments(path) == []
    writer.add(record(1))
    writer.close()
    assert len(rows(path)) == 1


# -- exports --------------------------------------------------------------------------------


def export(path: Path, fmt: str, *extra: str) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["cdr", "export", "--db", str(path), "--format", fmt, *extra]) == 0
    return out.getvalue()


def test_exports_show_iso_times_and_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter(path)
    writer.add(record(0, ring_at=None, ring_ms=None))
    writer.add(record(1, answer_at=None, setup_ms=None, duration_ms=None, status=486,
                      q850_cause=17, ended_by="callee", reason="b_486"))  # fmt: skip
    writer.close()

    (first, second) = json.loads(export(path, "json"))
    assert list(first) == COLUMNS
    assert first["invite_at"] == "2026-09-21T14:13:20.000+00:00"
    assert first["answer_at"] == "2026-09-21T14:13:21.500+00:00"
    assert first["end_at"] == "2026-09-21T14:14:21.500+00:00"
    assert first["ring_at"] is None
    assert (first["duration_ms"], first["setup_ms"]) == (60000, 1500)
    assert (first["direction"], first["binding_kind"], first["call_type"]) == (
        "A->B",
        "axb",
        "bridge",
    )
    assert (second["status"], second["q850_cause"], second["answer_at"]) == (486, 17, None)

    table = list(csv.DictReader(io.StringIO(export(path, "csv"))))
    assert [r["a_call_id"] for r in table] == ["call-0@carrier", "call-1@carrier"]
    assert table[1]["ring_at"] == "2026-09-21T14:13:21.250+00:00"
    assert table[0]["duration_ms"] == "60000" and table[1]["duration_ms"] == ""

    since = export(path, "json", "--since", "2026-09-21T14:13:21+00:00")
    assert [r["a_call_id"] for r in json.loads(since)] == ["call-1@carrier"]
    until = export(path, "json", "--until", str(T0 + 1))
    assert [r["a_call_id"] for r in json.loads(until)] == ["call-0@carrier"]

    out = io.StringIO()
    with redirect_stdout(out):
        assert cli_main(["cdr", "list", "--db", str(path)]) == 0
    lines = out.getvalue().splitlines()
    assert lines[1].startswith("2026-09-21T14:13:20.000+00:00")
    assert " 60.000 " in lines[1] and "A->B" in lines[1] and " 17 " in lines[2]
    assert lines[-1] == "2 call(s)"


# -- owners and the webhook outbox (schema 3) -------------------------------------------------

# The calls table of schema version 2, as the release before owners wrote it.
V2_COLUMNS = [c for c in COLUMNS if c not in ("tenant", "pool", "out_id")]


def make_v2(path: Path) -> None:
    db = sqlite3.connect(path)
    schema = cdr._CREATE_CALLS
    for column in ("tenant", "pool", "out_id"):
        schema = "\n".join(
            line for line in schema.splitlines() if not line.strip().startswith(column)
        )
    schema = schema.replace("reason TEXT,", "reason TEXT")
    db.execute(schema)
    db.execute("PRAGMA user_version = 2")
    rec = record(1, record_id="old-1")
    db.execute(
        f"INSERT INTO calls ({', '.join(V2_COLUMNS)}) VALUES ({', '.join('?' * len(V2_COLUMNS))})",
        [getattr(rec, c) for c in V2_COLUMNS],
    )
    db.commit()
    db.close()


def test_version_2_gains_the_owner_columns_and_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    make_v2(path)
    connect(path).close()
    assert user_version(path) == SCHEMA_VERSION == 3
    (row,) = rows(path)
    assert row["record_id"] == "old-1" and row["a_call_id"] == "call-1@carrier"
    assert (row["tenant"], row["pool"], row["out_id"]) == (None, None, None)
    db = sqlite3.connect(path)
    columns = [r[1] for r in db.execute("PRAGMA table_info(events)")]
    db.close()
    assert columns == ["seq", *cdr.EVENT_COLUMNS]
    connect(path).close()  # opening again changes nothing
    assert rows(path) == [row]


def events(path: Path) -> list[dict[str, Any]]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM events ORDER BY seq")]
    finally:
        db.close()


OWNERS = {"trip-1": Attribution("acme", "trips", "order-1")}


def owners_of(ids: Any) -> dict[str, Attribution]:
    return {i: OWNERS[i] for i in ids if i in OWNERS}


def test_owned_records_and_their_events_reach_the_outbox(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    writer = CdrWriter(path, attribute=owners_of)
    writer.event("call.started", "call-1@carrier", "trip-1", T0 + 1, {"virtual": "+825070002001"})
    writer.event("call.ringing", "call-1@carrier", "trip-1", T0 + 1.25, {})
    writer.event("call.started", "call-2@carrier", "yaml-ax", T0 + 2, {})  # no tenant: dropped
    writer.add(record(1))
    writer.add(record(2, binding_id="yaml-ax", a_call_id="call-2@carrier"))
    writer.close()
    owned, unowned = rows(path)
    assert (owned["tenant"], owned["pool"], owned["out_id"]) == ("acme", "trips", "order-1")
    assert (unowned["tenant"], unowned["pool"], unowned["out_id"]) == (None, None, None)
    got = events(path)
    assert [(e["type"], e["call_id"]) for e in got] == [
        ("call.started", "call-1@carrier"),
        ("call.ringing", "call-1@carrier"),
        ("call.completed", "call-1@carrier"),
    ]
    assert {(e["tenant"], e["pool"], e["binding_id"], e["out_id"]) for e in got} == {
        ("acme", "trips", "trip-1", "order-1")
    }
    assert len({e["event_id"] for e in got}) == 3
    assert json.loads(got[0]["data"]) == {"virtual": "+825070002001"}
    completed = got[2]
    assert completed["record_id"] == owned["record_id"]
    assert completed["event_id"] == "ev_" + owned["record_id"]
    assert completed["at"] == owned["end_at"]


EVENT_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_cdr import record
    from b2bua.cdr import CdrWriter

    writer = CdrWriter(sys.argv[1], batch=10**9, max_delay=10**9)
    for n in range(20):
        writer.event("call.started", f"call-{{n}}@carrier", "trip-1", 1.0 * n, {{"n": n}})
        writer.add(record(n))
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_events_of_a_killed_process_are_replayed_once_with_owners(tmp_path: Path) -> None:
    path = tmp_path / "cdr.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", EVENT_CHILD.format(tests=str(ROOT / "tests")), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (segment,) = journal_segments(path)
    copy = segment.read_bytes()
    columns, records, frames = cdr.read_frames(copy)
    assert (len(records), len(frames)) == (20, 20)
    assert read_segment(copy) == (columns, records)  # a reader of records passes events over
    db = connect(path)
    assert replay(db, [segment], owners_of) == (20, 20)
    segment.write_bytes(copy)
    assert replay(db, [segment], owners_of) == (20, 0)
    db.close()
    got = events(path)
    assert sorted(e["type"] for e in got) == ["call.completed"] * 20 + ["call.started"] * 20
    assert len({e["event_id"] for e in got}) == 40
    assert {e["tenant"] for e in got} == {"acme"}
    assert {r["tenant"] for r in rows(path)} == {"acme"}
