"""The store-and-forward queue: messages accepted but not yet delivered, kept in LMDB.

An accepted submit_sm is staged here and committed before its submit_sm_resp is sent;
it is removed once the next hop acknowledged it. Receipts and mobile-originated
messages travelling to carrier ESMEs use the same queue. The queue also keeps the map
from the message ids the upstream returned to the ids ansim gave the sender, so that
delivery receipts can be routed back after a restart, and the receipts that arrived
before the submit_sm_resp carrying their id (held until it comes, see the relay).

Writes are staged in memory and applied by :meth:`MessageQueue.commit` in one LMDB
transaction (group commit: one fsync covers every message that arrived in the same
event-loop turn). Reads of the receipt map see staged entries too. The environment is
created readable by the engine's user only (see :mod:`sms_smpp.files`).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import lmdb
import msgpack

from .files import FILE_MODE, private_dir, private_file

# Record kinds.
TO_UPSTREAM = 0
TO_ESME = 1

_AGE_KEY = struct.Struct(">Q")


@dataclass(slots=True)
class Message:
    """One queued message.

    ``body`` is the encoded submit_sm/deliver_sm body to send (ready for a new sequence
    number); ``target`` is the system_id of the ESME for TO_ESME, "" for upstream;
    ``info`` carries what receipts and records need (sender, numbers, part).
    """

    id: str
    kind: int
    target: str
    command_id: int
    body: bytes
    created: float
    expires: float
    info: dict[str, Any]
    attempts: int = 0

    def pack(self) -> bytes:
        data: bytes = msgpack.packb(
            (
                self.kind,
                self.target,
                self.command_id,
                self.body,
                self.created,
                self.expires,
                self.info,
                self.attempts,
            ),
            use_bin_type=True,
        )
        return data

    @classmethod
    def unpack(cls, key: str, raw: bytes) -> Message:
        kind, target, cid, body, created, expires, info, attempts = msgpack.unpackb(raw, raw=False)
        return cls(key, kind, target, cid, body, created, expires, info, attempts)


class MessageQueue:
    """Durable queue and receipt-id map in one LMDB environment (see module docstring)."""

    def __init__(self, path: str, *, map_size: int = 1 << 30, fsync: bool = True) -> None:
        private_dir(path)
        for name in ("data.mdb", "lock.mdb"):
            if os.path.exists(os.path.join(path, name)):
                private_file(os.path.join(path, name))
        self.env = lmdb.open(
            path,
            map_size=map_size,
            max_dbs=8,
            sync=fsync,
            metasync=fsync,
            writemap=True,
            map_async=not fsync,
            mode=FILE_MODE,
        )
        self._pending_db = self.env.open_db(b"pending")
        self._dlr_db = self.env.open_db(b"dlr")
        self._age_db = self.env.open_db(b"dlr_age")
        self._meta_db = self.env.open_db(b"meta")
        self._hold_db = self.env.open_db(b"dlr_hold")
        self._split_db = self.env.open_db(b"split")
        self._puts: dict[bytes, bytes] = {}
        self._deletes: set[bytes] = set()
        self._dlr_puts: dict[bytes, bytes] = {}
        self._hold_puts: dict[bytes, bytes] = {}
        self._hold_deletes: set[bytes] = set()
        self._split_puts: dict[bytes, bytes | None] = {}  # None: delete
        with self.env.begin(db=self._meta_db) as txn:
            last = txn.get(b"last_id")
        # Ids are a counter seeded from the clock in microseconds, never below the last
        # one persisted: unique across restarts and in arrival order as LMDB keys.
        base = int(time.time() * 1_000_000)
        self._next = max(base, int(last, 16) + 1 if last else 0)
        self.commits = 0

    # -- ids ----------------------------------------------------------------------

    def new_id(self) -> str:
        n = self._next
        self._next = n + 1
        return f"{n:016x}"

    # -- staging --------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        return bool(
            self._puts
            or self._deletes
            or self._dlr_puts
            or self._hold_puts
            or self._hold_deletes
            or self._split_puts
        )

    def stage_put(self, message: Message) -> None:
        self._puts[message.id.encode()] = message.pack()

    def stage_delete(self, message_id: str) -> None:
        key = message_id.encode()
        if self._puts.pop(key, None) is None:
            self._deletes.add(key)

    def stage_receipt_map(
        self, upstream: str, upstream_id: str, value: tuple[Any, ...], now: float
    ) -> None:
        """Remember that ``upstream_id`` (from upstream ``upstream``) means ``value``."""
        self._dlr_puts[upstream_id.encode()] = msgpack.packb(
            (now, upstream, *value), use_bin_type=True
        )

    def stage_hold(self, hold_id: str, value: tuple[Any, ...]) -> None:
        """Keep a receipt that came before its id map (``value`` as the relay writes it)."""
        self._hold_puts[hold_id.encode()] = msgpack.packb(value, use_bin_type=True)

    def stage_hold_delete(self, hold_id: str) -> None:
        key = hold_id.encode()
        if self._hold_puts.pop(key, None) is None:
            self._hold_deletes.add(key)

    def stage_split(self, parent_id: str, value: tuple[Any, ...] | None) -> None:
        """The receipt state of a message sent as parts (None: forget it)."""
        self._split_puts[parent_id.encode()] = (
            None if value is None else msgpack.packb(value, use_bin_type=True)
        )

    def split_state(self, parent_id: str) -> tuple[Any, ...] | None:
        key = parent_id.encode()
        if key in self._split_puts:
            raw = self._split_puts[key]
        else:
            with self.env.begin(db=self._split_db) as txn:
                found = txn.get(key)
            raw = None if found is None else bytes(found)
        return None if raw is None else tuple(msgpack.unpackb(raw, raw=False, strict_map_key=False))

    def commit(self) -> None:
        """Apply everything staged in one transaction."""
        if not self.dirty:
            return
        puts, deletes, dlr = self._puts, self._deletes, self._dlr_puts
        self._puts, self._deletes, self._dlr_puts = {}, set(), {}
        hold_puts, hold_deletes = self._hold_puts, self._hold_deletes
        self._hold_puts, self._hold_deletes = {}, set()
        splits, self._split_puts = self._split_puts, {}
        with self.env.begin(write=True) as txn:
            for key, raw in splits.items():
                if raw is None:
                    txn.delete(key, db=self._split_db)
                else:
                    txn.put(key, raw, db=self._split_db)
            if hold_puts:
                txn.cursor(db=self._hold_db).putmulti(hold_puts.items())
            for key in hold_deletes:
                txn.delete(key, db=self._hold_db)
            if puts:
                txn.cursor(db=self._pending_db).putmulti(puts.items())
            if puts or hold_puts:
                txn.put(b"last_id", f"{self._next - 1:016x}".encode(), db=self._meta_db)
            for key in deletes:
                txn.delete(key, db=self._pending_db)
            if dlr:
                txn.cursor(db=self._dlr_db).putmulti(dlr.items())
                now_key = _AGE_KEY.pack(int(time.time()))
                txn.cursor(db=self._age_db).putmulti((now_key + key, b"") for key in dlr)
        self.commits += 1

    # -- reading --------------------------------------------------------------------

    def pending(self) -> Iterator[Message]:
        """Every committed message, oldest first (used at start-up)."""
        with self.env.begin(db=self._pending_db) as txn:
            for key, raw in txn.cursor():
                yield Message.unpack(bytes(key).decode(), bytes(raw))

    def held(self) -> Iterator[tuple[str, tuple[Any, ...]]]:
        """Every committed held receipt, (hold id, value), oldest first."""
        with self.env.begin(db=self._hold_db) as txn:
            for key, raw in txn.cursor():
                yield bytes(key).decode(), tuple(msgpack.unpackb(bytes(raw), raw=False))

    def count(self) -> int:
        with self.env.begin(db=self._pending_db) as txn:
            entries: int = txn.stat(self._pending_db)["entries"]
            return entries

    def receipt_map(self, upstream_id: str) -> tuple[Any, ...] | None:
        """(mapped_at, upstream, *value) for an upstream message id, or None."""
        key = upstream_id.encode()
        raw = self._dlr_puts.get(key)
        if raw is None:
            with self.env.begin(db=self._dlr_db) as txn:
                found = txn.get(key)
            if found is None:
                return None
            raw = bytes(found)
        return tuple(msgpack.unpackb(raw, raw=False))

    def expire_receipt_maps(self, older_than: float, limit: int = 10_000) -> int:
        """Drop receipt-id maps (and part receipt states) recorded before ``older_than``."""
        cutoff = _AGE_KEY.pack(int(older_than))
        removed = 0
        with self.env.begin(write=True) as txn:
            stale = []
            for key, raw in txn.cursor(db=self._split_db):
                if msgpack.unpackb(bytes(raw), raw=False, strict_map_key=False)[0] < older_than:
                    stale.append(bytes(key))
            for key in stale[:limit]:
                txn.delete(key, db=self._split_db)
            cursor = txn.cursor(db=self._age_db)
            if not cursor.first():
                return 0
            while removed < limit:
                key = bytes(cursor.key())
                if key[:8] >= cutoff:
                    break
                txn.delete(key[8:], db=self._dlr_db)
                removed += 1
                if not cursor.delete():
                    break
                if cursor.key() == b"":
                    break
        return removed

    def close(self) -> None:
        self.commit()
        self.env.close()
