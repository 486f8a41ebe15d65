"""Call detail records: the SQLite table, its schema versions, the crash journal, the `cdr` CLI.

The event loop only appends a record to a list; a writer thread batches them into one
SQLite transaction per batch. The file is opened in WAL mode so that `ansim cdr` and the
SMS records (their own table in the same file) can read and write beside the engine.

A record in the writer's hands is not on disk yet, so each record is also appended to a
journal when it is added, and the engine adds a call's record before the datagrams that
end the call are sent: whatever the caller or the callee has been told has ended is on
record even if the process is killed the next instant. The journal is a series of
segment files beside the database (``cdr.sqlite.journal.<pid>.<n>``), each mapped into
memory, so an append is a copy into the kernel's page cache: no system call per call,
and nothing lost when the process dies (``cdr_fsync`` adds an ``fdatasync`` per record,
for power loss). A segment is deleted once the writer thread has committed everything
in it. At start, records of segments left behind are inserted into SQLite unless
already there (each record has a unique ``record_id``), and the segments deleted. Each
segment is locked (flock) by the process writing it, so a second engine on the same
file never replays a live one's segment.

The table's layout is versioned with SQLite's ``PRAGMA user_version`` (the first
layout, which set no version, is version 1); opening an older file migrates it in one
transaction. The file, its -wal and -shm files, and the journal are created readable
by the engine's user only: they hold real numbers.

Owners and events. A record of a call through a tenant's binding carries the tenant, the
pool of its X and the binding's out_id, looked up by the writer thread when it writes the
record (``attribute``, the translation store's ``Store.attribution``: the binding, or
what the store kept of it once it ended), never on the event loop. The same file holds the
webhook outbox, table ``events``: the engine's call events (``CdrWriter.event``, from
``b2bua.call_events``) are journaled like records and written by the same thread, and
each record of a tenant's call adds its ``call.completed`` event in the transaction that
writes the record. Events of bindings without a tenant are not kept. The API process
reads the table and delivers the webhooks.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import json
import logging
import mmap
import os
import queue
import sqlite3
import struct
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path
from typing import Any, Final

import msgpack

from translate.history import Attribution

log = logging.getLogger(__name__)

#: The layout of the ``calls`` table that this code writes (``PRAGMA user_version``).
SCHEMA_VERSION: Final = 3

_CREATE_CALLS: Final = """
CREATE TABLE calls (
    id INTEGER PRIMARY KEY,
    record_id TEXT,           -- unique per record: the key that makes a journal replay idempotent
    a_call_id TEXT NOT NULL,  -- Call-ID of the caller's leg
    b_call_id TEXT,           -- Call-ID of the leg ansim placed (the last trunk tried)
    call_type TEXT,           -- what the engine did with the call: bridge
    binding_kind TEXT,        -- ax, axb, axn
    direction TEXT,           -- who called whom in the binding's terms: N->A, A->B, B->A
    virtual TEXT,             -- X, the number dialled
    caller TEXT,              -- real calling number (E.164)
    callee TEXT,              -- real called number (E.164)
    presented TEXT,           -- calling number shown to the callee
    binding_id TEXT,
    in_trunk TEXT,            -- trunk the call came in from
    src_transport TEXT,       -- where the caller's INVITE came from: udp or tcp,
    src_ip TEXT,              --   address
    src_port INTEGER,         --   and port
    trunk TEXT,               -- trunk the call went out on
    invite_at REAL NOT NULL,  -- epoch seconds: the caller's INVITE,
    ring_at REAL,             --   the first 18x from the callee,
    answer_at REAL,           --   the callee's 200,
    end_at REAL,              --   the end
    ring_ms INTEGER,          -- INVITE to the first 18x (post-dial delay)
    setup_ms INTEGER,         -- INVITE to the answer
    duration_ms INTEGER,      -- answer to end
    status INTEGER NOT NULL,  -- final status the caller got (200 for an answered call)
    q850_cause INTEGER,       -- release cause, ITU-T Q.850
    ended_by TEXT,            -- caller, callee, engine, limit
    reason TEXT,              -- ansim's own word for how it ended (no_answer, b_486, ...)
    tenant TEXT,              -- the binding's owner (bindings made through the API),
    pool TEXT,                --   the pool of X,
    out_id TEXT               --   and the owner's own reference of the binding
)
"""
# The webhook outbox: events of tenants' calls, in the order written (``seq``).
_CREATE_EVENTS: Final = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,   -- unique: receivers de-duplicate on it
    type TEXT NOT NULL,       -- call.started, call.ringing, call.answered, call.completed
    at REAL NOT NULL,         -- epoch seconds the event happened
    tenant TEXT NOT NULL,
    pool TEXT,
    binding_id TEXT,
    out_id TEXT,
    call_id TEXT,             -- Call-ID of the caller's leg (a_call_id of the record)
    record_id TEXT,           -- the call's record (call.completed)
    data TEXT                 -- JSON: the event's own fields
)
"""
_INDEXES: Final = (
    "CREATE INDEX IF NOT EXISTS calls_invite_at ON calls (invite_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS calls_record_id ON calls (record_id)",
    "CREATE INDEX IF NOT EXISTS calls_tenant_invite_at ON calls (tenant, invite_at)",
    "CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id)",
)
# Version 2 -> 3: the owner's columns (empty for the records written before).
_FROM_V2: Final = (
    "ALTER TABLE calls ADD COLUMN tenant TEXT",
    "ALTER TABLE calls ADD COLUMN pool TEXT",
    "ALTER TABLE calls ADD COLUMN out_id TEXT",
)
# Version 1 -> 2: the layout as first shipped (no user_version) gains the columns above;
# its duration in seconds becomes milliseconds, and ring and setup times are derived.
_FROM_V1: Final = """
INSERT INTO calls (id, a_call_id, b_call_id, call_type, virtual, caller, callee, binding_id,
    trunk, invite_at, ring_at, answer_at, end_at, ring_ms, setup_ms, duration_ms, status,
    ended_by, reason)
SELECT id, a_call_id, b_call_id, 'bridge', virtual, caller, callee, binding_id,
    trunk, invite_at, ring_at, answer_at, end_at,
    CAST(round((ring_at - invite_at) * 1000) AS INTEGER),
    CAST(round((answer_at - invite_at) * 1000) AS INTEGER),
    CAST(round(duration * 1000) AS INTEGER), status, ended_by, reason
FROM calls_v1
"""


