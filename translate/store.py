"""The translation store: bindings in one LMDB environment shared by all worker processes.

Readers never lock: each lookup is one short read transaction, so it sees one committed
state of the store. Writers (the YAML reload, the REST API, purges) are serialised by
LMDB across processes, and a whole map reload is one write transaction, so a lookup sees
the old map or the new one, never a mix. Open a Store in each process after forking.

Key layout
==========
Numbers are E.164 text as ASCII, ids UTF-8, ``\\0`` a separator that never occurs in
a number. Five named databases:

``routes`` (the hot path)
    ``X\\1``      -> head route: where callers without a caller-specific entry go
                    (``ax`` and ``axn`` bindings).
    ``X\\0C``     -> caller-specific route for caller C on X: each party of an ``axb``
                    pair (to the other party), and A of an ``axn`` (to its default B).
    Value: msgpack ``[flags, callee, binding_id, expires?, max_seconds?, calls_per_hour?,
    hours?, tenant?]``, trailing absent fields dropped; flags = kind code (0 ax, 1 axb, 2 axn)
    | record << 2 | present-caller << 3 | direction << 4 (who calls whom through the
    entry, ``translate.layout.DIRECTIONS``). The route is precomputed per caller, and
    ``X\\0C`` < ``X\\1`` < any other number's keys, so one seek to ``X\\0C`` finds an
    ``axb`` party or the ``axn`` A, or stops on the next key: the head ``X\\1`` for an
    ``ax`` X (and an ``axn`` caller sorting after A), else one more descent reads the
    head; an outsider of an axb-only X costs one more seek (to tell ``not_party`` from
    ``unknown``). Decoding is one small msgpack array; the kind string
    and the present number are shared objects, not new ones.
``bindings``
    ``id`` -> msgpack ``[kind, X, a, b, present_caller, record, expires, max_seconds,
    calls_per_hour, hours, source]``: the whole binding, for unbinding, diffing reloads,
    ``show`` and conflict messages.
``sources``
    ``source\\0id`` -> empty: which bindings came from "yaml" or "api", so a reload replaces
    only its own.
``expiry``
    ``expires_ms (8 bytes big-endian) kind_code (1 byte) id`` -> empty: purge walks it
    from the start up to now; stats count expired bindings by kind from it.
``meta``
    ``format`` -> layout version; ``count\\0source\\0kind`` -> msgpack int;
    ``loaded\\0source`` -> msgpack map describing the last bulk load.

Bindings with a tenant (made through the API) are also indexed in ``owners``
(translate.owners), and counted in the pool tables when their X is a pool number
(translate.pools); both are written by the same write as the binding. When such a
binding is removed, its owner is kept in ``ended`` (translate.history), so records
written after it ended still find their tenant (``attribution``). Other packages may
keep named databases of their own in the environment (``Store.table``) and write them in
the transaction that writes bindings (``Store.transaction``), so a write and its
bookkeeping commit together.

Expiry is applied at lookup time (an expired binding answers ``expired``), and
``purge_expired`` deletes expired bindings. A binding that expired does not block a new
one: it is evicted when a new binding needs its number.

Writes are gathered and written table by table in key order (``_Writer``, up to
``FLUSH_ROUTES`` routes at a time), so pages fill up when the keys go past the table's
end; ``repack`` rewrites the routes table with full pages when inserts in its middle
have left them half full.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import lmdb
import msgpack

from translate.bindings import KINDS, Binding, Refusal, Route, binding_problems
from translate.history import TABLE as HISTORY_TABLE
from translate.history import Attribution, History
from translate.layout import (
    DIRECTION_SHIFT,
    DIRECTIONS,
    FLAG_PRESENT_CALLER,
    FLAG_RECORD,
    FORMAT,
    HEAD_MARK,
    KIND_MASK,
    MEDIA_CODES,
    MEDIA_SHIFT,
    SEP,
    decode_binding,
    encode_binding,
    expiry_key,
    expiry_key_parts,
    head_key,
    party_key,
    route_value,
    source_key,
)
from translate.limits import within_hours
from translate.numbers import mask
from translate.owners import TABLE as OWNERS_TABLE
from translate.owners import OwnerIndex
from translate.pools import TABLES as POOL_TABLES
from translate.pools import PoolTables
from translate.private_files import FILE_MODE, private_dir, tighten

__all__ = [
    "DEFAULT_MAP_SIZE",
    "DEFAULT_SNAPSHOT_MAX_AGE",
    "SOURCES",
    "Conflict",
    "ConflictError",
    "DropRefused",
    "Refusal",
    "ReplaceResult",
    "Route",
    "Store",
    "StoreError",
    "StoreStats",
    "Transaction",
]

log = logging.getLogger(__name__)

#: Address space reserved for the store; the file only grows as data is written.
DEFAULT_MAP_SIZE: Final = 32 << 30
#: Longest a lookup snapshot is reused, in seconds (see Store).
DEFAULT_SNAPSHOT_MAX_AGE: Final = 0.005
#: Named databases the environment may hold: the store's own, and those of Store.table.
MAX_DBS: Final = 32
SOURCES: Final = ("yaml", "api")
#: Routes a write transaction gathers before writing them in key order (see _Writer).
FLUSH_ROUTES: Final = 500_000

_UNKNOWN: Final = Refusal("unknown", None)
_NOT_PARTY: Final = Refusal("not_party", None)
_unpackb = msgpack.unpackb
_new_route = tuple.__new__  # Route's fields in order, without its Python-level __new__
_monotonic = time.monotonic
#: Route flags decoded once: flags -> (kind, record, callee sees the caller, direction,
#: media mode). An ax entry written before directions were recorded can only be "N->A".
_FLAGS: Final = tuple(
    (
        KINDS[f & KIND_MASK] if f & KIND_MASK < len(KINDS) else "",
        bool(f & FLAG_RECORD),
        bool(f & FLAG_PRESENT_CALLER),
        DIRECTIONS[(f >> DIRECTION_SHIFT) & 3] or ("N->A" if f & KIND_MASK == 0 else ""),
        MEDIA_CODES[f >> MEDIA_SHIFT],
    )
    for f in range(256)
)

Progress = Callable[[int], None]
#: The files LMDB keeps in the store's folder.
_FILES: Final = ("data.mdb", "lock.mdb")


class StoreError(Exception):
    """The store cannot be opened or written (missing, wrong format, full)."""


@dataclass(frozen=True, slots=True)
class Conflict:
    """A binding that cannot be written; ``rule`` names the rule it breaks."""

    binding_id: str
    rule: str
    message: str
    other_id: str | None = None

    def __str__(self) -> str:
        return f"{self.rule}: {self.binding_id!r}: {self.message}"


class DropRefused(Exception):
    """A replace was refused because it would remove too many live bindings at once."""

    def __init__(self, message: str, live: int, dropped: int) -> None:
        super().__init__(message)
        self.live = live
        self.dropped = dropped


class ConflictError(Exception):
    """A write was refused because of conflicts; nothing was written."""

    def __init__(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        super().__init__("\n".join(str(c) for c in conflicts))


@dataclass(frozen=True, slots=True)
class ReplaceResult:
    """What a replace of one source's bindings changed."""

    added: int
    removed: int
    changed: int
    unchanged: int

    @property
    def total(self) -> int:
        return self.added + self.changed + self.unchanged


