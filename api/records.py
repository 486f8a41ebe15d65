"""Reading what the engine writes for the API: call records, SMS records and the webhook
outboxes beside them, in the SQLite files the engine's writer threads fill (WAL mode, so
reading never holds a writer up).

The layouts are the engine's: tables ``calls`` and ``events`` of the call records file
(``b2bua.cdr``), ``sms`` and ``sms_events`` of the SMS records file
(``sms_smpp.records``); often one file holds all four. This module reads them by column
name and relies only on what those layouts document: the owner columns (``tenant``,
``pool``, ``out_id``), times as epoch seconds in columns named ``*_at``, the ``record_id``
and ``id`` keys, ``seq`` order in the outboxes. A file or table that does not exist yet
(no call made, an older layout) reads as empty; nothing here writes to them.

Every read opens its own read-only connection (a few tens of microseconds), so reads
can run on any thread: the routes run them in the thread pool, never on the event loop.
Searches are paged with an opaque cursor (the sort key of the last row), in time order:
calls by the caller's INVITE, SMS by their arrival.
"""

from __future__ import annotations

import base64
import datetime as dt
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CALLS",
    "SMS",
    "Bucket",
    "Filters",
    "RecordKind",
    "StatsRow",
    "bad_cursor",
    "call_events_after",
    "export",
    "iso",
    "open_reader",
    "record_view",
    "search",
    "sms_events_after",
    "stats",
]


@dataclass(frozen=True, slots=True)
class RecordKind:
    """One kind of record: its table, time column, key, and the columns a filter names."""

    table: str
    time: str
    key: str
    x: str  # the column holding the virtual number
    trunk: str  # the column a "trunk" grouping reads


CALLS: Final = RecordKind("calls", "invite_at", "record_id", "virtual", "trunk")
SMS: Final = RecordKind("sms", "received_at", "id", "destination", "upstream")
#: Columns never shown: the tables' internal row ids.
_HIDDEN: Final = frozenset({"id"})


def iso(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in UTC with milliseconds, as the CDR exports write them."""
    if epoch is None:
        return None
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")


def open_reader(path: str | None) -> sqlite3.Connection | None:
    """A read-only connection to ``path``; None when there is no such file."""
    if path is None:
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except sqlite3.OperationalError:
        return None
    db.row_factory = sqlite3.Row
    return db


def _columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def record_view(row: sqlite3.Row | dict[str, Any], kind: RecordKind) -> dict[str, Any]:
    """A record as the API shows it: every column but internal ids, times in ISO 8601.
    An SMS record's ``id`` (ansim's message id) is its key and is shown as ``id``."""
    out: dict[str, Any] = {}
    for name in row.keys():  # noqa: SIM118 (sqlite3.Row has no __iter__ of names)
        if name in _HIDDEN and not (kind is SMS and name == "id"):
            continue
        value = row[name]
        out[name] = iso(value) if name.endswith("_at") and value is not None else value
    return out


@dataclass(frozen=True, slots=True)
class Filters:
    """What a search selects: a time range (epoch seconds, ``since`` included), the
    virtual number, the binding, the tenant's out_id, the status."""

    since: float | None = None
    until: float | None = None
    x: str | None = None
    binding_id: str | None = None
    out_id: str | None = None
    status: int | str | None = None