@dataclass(slots=True)
class CallRecord:
    """One finished call (columns as in the table above). ``record_id`` is given by
    ``CdrWriter.add``."""

    a_call_id: str
    b_call_id: str | None
    call_type: str
    binding_kind: str | None
    direction: str | None
    virtual: str | None
    caller: str | None
    callee: str | None
    presented: str | None
    binding_id: str | None
    in_trunk: str | None
    src_transport: str | None
    src_ip: str | None
    src_port: int | None
    trunk: str | None
    invite_at: float
    ring_at: float | None
    answer_at: float | None
    end_at: float | None
    ring_ms: int | None
    setup_ms: int | None
    duration_ms: int | None
    status: int
    q850_cause: int | None
    ended_by: str | None
    reason: str | None
    tenant: str | None = None
    pool: str | None = None
    out_id: str | None = None
    record_id: str = ""


COLUMNS: Final = ["record_id", *(f.name for f in fields(CallRecord) if f.name != "record_id")]
#: Columns of ``events`` a writer fills (``seq`` is SQLite's).
EVENT_COLUMNS: Final = (
    "event_id", "type", "at", "tenant", "pool", "binding_id", "out_id", "call_id", "record_id",
    "data",
)  # fmt: skip
_INSERT_EVENT: Final = (
    f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)})"
    f" VALUES ({', '.join('?' * len(EVENT_COLUMNS))})"
)
#: Finds the owners of binding ids (translate's ``Store.attribution``).
Attribute = Callable[[Iterable[str]], Mapping[str, Attribution]]
# A record's fields in column order (dataclasses.astuple deep-copies each field: 50x slower).
_ROW: Final = attrgetter(*COLUMNS)
_INSERT: Final = (
    f"INSERT OR IGNORE INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
)
TIME_COLUMNS: Final = ("invite_at", "ring_at", "answer_at", "end_at")


class CdrSchemaError(Exception):
    """The CDR file holds a table this version cannot read (written by a newer ansim)."""


# -- the file ----------------------------------------------------------------------------