@dataclass(slots=True)
class StoreStats:
    """Binding counts by source and kind, and expired (not yet purged) by kind."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)
    size_bytes: int = 0
    #: Entries and leaf pages of the routes table: few entries a page calls for a repack.
    route_entries: int = 0
    route_pages: int = 0

    @property
    def total(self) -> int:
        return sum(sum(by_kind.values()) for by_kind in self.counts.values())


class Store:
    """The LMDB translation table: lookups for the hot path, writers for the API and maps.

    Open one Store per path per process (LMDB refuses a second one), after forking.
    Lookups and ``release`` belong to one thread; writes may come from one other thread
    at a time (the engine reloads and purges so, off its event loop).

    Lookups reuse one read snapshot for up to ``snapshot_max_age`` seconds (5 ms by
    default) instead of opening a read transaction per lookup, which would cost about a
    tenth of a lookup. A lookup may therefore miss a write committed by another process
    less than 5 ms earlier; it never sees part of a write. Writes through this Store are
    seen by its next lookup at once. ``snapshot_max_age=0`` gives a fresh snapshot to
    every lookup.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        map_size: int = DEFAULT_MAP_SIZE,
        sync: bool = True,
        snapshot_max_age: float = DEFAULT_SNAPSHOT_MAX_AGE,
    ) -> None:
        self.path = os.fspath(path)
        self.snapshot_max_age = snapshot_max_age
        self._reader: lmdb.Transaction | None = None
        self._cursor: lmdb.Cursor | None = None
        self._reader_until = 0.0
        self.readonly = readonly
        if not readonly:
            # The store holds real numbers: its folder and files are the owner's only.
            try:
                private_dir(self.path)
            except OSError as exc:
                raise StoreError(f"cannot create store {self.path}: {exc.strerror}") from exc
            for name in _FILES:
                tighten(os.path.join(self.path, name), FILE_MODE)
        elif not os.path.exists(os.path.join(self.path, "data.mdb")):
            raise StoreError(f"no store at {self.path} (run `ansim numbers load` first)")
        try:
            self._env = lmdb.open(
                self.path,
                map_size=map_size,
                max_dbs=MAX_DBS,
                readonly=readonly,
                sync=sync,
                max_readers=1024,
                mode=FILE_MODE,
            )
        except lmdb.Error as exc:
            raise StoreError(f"cannot open store {self.path}: {exc}") from exc
        try:
            self._open_dbs()
        except BaseException:
            self._env.close()
            raise

    def _open_dbs(self) -> None:
        create = not self.readonly
        names = ("routes", "bindings", "sources", "expiry", "meta")
        try:
            # Opened outside an explicit transaction: a handle opened in a read-only
            # transaction would be discarded with it.
            dbs = [self._env.open_db(name.encode(), create=create) for name in names]
        except lmdb.NotFoundError as exc:
            raise StoreError(f"{self.path} is not an initialised ansim store") from exc
        self._routes, self._bindings, self._sources, self._expiry, self._meta = dbs
        self._owners: OwnerIndex | None = None
        self._pools: PoolTables | None = None
        self._history: History | None = None
        try:
            self._owners = OwnerIndex(self.table(OWNERS_TABLE))
            self._pools = PoolTables(*(self.table(name) for name in POOL_TABLES))
            self._history = History(self.table(HISTORY_TABLE))
        except StoreError:
            if create:
                raise  # a read-only store written before owners existed has none: no writes
        with self._env.begin(write=create, db=self._meta) as txn:
            stored = txn.get(b"format")
            if stored is None and create:
                txn.put(b"format", FORMAT)
            elif stored != FORMAT:
                raise StoreError(f"{self.path} holds {stored!r}, expected {FORMAT!r}")

    def table(self, name: str) -> Any:
        """The handle of named database ``name`` in the store's environment, created when
        the store is writable; for tables other packages keep beside the bindings. Open
        tables before reading or writing from other threads."""
        try:
            return self._env.open_db(name.encode(), create=not self.readonly)
        except lmdb.NotFoundError:
            raise StoreError(f"{self.path} has no table {name!r}") from None
        except lmdb.DbsFullError:
            raise StoreError(f"{self.path}: more than {MAX_DBS} tables") from None

    @property
    def owners(self) -> OwnerIndex:
        """The per-tenant indexes of API bindings (translate.owners)."""
        if self._owners is None:
            raise StoreError(f"{self.path} has no owner tables (open it writable once)")
        return self._owners

    @property
    def pools(self) -> PoolTables:
        """The virtual-number pool tables (translate.pools)."""
        if self._pools is None:
            raise StoreError(f"{self.path} has no pool tables (open it writable once)")
        return self._pools

    @property
    def history(self) -> History:
        """Bindings of tenants that ended, kept a while (translate.history)."""
        if self._history is None:
            raise StoreError(f"{self.path} has no history table (open it writable once)")
        return self._history

    def attribution(self, binding_ids: Iterable[str]) -> dict[str, Attribution]:
        """The owner (tenant, pool, out_id) of each binding of ``binding_ids`` that has
        one: from the binding while it exists, else from the history of ended bindings.
        Bindings without a tenant (the operator's maps) and ids unknown to both are left
        out. One read transaction; for the threads that write call and SMS records."""
        out: dict[str, Attribution] = {}
        history = self._history
        with self.reader() as txn:
            for binding_id in binding_ids:
                if binding_id in out:
                    continue
                raw = txn.get(binding_id.encode(), db=self._bindings)
                if raw is not None:
                    binding, _ = decode_binding(binding_id, raw)
                    if binding.tenant is not None:
                        out[binding_id] = Attribution(
                            binding.tenant, self._pool_of(txn, binding), binding.out_id
                        )
                    continue
                ended = None if history is None else history.get(txn, binding_id)
                if ended is not None:
                    out[binding_id] = ended.attribution
        return out

    def _pool_of(self, txn: lmdb.Transaction, binding: Binding) -> str | None:
        held = None if self._pools is None else self._pools.number(txn, binding.virtual)
        return held.pool if held is not None and held.tenant == binding.tenant else None

    @contextmanager
    def reader(self) -> Iterator[lmdb.Transaction]:
        """A read-only snapshot of the whole environment, for the block's duration."""
        with self._env.begin() as txn:
            yield txn

    @contextmanager
    def transaction(self, now: float) -> Iterator[Transaction]:
        """One write transaction for many units of work, committed once when the block
        ends without an exception (see Transaction); waits for LMDB's write lock."""
        with self._write() as txn:
            yield Transaction(self, txn, now)

    def flush(self) -> None:
        """Force committed writes to disk (for a store opened with ``sync=False``)."""
        self._env.sync(True)

    def close(self) -> None:
        """Close the environment; the Store must not be used afterwards."""
        self.release()
        self._env.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- hot path

    def lookup(self, virtual: str, caller: str, now: float) -> Route | Refusal:
        """Decide a call from ``caller`` to ``virtual`` (both E.164) at epoch time ``now``.

        Returns the Route to place, or a Refusal whose reason is one of
        ``translate.refusals.REFUSALS``. Nothing is counted here: the caps on calls and
        messages are ``translate.limits``', which decides with the Route (its
        ``calls_per_hour`` and ``tenant``).
        """
        cursor = self._cursor
        if cursor is None or _monotonic() >= self._reader_until:
            cursor = self._new_snapshot()
        # A cursor kept with the snapshot is cheaper than Transaction.get, which opens one.
        # One seek to X\0C finds C's own route, or stops on the next key, which is X's head
        # when no party route of X sorts after C (see the key layout above).
        key = f"{virtual}\0{caller}".encode()
        raw: Any  # bytes, or None when X has no route for C
        if cursor.set_range(key):
            found = cursor.key()
            if found == key:
                raw = cursor.value()
            else:
                head = virtual.encode() + HEAD_MARK
                raw = cursor.value() if found == head else cursor.get(head)
        else:
            raw = cursor.get(virtual.encode() + HEAD_MARK)
        if raw is None:
            return self._unrouted(cursor, virtual)
        rec = _unpackb(raw)
        max_seconds = per_hour = None
        tenant = ""
        n = len(rec)
        if n > 3:  # expiry and limits: absent from most bindings
            expires = rec[3]
            if expires is not None and now >= expires:
                return Refusal("expired", rec[2])
            if n > 4:
                max_seconds = rec[4]
                if n > 5:
                    per_hour = rec[5]
                    if n > 6:
                        hours = rec[6]
                        if hours is not None and not within_hours(
                            hours[0], hours[1], hours[2], now
                        ):
                            return Refusal("hours", rec[2])
                        if n > 7:
                            tenant = rec[7]
        kind, record, to_caller, direction, media = _FLAGS[rec[0]]
        present = caller if to_caller else virtual
        return _new_route(
            Route,
            (
                rec[1], present, rec[2], kind, record, max_seconds, direction, media, per_hour,
                tenant,
            ),
        )  # fmt: skip

    def _new_snapshot(self) -> lmdb.Cursor:
        self.release()
        try:
            txn = self._env.begin(db=self._routes)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)  # another process grew the map: adopt its size
            txn = self._env.begin(db=self._routes)
        self._reader = txn
        self._cursor = cursor = txn.cursor()
        self._reader_until = _monotonic() + self.snapshot_max_age
        return cursor

    def release(self) -> None:
        """End the lookup snapshot now (see the class docstring); the next lookup starts
        a fresh one. Cheap; the engine calls it from its once-a-second housekeeping so an
        idle worker does not keep an old snapshot (and the pages it pins) alive."""
        if self._reader is not None:
            self._cursor = None
            self._reader.abort()
            self._reader = None

    @staticmethod
    def _unrouted(cursor: lmdb.Cursor, virtual: str) -> Refusal:
        """not_party when X holds caller-specific routes (axb pairs), else unknown."""
        prefix = virtual.encode() + SEP
        if cursor.set_range(prefix) and bytes(cursor.key()).startswith(prefix):
            return _NOT_PARTY
        return _UNKNOWN

    # ----------------------------------------------------------------- reading

    def get(self, binding_id: str) -> tuple[Binding, str] | None:
        """(binding, source) for an id, or None."""
        with self._env.begin(db=self._bindings) as txn:
            raw = txn.get(binding_id.encode())
        return None if raw is None else decode_binding(binding_id, raw)

    def on_virtual(self, virtual: str) -> list[tuple[Binding, str]]:
        """Every binding on X (head first, then pairs in caller order), with its source."""
        with self._env.begin() as txn:
            return self._on_virtual(txn, virtual)

    def _on_virtual(self, txn: lmdb.Transaction, virtual: str) -> list[tuple[Binding, str]]:
        x = head_key(virtual)
        ids: list[str] = []
        cursor = txn.cursor(db=self._routes)
        if cursor.set_key(x):
            ids.append(_unpackb(cursor.value())[2])
        prefix = virtual.encode("ascii") + SEP
        if cursor.set_range(prefix):
            for key, value in cursor:
                if not bytes(key).startswith(prefix):
                    break
                ids.append(_unpackb(value)[2])
        out: list[tuple[Binding, str]] = []
        for binding_id in dict.fromkeys(ids):
            raw = txn.get(binding_id.encode(), db=self._bindings)
            if raw is not None:
                out.append(decode_binding(binding_id, raw))
        return out

    def loaded(self, source: str) -> dict[str, Any] | None:
        """What the last bulk load of ``source`` recorded (``at``, ``files``, ``bindings``,
        ``digest``), or None when ``source`` was never loaded into this store."""
        with self._env.begin(db=self._meta) as txn:
            raw = txn.get(b"loaded" + SEP + source.encode())
        return None if raw is None else dict(_unpackb(raw))

    def ids(self, source: str) -> list[str]:
        """Ids of the bindings from ``source``, in id order."""
        with self._env.begin() as txn:
            return self._ids_in(txn, source)

    def stats(self, now: float) -> StoreStats:
        """Counts by source and kind, expired-but-not-purged counts, last loads, file size."""
        result = StoreStats()
        with self._env.begin(db=self._meta) as txn:
            cursor = txn.cursor()
            if cursor.set_range(b"count" + SEP):
                for key, value in cursor:
                    if not key.startswith(b"count" + SEP):
                        break
                    _, source, kind = key.decode().split("\0")
                    result.counts.setdefault(source, {})[kind] = _unpackb(value)
            cursor = txn.cursor()
            if cursor.set_range(b"loaded" + SEP):
                for key, value in cursor:
                    if not key.startswith(b"loaded" + SEP):
                        break
                    result.loaded[key[7:].decode()] = _unpackb(value)
            for key in txn.cursor(db=self._expiry).iternext(keys=True, values=False):
                expires, kind, _ = expiry_key_parts(key)
                if expires > now:
                    break
                result.expired[kind] = result.expired.get(kind, 0) + 1
            routes = txn.stat(self._routes)
            result.route_entries, result.route_pages = routes["entries"], routes["leaf_pages"]
        info = self._env.info()
        stat = self._env.stat()
        result.size_bytes = (info["last_pgno"] + 1) * stat["psize"]
        return result

    # ----------------------------------------------------------------- writing

    def put(
        self, binding: Binding, *, now: float, source: str = "api", replace: bool = False
    ) -> None:
        """Add one binding (replacing the one with the same id when ``replace``).

        Raises ConflictError when it breaks a rule; the store is then unchanged.
        """
        self._check_source(source)
        with self._write() as txn:
            writer = _Writer(self, txn, now)
            if replace:
                writer.remove(binding.id)
            writer.add(binding, source)
            writer.finish()

    def put_many(
        self,
        bindings: Iterable[Binding],
        *,
        now: float,
        source: str = "api",
        progress: Progress | None = None,
    ) -> int:
        """Add many bindings in one transaction; all or nothing. Returns how many."""
        self._check_source(source)
        with self._write() as txn:
            writer = _Writer(self, txn, now)
            n = 0
            for n, binding in enumerate(bindings, 1):
                writer.add(binding, source)
                if progress is not None and n % 10_000 == 0:
                    progress(n)
            writer.finish()
        return n

    def unbind(self, binding_id: str, *, now: float | None = None) -> bool:
        """Remove a binding by id, whatever its source; False when there was none.
        ``now`` (default: the clock) is when its pool cool-off starts."""
        with self._write() as txn:
            writer = _Writer(self, txn, time.time() if now is None else now)
            removed = writer.remove(binding_id)
            writer.finish()
        return removed

    def replace_source(
        self,
        source: str,
        bindings: Iterable[Binding],
        *,
        now: float,
        progress: Progress | None = None,
        loaded: dict[str, Any] | None = None,
        guard: Callable[[int, int], str | None] | None = None,
    ) -> ReplaceResult:
        """Make ``bindings`` the whole set from ``source``, in one write transaction.

        Unchanged bindings are left as they are; others of ``source`` are removed, new and
        changed ones written. Bindings of other sources are not touched, except expired
        ones standing in a new binding's way. Raises ConflictError listing every conflict;
        the store is then unchanged. ``loaded`` is kept in ``meta`` for ``stats``.

        ``guard(live, dropped)`` is asked, before anything is written, about the live
        (unexpired) bindings of ``source`` and how many of them the new set leaves out; a
        message back refuses the write (DropRefused, the store unchanged).
        """
        self._check_source(source)
        with self._write() as txn:
            writer = _Writer(self, txn, now)
            wanted: dict[str, tuple[Binding, bytes]] = {}
            for binding in bindings:
                wanted[binding.id] = (binding, encode_binding(binding, source))
            gone: list[str] = []
            replaced: list[str] = []
            unchanged = live = dropped = 0
            for binding_id in self._ids_in(txn, source):
                item = wanted.get(binding_id)
                raw = txn.get(binding_id.encode(), db=self._bindings)
                alive = (
                    guard is not None
                    and raw is not None
                    and decode_binding(binding_id, raw)[0].live(now)
                )
                live += alive
                if item is not None and raw == item[1]:
                    unchanged += 1
                    del wanted[binding_id]
                    continue
                if item is None:
                    gone.append(binding_id)
                    dropped += alive
                else:
                    replaced.append(binding_id)
            if guard is not None:
                refusal = guard(live, dropped)
                if refusal is not None:
                    raise DropRefused(refusal, live, dropped)
            for binding_id in (*gone, *replaced):
                writer.remove(binding_id)
            removed, changed = len(gone), len(replaced)
            for n, (binding, _) in enumerate(wanted.values(), 1):
                writer.add(binding, source)
                if progress is not None and n % 1_000 == 0:
                    progress(n)
            added = len(wanted) - changed
            if loaded is not None:
                txn.put(b"loaded" + SEP + source.encode(), msgpack.packb(loaded), db=self._meta)
            writer.finish()
        return ReplaceResult(added=added, removed=removed, changed=changed, unchanged=unchanged)

    def purge_expired(self, now: float, *, limit: int | None = None) -> int:
        """Delete bindings expired at ``now`` (at most ``limit``); returns how many."""
        with self._write() as txn:
            n = self._purge(txn, now, limit)
        if n:
            log.info("purged %d expired bindings", n)
        return n

    def _purge(self, txn: lmdb.Transaction, now: float, limit: int | None) -> int:
        due: list[str] = []
        for key in txn.cursor(db=self._expiry).iternext(keys=True, values=False):
            expires, _, binding_id = expiry_key_parts(key)
            if expires > now or (limit is not None and len(due) >= limit):
                break
            due.append(binding_id)
        writer = _Writer(self, txn, now)
        for binding_id in due:
            writer.remove(binding_id)
        writer.finish()
        return len(due)

    def repack(self, progress: Callable[[int, int], None] | None = None) -> tuple[int, int]:
        """Rewrite the routes table in key order with full pages, in one write transaction.

        Bindings written into the middle of the table (a map or an import whose numbers
        fall between numbers already stored, or a load of more than ``FLUSH_ROUTES``
        routes out of number order) leave its pages half full, the way B-trees split; a
        table twice the size costs every lookup more cache misses. Lookups go on during
        the rewrite and see the table before or after it, with the same content; writes
        (API binds, map reloads, purges) wait for it, about 15 s at 17 M routes. The
        file grows by about twice the table's size; the space is reused by later writes.
        Returns (leaf pages before, leaf pages after). ``progress`` gets (entries copied,
        entries to copy): each entry is copied out and back.
        """
        with self._write() as txn:
            stat = txn.stat(self._routes)
            before, entries = stat["leaf_pages"], stat["entries"]
            report = None if progress is None else lambda done: progress(done, 2 * entries)
            scratch = self._env.open_db(b"repack", txn=txn)
            done = _copy_table(txn, self._routes, scratch, report, 0)
            txn.drop(self._routes, delete=False)
            _copy_table(txn, scratch, self._routes, report, done)
            txn.drop(scratch, delete=True)
            stat = txn.stat(self._routes)
            if stat["entries"] != entries:  # aborts the transaction: nothing changes
                raise StoreError(f"repack copied {stat['entries']} routes of {entries}")
        return before, stat["leaf_pages"]

    def _ids_in(self, txn: lmdb.Transaction, source: str) -> list[str]:
        prefix = source.encode() + SEP
        cursor = txn.cursor(db=self._sources)
        out: list[str] = []
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                if not bytes(key).startswith(prefix):
                    break
                out.append(bytes(key[len(prefix) :]).decode())
        return out

    def _write(self) -> _WriteTxn:
        if self.readonly:
            raise StoreError("store opened read-only")
        return _WriteTxn(self._env, self._committed)

    def _committed(self) -> None:
        # The next lookup takes a new snapshot, on its own thread, and sees the write.
        # (Releasing the snapshot here could pull it from under a lookup on another.)
        self._reader_until = 0.0

    @staticmethod
    def _check_source(source: str) -> None:
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")


