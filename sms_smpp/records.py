"""SMS records (CDR-like) in SQLite, table ``sms``, written off the event loop.

The relay calls the small methods below from the loop; they only put a tuple on a
queue. A writer thread applies the queue in batches inside one transaction each, with
the database in WAL mode so that readers (statistics, the API) never block it.
Records hold real numbers: operators need them to trace abuse; logs never do. The
database is created readable by the engine's user only (see :mod:`sms_smpp.files`).

A message through a tenant's binding is recorded with the tenant, the pool of its X and
the binding's out_id, found by the writer thread when it writes the record (``attribute``,
the translation store's ``Store.attribution``), and gets webhook events in the table
``sms_events``, written in the same transaction as the record: ``sms.received`` when the
message is recorded, ``sms.delivered`` when a receipt says it was delivered. The API
process reads that table and delivers the webhooks.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from translate.history import Attribution

from .files import private_file

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS sms (
    id TEXT PRIMARY KEY,          -- message id ansim gave the sender
    direction TEXT NOT NULL,      -- mt: carrier to upstream; mo: upstream to carrier
    system_id TEXT NOT NULL,      -- the account it came from
    source TEXT NOT NULL,         -- real sender (E.164)
    destination TEXT NOT NULL,    -- number dialled: the virtual number
    callee TEXT,                  -- real recipient after translation
    presented TEXT,               -- source shown to the recipient
    binding_id TEXT,
    data_coding INTEGER,
    length INTEGER,               -- octets of user data
    part TEXT,                    -- 'seq/total' for a part of a long message
    received_at REAL NOT NULL,
    status TEXT NOT NULL,         -- queued, submitted, delivered, undeliverable, expired, failed,
                                  -- refused, rejected (set aside: never answered upstream)
    error INTEGER,                -- SMPP status of a refusal or failure
    upstream TEXT,
    upstream_id TEXT,
    submitted_at REAL,
    dlr_state INTEGER,            -- message_state of the last receipt
    done_at REAL,
    reason TEXT                   -- why a refused message was refused (translate.refusals)
);
CREATE INDEX IF NOT EXISTS sms_received_at ON sms(received_at);
CREATE INDEX IF NOT EXISTS sms_upstream_id ON sms(upstream_id);
CREATE TABLE IF NOT EXISTS sms_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,  -- receivers de-duplicate on it
    type TEXT NOT NULL,             -- sms.received, sms.delivered
    at REAL NOT NULL,
    sms_id TEXT NOT NULL,           -- the record (sms.id)
    tenant TEXT NOT NULL
);
"""
#: Columns added after the first layout: (name, type), added to an older table at start.
ADDED_COLUMNS = (("tenant", "TEXT"), ("pool", "TEXT"), ("out_id", "TEXT"), ("reason", "TEXT"))

_INSERT = (
    "INSERT OR IGNORE INTO sms (id, direction, system_id, source, destination, callee,"
    " presented, binding_id, data_coding, length, part, received_at, status, error,"
    " tenant, pool, out_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_RECEIVED = (
    "INSERT OR IGNORE INTO sms_events (event_id, type, at, sms_id, tenant)"
    " VALUES (?, 'sms.received', ?, ?, ?)"
)
_DELIVERED = (
    "INSERT OR IGNORE INTO sms_events (event_id, type, at, sms_id, tenant)"
    " SELECT 'ev_' || id || '.delivered', 'sms.delivered', ?, id, tenant FROM sms"
    " WHERE id = ? AND tenant IS NOT NULL AND status = 'delivered'"
)
_REFUSED = (
    "INSERT OR IGNORE INTO sms (id, direction, system_id, source, destination, callee,"
    " presented, binding_id, data_coding, length, part, received_at, status, error, reason,"
    " tenant, pool, out_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_SUBMITTED = (
    "UPDATE sms SET status='submitted', upstream=?, upstream_id=?, submitted_at=? WHERE id=?"
)
_FINISHED = "UPDATE sms SET status=?, error=?, done_at=? WHERE id=?"
_RECEIPT = "UPDATE sms SET status=?, dlr_state=?, done_at=? WHERE id=?"

_STOP = ("stop",)
#: Statements of new records, whose rows the writer ends with the owner's columns.
_OWNED = (_INSERT, _REFUSED)