def _create_private(path: Path) -> None:
    """Create ``path`` (and its folder) readable by this user only, if it does not exist."""
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def connect(path: str | Path) -> sqlite3.Connection:
    """Open (creating or migrating) the CDR file; a connection in autocommit mode, so
    each write says where its transaction begins (``with transaction(db)``)."""
    path = Path(path)
    _create_private(path)  # SQLite gives -wal and -shm the file's own permissions
    db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, mode: str = "") -> Any:
    """BEGIN [IMMEDIATE] ... COMMIT, or ROLLBACK on an exception."""
    db.execute(f"BEGIN {mode}")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def schema_version(db: sqlite3.Connection) -> int:
    """The version of the calls table in ``db``: 0 when there is none, 1 for the first
    layout (which set no user_version)."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    if version:
        return version
    has_calls = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'calls'"
    ).fetchone()
    return 1 if has_calls else 0


def migrate(db: sqlite3.Connection) -> int:
    """Bring the calls table to SCHEMA_VERSION (creating it if absent), in one
    transaction; returns the version found. Raises CdrSchemaError for a newer one."""
    with transaction(db, "IMMEDIATE"):
        found = schema_version(db)
        if found > SCHEMA_VERSION:
            raise CdrSchemaError(
                f"the calls table is at schema version {found}, newer than this ansim's"
                f" {SCHEMA_VERSION}: upgrade ansim to read it"
            )
        if found == 0:
            db.execute(_CREATE_CALLS)
        elif found == 1:
            db.execute("ALTER TABLE calls RENAME TO calls_v1")
            db.execute(_CREATE_CALLS)
            db.execute(_FROM_V1)
            db.execute("DROP TABLE calls_v1")
        elif found == 2:
            for sql in _FROM_V2:
                db.execute(sql)
        db.execute(_CREATE_EVENTS)
        for sql in _INDEXES:
            db.execute(sql)
        if found != SCHEMA_VERSION:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    if 0 < found < SCHEMA_VERSION:
        log.info("CDR table migrated", extra={"from_version": found, "to": SCHEMA_VERSION})
    return found


# -- the journal -------------------------------------------------------------------------

JOURNAL_MAGIC: Final = b"ansim-cdr-journal 1\n"
_FRAME: Final = struct.Struct("<II")  # payload length, CRC-32 of the payload
_packb = msgpack.packb
_crc32 = zlib.crc32
_frame_head = _FRAME.pack


def _frame(payload: bytes) -> bytes:
    return _frame_head(len(payload), _crc32(payload)) + payload


def journal_segments(db_path: str | Path) -> list[Path]:
    """Journal segment files of the CDR file ``db_path``, oldest first."""
    path = Path(db_path)

    def order(p: Path) -> tuple[float, str]:
        try:
            return (p.stat().st_mtime, p.name)
        except OSError:
            return (0.0, p.name)

    return sorted(path.parent.glob(path.name + ".journal.*"), key=order)


def read_segment(data: bytes) -> tuple[list[str], list[list[Any]]]:
    """(columns, rows) of a journal segment's bytes (``read_frames`` without the events)."""
    columns, rows, _ = read_frames(data)
    return columns, rows


def read_frames(data: bytes) -> tuple[list[str], list[list[Any]], list[list[Any]]]:
    """(columns, record rows, event frames) of a journal segment's bytes. Reading stops at
    the space not written yet (zeros) and at the first frame that is cut short or fails
    its checksum (the tail of a write the process did not finish, or that power loss left
    unwritten). An event is a map ``{"e": [event id, type, at, call id, binding id,
    data]}``, which a reader that knows only records passes over."""
    if not data.startswith(JOURNAL_MAGIC):
        return [], [], []
    pos = len(JOURNAL_MAGIC)
    end = len(data)
    frames: list[Any] = []
    while pos + _FRAME.size <= end:
        n, crc = _FRAME.unpack_from(data, pos)
        if n == 0:
            break
        start = pos + _FRAME.size
        payload = data[start : start + n]
        if len(payload) < n or _crc32(payload) != crc:
            break
        try:
            frames.append(msgpack.unpackb(payload))
        except ValueError:
            break
        pos = start + n
    if not frames or not isinstance(frames[0], list):
        return [], [], []
    columns = [str(c) for c in frames[0]]
    rows = [r for r in frames[1:] if isinstance(r, list) and len(r) == len(columns)]
    events = [
        f["e"]
        for f in frames[1:]
        if isinstance(f, dict) and isinstance(f.get("e"), list) and len(f["e"]) == 6
    ]
    return columns, rows, events