class Transaction:
    """A write transaction that several units of work share and commit once.

    Opened by ``Store.transaction(now)``. Writers that take many small requests (the API)
    gather them into one transaction, so one commit, and one fsync, serves them all.
    ``put`` and ``unbind`` each run in a nested LMDB transaction: one that breaks a rule
    raises ConflictError and leaves nothing behind, and the others' writes stay;
    ``savepoint`` groups several steps (an allocation, a bind and its bookkeeping in other
    tables) the same way. Reads see every write made in the transaction so far; lookups
    in other processes see none of it until the whole transaction commits. ``txn`` is the
    LMDB transaction of the current savepoint, for tables kept with ``Store.table``.
    """

    def __init__(self, store: Store, txn: lmdb.Transaction, now: float) -> None:
        self.store = store
        self.txn = txn
        self.now = now

    @contextmanager
    def savepoint(self) -> Iterator[Transaction]:
        """A nested transaction: kept when the block ends, undone when it raises. Use only
        the Transaction it yields inside the block."""
        child = self.store._env.begin(write=True, parent=self.txn)
        try:
            yield Transaction(self.store, child, self.now)
        except BaseException:
            child.abort()
            raise
        child.commit()

    def put(
        self, binding: Binding, *, source: str = "api", replace: bool = False, nested: bool = True
    ) -> None:
        """Add one binding (replacing the one with its id when ``replace``), checking every
        rule; raises ConflictError when it breaks one, and nothing of it is written.

        ``nested=False`` is for a caller that undoes its whole unit of work when this
        raises (it runs in a savepoint it lets fail): the put then writes straight into
        the caller's transaction instead of a nested one of its own, and a ConflictError
        may leave part of it behind (the old binding removed, with ``replace``; expired
        bindings in its way removed). A nested transaction costs a copy of every page it
        writes that its parent has written already, which in a busy savepoint is most of
        them: a third of the API's time per bind.
        """
        self.store._check_source(source)
        if not nested:
            self._put(self.txn, binding, source, replace)
            return
        with self.savepoint() as sp:
            self._put(sp.txn, binding, source, replace)

    def _put(self, txn: lmdb.Transaction, binding: Binding, source: str, replace: bool) -> None:
        writer = _Writer(self.store, txn, self.now)
        if replace:
            writer.remove(binding.id)
        writer.add(binding, source)
        writer.finish()

    def unbind(self, binding_id: str, *, nested: bool = True) -> Binding | None:
        """Remove a binding by id; the binding removed, or None when there was none.
        ``nested`` as for ``put``."""
        found = self.get(binding_id)
        if found is None:
            return None
        if not nested:
            writer = _Writer(self.store, self.txn, self.now)
            writer.remove(binding_id)
            writer.finish()
            return found[0]
        with self.savepoint() as sp:
            writer = _Writer(self.store, sp.txn, self.now)
            writer.remove(binding_id)
            writer.finish()
        return found[0]

    def purge_expired(self, *, limit: int | None = None) -> int:
        """Delete bindings expired at ``now`` (at most ``limit``); returns how many."""
        with self.savepoint() as sp:
            return self.store._purge(sp.txn, self.now, limit)

    def get(self, binding_id: str) -> tuple[Binding, str] | None:
        """(binding, source) for an id, or None."""
        raw = self.txn.get(binding_id.encode(), db=self.store._bindings)
        return None if raw is None else decode_binding(binding_id, raw)

    def on_virtual(self, virtual: str) -> list[tuple[Binding, str]]:
        """Every binding on X, as ``Store.on_virtual``."""
        return self.store._on_virtual(self.txn, virtual)

    def route_exists(self, virtual: str, caller: str | None = None) -> bool:
        """Whether X has a live party route for ``caller``, or, with ``caller`` None, any
        route at all (expired ones too, until purged)."""
        routes = self.store._routes
        if caller is not None:
            raw = self.txn.get(party_key(virtual, caller), db=routes)
            if raw is None:
                return False
            rec = _unpackb(raw)
            return len(rec) < 4 or rec[3] is None or self.now < rec[3]
        cursor = self.txn.cursor(db=routes)
        prefix = virtual.encode("ascii")
        if not cursor.set_range(prefix + SEP):
            return False
        key = bytes(cursor.key())
        return key.startswith(prefix + SEP) or key == prefix + HEAD_MARK