class SmsRecords:
    """Asynchronous writer of the ``sms`` table (see module docstring)."""

    def __init__(
        self,
        path: str,
        batch: int = 50_000,
        linger: float = 0.2,
        attribute: Callable[[Iterable[str]], Mapping[str, Attribution]] | None = None,
    ) -> None:
        # SQLite gives its -wal and -shm files the mode of the database file.
        private_file(path)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(path + suffix):
                private_file(path + suffix)
        self.path = path
        self._queue: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._batch = batch
        self._linger = linger
        self._attribute = attribute
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="sms-records", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise self._error

    # -- called from the event loop ------------------------------------------------

    def accepted(self, row: tuple[Any, ...]) -> None:
        """A new message: the first 14 columns of _INSERT (id ... error), status usually
        'queued'; the writer adds the owner's."""
        self._queue.put((_INSERT, row))

    def refused(self, row: tuple[Any, ...], reason: str) -> None:
        """A refused message: the 14 columns of ``accepted`` and the refusal's reason; the
        writer adds the owner's (no event: the message was not taken)."""
        self._queue.put((_REFUSED, (*row, reason)))

    def submitted(self, message_id: str, upstream: str, upstream_id: str, at: float) -> None:
        self._queue.put((_SUBMITTED, (upstream, upstream_id, at, message_id)))

    def finished(self, message_id: str, status: str, error: int | None, at: float) -> None:
        self._queue.put((_FINISHED, (status, error, at, message_id)))

    def receipt(self, message_id: str, status: str, state: int, at: float) -> None:
        self._queue.put((_RECEIPT, (status, state, at, message_id)))

    def close(self, timeout: float = 3.0) -> None:
        """Write what is queued and stop the writer."""
        self._queue.put(_STOP)
        self._thread.join(timeout)

    # -- writer thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(SCHEMA)
            have = {row[1] for row in db.execute("PRAGMA table_info(sms)")}
            for name, kind in ADDED_COLUMNS:
                if name not in have:  # a table made before these columns existed
                    db.execute(f"ALTER TABLE sms ADD COLUMN {name} {kind}")
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            first = self._queue.get()
            # Let rows accumulate, then take them all: a few wake-ups a second keep this
            # thread from competing with the event loop for the GIL under load.
            if first is not _STOP:
                time.sleep(self._linger)
            items = [first]
            try:
                while len(items) < self._batch:
                    items.append(self._queue.get_nowait())
            except queue.Empty:
                pass
            items = self._owned(items)
            try:
                db.execute("BEGIN")
                # Consecutive rows of one statement go through executemany: one call into
                # C per run keeps this thread off the GIL the event loop needs.
                start = 0
                while start < len(items):
                    sql = items[start][0]
                    end = start + 1
                    while end < len(items) and items[end][0] is sql:
                        end += 1
                    if items[start] is _STOP:
                        stop = True
                    else:
                        run = [item[1] for item in items[start:end]]
                        db.executemany(sql, run)
                        if sql is _INSERT:  # owned: the tenant column (third from last) is set
                            db.executemany(_RECEIVED, [_received(r) for r in run if r[-3]])
                        elif sql is _RECEIPT:
                            db.executemany(_DELIVERED, [(r[2], r[3]) for r in run])
                    start = end
                db.execute("COMMIT")
            except sqlite3.Error:
                log.exception("writing SMS records failed; %d records lost", len(items))
                try:
                    db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
        db.close()

    def _owned(self, items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """The batch with each new record's owner columns filled."""
        ids = [item[1][7] for item in items if item[0] in _OWNED and item[1][7]]
        owners: Mapping[str, Attribution] = {}
        if ids and self._attribute is not None:
            try:
                owners = self._attribute(ids)
            except Exception as exc:  # the store closed under us: records still go
                log.error("cannot find the owners of SMS records: %s", exc)
        out: list[tuple[Any, ...]] = []
        for item in items:
            sql = item[0]
            if sql in _OWNED:
                row = item[1]
                owner = owners.get(row[7]) if row[7] else None
                if owner is None:
                    item = (sql, (*row, None, None, None))
                else:
                    item = (sql, (*row, owner.tenant, owner.pool, owner.out_id))
            out.append(item)
        return out


def _received(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``sms.received`` event of an owned record's _INSERT row."""
    return ("ev_" + row[0] + ".received", row[11], row[0], row[-3])
