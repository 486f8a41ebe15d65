"""The control plane's own tables: tenants, API keys, idempotency records, the audit log.

They are named databases in the translation store's LMDB environment (``Store.table``),
beside the bindings, and not a store of their own, because a bind must commit together
with what it leaves behind: the idempotency record that makes a retry return the same
binding, and the audit record of the write. In one environment that is one transaction
(and one fsync for a whole batch of binds); with two stores a crash between the two
commits would leave a binding without its idempotency record (a retry binds twice) or
without its audit record. It also makes one thing to back up. The cost: these writes
queue for the same write lock as map reloads.

``api_tenants``   ``tenant`` -> msgpack ``[created, [granted prefix, ...], timezone]`` (a record
                  written before time zones has two fields: UTC)
``api_keys``      ``key_id`` -> msgpack ``[tenant, digest, [scope, ...], name, created, revoked]``
``api_idem``      ``k tenant\\0key`` -> msgpack ``[created, fingerprint, status, body]``;
                  ``t created_ms(8) tenant\\0key`` -> empty (pruning in time order)
``api_audit``     ``time_ns(8) pid(4) seq(4)`` -> msgpack record (see AuditRecord)

Idempotency records live ``idempotency_hours`` (24 h by default); audit records
``audit_days`` (30 by default). Both are pruned in time order by the API process; apart
from that the audit table is only ever appended to. No table holds a key's secret.
"""

from __future__ import annotations

import itertools
import os
import struct
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgpack

from api.keys import KeyToken, digest, matches, new_token
from translate.store import Store

__all__ = [
    "AuditRecord",
    "ControlTables",
    "IdempotentResult",
    "KeyRecord",
    "Principal",
    "Tenant",
]

_SEP: Final = b"\x00"
_MS: Final = struct.Struct(">Q")
_AUDIT_KEY: Final = struct.Struct(">QII")
_pack = msgpack.packb
_unpack = msgpack.unpackb
_audit_seq = itertools.count()
_MAX_NS: Final = (1 << 64) - 1


def _ns(at: float) -> int:
    """Epoch seconds as nanoseconds that fit the audit key (clamped)."""
    return min(max(int(at * 1e9), 0), _MAX_NS)


