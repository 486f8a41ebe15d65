"""The abuse store: counters, blocks, blocklists and alerts shared by every process.

An LMDB environment of its own, apart from the translation store, so that counting a
call never waits for the translation store's write lock while an API batch, a map
reload or a repack holds it. Its own write lock is only ever held for one small
transaction: one call or message checked and counted (a few keys), a blocklist edit, or
a bounded batch of expired keys deleted. Every engine worker, the SMPP relay and the
CLI open the same folder; a call's check-and-count is one write transaction, so caps
are exact across processes (no overshoot).

Commits are not flushed to the disk (``sync=False``, ``writemap=True``): a commit is
memory writes into the shared map, seen by every process at once and kept when a
process dies, but counts of the last seconds before a power loss may be lost. The
folder and its files are the engine's user's only: they hold real numbers.

Key layout (``\\0`` separates text fields; numbers are E.164, ids UTF-8)
=====================================================================

``counts``
    ``end(4) medium(1) period(1) scope(1) id`` -> uint32 LE: admitted calls (medium
    ``c``) or messages (``s``) of one binding (scope ``b``), virtual number (``x``) or
    tenant (``t``) in one clock hour (period ``h``) or calendar day (``d``); and the
    marketing rule's distinct-party counts (medium ``m``, period ``w``, id
    ``id\\0party\\0window(4)``). ``end`` is the hour (epoch hours, big-endian) from which
    the key no longer counts, so the keys sort by expiry and pruning walks from the
    start.
``distinct``
    ``end(4) scope(1) id \\0 party \\0 window(4) hash(8)`` -> empty: a party reached by
    ``party`` in one window of the marketing rule (``hash``: the first 8 bytes of the
    reached number's BLAKE2b, so the key holds one real number, not two).
``blocks``
    ``kind(1) scope(1) id \\0 number`` -> msgpack ``[until, at, note]``: kind ``L`` an
    operator's blocklist entry (scope ``g`` global, ``t`` a tenant's), kind ``M`` a
    block by the marketing rule (scope ``x`` a virtual number, ``t`` a tenant).
    ``until`` is None for a block without end.
``alerts``
    ``ms(8, big-endian) random(4)`` -> msgpack map of an ``AbuseAlert``: the outbox.
``meta``
    ``format`` -> the layout version.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgpack

from translate.abuse_events import AbuseAlert
from translate.private_files import FILE_MODE, private_dir, tighten

__all__ = [
    "FORMAT",
    "KIND_BLOCKLIST",
    "KIND_MARKETING",
    "AbuseStore",
    "AbuseStoreError",
    "BlockEntry",
    "block_key",
    "hour_bytes",
    "party_hash",
]

FORMAT: Final = b"ansim-abuse/1"
KIND_BLOCKLIST: Final = b"L"
KIND_MARKETING: Final = b"M"
SCOPE_NAMES: Final = {b"g": "global", b"t": "tenant", b"x": "virtual"}
SEP: Final = b"\x00"
_END = struct.Struct(">I")
_U32 = struct.Struct("<I")
_MS = struct.Struct(">Q")
_FILES: Final = ("data.mdb", "lock.mdb")
DEFAULT_MAP_SIZE: Final = 1 << 30
#: Alerts kept in the outbox, seconds.
ALERT_RETENTION: Final = 30 * 86400.0


class AbuseStoreError(Exception):
    """The abuse store cannot be opened or written."""


def hour_bytes(hour: int) -> bytes:
    return _END.pack(hour & 0xFFFFFFFF)


def party_hash(number: str) -> bytes:
    return hashlib.blake2b(number.encode(), digest_size=8).digest()


def block_key(kind: bytes, scope: bytes, scope_id: str, number: str) -> bytes:
    return kind + scope + scope_id.encode() + SEP + number.encode()


@dataclass(frozen=True, slots=True)
class BlockEntry:
    """One blocklist entry or marketing block, as listed."""

    kind: str  # "blocklist" or "marketing"
    scope: str  # "global", "tenant" or "virtual"
    scope_id: str  # the tenant or the virtual number ("" for global)
    number: str
    until: float | None
    at: float
    note: str | None

    def active(self, now: float) -> bool:
        return self.until is None or now < self.until


def _entry(key: bytes, value: bytes) -> BlockEntry:
    kind = "blocklist" if key[:1] == KIND_BLOCKLIST else "marketing"
    scope_id, _, number = key[2:].partition(SEP)
    until, at, note = msgpack.unpackb(value)
    return BlockEntry(
        kind, SCOPE_NAMES.get(key[1:2], "?"), scope_id.decode(), number.decode(), until, at, note
    )


class AbuseStore:
    """The LMDB environment of counters and blocks (module docstring). Open one per path
    per process (after forking); its methods may be called from one thread at a time."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int = DEFAULT_MAP_SIZE,
        readonly: bool = False,
    ) -> None:
        self.path = os.fspath(path)
        self.readonly = readonly
        if not readonly:
            try:
                private_dir(self.path)
            except OSError as exc:
                raise AbuseStoreError(f"cannot create {self.path}: {exc.strerror}") from exc
            for name in _FILES:
                tighten(os.path.join(self.path, name), FILE_MODE)
        elif not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise AbuseStoreError(f"no abuse store at {self.path}")
        try:
            self.env = lmdb.open(
                self.path,
                map_size=map_size,
                max_dbs=6,
                readonly=readonly,
                sync=False,
                metasync=False,
                writemap=not readonly,
                max_readers=1024,
                mode=FILE_MODE,
            )
        except lmdb.Error as exc:
            raise AbuseStoreError(f"cannot open the abuse store {self.path}: {exc}") from exc
        try:
            create = not readonly
            names = ("counts", "distinct", "blocks", "alerts", "meta")
            try:
                dbs = [self.env.open_db(n.encode(), create=create) for n in names]
            except lmdb.NotFoundError as exc:
                raise AbuseStoreError(f"{self.path} is not an abuse store") from exc
            self.counts, self.distinct, self.blocks, self.alerts_db, self._meta = dbs
            with self.env.begin(write=create, db=self._meta) as txn:
                stored = txn.get(b"format")
                if stored is None and create:
                    txn.put(b"format", FORMAT)
                elif stored != FORMAT:
                    raise AbuseStoreError(f"{self.path} holds {stored!r}, expected {FORMAT!r}")
        except BaseException:
            self.env.close()
            raise

    def close(self) -> None:
        self.env.close()

    def __enter__(self) -> AbuseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transactions -------------------------------------------------------------------------
    def read(self) -> lmdb.Transaction:
        try:
            return self.env.begin()
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.env.begin()

    def write(self) -> lmdb.Transaction:
        if self.readonly:
            raise AbuseStoreError("abuse store opened read-only")
        try:
            return self.env.begin(write=True)
        except lmdb.MapResizedError:
            self.env.set_mapsize(0)
            return self.env.begin(write=True)

    @staticmethod
    def commit(txn: lmdb.Transaction) -> None:
        try:
            txn.commit()
        except lmdb.MapFullError:
            raise AbuseStoreError("the abuse store is full; give it a larger map_size") from None

    # -- counters (read back for the CLI) -----------------------------------------------------
    def count(self, key: bytes) -> int:
        with self.read() as txn:
            raw = txn.get(key, db=self.counts)
        return 0 if raw is None else _U32.unpack(raw)[0]

    # -- blocklists ---------------------------------------------------------------------------
    def block(
        self,
        number: str,
        *,
        tenant: str | None,
        now: float,
        until: float | None = None,
        note: str | None = None,
    ) -> None:
        """Put ``number`` on the global blocklist, or on ``tenant``'s."""
        key = block_key(KIND_BLOCKLIST, b"t" if tenant else b"g", tenant or "", number)
        txn = self.write()
        try:
            txn.put(key, msgpack.packb([until, now, note]), db=self.blocks)
        except BaseException:
            txn.abort()
            raise
        self.commit(txn)

    def unblock(self, number: str, *, tenant: str | None) -> bool:
        """Take ``number`` off the global blocklist or ``tenant``'s; False if not on it."""
        key = block_key(KIND_BLOCKLIST, b"t" if tenant else b"g", tenant or "", number)
        return self._delete(key)

    def lift(self, number: str, *, scope: str, scope_id: str) -> bool:
        """Lift the marketing rule's block of ``number`` on a virtual number or tenant."""
        code = b"x" if scope == "virtual" else b"t"
        return self._delete(block_key(KIND_MARKETING, code, scope_id, number))

    def _delete(self, key: bytes) -> bool:
        txn = self.write()
        try:
            found = bool(txn.delete(key, db=self.blocks))
        except BaseException:
            txn.abort()
            raise
        self.commit(txn)
        return found

    def entries(self, kind: str | None = None) -> list[BlockEntry]:
        """Every blocklist entry and marketing block (``kind`` "blocklist" or "marketing"
        for one of them), in key order."""
        prefix = (
            b"" if kind is None else (KIND_BLOCKLIST if kind == "blocklist" else KIND_MARKETING)
        )
        out = []
        with self.read() as txn:
            cursor = txn.cursor(db=self.blocks)
            if cursor.set_range(prefix):
                for key, value in cursor:
                    if not bytes(key).startswith(prefix):
                        break
                    out.append(_entry(bytes(key), bytes(value)))
        return out

    # -- alerts -------------------------------------------------------------------------------
    def alerts(self, since: float = 0.0, limit: int = 1000) -> list[AbuseAlert]:
        """Alerts raised at or after ``since`` (epoch seconds), oldest first."""
        out = []
        with self.read() as txn:
            cursor = txn.cursor(db=self.alerts_db)
            if cursor.set_range(_MS.pack(max(int(since * 1000), 0))):
                for _, value in cursor:
                    out.append(AbuseAlert.from_dict(msgpack.unpackb(value)))
                    if len(out) >= limit:
                        break
        return out

    @staticmethod
    def alert_key(at: float) -> bytes:
        return _MS.pack(int(at * 1000)) + os.urandom(4)

    # -- pruning ------------------------------------------------------------------------------
    def prune(self, now: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` keys that no longer count (counters and distinct parties
        of past hours, days and windows, alerts past retention); returns how many. Keep
        ``limit`` small: the write lock is held while it runs."""
        hour = hour_bytes(int(now // 3600))
        done = 0
        txn = self.write()
        try:
            for db in (self.counts, self.distinct):
                cursor = txn.cursor(db=db)
                while done < limit and cursor.first() and bytes(cursor.key()[:4]) <= hour:
                    cursor.delete()
                    done += 1
            horizon = _MS.pack(int((now - ALERT_RETENTION) * 1000))
            cursor = txn.cursor(db=self.alerts_db)
            while done < limit and cursor.first() and bytes(cursor.key()[:8]) < horizon:
                cursor.delete()
                done += 1
        except BaseException:
            txn.abort()
            raise
        self.commit(txn)
        return done

    def prune_blocks(self, now: float) -> int:
        """Delete the marketing rule's blocks that have ended (the table is small: the
        whole of it is read); operators' blocklist entries stay until taken off."""
        ended = [
            block_key(KIND_MARKETING, b"x" if e.scope == "virtual" else b"t", e.scope_id, e.number)
            for e in self.entries("marketing")
            if not e.active(now)
        ]
        if not ended:
            return 0
        txn = self.write()
        try:
            for key in ended:
                txn.delete(key, db=self.blocks)
        except BaseException:
            txn.abort()
            raise
        self.commit(txn)
        return len(ended)

    def keys(self, db: Any) -> Iterator[bytes]:
        """Every key of one table (tests and diagnostics)."""
        with self.read() as txn:
            for key in txn.cursor(db=db).iternext(keys=True, values=False):
                yield bytes(key)