def _copy_table(
    txn: lmdb.Transaction, src: Any, dst: Any, progress: Progress | None, done: int
) -> int:
    """Append every entry of ``src`` to the empty ``dst``, in key order, in chunks."""
    out = txn.cursor(db=dst)
    chunk: list[tuple[bytes | memoryview, bytes | memoryview]] = []
    items = txn.cursor(db=src).iternext()
    while True:
        chunk.extend(itertools.islice(items, 100_000))
        if not chunk:
            return done
        _put_sorted(out, chunk, append=True)
        done += len(chunk)
        chunk.clear()
        if progress is not None:
            progress(done)


def _put_sorted(cursor: lmdb.Cursor, items: Sequence[tuple[Any, Any]], *, append: bool) -> None:
    """putmulti, checked: with ``append`` LMDB skips a key that is not past the last one
    instead of failing, and a skipped route would be a lost binding."""
    _, added = cursor.putmulti(items, append=append)
    if added != len(items):
        raise StoreError(f"wrote {added} of {len(items)} entries; the write is undone")


class _WriteTxn:
    """A write transaction that commits only when the block ends without an exception,
    adopts a map grown by another process, and reports a full map clearly."""

    def __init__(self, env: lmdb.Environment, committed: Callable[[], None]) -> None:
        self._env = env
        self._committed = committed
        self._txn: lmdb.Transaction | None = None

    def __enter__(self) -> lmdb.Transaction:
        try:
            self._txn = self._env.begin(write=True)
        except lmdb.MapResizedError:
            self._env.set_mapsize(0)
            self._txn = self._env.begin(write=True)
        return self._txn

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> None:
        assert self._txn is not None
        if exc_type is not None:
            self._txn.abort()
            if exc_type is lmdb.MapFullError:
                raise StoreError("translation store is full; open it with a larger map_size")
            return
        try:
            self._txn.commit()
        except lmdb.MapFullError:
            raise StoreError("translation store is full; open it with a larger map_size") from None
        self._committed()