def replay(
    db: sqlite3.Connection, segments: Iterable[Path], attribute: Attribute | None = None
) -> tuple[int, int]:
    """Insert the records and events of journal ``segments`` that ``db`` lacks, then delete
    the segments; (records read, records inserted). A segment locked by a live process is
    left alone. Safe to repeat: a record already in the table (by ``record_id``) or an
    event (by ``event_id``) is skipped, so a crash during a replay only means the next
    start replays again. ``attribute`` gives records and events their owners, as the
    writer thread would have."""
    table = {row[1] for row in db.execute("PRAGMA table_info(calls)")}
    read = inserted = 0
    for path in segments:
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running engine's segment
            with open(fd, "rb", closefd=False) as f:
                columns, rows, events = read_frames(f.read())
            records = [dict(zip(columns, row, strict=True)) for row in rows]
            owners = _owners(
                attribute, [r.get("binding_id") for r in records] + [e[4] for e in events]
            )
            names = [c for c in columns if c in table]
            extra = [c for c in ("tenant", "pool", "out_id") if c in table and c not in names]
            event_rows = [_event_row(e, owners.get(e[4])) for e in events if e[4] in owners]
            if records and "record_id" in columns and names:
                names += extra
                for r in records:
                    owner = owners.get(r.get("binding_id") or "")
                    if owner is not None:
                        r["tenant"], r["pool"], r["out_id"] = owner.tenant, owner.pool, owner.out_id
                    event = _completed_row(r, owner)
                    if event is not None:
                        event_rows.append(event)
                sql = (
                    f"INSERT OR IGNORE INTO calls ({', '.join(names)})"
                    f" VALUES ({', '.join('?' * len(names))})"
                )
                with transaction(db, "IMMEDIATE"):
                    before = db.total_changes
                    db.executemany(sql, ([r.get(c) for c in names] for r in records))
                    inserted += db.total_changes - before
                    db.executemany(_INSERT_EVENT, event_rows)
                read += len(rows)
            elif event_rows:
                with transaction(db, "IMMEDIATE"):
                    db.executemany(_INSERT_EVENT, event_rows)
            os.unlink(path)
        finally:
            os.close(fd)
    return read, inserted


def _owners(attribute: Attribute | None, ids: Iterable[str | None]) -> Mapping[str, Attribution]:
    """The owners of the binding ids among ``ids``; none when the store cannot say."""
    wanted = {i for i in ids if i}
    if attribute is None or not wanted:
        return {}
    try:
        return attribute(wanted)
    except Exception as exc:  # the store closed under us, or unreadable: records still go
        log.error("cannot find the owners of call records: %s", exc)
        return {}


def _event_row(frame: list[Any], owner: Attribution | None) -> tuple[Any, ...]:
    """The ``events`` row of a journaled event frame of an owned binding."""
    event_id, kind, at, call_id, binding_id, data = frame
    assert owner is not None
    return (
        "ev_" + event_id, kind, at, owner.tenant, owner.pool, binding_id, owner.out_id, call_id,
        None, json.dumps(data, separators=(",", ":")),
    )  # fmt: skip


def _completed_row(record: Mapping[str, Any], owner: Attribution | None) -> tuple[Any, ...] | None:
    """The ``call.completed`` event of a record (as a mapping of its columns), when owned."""
    if owner is None or not record.get("record_id"):
        return None
    at = record.get("end_at") or record.get("invite_at") or 0.0
    return (
        "ev_" + record["record_id"], "call.completed", at, owner.tenant, owner.pool,
        record.get("binding_id"), owner.out_id, record.get("a_call_id"), record["record_id"],
        None,
    )  # fmt: skip


@dataclass(slots=True)
class _Batch:
    """What the event loop hands the writer thread at once."""

    records: list[CallRecord]
    events: list[list[Any]]


def _record_completed(r: CallRecord) -> tuple[Any, ...]:
    """The ``call.completed`` event row of an owned record."""
    return (
        "ev_" + r.record_id, "call.completed", r.end_at or r.invite_at, r.tenant, r.pool,
        r.binding_id, r.out_id, r.a_call_id, r.record_id, None,
    )  # fmt: skip


