"""Virtual-number pools: the numbers a tenant binds from, and how loaded each one is.

A pool belongs to one tenant (the platform that binds through the API) and holds virtual
numbers, each tagged with an optional ``area`` (the city or area code a platform may ask
for, as Alibaba's ExpectCity does). A number is in at most one pool. ``capacity`` is the
most bindings one number of the pool carries; ``cooloff`` is how long, after a party's
binding on a number ends, that number is not given to the same party again (so a rider
does not get last trip's driver's calls on a number they still remember).

The tables are named databases of the translation store's LMDB environment, written in
the same transaction as the bindings they count, so a bind and its pool bookkeeping
commit together or not at all. Keys use ``\\0`` as a separator, which tenant and pool
names (``translate.bindings.NAME_PATTERN``), areas and numbers never hold:

``pools``
    ``P tenant\\0pool`` -> msgpack ``[capacity, cooloff, created, numbers, bindings]``;
    ``M tenant\\0pool\\0X`` -> empty: the pool's numbers in number order.
``pool_numbers``
    ``X`` -> msgpack ``[tenant, pool, area, load, heads]``: ``load`` counts the owner's
    bindings on X (expired ones too, until purged), ``heads`` those of them that are
    ``ax``/``axn`` (which hold X alone).
``pool_load``
    ``tenant\\0pool\\0area\\0`` + load (4 bytes big-endian) + ``X`` -> empty, twice for each
    number: under its area, and under the empty area (the whole pool). A walk from the
    start of either prefix meets the least loaded numbers first, so allocation takes
    the first number that fits and spreads bindings evenly. A number holding an ``ax``
    or ``axn`` binding is filed at load ``0xFFFFFFFF``: shared allocations never reach it.
``cooloff``
    ``C\\0X`` -> msgpack end time: when real number C's last binding on pool number X
    ended (unbound, or removed after its expiry). Pruned once older than any cool-off.

The bookkeeping is driven by the store itself (``binding_added``/``binding_removed`` are
called by ``translate.store`` for every binding that has a tenant, whoever adds or removes
it: the API, a purge in the engine, an eviction by a new binding), so it cannot drift from
the bindings table. Allocation itself is in ``translate.allocation``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgpack

from translate.bindings import Binding

__all__ = [
    "AREA_PATTERN",
    "EXCLUSIVE_LOAD",
    "TABLES",
    "Pool",
    "PoolError",
    "PoolNumber",
    "PoolTables",
    "is_area",
]

#: The named databases this module keeps (opened by translate.store).
TABLES: Final = ("pools", "pool_numbers", "pool_load", "cooloff")
#: Load under which a number holding an ax/axn binding is filed: never shared.
EXCLUSIVE_LOAD: Final = 0xFFFFFFFF
AREA_PATTERN: Final = "^[A-Za-z0-9_-]{1,32}$"
_AREA_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_SEP: Final = b"\x00"
_LOAD: Final = struct.Struct(">I")
_pack = msgpack.packb
_unpack = msgpack.unpackb


def is_area(text: str) -> bool:
    """Whether ``text`` is a valid area tag (see AREA_PATTERN)."""
    return 0 < len(text) <= 32 and all(c in _AREA_CHARS for c in text)


class PoolError(Exception):
    """A pool operation that breaks a rule; ``rule`` names it (a stable code)."""

    def __init__(self, rule: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.message = message
        self.field = field


@dataclass(frozen=True, slots=True)
class Pool:
    """A tenant's pool: settings and counts (``numbers`` in it, ``bindings`` on them)."""

    tenant: str
    name: str
    capacity: int
    cooloff: float
    created: float
    numbers: int = 0
    bindings: int = 0


@dataclass(frozen=True, slots=True)
class PoolNumber:
    """One number of a pool and its load."""

    number: str
    tenant: str
    pool: str
    area: str | None
    load: int
    heads: int


def _pool_key(tenant: str, name: str) -> bytes:
    return b"P" + tenant.encode() + _SEP + name.encode()


