"""Webhooks: each tenant's receivers, how a delivery is signed, and the tables that make
delivery durable.

A tenant configures receivers (``/v1/webhooks``): a URL, the event types it wants, and a
secret made by ansim, shown when the receiver is made and when it is rotated, never
again. Every delivery is a POST of one JSON event with

``Ansim-Event-Id``   the event's id (the same on every attempt and for every receiver: a
                     receiver de-duplicates on it; delivery is at least once)
``Ansim-Event-Type`` ``call.completed``, ...
``Ansim-Timestamp``  when this attempt was signed, Unix seconds
``Ansim-Signature``  ``v1=`` and the hex HMAC-SHA256, keyed with the receiver's secret, of
                     the timestamp, a ``.``, and the body exactly as sent

A receiver recomputes the HMAC over ``timestamp + "." + body``, compares it in constant
time, refuses a timestamp more than five minutes from its own clock (a replayed old
delivery), and answers 2xx once it has the event (anything else, or no answer within
``webhooks.timeout``, is retried). ``verify`` is that check.

The secret is kept as it is (it keys the HMAC, so it cannot be hashed like an API key),
in the control tables beside the keys. The tables, named databases of the translation
store's environment, written through the store writer:

``api_hooks``       ``h hook_id`` -> msgpack ``[tenant, url, [event, ...], secret, created,
                    rotated, description]``; ``t tenant\\0hook_id`` -> empty (a tenant's
                    receivers); ``c name`` -> msgpack position of an outbox tail (the
                    collector's: ``calls``, ``sms``, ``ended``)
``api_deliveries``  ``due_ms(8) delivery_id`` -> msgpack ``[hook_id, tenant, event_id,
                    type, body, attempts, first_at, last_error]``: what is to be sent, in
                    the order it is due
``api_dead``        ``time_ns(8) delivery_id`` -> the same, set aside after
                    ``webhooks.dead_after`` seconds undelivered (kept ``dead_days``)

A delivery is queued in the transaction that moves its outbox's position past the event,
so an event is queued once, and removed only once its receiver answered 2xx, so it is
sent until then, across restarts of the API and of the engine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import os
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import lmdb
import msgpack

from translate.store import Store

__all__ = [
    "EVENT_TYPES",
    "REPLAY_WINDOW",
    "Delivery",
    "Hook",
    "WebhookTables",
    "new_secret",
    "sign",
    "verify",
]

#: Event types a receiver may ask for, and what each means.
EVENT_TYPES: Final[dict[str, str]] = {
    "call.started": "a call to one of the tenant's numbers is routed: its callee is being called",
    "call.ringing": "the callee's phone rings (first 18x)",
    "call.answered": "the callee answered",
    "call.completed": "a call ended, answered or not; carries its call record",
    "sms.received": "an SMS for one of the tenant's numbers was taken; carries its record",
    "sms.delivered": "an SMS relayed for the tenant was delivered (receipt)",
    "binding.expired": "a binding reached its expiry and was removed",
}
#: How far a receiver should accept Ansim-Timestamp from its own clock, seconds.
REPLAY_WINDOW: Final = 300
_SEP: Final = b"\x00"
_DUE: Final = struct.Struct(">Q")
_pack = msgpack.packb
_unpack = msgpack.unpackb
_seq = itertools.count()


def new_secret() -> str:
    """A fresh receiver secret (256 random bits)."""
    return "whsec_" + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Ansim-Signature`` value of ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(
    secret: str,
    timestamp: str,
    signature: str,
    body: bytes,
    *,
    now: float | None = None,
    window: float = REPLAY_WINDOW,
) -> bool:
    """What a receiver checks: the signature over timestamp and body, and the timestamp
    within ``window`` seconds of ``now``."""
    if not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > window:
        return False
    expected = sign(secret, int(timestamp), body)
    return any(hmac.compare_digest(expected, part.strip()) for part in signature.split(","))


@dataclass(frozen=True, slots=True)
class Hook:
    """One receiver of a tenant."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    secret: str
    created: float
    rotated: float
    description: str = ""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event to send to one receiver; ``key`` is its place in the table."""

    key: bytes
    hook_id: str
    tenant: str
    event_id: str
    type: str
    body: bytes
    attempts: int
    first_at: float
    last_error: str = ""


def _hook_key(hook_id: str) -> bytes:
    return b"h" + hook_id.encode()


def _tenant_key(tenant: str, hook_id: str) -> bytes:
    return b"t" + tenant.encode() + _SEP + hook_id.encode()


def _delivery_key(due: float) -> bytes:
    unique = os.getpid().to_bytes(4, "big") + (next(_seq) & 0xFFFFFFFF).to_bytes(4, "big")
    return _DUE.pack(max(int(due * 1000), 0)) + unique


class WebhookTables:
    """The webhook tables, read and written inside a caller's LMDB transaction."""

    def __init__(self, store: Store) -> None:
        self._hooks = store.table("api_hooks")
        self._deliveries = store.table("api_deliveries")
        self._dead = store.table("api_dead")

    # ----------------------------------------------------------------- receivers

    def hook(self, txn: lmdb.Transaction, hook_id: str) -> Hook | None:
        raw = txn.get(_hook_key(hook_id), db=self._hooks)
        return None if raw is None else _decode_hook(hook_id, raw)

    def hooks(self, txn: lmdb.Transaction, tenant: str | None = None) -> list[Hook]:
        """A tenant's receivers in id order (every tenant's when None)."""
        cursor = txn.cursor(db=self._hooks)
        out: list[Hook] = []
        if tenant is None:
            if cursor.set_range(b"h"):
                for key, value in cursor:
                    key = bytes(key)
                    if not key.startswith(b"h"):
                        break
                    out.append(_decode_hook(key[1:].decode(), value))
            return out
        prefix = b"t" + tenant.encode() + _SEP
        if cursor.set_range(prefix):
            for key in cursor.iternext(keys=True, values=False):
                key = bytes(key)
                if not key.startswith(prefix):
                    break
                found = self.hook(txn, key[len(prefix) :].decode())
                if found is not None:
                    out.append(found)
        return out

    def put_hook(self, txn: lmdb.Transaction, h: Hook) -> None:
        value = [h.tenant, h.url, list(h.events), h.secret, h.created, h.rotated, h.description]
        txn.put(_hook_key(h.id), _pack(value), db=self._hooks)
        txn.put(_tenant_key(h.tenant, h.id), b"", db=self._hooks)

    def delete_hook(self, txn: lmdb.Transaction, h: Hook) -> None:
        """Remove a receiver; what was queued for it is dropped when it comes due."""
        txn.delete(_hook_key(h.id), db=self._hooks)
        txn.delete(_tenant_key(h.tenant, h.id), db=self._hooks)

    # ----------------------------------------------------------------- outbox positions

    def position(self, txn: lmdb.Transaction, name: str) -> Any:
        raw = txn.get(b"c" + name.encode(), db=self._hooks)
        return None if raw is None else _unpack(raw)

    def set_position(self, txn: lmdb.Transaction, name: str, value: Any) -> None:
        txn.put(b"c" + name.encode(), _pack(value), db=self._hooks)

    # ----------------------------------------------------------------- deliveries

    def queue(
        self,
        txn: lmdb.Transaction,
        hook: Hook,
        event_id: str,
        kind: str,
        body: bytes,
        now: float,
    ) -> bytes:
        """Queue ``body`` for ``hook``, due now; its key."""
        key = _delivery_key(now)
        value = [hook.id, hook.tenant, event_id, kind, body, 0, now, ""]
        txn.put(key, _pack(value), db=self._deliveries)
        return key

    def due(self, txn: lmdb.Transaction, now: float, limit: int) -> Iterator[Delivery]:
        """Deliveries due at ``now``, the earliest first, at most ``limit``."""
        stop = _DUE.pack(max(int(now * 1000), 0) + 1)
        for n, (key, value) in enumerate(txn.cursor(db=self._deliveries)):
            key = bytes(key)
            if key >= stop or n >= limit:
                return
            yield _decode_delivery(key, value)

    def pending(self, txn: lmdb.Transaction) -> int:
        return int(txn.stat(self._deliveries)["entries"])

    def get(self, txn: lmdb.Transaction, key: bytes) -> Delivery | None:
        raw = txn.get(key, db=self._deliveries)
        return None if raw is None else _decode_delivery(key, raw)

    def done(self, txn: lmdb.Transaction, d: Delivery) -> None:
        txn.delete(d.key, db=self._deliveries)

    def retry(self, txn: lmdb.Transaction, d: Delivery, due: float, error: str) -> bytes:
        """Move ``d`` to ``due``, one more attempt counted; its new key."""
        txn.delete(d.key, db=self._deliveries)
        key = _delivery_key(due)
        value = [d.hook_id, d.tenant, d.event_id, d.type, d.body, d.attempts + 1, d.first_at, error]
        txn.put(key, _pack(value), db=self._deliveries)
        return key

    def bury(self, txn: lmdb.Transaction, d: Delivery, now: float, error: str) -> None:
        """Set ``d`` aside as a dead letter."""
        txn.delete(d.key, db=self._deliveries)
        key = struct.pack(">Q", min(max(int(now * 1e9), 0), (1 << 64) - 1)) + d.key[8:]
        value = [d.hook_id, d.tenant, d.event_id, d.type, d.body, d.attempts + 1, d.first_at, error]
        txn.put(key, _pack(value), db=self._dead)

    def dead(
        self, txn: lmdb.Transaction, hook_id: str, after: bytes, limit: int
    ) -> tuple[list[tuple[float, Delivery]], bytes | None]:
        """Dead letters of ``hook_id`` in the order set aside, after the cursor ``after``:
        (when set aside, delivery), and the cursor of the next page."""
        cursor = txn.cursor(db=self._dead)
        out: list[tuple[float, Delivery]] = []
        if not cursor.set_range(after + b"\x00" if after else b""):
            return out, None
        for key, value in cursor:
            key = bytes(key)
            d = _decode_delivery(key, value)
            if d.hook_id != hook_id:
                continue
            if len(out) == limit:
                return out, out[-1][1].key
            out.append((struct.unpack(">Q", key[:8])[0] / 1e9, d))
        return out, None

    def prune_dead(self, txn: lmdb.Transaction, before: float, limit: int) -> int:
        cursor = txn.cursor(db=self._dead)
        stop = struct.pack(">Q", max(int(before * 1e9), 0))
        done = 0
        if not cursor.first():
            return 0
        while done < limit and cursor.key() and bytes(cursor.key()) < stop:
            cursor.delete()
            done += 1
        return done


def _decode_hook(hook_id: str, raw: Any) -> Hook:
    tenant, url, events, secret, created, rotated, description = _unpack(raw)
    return Hook(hook_id, tenant, url, tuple(events), secret, created, rotated, description)


def _decode_delivery(key: bytes, raw: Any) -> Delivery:
    hook_id, tenant, event_id, kind, body, attempts, first_at, error = _unpack(raw)
    return Delivery(key, hook_id, tenant, event_id, kind, body, attempts, first_at, error)