def _encode_cursor(at: float, rowid: int) -> str:
    return base64.urlsafe_b64encode(f"{at!r},{rowid}".encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> tuple[float, int] | None:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        at, rowid = raw.split(",")
        return float(at), int(rowid)
    except (ValueError, UnicodeDecodeError):
        return None


def bad_cursor(text: str | None) -> bool:
    """Whether ``text`` is given and is not a cursor this module made."""
    return text is not None and _decode_cursor(text) is None


def _where(kind: RecordKind, tenant: str, f: Filters, after: str | None) -> tuple[str, list[Any]]:
    sql = f"tenant = ? AND {kind.time} >= ? AND {kind.time} < ?"
    args: list[Any] = [tenant, f.since if f.since is not None else 0.0, f.until or 1e12]
    for column, value in (
        (kind.x, f.x),
        ("binding_id", f.binding_id),
        ("out_id", f.out_id),
        ("status", f.status),
    ):
        if value is not None:
            sql += f" AND {column} = ?"
            args.append(value)
    cursor = None if after is None else _decode_cursor(after)
    if cursor is not None:
        sql += f" AND ({kind.time}, rowid) > (?, ?)"
        args.extend(cursor)
    return sql, args


def search(
    path: str | None,
    kind: RecordKind,
    tenant: str,
    filters: Filters,
    *,
    after: str | None = None,
    limit: int = 100,
    key: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """The tenant's records that ``filters`` select (or the one whose key is ``key``), in
    time order after the cursor ``after``; a page of at most ``limit`` and the cursor of
    the next page (None on the last)."""
    db = open_reader(path)
    if db is None:
        return [], None
    try:
        if "tenant" not in _columns(db, kind.table):
            return [], None
        where, args = _where(kind, tenant, filters, after)
        if key is not None:
            where += f" AND {kind.key} = ?"
            args.append(key)
        rows = db.execute(
            f"SELECT rowid AS _rowid, * FROM {kind.table} WHERE {where}"
            f" ORDER BY {kind.time}, rowid LIMIT ?",
            [*args, limit + 1],
        ).fetchall()
    finally:
        db.close()
    more = len(rows) > limit
    rows = rows[:limit]
    page = [record_view(_without_rowid(r), kind) for r in rows]
    last = rows[-1] if more and rows else None
    return page, None if last is None else _encode_cursor(last[kind.time], last["_rowid"])


def _without_rowid(row: sqlite3.Row) -> dict[str, Any]:
    return {k: row[k] for k in row.keys() if k != "_rowid"}  # noqa: SIM118


def export(
    path: str | None, kind: RecordKind, tenant: str, filters: Filters
) -> Iterator[tuple[list[str], list[Any]]]:
    """Every record the filters select, in time order, as (columns, values) with times in
    ISO 8601; for CSV exports, read as they are written out."""
    db = open_reader(path)
    if db is None:
        return
    try:
        if "tenant" not in _columns(db, kind.table):
            return
        where, args = _where(kind, tenant, filters, None)
        cursor = db.execute(
            f"SELECT * FROM {kind.table} WHERE {where} ORDER BY {kind.time}, rowid", args
        )
        names: list[str] | None = None
        for row in cursor:
            view = record_view(row, kind)
            if names is None:
                names = list(view)
            yield names, [view[n] for n in names]
    finally:
        db.close()


def export_columns(path: str | None, kind: RecordKind) -> list[str]:
    """The columns an export of ``kind`` has (for the header of an empty export)."""
    db = open_reader(path)
    if db is None:
        return []
    try:
        names = [row[1] for row in db.execute(f"PRAGMA table_info({kind.table})")]
    finally:
        db.close()
    return [n for n in names if n not in _HIDDEN or (kind is SMS and n == "id")]


# -- the webhook outboxes ---------------------------------------------------------------


def call_events_after(path: str | None, seq: int, limit: int) -> list[dict[str, Any]]:
    """Rows of the ``events`` outbox after ``seq``, in order, each with ``record``: its
    call's record (call.completed), or None."""
    db = open_reader(path)
    if db is None:
        return []
    try:
        if not _columns(db, "events"):
            return []
        events = db.execute(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        ).fetchall()
        ids = [e["record_id"] for e in events if e["record_id"]]
        records: dict[str, dict[str, Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(f"SELECT * FROM calls WHERE record_id IN ({marks})", chunk):
                records[row["record_id"]] = record_view(row, CALLS)
    finally:
        db.close()
    out = []
    for e in events:
        item = dict(e)
        item["record"] = records.get(e["record_id"]) if e["record_id"] else None
        out.append(item)
    return out


def sms_events_after(path: str | None, seq: int, limit: int) -> list[dict[str, Any]]:
    """Rows of the ``sms_events`` outbox after ``seq``, in order, each with ``record``,
    the message's record."""
    db = open_reader(path)
    if db is None:
        return []
    try:
        if not _columns(db, "sms_events"):
            return []
        rows = db.execute(
            "SELECT e.seq AS _seq, e.event_id AS _event_id, e.type AS _type, e.at AS _at,"
            " e.tenant AS _tenant, s.* FROM sms_events e JOIN sms s ON s.id = e.sms_id"
            " WHERE e.seq > ? ORDER BY e.seq LIMIT ?",
            (seq, limit),
        ).fetchall()
    finally:
        db.close()
    out = []
    for row in rows:
        record = {k: row[k] for k in row.keys() if not k.startswith("_")}  # noqa: SIM118
        out.append(
            {
                "seq": row["_seq"],
                "event_id": row["_event_id"],
                "type": row["_type"],
                "at": row["_at"],
                "tenant": row["_tenant"],
                "record": record_view(record, SMS),
            }
        )
    return out


def last_seq(path: str | None, table: str) -> int:
    """The newest ``seq`` of an outbox (0 when empty or absent)."""
    db = open_reader(path)
    if db is None:
        return 0
    try:
        if not _columns(db, table):
            return 0
        value = db.execute(f"SELECT max(seq) FROM {table}").fetchone()[0]
    finally:
        db.close()
    return int(value or 0)


# -- statistics -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One period of a statistics answer: its label and its bounds (epoch seconds)."""

    label: str
    start: float
    end: float


@dataclass(slots=True)
class StatsRow:
    """What one period and group counted."""

    period: str
    group: str | None
    calls: int = 0
    answered: int = 0
    duration_ms: int = 0
    sms_received: int = 0
    sms_sent: int = 0


#: Group names -> the column of each record kind they read (None: no grouping).
GROUPS: Final[dict[str, dict[str, str]]] = {
    "binding": {"calls": "binding_id", "sms": "binding_id"},
    "pool": {"calls": "pool", "sms": "pool"},
    "trunk": {"calls": CALLS.trunk, "sms": SMS.trunk},
    "tenant": {"calls": "tenant", "sms": "tenant"},
}


def stats(
    cdr: str | None,
    sms: str | None,
    tenant: str | None,
    buckets: Sequence[Bucket],
    group: str | None,
) -> list[StatsRow]:
    """Counts per bucket (and group) of ``tenant``'s calls and SMS (every tenant's when
    None); buckets in order, groups in name order, empty buckets left out."""
    out: dict[tuple[str, str | None], StatsRow] = {}
    if not buckets:
        return []
    values = ", ".join("(?, ?, ?)" for _ in buckets)
    bounds = [v for b in buckets for v in (b.label, b.start, b.end)]
    owner = "r.tenant = ?" if tenant is not None else "r.tenant IS NOT NULL"
    owner_args = [tenant] if tenant is not None else []
    for path, kind, name in ((cdr, CALLS, "calls"), (sms, SMS, "sms")):
        db = open_reader(path)
        if db is None:
            continue
        try:
            if "tenant" not in _columns(db, kind.table):
                continue
            grouped = f"r.{GROUPS[group][name]}" if group is not None else "NULL"
            if kind is CALLS:
                counts = "count(*), sum(r.answer_at IS NOT NULL), sum(coalesce(r.duration_ms, 0))"
            else:
                counts = "count(*), sum(r.status IN ('submitted', 'delivered')), 0"
            sql = (
                f"WITH b(label, lo, hi) AS (VALUES {values})"
                f" SELECT b.label, {grouped}, {counts} FROM b JOIN {kind.table} r"
                f" ON {owner} AND r.{kind.time} >= b.lo AND r.{kind.time} < b.hi"
                f" GROUP BY b.label, {grouped}"
            )
            for label, grp, n, second, duration in db.execute(sql, [*bounds, *owner_args]):
                row = out.setdefault((label, grp), StatsRow(label, grp))
                if kind is CALLS:
                    row.calls, row.answered, row.duration_ms = n, int(second), int(duration)
                else:
                    row.sms_received, row.sms_sent = n, int(second)
        finally:
            db.close()
    order = {b.label: i for i, b in enumerate(buckets)}
    return sorted(out.values(), key=lambda r: (order[r.period], r.group or ""))
