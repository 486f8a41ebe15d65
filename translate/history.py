"""Bindings that ended, kept a while: who owned them, for the records and events written
after them.

A call's record and its webhook events are written when the call ends, an SMS record
when its message is taken; by then the platform may have deleted the binding, or a purge
removed it after its expiry. Whoever writes a record therefore asks for its binding's
owner when it writes it (``Store.attribution``): the binding's own tenant, pool and
out_id while it exists, else what this table kept of it. The store puts every binding
that has a tenant here when it removes it (an unbind, a purge, an eviction by a new
binding, a change that rewrites it), in the same transaction as the removal, so there is
no moment when a binding is in neither place.

The ``ended`` named database of the translation store:

``e id``                  -> msgpack ``[tenant, pool, out_id, virtual, kind, ended_at, expires]``
``t ended_ms(8) id``      -> empty: the same entries in time order, for pruning, and for
                             the API's tail of expiries (``binding.expired`` webhooks): a
                             binding removed at or after its ``expires`` had expired.

Entries are pruned in time order by the API process (``history_days``, a week by
default: far longer than a call lasts).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgpack

from translate.bindings import Binding

__all__ = ["TABLE", "Attribution", "EndedBinding", "History"]

TABLE: Final = "ended"
_MS: Final = struct.Struct(">Q")
_pack = msgpack.packb
_unpack = msgpack.unpackb


@dataclass(frozen=True, slots=True)
class Attribution:
    """Whom a record belongs to: the binding's tenant, the pool of its X, its out_id."""

    tenant: str
    pool: str | None
    out_id: str | None


@dataclass(frozen=True, slots=True)
class EndedBinding:
    """A removed binding, as the table keeps it; ``cursor`` orders the entries."""

    binding_id: str
    tenant: str
    pool: str | None
    out_id: str | None
    virtual: str
    kind: str
    ended_at: float
    expires: float | None
    cursor: bytes = b""

    @property
    def attribution(self) -> Attribution:
        return Attribution(self.tenant, self.pool, self.out_id)

    @property
    def expired(self) -> bool:
        """Whether the binding was removed because it had expired (purged or evicted)."""
        return self.expires is not None and self.expires <= self.ended_at


def _time_key(at: float, binding_id: str) -> bytes:
    return b"t" + _MS.pack(max(int(at * 1000), 0)) + binding_id.encode()


class History:
    """The ``ended`` table, read and written inside a caller's LMDB transaction."""

    def __init__(self, db: Any) -> None:
        self._db = db

    def removed(
        self, txn: lmdb.Transaction, binding: Binding, pool: str | None, now: float
    ) -> None:
        """Keep what a removed binding's records need (called by the store)."""
        assert binding.tenant is not None
        value = _pack(
            [binding.tenant, pool, binding.out_id, binding.virtual, binding.kind, now,
             binding.expires]
        )  # fmt: skip
        bid = binding.id.encode()
        old = txn.get(b"e" + bid, db=self._db)
        if old is not None:  # removed before (a change rewrites a binding): one entry
            txn.delete(_time_key(_unpack(old)[5], binding.id), db=self._db)
        txn.put(b"e" + bid, value, db=self._db)
        txn.put(_time_key(now, binding.id), b"", db=self._db)

    def get(self, txn: lmdb.Transaction, binding_id: str) -> EndedBinding | None:
        raw = txn.get(b"e" + binding_id.encode(), db=self._db)
        return None if raw is None else _decode(binding_id, raw, b"")

    def since(self, txn: lmdb.Transaction, after: bytes, limit: int) -> Iterator[EndedBinding]:
        """Entries in time order after the cursor ``after`` (b"" from the start)."""
        cursor = txn.cursor(db=self._db)
        start = after + b"\x00" if after else b"t"
        if not cursor.set_range(start):
            return
        n = 0
        for key in cursor.iternext(keys=True, values=False):
            key = bytes(key)
            if not key.startswith(b"t") or n >= limit:
                return
            binding_id = key[9:].decode()
            raw = txn.get(b"e" + key[9:], db=self._db)
            if raw is not None:
                n += 1
                yield _decode(binding_id, raw, key)

    def prune(self, txn: lmdb.Transaction, before: float, limit: int) -> int:
        """Forget bindings that ended before ``before``; at most ``limit``."""
        cursor = txn.cursor(db=self._db)
        stop = _time_key(before, "")
        done = 0
        if not cursor.set_range(b"t"):
            return 0
        while done < limit:
            key = bytes(cursor.key())
            if not key.startswith(b"t") or key >= stop:
                break
            txn.delete(b"e" + key[9:], db=self._db)
            cursor.delete()
            done += 1
        return done


def _decode(binding_id: str, raw: Any, cursor: bytes) -> EndedBinding:
    tenant, pool, out_id, virtual, kind, ended_at, expires = _unpack(raw)
    return EndedBinding(binding_id, tenant, pool, out_id, virtual, kind, ended_at, expires, cursor)