class _Writer:
    """Adds and removes bindings inside one write transaction, checking every rule.

    Conflicts are collected rather than raised at once so that one ConflictError lists
    them all; ``finish`` raises it (aborting the transaction) or flushes the counters.
    """

    def __init__(self, store: Store, txn: lmdb.Transaction, now: float) -> None:
        self.store = store
        self.txn = txn
        self.now = now
        self.conflicts: list[Conflict] = []
        self.deltas: dict[tuple[str, str], int] = {}
        # Puts wait here and are written table by table in key order (see _flush).
        self.routes: dict[bytes, bytes] = {}
        self.bindings: dict[bytes, bytes] = {}
        self.sources: dict[bytes, bytes] = {}
        self.expiry: dict[bytes, bytes] = {}

    def _route(self, key: bytes) -> bytes | memoryview | None:
        raw = self.routes.get(key)
        return self.txn.get(key, db=self.store._routes) if raw is None else raw

    def _binding(self, bid: bytes) -> bytes | memoryview | None:
        raw = self.bindings.get(bid)
        return self.txn.get(bid, db=self.store._bindings) if raw is None else raw

    def add(self, binding: Binding, source: str) -> None:
        problems = binding_problems(binding)
        if problems:
            for rule, _, message in problems:
                self.conflicts.append(Conflict(binding.id, rule, message))
            return
        if not binding.live(self.now):
            self.conflicts.append(Conflict(binding.id, "expired", "expiry is in the past"))
            return
        bid = binding.id.encode()
        existing = self._binding(bid)
        if existing is not None:
            other, _ = decode_binding(binding.id, existing)
            if other.live(self.now):
                self.conflicts.append(
                    Conflict(binding.id, "duplicate-id", "id already in use", binding.id)
                )
                return
            self.remove(binding.id)
        entries: list[tuple[bytes, str]] = []
        if binding.has_head():
            entries.append((head_key(binding.virtual), binding.a))
        if binding.kind == "axb":
            assert binding.b is not None
            entries.append((party_key(binding.virtual, binding.a), binding.b))
            entries.append((party_key(binding.virtual, binding.b), binding.a))
        elif binding.kind == "axn":
            assert binding.b is not None
            entries.append((party_key(binding.virtual, binding.a), binding.b))
        clear = True
        for key, _ in entries:
            clear = self._claim(binding, key) and clear
        if not clear:
            return
        routes = self.routes
        for key, callee in entries:
            routes[key] = route_value(binding, callee)
        self.bindings[bid] = encode_binding(binding, source)
        self.sources[source_key(source, binding.id)] = b""
        if binding.expires is not None:
            self.expiry[expiry_key(binding.expires, binding.kind, binding.id)] = b""
        self._count(source, binding.kind, 1)
        if binding.tenant is not None:
            self.store.owners.added(self.txn, binding)
            self.store.pools.binding_added(self.txn, binding)
        if len(routes) >= FLUSH_ROUTES:
            self._flush()

    def _claim(self, binding: Binding, key: bytes) -> bool:
        """True when ``key`` is free for ``binding``, evicting an expired occupant."""
        raw = self._route(key)
        if raw is None:
            return True
        occupant_id = _unpackb(raw)[2]
        occupant = self._binding(occupant_id.encode())
        if occupant is not None:
            other, _ = decode_binding(occupant_id, occupant)
            if not other.live(self.now):
                self.remove(occupant_id)
                return True
            if SEP in key:
                caller = key[key.index(SEP) + 1 :].decode()
                rule = "party-conflict"
                message = (
                    f"{mask(caller)} already has a route on {binding.virtual}"
                    f" in {other.kind} {occupant_id!r}"
                )
            else:
                rule = "duplicate-virtual"
                message = f"{binding.virtual} is already bound by {other.kind} {occupant_id!r}"
            self.conflicts.append(Conflict(binding.id, rule, message, occupant_id))
            return False
        log.warning("route %r without binding %r; overwriting", key, occupant_id)
        return True

    def remove(self, binding_id: str) -> bool:
        s = self.store
        bid = binding_id.encode()
        raw = self._binding(bid)
        if raw is None:
            return False
        binding, source = decode_binding(binding_id, raw)
        keys = [party_key(binding.virtual, p) for p in binding.parties()]
        if binding.has_head():
            keys.append(head_key(binding.virtual))
        for key in keys:
            value = self._route(key)
            if value is not None and _unpackb(value)[2] == binding_id:
                self._delete(self.routes, key, s._routes)
        if binding.expires is not None:
            key = expiry_key(binding.expires, binding.kind, binding_id)
            self._delete(self.expiry, key, s._expiry)
        self._delete(self.sources, source_key(source, binding_id), s._sources)
        self._delete(self.bindings, bid, s._bindings)
        self._count(source, binding.kind, -1)
        if binding.tenant is not None:
            s.owners.removed(self.txn, binding)
            s.history.removed(self.txn, binding, s._pool_of(self.txn, binding), self.now)
            s.pools.binding_removed(self.txn, binding, self.now)
        return True

    def _delete(self, pending: dict[bytes, bytes], key: bytes, db: Any) -> None:
        pending.pop(key, None)
        self.txn.delete(key, db=db)

    def _count(self, source: str, kind: str, delta: int) -> None:
        key = (source, kind)
        self.deltas[key] = self.deltas.get(key, 0) + delta

    def _flush(self) -> None:
        """Write the waiting puts one table after the other, each in key order.

        Put one by one in the order bindings come, most keys would land between keys
        already written and split pages in half (a map of 20,000 shuffled numbers takes
        40 % more routes pages than in number order), and a larger table costs every
        lookup more cache misses. Sorted, a load's keys go in one after the other, and
        pages fill up when they go past the table's end.
        """
        s, txn = self.store, self.txn
        for pending, db in (
            (self.routes, s._routes),
            (self.bindings, s._bindings),
            (self.sources, s._sources),
            (self.expiry, s._expiry),
        ):
            if not pending:
                continue
            items = sorted(pending.items())
            pending.clear()
            cursor = txn.cursor(db=db)
            # MDB_APPEND when every key goes after the last one: full pages, no search.
            append = not cursor.last() or bytes(cursor.key()) < items[0][0]
            _put_sorted(cursor, items, append=append)

    def finish(self) -> None:
        if self.conflicts:
            raise ConflictError(self.conflicts)
        self._flush()
        for (source, kind), delta in self.deltas.items():
            if not delta:
                continue
            key = b"count" + SEP + source.encode() + SEP + kind.encode()
            raw = self.txn.get(key, db=self.store._meta)
            total = (0 if raw is None else _unpackb(raw)) + delta
            self.txn.put(key, msgpack.packb(total), db=self.store._meta)