def _member_prefix(tenant: str, name: str) -> bytes:
    return b"M" + tenant.encode() + _SEP + name.encode() + _SEP


def _load_prefix(tenant: str, pool: str, area: str | None) -> bytes:
    return tenant.encode() + _SEP + pool.encode() + _SEP + (area or "").encode() + _SEP


def _cooloff_key(party: str, virtual: str) -> bytes:
    return party.encode() + _SEP + virtual.encode()


class PoolTables:
    """Reads and writes of the pool tables inside a caller's LMDB transaction."""

    def __init__(self, pools: Any, numbers: Any, load: Any, cooloff: Any) -> None:
        self._pools = pools
        self._numbers = numbers
        self._load = load
        self._cooloff = cooloff

    # ----------------------------------------------------------------- pools

    def get(self, txn: lmdb.Transaction, tenant: str, name: str) -> Pool | None:
        raw = txn.get(_pool_key(tenant, name), db=self._pools)
        return None if raw is None else _decode_pool(tenant, name, raw)

    def of_tenant(self, txn: lmdb.Transaction, tenant: str) -> list[Pool]:
        prefix = b"P" + tenant.encode() + _SEP
        out: list[Pool] = []
        cursor = txn.cursor(db=self._pools)
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not bytes(key).startswith(prefix):
                    break
                out.append(_decode_pool(tenant, bytes(key[len(prefix) :]).decode(), value))
        return out

    def create(self, txn: lmdb.Transaction, pool: Pool) -> None:
        key = _pool_key(pool.tenant, pool.name)
        if txn.get(key, db=self._pools) is not None:
            raise PoolError("pool-exists", f"pool {pool.name!r} exists already", "name")
        self._put_pool(txn, pool)

    def update(self, txn: lmdb.Transaction, pool: Pool) -> None:
        """Write a pool's settings (its counts are kept as stored)."""
        stored = self._require(txn, pool.tenant, pool.name)
        self._put_pool(
            txn,
            Pool(
                pool.tenant,
                pool.name,
                pool.capacity,
                pool.cooloff,
                stored.created,
                stored.numbers,
                stored.bindings,
            ),
        )

    def delete(self, txn: lmdb.Transaction, tenant: str, name: str) -> None:
        """Delete a pool and release its numbers; refused while a number carries a binding."""
        pool = self._require(txn, tenant, name)
        if pool.bindings:
            raise PoolError(
                "pool-in-use", f"pool {name!r} carries {pool.bindings} binding(s); unbind first"
            )
        for number in self.members(txn, tenant, name):
            self._drop_number(txn, tenant, name, number)
        txn.delete(_pool_key(tenant, name), db=self._pools)

    def longest_cooloff(self, txn: lmdb.Transaction) -> float:
        """The longest cool-off of any pool (cool-off records older than it are dead)."""
        longest = 0.0
        cursor = txn.cursor(db=self._pools)
        if cursor.set_range(b"P"):
            for key, value in cursor:
                if bytes(key)[:1] != b"P":
                    break
                longest = max(longest, float(_unpack(value)[1]))
        return longest

    def _require(self, txn: lmdb.Transaction, tenant: str, name: str) -> Pool:
        pool = self.get(txn, tenant, name)
        if pool is None:
            raise PoolError("pool-not-found", f"no pool {name!r}", "pool")
        return pool

    def _put_pool(self, txn: lmdb.Transaction, pool: Pool) -> None:
        value = [pool.capacity, pool.cooloff, pool.created, pool.numbers, pool.bindings]
        txn.put(_pool_key(pool.tenant, pool.name), _pack(value), db=self._pools)

    def _count(
        self, txn: lmdb.Transaction, tenant: str, name: str, numbers: int, bindings: int
    ) -> None:
        key = _pool_key(tenant, name)
        raw = txn.get(key, db=self._pools)
        if raw is None:
            return
        value = _unpack(raw)
        value[3] += numbers
        value[4] += bindings
        txn.put(key, _pack(value), db=self._pools)

    # ----------------------------------------------------------------- numbers

    def number(self, txn: lmdb.Transaction, virtual: str) -> PoolNumber | None:
        raw = txn.get(virtual.encode(), db=self._numbers)
        if raw is None:
            return None
        tenant, pool, area, load, heads = _unpack(raw)
        return PoolNumber(virtual, tenant, pool, area, load, heads)

    def members(
        self, txn: lmdb.Transaction, tenant: str, name: str, after: str = "", limit: int = 0
    ) -> list[str]:
        """The pool's numbers in number order, after ``after``, at most ``limit`` (0: all)."""
        prefix = _member_prefix(tenant, name)
        cursor = txn.cursor(db=self._pools)
        out: list[str] = []
        start = prefix + after.encode() + (_SEP if after else b"")
        if cursor.set_range(start):
            for key in cursor.iternext(keys=True, values=False):
                if not bytes(key).startswith(prefix):
                    break
                out.append(bytes(key[len(prefix) :]).decode())
                if len(out) == limit:
                    break
        return out

    def add_number(
        self, txn: lmdb.Transaction, tenant: str, name: str, virtual: str, area: str | None
    ) -> None:
        """Put an unbound number in a pool (the caller checks it has no bindings)."""
        self._require(txn, tenant, name)
        held = self.number(txn, virtual)
        if held is not None:
            where = "this pool" if (held.tenant, held.pool) == (tenant, name) else "another pool"
            raise PoolError("number-in-pool", f"{virtual} is in {where} already", "number")
        txn.put(virtual.encode(), _pack([tenant, name, area, 0, 0]), db=self._numbers)
        txn.put(_member_prefix(tenant, name) + virtual.encode(), b"", db=self._pools)
        self._file(txn, PoolNumber(virtual, tenant, name, area, 0, 0))
        self._count(txn, tenant, name, 1, 0)

    def remove_number(self, txn: lmdb.Transaction, tenant: str, name: str, virtual: str) -> None:
        held = self.number(txn, virtual)
        if held is None or (held.tenant, held.pool) != (tenant, name):
            raise PoolError("number-not-found", f"{virtual} is not in pool {name!r}", "number")
        if held.load:
            raise PoolError(
                "number-in-use", f"{virtual} carries {held.load} binding(s); unbind first", "number"
            )
        self._drop_number(txn, tenant, name, virtual)
        self._count(txn, tenant, name, -1, 0)

    def set_area(self, txn: lmdb.Transaction, virtual: str, area: str | None) -> PoolNumber:
        held = self.number(txn, virtual)
        if held is None:
            raise PoolError("number-not-found", f"{virtual} is in no pool", "number")
        self._unfile(txn, held)
        moved = PoolNumber(virtual, held.tenant, held.pool, area, held.load, held.heads)
        self._store_number(txn, moved)
        self._file(txn, moved)
        return moved

    def _drop_number(self, txn: lmdb.Transaction, tenant: str, name: str, virtual: str) -> None:
        held = self.number(txn, virtual)
        if held is not None:
            self._unfile(txn, held)
        txn.delete(virtual.encode(), db=self._numbers)
        txn.delete(_member_prefix(tenant, name) + virtual.encode(), db=self._pools)

    def _store_number(self, txn: lmdb.Transaction, n: PoolNumber) -> None:
        value = [n.tenant, n.pool, n.area, n.load, n.heads]
        txn.put(n.number.encode(), _pack(value), db=self._numbers)

    def _load_keys(self, n: PoolNumber) -> list[bytes]:
        load = _LOAD.pack(EXCLUSIVE_LOAD if n.heads else min(n.load, EXCLUSIVE_LOAD - 1))
        tail = load + n.number.encode()
        keys = [_load_prefix(n.tenant, n.pool, None) + tail]
        if n.area:
            keys.append(_load_prefix(n.tenant, n.pool, n.area) + tail)
        return keys

    def _file(self, txn: lmdb.Transaction, n: PoolNumber) -> None:
        for key in self._load_keys(n):
            txn.put(key, b"", db=self._load)

    def _unfile(self, txn: lmdb.Transaction, n: PoolNumber) -> None:
        for key in self._load_keys(n):
            txn.delete(key, db=self._load)

    # ----------------------------------------------------------------- allocation support

    def least_loaded(
        self, txn: lmdb.Transaction, tenant: str, pool: str, area: str | None
    ) -> Iterator[tuple[int, str]]:
        """(load, X) of the pool's numbers (in ``area``, or all), least loaded first;
        numbers held by an ax/axn come last, at EXCLUSIVE_LOAD."""
        prefix = _load_prefix(tenant, pool, area)
        cursor = txn.cursor(db=self._load)
        if not cursor.set_range(prefix):
            return
        skip = len(prefix)
        for key in cursor.iternext(keys=True, values=False):
            if not bytes(key).startswith(prefix):
                return
            key = bytes(key)
            yield _LOAD.unpack_from(key, skip)[0], key[skip + 4 :].decode()

    def cooling(self, txn: lmdb.Transaction, party: str, since: float) -> Iterator[str]:
        """Numbers on which ``party``'s last binding ended after ``since``."""
        prefix = party.encode() + _SEP
        cursor = txn.cursor(db=self._cooloff)
        if not cursor.set_range(prefix):
            return
        for key, value in cursor:
            if not bytes(key).startswith(prefix):
                return
            if _unpack(value) > since:
                yield bytes(key[len(prefix) :]).decode()

    def prune_cooloff(
        self, txn: lmdb.Transaction, before: float, *, start: bytes = b"", limit: int
    ) -> bytes | None:
        """Delete cool-off records that ended before ``before``, visiting at most ``limit``
        records from ``start``; returns where to go on next time (None: at the end)."""
        cursor = txn.cursor(db=self._cooloff)
        if not cursor.set_range(start):
            return None
        for _ in range(limit):
            if not cursor.key():
                return None
            if _unpack(cursor.value()) < before:
                cursor.delete()  # moves on to the next record
            elif not cursor.next():
                return None
        return bytes(cursor.key()) or None

    # ----------------------------------------------------------------- driven by the store

    def binding_added(self, txn: lmdb.Transaction, binding: Binding) -> None:
        """Count a new binding of its tenant on a pool number (called by the store)."""
        held = self.number(txn, binding.virtual)
        if held is None or held.tenant != binding.tenant:
            return
        heads = held.heads + (1 if binding.has_head() else 0)
        self._recount(txn, held, held.load + 1, heads)
        self._count(txn, held.tenant, held.pool, 0, 1)

    def binding_removed(self, txn: lmdb.Transaction, binding: Binding, now: float) -> None:
        """Uncount a removed binding and start its parties' cool-off on the number."""
        held = self.number(txn, binding.virtual)
        if held is None or held.tenant != binding.tenant:
            return
        heads = held.heads - (1 if binding.has_head() else 0)
        self._recount(txn, held, max(held.load - 1, 0), max(heads, 0))
        self._count(txn, held.tenant, held.pool, 0, -1)
        ended = now if binding.expires is None else min(now, binding.expires)
        value = _pack(ended)
        for party in binding.numbers():
            txn.put(_cooloff_key(party, binding.virtual), value, db=self._cooloff)

    def _recount(self, txn: lmdb.Transaction, held: PoolNumber, load: int, heads: int) -> None:
        self._unfile(txn, held)
        n = PoolNumber(held.number, held.tenant, held.pool, held.area, load, heads)
        self._store_number(txn, n)
        self._file(txn, n)


def _decode_pool(tenant: str, name: str, raw: bytes | memoryview) -> Pool:
    capacity, cooloff, created, numbers, bindings = _unpack(raw)
    return Pool(tenant, name, capacity, cooloff, created, numbers, bindings)
