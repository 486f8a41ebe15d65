"""Choosing the virtual number for a new binding from its tenant's pool.

``allocate`` runs inside the write transaction that then writes the binding (see
``translate.store.Transaction``), so the number it picks is still free when the binding
is written, and concurrent binds are serialised by LMDB's write lock.

For an ``axb`` pair (A, B) a number X of the pool fits when:

- neither A nor B has a binding on X (one X serves many pairs, but a real number may be
  in only one live pair on it: ``party-conflict`` otherwise);
- neither A nor B left X less than the pool's ``cooloff`` ago (a binding of theirs on X
  was unbound, or expired, that recently);
- X carries fewer than the pool's ``capacity`` bindings and no ``ax``/``axn`` binding.

Among the numbers that fit, the least loaded is taken (ties: the lowest number), so
bindings spread evenly over the pool. With ``area`` the numbers tagged with that area
are tried first; unless ``strict``, the rest of the pool follows when none of them fits
(like Alibaba's ExpectCity with and without its strict flag). An ``ax`` or ``axn``
binding holds its number alone: it takes a number that carries no binding at all.

Cost: the numbers A and B hold or left recently are read from the per-party index
(``translate.owners``) and the cool-off table, then the pool's load index
(``translate.pools``) is walked from its least loaded end, skipping those. So an
allocation reads O(numbers the parties hold + numbers skipped), whatever the size of the
pool or the number of live bindings; each candidate is also checked against the routes
table, which catches bindings made outside the pool's bookkeeping (operator maps).
"""

from __future__ import annotations

from translate.pools import EXCLUSIVE_LOAD, Pool, PoolError
from translate.store import Transaction

__all__ = ["PoolExhausted", "allocate"]


class PoolExhausted(PoolError):
    """No number of the pool fits the binding; ``rule`` is ``pool-exhausted``."""

    def __init__(self, message: str) -> None:
        super().__init__("pool-exhausted", message, "pool")


def allocate(
    t: Transaction,
    pool: Pool,
    kind: str,
    a: str,
    b: str | None,
    *,
    area: str | None = None,
    strict: bool = False,
) -> str:
    """The number of ``pool`` a new ``kind`` binding of A (and B) should take; raises
    PoolExhausted when none fits (see the module docstring for the rules)."""
    tables = t.store.pools
    txn, now = t.txn, t.now
    parties = (a,) if b is None else (a, b)
    blocked: set[str] = set()
    for party in parties:
        for virtual, _, expires in t.store.owners.by_number(txn, pool.tenant, party):
            # A live binding blocks X; an expired one, not purged yet, until its cool-off ends.
            if expires is None or expires + pool.cooloff > now:
                blocked.add(virtual)
        if pool.cooloff > 0:
            blocked.update(tables.cooling(txn, party, now - pool.cooloff))
    shared = kind == "axb"
    limit = min(pool.capacity, EXCLUSIVE_LOAD) if shared else 1
    areas: list[str | None] = [area] if area else [None]
    if area and not strict:
        areas.append(None)
    for where in areas:
        for load, virtual in tables.least_loaded(txn, pool.tenant, pool.name, where):
            if load >= limit:
                break
            if virtual in blocked:
                continue
            if shared:
                if any(t.route_exists(virtual, party) for party in parties):
                    continue
            elif t.route_exists(virtual):
                continue
            return virtual
    scope = f" in area {area!r}" if area and strict else ""
    what = "with room for a pair of these parties" if shared else "free of any binding"
    raise PoolExhausted(f"pool {pool.name!r} has no number{scope} {what}")