@dataclass(frozen=True, slots=True)
class Tenant:
    """A platform using the API; ``numbers`` are the E.164 prefixes it may put in pools,
    ``timezone`` (IANA) the one its statistics are counted in by default."""

    id: str
    created: float
    numbers: tuple[str, ...] = ()
    timezone: str = "UTC"

    def may_use(self, number: str) -> bool:
        return any(number.startswith(prefix) for prefix in self.numbers)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A stored key: never the secret, only its digest."""

    key_id: str
    tenant: str
    digest: bytes
    scopes: frozenset[str]
    name: str
    created: float
    revoked: float | None = None


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request: the key, its tenant and scopes, and the address it came from."""

    key_id: str | None
    tenant: str
    scopes: frozenset[str]
    source: str

    @classmethod
    def operator(cls, tenant: str = "") -> Principal:
        """The operator at the command line (``ansim keys``), for audit records."""
        return cls(None, tenant, frozenset(), "cli")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited action. ``object`` names what was acted on (a binding or key id, a
    pool, a query with numbers masked); never a secret. ``cursor`` orders records."""

    at: float
    key_id: str | None
    tenant: str
    source: str
    action: str
    object: str
    cursor: str = ""


@dataclass(frozen=True, slots=True)
class IdempotentResult:
    """The first answer to a request made with an Idempotency-Key."""

    fingerprint: bytes
    status: int
    body: bytes


class ControlTables:
    """Tenants, keys, idempotency and audit, read and written inside store transactions."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._tenants = store.table("api_tenants")
        self._keys = store.table("api_keys")
        self._idem = store.table("api_idem")
        self._audit = store.table("api_audit")

    # ----------------------------------------------------------------- tenants

    def tenant(self, txn: lmdb.Transaction, tenant_id: str) -> Tenant | None:
        raw = txn.get(tenant_id.encode(), db=self._tenants)
        return None if raw is None else _decode_tenant(tenant_id, raw)

    def tenants(self, txn: lmdb.Transaction) -> list[Tenant]:
        return [_decode_tenant(bytes(k).decode(), v) for k, v in txn.cursor(db=self._tenants)]

    def put_tenant(self, txn: lmdb.Transaction, tenant: Tenant) -> None:
        value = _pack([tenant.created, list(tenant.numbers), tenant.timezone])
        txn.put(tenant.id.encode(), value, db=self._tenants)

    def ensure_tenant(self, txn: lmdb.Transaction, tenant_id: str, now: float) -> Tenant:
        found = self.tenant(txn, tenant_id)
        if found is None:
            found = Tenant(tenant_id, now)
            self.put_tenant(txn, found)
        return found

    # ----------------------------------------------------------------- keys

    def create_key(
        self,
        txn: lmdb.Transaction,
        tenant: str,
        scopes: frozenset[str],
        name: str,
        now: float,
    ) -> tuple[KeyRecord, KeyToken]:
        """A new key for ``tenant`` (created when new); the token is not stored."""
        self.ensure_tenant(txn, tenant, now)
        token = new_token()
        record = KeyRecord(token.key_id, tenant, digest(token), scopes, name, now)
        self._put_key(txn, record)
        return record, token

    def key(self, txn: lmdb.Transaction, key_id: str) -> KeyRecord | None:
        raw = txn.get(key_id.encode(), db=self._keys)
        return None if raw is None else _decode_key(key_id, raw)

    def keys(self, txn: lmdb.Transaction, tenant: str | None = None) -> list[KeyRecord]:
        out = [_decode_key(bytes(k).decode(), v) for k, v in txn.cursor(db=self._keys)]
        return [k for k in out if tenant is None or k.tenant == tenant]

    def revoke(self, txn: lmdb.Transaction, key_id: str, now: float) -> KeyRecord | None:
        """Revoke a key (kept, for the audit log's sake); None when there is none."""
        record = self.key(txn, key_id)
        if record is None or record.revoked is not None:
            return record
        revoked = KeyRecord(
            record.key_id,
            record.tenant,
            record.digest,
            record.scopes,
            record.name,
            record.created,
            now,
        )
        self._put_key(txn, revoked)
        return revoked

    def authenticate(self, txn: lmdb.Transaction, token: KeyToken) -> KeyRecord | None:
        """The live key ``token`` is, or None (unknown, wrong secret, revoked)."""
        record = self.key(txn, token.key_id)
        if record is None or record.revoked is not None or not matches(token, record.digest):
            return None
        return record

    def _put_key(self, txn: lmdb.Transaction, r: KeyRecord) -> None:
        value = [r.tenant, r.digest, sorted(r.scopes), r.name, r.created, r.revoked]
        txn.put(r.key_id.encode(), _pack(value), db=self._keys)

    # ----------------------------------------------------------------- idempotency

    def idempotent(self, txn: lmdb.Transaction, tenant: str, key: str) -> IdempotentResult | None:
        raw = txn.get(b"k" + tenant.encode() + _SEP + key.encode(), db=self._idem)
        if raw is None:
            return None
        _, fingerprint, status, body = _unpack(raw)
        return IdempotentResult(fingerprint, status, body)

    def remember(
        self,
        txn: lmdb.Transaction,
        tenant: str,
        key: str,
        result: IdempotentResult,
        now: float,
    ) -> None:
        name = tenant.encode() + _SEP + key.encode()
        value = _pack([now, result.fingerprint, result.status, result.body])
        txn.put(b"k" + name, value, db=self._idem)
        txn.put(b"t" + _MS.pack(int(now * 1000)) + name, b"", db=self._idem)

    def prune_idempotency(self, txn: lmdb.Transaction, before: float, limit: int) -> int:
        """Forget idempotency records made before ``before``; at most ``limit``."""
        cursor = txn.cursor(db=self._idem)
        done = 0
        if not cursor.set_range(b"t"):
            return 0
        stop = b"t" + _MS.pack(int(before * 1000))
        while done < limit:
            key = bytes(cursor.key())
            if not key.startswith(b"t") or key >= stop:
                break
            txn.delete(b"k" + key[9:], db=self._idem)
            cursor.delete()
            done += 1
        return done

    # ----------------------------------------------------------------- audit

    def audit(
        self,
        txn: lmdb.Transaction,
        who: Principal,
        action: str,
        obj: str,
        now: float,
    ) -> None:
        """Append one record to the audit log, at ``now``."""
        at = now
        key = _AUDIT_KEY.pack(_ns(at), os.getpid() & 0xFFFFFFFF, next(_audit_seq) & 0xFFFFFFFF)
        value = _pack([at, who.key_id, who.tenant, who.source, action, obj])
        txn.put(key, value, db=self._audit)

    def audit_log(
        self,
        txn: lmdb.Transaction,
        *,
        since: float | None = None,
        until: float | None = None,
        tenant: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        """Records in time order from ``since`` (or after the cursor ``after``), before
        ``until``, of ``tenant`` (all when None), at most ``limit``."""
        cursor = txn.cursor(db=self._audit)
        start = bytes.fromhex(after) + b"\x00" if after else _AUDIT_KEY.pack(_ns(since or 0), 0, 0)
        stop = None if until is None else _ns(until)
        out: list[AuditRecord] = []
        if not cursor.set_range(start):
            return out
        for key, value in cursor:
            key = bytes(key)
            if stop is not None and _AUDIT_KEY.unpack_from(key)[0] >= stop:
                break
            at, key_id, owner, source, action, obj = _unpack(value)
            if tenant is not None and owner != tenant:
                continue
            out.append(AuditRecord(at, key_id, owner, source, action, obj, key.hex()))
            if len(out) >= limit:
                break
        return out

    def prune_audit(self, txn: lmdb.Transaction, before: float, limit: int) -> int:
        """Drop audit records older than the retention; at most ``limit``."""
        cursor = txn.cursor(db=self._audit)
        stop = _AUDIT_KEY.pack(_ns(before), 0, 0)
        done = 0
        if not cursor.first():
            return 0
        while done < limit and cursor.key() and bytes(cursor.key()) < stop:
            cursor.delete()
            done += 1
        return done


def _decode_tenant(tenant_id: str, raw: Any) -> Tenant:
    fields = _unpack(raw)
    timezone = fields[2] if len(fields) > 2 else "UTC"
    return Tenant(tenant_id, fields[0], tuple(fields[1]), timezone)


def _decode_key(key_id: str, raw: Any) -> KeyRecord:
    tenant, stored, scopes, name, created, revoked = _unpack(raw)
    return KeyRecord(key_id, tenant, stored, frozenset(scopes), name, created, revoked)
