"""Tests for binding owners, pools, allocation and shared write transactions in translate/."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from translate_helpers import NOW, X1, X2, A, B, C, D, ax, axb, axn

from translate.allocation import PoolExhausted, allocate
from translate.bindings import Binding, Route, binding_problems
from translate.layout import decode_binding, encode_binding
from translate.pools import Pool, PoolError
from translate.store import ConflictError, Store

T = "acme"
POOL_NUMBERS = [f"+8250710000{n:02d}" for n in range(10)]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "numbers.lmdb", map_size=64 << 20) as s:
        yield s


def make_pool(
    store: Store,
    name: str = "trips",
    numbers: list[str] | None = None,
    *,
    tenant: str = T,
    capacity: int = 100,
    cooloff: float = 0.0,
    areas: dict[str, str] | None = None,
) -> Pool:
    with store.transaction(NOW) as t:
        store.pools.create(t.txn, Pool(tenant, name, capacity, cooloff, NOW))
        for number in POOL_NUMBERS if numbers is None else numbers:
            store.pools.add_number(t.txn, tenant, name, number, (areas or {}).get(number))
    pool = pool_of(store, name, tenant)
    return pool


def pool_of(store: Store, name: str = "trips", tenant: str = T) -> Pool:
    with store.reader() as txn:
        pool = store.pools.get(txn, tenant, name)
    assert pool is not None
    return pool


def load(store: Store, number: str) -> int:
    with store.reader() as txn:
        held = store.pools.number(txn, number)
    assert held is not None
    return held.load


def bind_from_pool(
    store: Store,
    bid: str,
    a: str,
    b: str | None,
    *,
    kind: str = "axb",
    now: float = NOW,
    pool: str = "trips",
    **kw: object,
) -> str:
    with store.transaction(now) as t:
        found = store.pools.get(t.txn, T, pool)
        assert found is not None
        x = allocate(t, found, kind, a, b, **kw)  # type: ignore[arg-type]
        t.put(Binding(bid, kind, x, a, b, tenant=T, expires=now + 600), source="api")  # type: ignore[arg-type]
    return x


def party(n: int) -> str:
    return f"+8210{n:08d}"


# ------------------------------------------------------------------ owner fields


def test_owner_fields_round_trip_and_maps_encode_as_before() -> None:
    owned = axb(tenant=T, out_id="order-17")
    assert decode_binding(owned.id, encode_binding(owned, "api")) == (owned, "api")
    plain = axb()
    # A binding without owner fields is the 11-field value it always was.
    assert len(__import__("msgpack").unpackb(encode_binding(plain, "yaml"))) == 11
    assert decode_binding(plain.id, encode_binding(plain, "yaml")) == (plain, "yaml")


@pytest.mark.parametrize(
    ("changes", "rule"),
    [
        ({"tenant": "Acme"}, "bad-tenant"),
        ({"tenant": ""}, "bad-tenant"),
        ({"tenant": "a\0b"}, "bad-tenant"),
        ({"tenant": "x" * 65}, "bad-tenant"),
        ({"out_id": ""}, "bad-out-id"),
        ({"out_id": "x" * 129}, "bad-out-id"),
        ({"out_id": "line\nbreak"}, "bad-out-id"),
    ],
)
def test_owner_field_rules(changes: dict[str, str], rule: str) -> None:
    assert rule in [p[0] for p in binding_problems(axb(**changes))]


def test_owner_indexes_follow_writes_and_removals(store: Store) -> None:
    store.put(axb("b1", tenant=T, out_id="o-1"), now=NOW)
    store.put(axb("b2", x=X2, a=A, b=C, tenant=T, out_id="o-1", expires=NOW + 10), now=NOW)
    store.put(axb("other", a=C, b=D, tenant="globex"), now=NOW)
    store.put(axb("map", x=X2, a=D, b=B), now=NOW, source="yaml")
    with store.reader() as txn:
        assert store.owners.ids(txn, T) == ["b1", "b2"]
        assert store.owners.ids(txn, T, after="b1") == ["b2"]
        assert store.owners.ids(txn, T, limit=1) == ["b1"]
        assert sorted(store.owners.by_number(txn, T, A)) == [
            (X1, "b1", None),
            (X2, "b2", NOW + 10),
        ]
        assert list(store.owners.by_number(txn, T, D)) == []  # another tenant, a map
        assert store.owners.by_out_id(txn, T, "o-1") == ["b1", "b2"]
        assert store.owners.ids(txn, "globex") == ["other"]
    assert store.get("b1") == (axb("b1", tenant=T, out_id="o-1"), "api")
    store.unbind("b1")
    assert store.purge_expired(NOW + 20) == 1
    with store.reader() as txn:
        assert store.owners.ids(txn, T) == []
        assert list(store.owners.by_number(txn, T, A)) == []
        assert store.owners.by_out_id(txn, T, "o-1") == []


# ------------------------------------------------------------------ pools


def test_pool_crud_and_number_rules(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:3], areas={POOL_NUMBERS[0]: "0532"})
    with store.transaction(NOW) as t:
        with pytest.raises(PoolError) as info:
            store.pools.create(t.txn, Pool(T, "trips", 5, 0, NOW))
        assert info.value.rule == "pool-exists"
        store.pools.create(t.txn, Pool(T, "other", 5, 0, NOW))
        with pytest.raises(PoolError) as info:
            store.pools.add_number(t.txn, T, "other", POOL_NUMBERS[0], None)
        assert info.value.rule == "number-in-pool"
        with pytest.raises(PoolError) as info:
            store.pools.add_number(t.txn, T, "missing", POOL_NUMBERS[5], None)
        assert info.value.rule == "pool-not-found"
    with store.reader() as txn:
        assert [p.name for p in store.pools.of_tenant(txn, T)] == ["other", "trips"]
        assert store.pools.of_tenant(txn, "globex") == []
        assert store.pools.members(txn, T, "trips") == POOL_NUMBERS[:3]
        assert store.pools.members(txn, T, "trips", after=POOL_NUMBERS[0], limit=1) == [
            POOL_NUMBERS[1]
        ]
        pool = store.pools.get(txn, T, "trips")
        assert pool is not None and (pool.numbers, pool.bindings) == (3, 0)
        held = store.pools.number(txn, POOL_NUMBERS[0])
        assert held is not None and (held.pool, held.area, held.load) == ("trips", "0532", 0)
    store.put(axb("b1", x=POOL_NUMBERS[1], tenant=T), now=NOW)
    assert pool_of(store).bindings == 1
    with store.transaction(NOW) as t:
        with pytest.raises(PoolError) as info:
            store.pools.remove_number(t.txn, T, "trips", POOL_NUMBERS[1])
        assert info.value.rule == "number-in-use"
        with pytest.raises(PoolError) as info:
            store.pools.delete(t.txn, T, "trips")
        assert info.value.rule == "pool-in-use"
        store.pools.remove_number(t.txn, T, "trips", POOL_NUMBERS[2])
    store.unbind("b1")
    with store.transaction(NOW) as t:
        store.pools.delete(t.txn, T, "trips")
        assert store.pools.number(t.txn, POOL_NUMBERS[0]) is None
        store.pools.add_number(t.txn, T, "other", POOL_NUMBERS[0], None)  # free again
    with store.reader() as txn:
        assert store.pools.get(txn, T, "trips") is None
        assert list(store.pools.least_loaded(txn, T, "trips", None)) == []


def test_load_follows_every_way_a_binding_goes(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:2])
    x = POOL_NUMBERS[0]
    store.put(axb("b1", x=x, a=A, b=B, tenant=T, expires=NOW + 10), now=NOW)
    store.put(axb("b2", x=x, a=C, b=D, tenant=T), now=NOW)
    store.put(axb("untracked", x=POOL_NUMBERS[1], a=A, b=B), now=NOW)  # no tenant
    store.put(axb("foreign", x=POOL_NUMBERS[1], a=C, b=D, tenant="globex"), now=NOW)
    assert (load(store, x), load(store, POOL_NUMBERS[1])) == (2, 0)
    assert pool_of(store).bindings == 2
    assert store.purge_expired(NOW + 11) == 1  # expiry, as the engine purges
    assert load(store, x) == 1
    # A new binding evicting an expired one on the same party route counts both ways.
    store.put(axb("b3", x=x, a=A, b=B, tenant=T, expires=NOW + 20), now=NOW)
    store.put(axb("b4", x=x, a=A, b=B, tenant=T), now=NOW + 30)
    assert store.get("b3") is None and load(store, x) == 2
    store.put(axb("b4", x=x, a=A, b=party(99), tenant=T), now=NOW + 30, replace=True)
    assert load(store, x) == 2
    store.unbind("b4")
    store.unbind("b2")
    assert load(store, x) == 0 and pool_of(store).bindings == 0


# ------------------------------------------------------------------ allocation


def test_allocation_spreads_over_the_pool(store: Store) -> None:
    make_pool(store)
    taken = [bind_from_pool(store, f"b{n}", party(2 * n), party(2 * n + 1)) for n in range(35)]
    counts = Counter(taken)
    assert set(counts) == set(POOL_NUMBERS)
    assert max(counts.values()) - min(counts.values()) <= 1
    assert taken[:10] == POOL_NUMBERS  # ties go to the lowest number


def test_allocation_avoids_numbers_either_party_holds(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:3])
    first = bind_from_pool(store, "b1", A, B)
    second = bind_from_pool(store, "b2", A, C)  # A holds `first`
    third = bind_from_pool(store, "b3", D, B)  # B holds `first`
    assert len({first, second}) == 2 and third != first
    fourth = bind_from_pool(store, "b4", A, party(9))  # A holds first and second
    assert fourth not in (first, second)
    with pytest.raises(PoolExhausted) as info:
        bind_from_pool(store, "b5", A, B)  # A is on every number now
    assert info.value.rule == "pool-exhausted"
    for bid in ("b1", "b2", "b3", "b4"):
        binding, _ = store.get(bid) or (None, None)
        assert binding is not None
        assert store.lookup(binding.virtual, binding.a, NOW) == Route(
            binding.b or "", binding.virtual, bid, "axb", False, None, "A->B", tenant="acme"
        )


def test_allocation_honours_cooloff(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:2], cooloff=300)
    first = bind_from_pool(store, "b1", A, B)
    bind_from_pool(store, "filler", C, D)  # both numbers at load 1
    store.unbind("b1", now=NOW + 100)
    # `first` is the least loaded number again, but A and B left it 20 s ago.
    second = bind_from_pool(store, "b2", A, B, now=NOW + 120)
    assert second != first
    store.unbind("b2", now=NOW + 130)
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "b3", A, B, now=NOW + 140)  # left both numbers recently
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "b3", A, party(5), now=NOW + 140)  # A alone is enough
    assert bind_from_pool(store, "b4", party(6), B, now=NOW + 401) == first  # B's ended
    assert bind_from_pool(store, "b5", A, party(7), now=NOW + 401) == first  # A's too
    assert bind_from_pool(store, "b6", party(8), party(9), now=NOW + 401) == second


def test_allocation_cooloff_from_expiry_of_unpurged_binding(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:1], cooloff=300)
    x = bind_from_pool(store, "b1", A, B)  # expires at NOW + 600
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "b2", A, C, now=NOW + 800)  # expired 200 s ago
    assert bind_from_pool(store, "b3", A, C, now=NOW + 901) == x  # evicts b1
    assert store.get("b1") is None and load(store, x) == 1


def test_allocation_prefers_the_area(store: Store) -> None:
    areas = {POOL_NUMBERS[0]: "0532", POOL_NUMBERS[1]: "0532", POOL_NUMBERS[2]: "010"}
    make_pool(store, numbers=POOL_NUMBERS[:4], areas=areas, capacity=1)
    got = [
        bind_from_pool(store, f"q{n}", party(2 * n), party(2 * n + 1), area="0532")
        for n in range(3)
    ]
    assert got[:2] == POOL_NUMBERS[:2]
    assert got[2] in POOL_NUMBERS[2:4]  # not strict: the rest of the pool
    with pytest.raises(PoolExhausted) as info:
        bind_from_pool(store, "s1", party(50), party(51), area="0532", strict=True)
    assert "0532" in str(info.value)
    free = POOL_NUMBERS[3] if got[2] == POOL_NUMBERS[2] else POOL_NUMBERS[2]
    if free == POOL_NUMBERS[2]:
        assert bind_from_pool(store, "s2", party(52), party(53), area="010", strict=True) == free
    else:
        with pytest.raises(PoolExhausted):
            bind_from_pool(store, "s2", party(52), party(53), area="010", strict=True)
        assert bind_from_pool(store, "s3", party(54), party(55), area="010") == free
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "s4", party(56), party(57), area="nowhere", strict=True)


def test_allocation_capacity_and_exhaustion(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:2], capacity=3)
    for n in range(6):
        bind_from_pool(store, f"b{n}", party(2 * n), party(2 * n + 1))
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "b9", party(90), party(91))
    assert load(store, POOL_NUMBERS[0]) == load(store, POOL_NUMBERS[1]) == 3


def test_ax_and_axn_take_a_number_alone(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:3])
    shared = bind_from_pool(store, "pair", A, B)
    solo = bind_from_pool(store, "shop", C, D, kind="axn")
    desk = bind_from_pool(store, "desk", party(7), None, kind="ax")
    assert len({shared, solo, desk}) == 3
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "shop2", party(8), party(9), kind="axn")
    # Pairs never go onto a number an ax/axn holds: the shared one takes them all.
    assert {bind_from_pool(store, f"p{n}", party(20 + n), party(40 + n)) for n in range(3)} == {
        shared
    }
    store.unbind("shop")
    assert bind_from_pool(store, "pair-on-solo", party(60), party(61)) == solo


def test_allocation_respects_bindings_made_outside_the_pool(store: Store) -> None:
    make_pool(store, numbers=POOL_NUMBERS[:2])
    # An operator map put A on the first number: the routes table says so.
    store.put(axb("map", x=POOL_NUMBERS[0], a=A, b=C), now=NOW, source="yaml")
    assert bind_from_pool(store, "b1", A, B) == POOL_NUMBERS[1]
    store.put(ax("desk", x=POOL_NUMBERS[1], a=D), now=NOW, source="yaml")
    with pytest.raises(PoolExhausted):
        bind_from_pool(store, "solo", party(1), None, kind="ax")


# ------------------------------------------------------------------ shared transactions


def test_transaction_keeps_good_units_and_drops_bad_ones(store: Store) -> None:
    store.put(axb("old", a=A, b=B, expires=NOW + 5), now=NOW - 10)
    store.put(axb("live", a=C, b=D), now=NOW - 10)
    with store.transaction(NOW + 10) as t:
        t.put(axb("p1", x=X2, a=A, b=B))
        with pytest.raises(ConflictError):
            # Claims A's route on X1 by evicting the expired "old", then conflicts on C:
            # the eviction is undone with the rest.
            t.put(axb("p2", x=X1, a=A, b=C))
        assert t.get("old") is not None
        with pytest.raises(ConflictError):
            t.put(axb("bad", x=X2, a=A, b=C))
        with pytest.raises(RuntimeError), t.savepoint() as sp:
            sp.put(axn("n1", x=X2, a=C, b=D))
            raise RuntimeError("undo the savepoint")
        assert t.get("n1") is None
        assert t.unbind("nothing") is None
        removed = t.unbind("live")
        assert removed is not None and removed.id == "live"
    assert store.get("p1") is not None and store.get("old") is not None
    assert store.get("p2") is None and store.get("bad") is None and store.get("live") is None
    stats = store.stats(NOW + 10)
    assert sum(stats.counts["api"].values()) == len(store.ids("api")) == 2


def test_unnested_puts_are_undone_with_the_savepoint_that_fails(store: Store) -> None:
    """``nested=False``: a refused put may leave part of itself behind (the expired
    binding it evicted, the old binding it replaces), which is why only a unit that then
    raises may use it; its savepoint takes all of it back, and a good unit stays whole."""
    store.put(axb("old", a=A, b=B, expires=NOW + 5), now=NOW - 10)
    store.put(axb("live", a=C, b=D), now=NOW - 10)
    store.put(axb("other", x=X2, a=C, b=D), now=NOW - 10)
    with store.transaction(NOW + 10) as t:
        with pytest.raises(ConflictError), t.savepoint() as sp:
            sp.put(axb("p2", x=X1, a=A, b=C), nested=False)
        assert t.get("old") is not None and t.get("p2") is None
        with pytest.raises(ConflictError), t.savepoint() as sp:
            sp.put(axb("live", x=X2, a=C, b=A), replace=True, nested=False)
            # (the old "live" was removed before the conflict with "other" was found)
        assert t.get("live") is not None
        with t.savepoint() as sp:
            sp.put(axb("p1", x=X2, a=A, b=B), nested=False)
            assert sp.unbind("other", nested=False) is not None
        with pytest.raises(ConflictError), t.savepoint() as sp:
            try:
                sp.put(axb("p3", x=X1, a=A, b=C), nested=False)
            finally:
                assert sp.get("old") is None  # evicted before the conflict was found
    assert store.get("p1") is not None and store.get("old") is not None
    assert store.get("live") is not None and store.get("other") is None
    assert store.get("p2") is None and store.get("p3") is None
    assert sum(store.stats(NOW + 10).counts["api"].values()) == len(store.ids("api")) == 3


def test_transaction_route_checks(store: Store) -> None:
    store.put(axb("p1", a=A, b=B, expires=NOW + 5), now=NOW)
    with store.transaction(NOW) as t:
        assert t.route_exists(X1, A) and t.route_exists(X1)
        assert not t.route_exists(X1, C) and not t.route_exists(X2)
    with store.transaction(NOW + 10) as t:
        assert not t.route_exists(X1, A)  # expired
        assert t.route_exists(X1)  # until purged
        t.put(ax("ax2", x=X2, a=C))
        assert t.route_exists(X2) and not t.route_exists(X2, C)
