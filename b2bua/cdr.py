"""Call detail records in SQLite, written by a thread off the event loop, and the `cdr` CLI.

The event loop only appends a tuple to a queue; a writer thread batches them into
one transaction per batch. The file is opened in WAL mode so that `ansim cdr` and the
SMS records (their own table in the same file) can read and write beside the engine.
"""

from __future__ import annotations

import argparse
import csv
import json
import queue
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from operator import attrgetter
from pathlib import Path

SCHEMA = """
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


@dataclass(slots=True)
class CallRecord:
    """One finished call. Times are epoch seconds; duration counts from the answer."""

    a_call_id: str
    b_call_id: str | None
    virtual: str | None
    caller: str | None
    callee: str | None
    binding_id: str | None
    invite_at: float
    ring_at: float | None
    answer_at: float | None
    end_at: float | None
    duration: float | None
    status: int
    ended_by: str | None
    trunk: str | None
    reason: str | None


COLUMNS = [f.name for f in fields(CallRecord)]
# A record's fields in column order (dataclasses.astuple deep-copies each field: 50x slower).
_ROW = attrgetter(*COLUMNS)
_INSERT = f"INSERT INTO calls ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"


def connect(path: str | Path) -> sqlite3.Connection:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=30)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


class CdrWriter:
    """Collects records on the event loop and writes them from a thread.

    Records are handed to the thread in batches (every ``batch`` records, or when
    ``max_delay`` seconds have passed since the last hand-over, checked on each ``add``
    and on ``flush``, which the engine calls once a second). One hand-over per batch
    instead of one per call keeps the writer from contending for the interpreter lock
    with the event loop hundreds of times a second.
    """

    def __init__(self, path: str | Path, *, batch: int = 500, max_delay: float = 0.25) -> None:
        self.path = str(path)
        self._queue: queue.SimpleQueue[list[CallRecord] | None] = queue.SimpleQueue()
        self._pending: list[CallRecord] = []
        self._batch = batch
        self._max_delay = max_delay
        self._handed = time.monotonic()
        self.written = 0
        connect(self.path).close()
        self._thread = threading.Thread(target=self._run, name="cdr-writer", daemon=True)
        self._thread.start()

    def add(self, record: CallRecord) -> None:
        pending = self._pending
        pending.append(record)
        if len(pending) >= self._batch or time.monotonic() - self._handed >= self._max_delay:
            self.flush()

    def flush(self) -> None:
        """Hand what has been collected to the writer thread."""
        self._handed = time.monotonic()
        if self._pending:
            self._queue.put(self._pending)
            self._pending = []

    def close(self, timeout: float = 5.0) -> None:
        """Write everything collected and stop the thread."""
        self.flush()
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        db = connect(self.path)
        try:
            while True:
                records = self._queue.get()
                if records is None:
                    break
                with db:
                    db.executemany(_INSERT, map(_ROW, records))
                self.written += len(records)
        finally:
            db.close()


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


def query(
    path: str, since: float | None, until: float | None, limit: int | None = None
) -> list[tuple]:
    if not Path(path).exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
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
    except ValueError as exc:
        print(f"ansim cdr: {exc}", file=sys.stderr)
        return 2
    out = sys.stdout
    if args.format == "json":
        json.dump([dict(zip(COLUMNS, row, strict=True)) for row in rows], out, indent=1)
        out.write("\n")
    elif args.format == "csv":
        w = csv.writer(out)
        w.writerow(COLUMNS)
        w.writerows(rows)
    else:
        out.write(
            f"{'invite (UTC)':20} {'status':>6} {'dur':>7} {'by':8} {'trunk':12} {'virtual':16} binding\n"
        )
        for row in rows:
            rec = dict(zip(COLUMNS, row, strict=True))
            at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(rec["invite_at"]))
            dur = "" if rec["duration"] is None else f"{rec['duration']:.1f}"
            out.write(
                f"{at:20} {rec['status']:>6} {dur:>7} {rec['ended_by'] or '':8} {rec['trunk'] or '':12}"
                f" {rec['virtual'] or '':16} {rec['binding_id'] or ''}\n"
            )
        out.write(f"{len(rows)} call(s)\n")
    return 0
