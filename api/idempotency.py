"""``Idempotency-Key``: a create retried with the same key returns the first answer.

The first answer (status and body) is kept in the control tables, written in the same
transaction as what the request created, so a retry after a lost answer, a timeout or
a crash finds either both or neither. A key is the tenant's own (two tenants may use the
same one) and is kept for ``idempotency_hours``. Reusing a key for a different request
(another path or body) is refused with ``idempotency-key-reused`` rather than answered
with the first request's result. Only successful answers are kept: a refused create
made nothing, and retrying it runs it again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from api.context import ApiContext
from api.control import IdempotentResult, Principal
from api.errors import ApiError, ErrorDetail
from translate.store import Transaction

__all__ = ["Answer", "fingerprint", "once"]

#: (status, JSON body, replayed)
Answer = tuple[int, bytes, bool]


def fingerprint(method: str, path: str, body: bytes) -> bytes:
    """What identifies a request for its Idempotency-Key: method, path, canonical body."""
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).digest()


def once(
    t: Transaction,
    ctx: ApiContext,
    who: Principal,
    key: str | None,
    print_: bytes,
    work: Callable[[Transaction], tuple[int, bytes]],
) -> Answer:
    """Run ``work`` unless ``key`` has an answer already; the answer, and whether it is
    a replay."""
    if key is None:
        status, body = work(t)
        return status, body, False
    stored = ctx.control.idempotent(t.txn, who.tenant, key)
    if stored is not None:
        if stored.fingerprint != print_:
            message = "this Idempotency-Key was first used with another request"
            detail = ErrorDetail(
                field="Idempotency-Key", rule="idempotency-key-reused", message=message
            )
            raise ApiError("idempotency-key-reused", message, [detail])
        return stored.status, stored.body, True
    status, body = work(t)
    ctx.control.remember(t.txn, who.tenant, key, IdempotentResult(print_, status, body), t.now)
    return status, body, False