class _Segment:
    """One journal file this process appends to: locked, its blocks allocated up front,
    and mapped, so that an append is a copy into the page cache (no system call, no
    release of the interpreter lock) that outlives the process the instant it is made."""

    __slots__ = ("capacity", "fd", "map", "path", "size")

    def __init__(self, path: Path, fd: int, map_: mmap.mmap, size: int) -> None:
        self.path = path
        self.fd = fd
        self.map = map_
        self.size = size
        self.capacity = len(map_)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


# -- the writer --------------------------------------------------------------------------


class CdrWriter:
    """Collects records on the event loop, journals them, and writes them from a thread.

    ``add`` appends the record to the journal at once (the engine adds a call's record
    before the datagrams that end the call are sent, so whatever either party has been
    told has ended is on record even if the process dies the next instant; with
    ``fsync`` the journal is also flushed to the disk, for power loss), and keeps it for
    the thread.

    Records are handed to the thread in batches (every ``batch`` records, or when
    ``max_delay`` seconds have passed since the last hand-over, checked on each ``add``
    and on ``flush``, which the engine calls once a second). One hand-over per batch
    instead of one per call keeps the writer from contending for the interpreter lock
    with the event loop hundreds of times a second. A journal segment is replaced by a
    new one at a hand-over once it holds ``segment_bytes`` (or at once if it is full),
    and deleted by the thread once what it holds is committed.

    ``event`` journals a call event the same way and hands it over with the records;
    the thread finds the owners of records and events (``attribute``), fills the
    records' owner columns, and writes the owned events and each owned record's
    ``call.completed`` into ``events`` in the transaction that writes the records.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        batch: int = 500,
        max_delay: float = 0.25,
        fsync: bool = False,
        segment_bytes: int = 1 << 20,
        attribute: Attribute | None = None,
    ) -> None:
        self.path = str(path)
        self._queue: queue.SimpleQueue[_Batch | _Segment | None] = queue.SimpleQueue()
        self._pending: list[CallRecord] = []
        self._events: list[list[Any]] = []
        self._attribute = attribute
        self._batch = batch
        self._max_delay = max_delay
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._handed = time.monotonic()
        self._prefix = os.urandom(6).hex() + "-"
        self._n = 0
        self._seq = 0
        self._closing = False
        self._keep_journal = False  # a batch could not be committed: its segment must stay
        self.written = 0
        self.journal_errors = 0
        self.replayed = 0
        db = connect(self.path)
        try:
            read, self.replayed = replay(db, journal_segments(self.path), attribute)
        finally:
            db.close()
        if read:
            log.info(
                "CDR journal replayed",
                extra={"records": read, "inserted": self.replayed, "cdr": self.path},
            )
        self._segment: _Segment | None = self._new_segment(4 * segment_bytes)
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    # -- on the event loop -------------------------------------------------------------
    def add(self, record: CallRecord) -> None:
        self._n += 1
        record.record_id = self._prefix + str(self._n)
        self._journal(_frame(_packb(_ROW(record))))
        pending = self._pending
        pending.append(record)
        if len(pending) >= self._batch or time.monotonic() - self._handed >= self._max_delay:
            self.flush()

    def event(
        self, kind: str, call_id: str, binding_id: str, at: float, data: dict[str, Any]
    ) -> None:
        """Journal one call event (``b2bua.call_events``) and keep it for the thread; it is
        written to ``events`` if its binding has a tenant."""
        self._n += 1
        frame = [self._prefix + str(self._n), kind, at, call_id, binding_id, data]
        self._journal(_frame(_packb({"e": frame})))
        events = self._events
        events.append(frame)
        if len(events) >= self._batch or time.monotonic() - self._handed >= self._max_delay:
            self.flush()

    def _journal(self, data: bytes) -> None:
        segment = self._segment
        if segment is None:
            return
        start = segment.size
        end = start + len(data)
        if end > segment.capacity:
            segment = self._rotate(len(data))
            if segment is None:
                return
            start = segment.size
            end = start + len(data)
        segment.map[start:end] = data
        segment.size = end
        if self._fsync:
            self._sync(segment)

    def _sync(self, segment: _Segment) -> None:
        try:
            os.fdatasync(segment.fd)  # the mapped pages written so far included
        except OSError as exc:
            self._journal_error("CDR journal flush failed", exc, segment.path)

    def _journal_error(self, what: str, exc: OSError, path: Path) -> None:
        self.journal_errors += 1
        if self.journal_errors == 1 or self.journal_errors % 1000 == 0:
            log.error("%s: %s", what, exc, extra={"path": str(path), "errors": self.journal_errors})

    def flush(self) -> None:
        """Hand what has been collected to the writer thread."""
        self._hand_over()
        segment = self._segment
        if segment is not None and segment.size >= self._segment_bytes:
            self._rotate(0)

    def _hand_over(self) -> None:
        self._handed = time.monotonic()
        if self._pending or self._events:
            self._queue.put(_Batch(self._pending, self._events))
            self._pending = []
            self._events = []

    def _rotate(self, need: int) -> _Segment | None:
        """Start a new segment (room for ``need`` bytes at least) and hand the current
        one to the thread, to delete once every batch handed before it is committed."""
        self._hand_over()  # every record in the old segment goes before it
        old = self._segment
        if old is not None:
            self._queue.put(old)
        self._segment = self._new_segment(max(4 * self._segment_bytes, need + 4096))
        return self._segment

    def close(self, timeout: float = 5.0) -> None:
        """Write everything collected and stop the thread. The journal is deleted once
        all of it is committed; if the thread does not finish within ``timeout`` the
        journal stays for the next start to replay."""
        self._hand_over()
        self._closing = True
        segment, self._segment = self._segment, None
        if segment is not None:
            self._queue.put(segment)
        self._queue.put(None)
        self._thread.join(timeout)

    def _new_segment(self, capacity: int) -> _Segment | None:
        base = self.path + f".journal.{os.getpid()}."
        for _ in range(1000):
            self._seq += 1
            path = Path(base + str(self._seq))
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                self._journal_error("cannot create the CDR journal", exc, path)
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                # Blocks allocated now: a write into a mapped hole on a full disk would
                # kill the process (SIGBUS) instead of failing.
                os.posix_fallocate(fd, 0, capacity)
                map_ = mmap.mmap(fd, capacity)
            except OSError as exc:
                os.close(fd)
                with contextlib.suppress(OSError):
                    path.unlink()
                self._journal_error("cannot start the CDR journal", exc, path)
                return None
            head = JOURNAL_MAGIC + _frame(_packb(COLUMNS))
            map_[: len(head)] = head
            segment = _Segment(path, fd, map_, len(head))
            if self._fsync:
                self._sync(segment)
                with contextlib.suppress(OSError):
                    _fsync_dir(path.parent)
            return segment
        return None

    # -- on the writer thread ----------------------------------------------------------
    def _run(self) -> None:
        db = connect(self.path)
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                if isinstance(item, _Segment):
                    self._retire(item)
                elif self._write(db, item):
                    self.written += len(item.records)
        finally:
            db.close()

    def _write(self, db: sqlite3.Connection, batch: _Batch) -> bool:
        """Commit a batch's records and events, retrying (they are in the journal
        meanwhile) until the writer is told to close."""
        records, events = batch.records, batch.events
        owners = _owners(self._attribute, [r.binding_id for r in records] + [e[4] for e in events])
        rows = [_event_row(e, owners[e[4]]) for e in events if e[4] in owners]
        if owners:
            for r in records:
                owner = owners.get(r.binding_id or "")
                if owner is not None:
                    r.tenant, r.pool, r.out_id = owner.tenant, owner.pool, owner.out_id
                    rows.append(_record_completed(r))
        delay = 0.5
        while True:
            try:
                with transaction(db):
                    if records:
                        db.executemany(_INSERT, map(_ROW, records))
                    if rows:
                        db.executemany(_INSERT_EVENT, rows)
                return True
            except sqlite3.Error as exc:
                log.error("CDR write failed: %s", exc, extra={"records": len(records)})
                if self._closing:
                    self._keep_journal = True
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def _retire(self, segment: _Segment) -> None:
        if not self._keep_journal:
            with contextlib.suppress(OSError):
                segment.path.unlink()
        segment.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- CLI ---------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cdr", help="read call detail records")
    cmds = p.add_subparsers(dest="cdr_command", required=True)
    for name, helptext in (
        ("list", "print records as a table"),
        ("export", "write records as CSV or JSON"),
    ):
        c = cmds.add_parser(name, help=helptext)
        c.add_argument("--config", default="config", help="configuration folder (default config)")
        c.add_argument("--db", help="CDR file (default: `cdr` of the configuration)")
        c.add_argument("--since", help="ISO date/time or epoch seconds (inclusive)")
        c.add_argument("--until", help="ISO date/time or epoch seconds (exclusive)")
        c.add_argument(
            "--format",
            choices=("csv", "json", "table"),
            default="table" if name == "list" else "csv",
        )
        c.add_argument("--limit", type=int, default=None)
        c.set_defaults(func=cdr_command)


def _when(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return dt.timestamp()


def iso(epoch: float | None) -> str | None:
    """``epoch`` seconds as ISO 8601 in UTC with milliseconds (2026-11-01T09:00:00.250+00:00)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")


def _open_for_reading(path: str) -> sqlite3.Connection | None:
    """A read-only connection to the CDR file at SCHEMA_VERSION (an older file is
    migrated first), or None when it holds no calls table."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        version = schema_version(db)
    except BaseException:
        db.close()
        raise
    if version == SCHEMA_VERSION:
        return db
    db.close()
    if version == 0:
        return None
    if version > SCHEMA_VERSION:
        raise CdrSchemaError(
            f"{path}: the calls table is at schema version {version}, newer than this"
            f" ansim's {SCHEMA_VERSION}"
        )
    connect(path).close()  # an older layout: migrate it, as the engine would at start
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)


def query(
    path: str, since: float | None, until: float | None, limit: int | None = None
) -> list[tuple[Any, ...]]:
    """Records (in COLUMNS order) whose INVITE came at or after ``since`` and before
    ``until`` (epoch seconds), oldest first."""
    if not Path(path).exists():
        return []
    db = _open_for_reading(path)
    if db is None:
        return []
    try:
        sql = f"SELECT {', '.join(COLUMNS)} FROM calls WHERE 1=1"
        args: list[object] = []
        if since is not None:
            sql += " AND invite_at >= ?"
            args.append(since)
        if until is not None:
            sql += " AND invite_at < ?"
            args.append(until)
        sql += " ORDER BY invite_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def exported(row: Sequence[Any]) -> dict[str, Any]:
    """A record as exports show it: times in ISO 8601 (UTC), durations in milliseconds."""
    rec = dict(zip(COLUMNS, row, strict=True))
    for name in TIME_COLUMNS:
        rec[name] = iso(rec[name])
    return rec


def cdr_command(args: argparse.Namespace) -> int:
    from translate.yaml_source import ConfigError

    from .config import load_engine_config

    try:
        db = args.db or load_engine_config(args.config).cdr
    except ConfigError as exc:
        print(f"ansim cdr: configuration refused:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ansim cdr: {exc}", file=sys.stderr)
        return 2
    try:
        rows = query(db, _when(args.since), _when(args.until), args.limit)
    except (ValueError, CdrSchemaError, sqlite3.Error) as exc:
        print(f"ansim cdr: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    records = [exported(row) for row in rows]
    if args.format == "json":
        json.dump(records, out, indent=1)
        out.write("\n")
    elif args.format == "csv":
        w = csv.writer(out)
        w.writerow(COLUMNS)
        w.writerows([[rec[c] for c in COLUMNS] for rec in records])
    else:
        out.write(
            f"{'invite (UTC)':29} {'status':>6} {'cause':>5} {'dur (s)':>9} {'by':8}"
            f" {'kind':4} {'dir':4} {'trunk':12} {'virtual':16} binding\n"
        )
        for rec in records:
            ms = rec["duration_ms"]
            dur = "" if ms is None else f"{ms / 1000:.3f}"
            cause = "" if rec["q850_cause"] is None else str(rec["q850_cause"])
            out.write(
                f"{rec['invite_at']:29} {rec['status']:>6} {cause:>5} {dur:>9}"
                f" {rec['ended_by'] or '':8} {rec['binding_kind'] or '':4}"
                f" {rec['direction'] or '':4} {rec['trunk'] or '':12} {rec['virtual'] or '':16}"
                f" {rec['binding_id'] or ''}\n"
            )
        out.write(f"{len(rows)} call(s)\n")
    return 0
