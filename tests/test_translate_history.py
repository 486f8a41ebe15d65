"""Tests for translate.history: the owners of ended bindings, and Store.attribution."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from translate_helpers import NOW, X1, X2, A, B, C, D

from translate.bindings import Binding
from translate.history import Attribution
from translate.pools import Pool
from translate.store import Store

T = "acme"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "numbers.lmdb", map_size=64 << 20) as s:
        with s.transaction(NOW) as t:
            s.pools.create(t.txn, Pool(T, "trips", 100, 0.0, NOW))
            s.pools.add_number(t.txn, T, "trips", X1, None)
        yield s


def trip(bid: str, x: str = X1, a: str = A, b: str = B, **kw: object) -> Binding:
    return Binding(bid, "axb", x, a, b, tenant=T, out_id=f"order-{bid}", **kw)  # type: ignore[arg-type]


def test_a_live_binding_is_attributed_from_itself(store: Store) -> None:
    store.put(trip("t1"), now=NOW)
    store.put(trip("t2", x=X2, a=C, b=D), now=NOW)  # X2 is in no pool
    store.put(Binding("yaml-1", "ax", "+825070009999", A), now=NOW, source="yaml")
    found = store.attribution(["t1", "t2", "yaml-1", "nothing"])
    assert found == {
        "t1": Attribution(T, "trips", "order-t1"),
        "t2": Attribution(T, None, "order-t2"),
    }


def test_an_unbound_binding_keeps_its_owner(store: Store) -> None:
    store.put(trip("t1"), now=NOW)
    assert store.unbind("t1", now=NOW + 10)
    assert store.get("t1") is None
    assert store.attribution(["t1"]) == {"t1": Attribution(T, "trips", "order-t1")}
    with store.reader() as txn:
        ended = store.history.get(txn, "t1")
    assert ended is not None
    assert (ended.virtual, ended.kind, ended.ended_at, ended.expired) == (
        X1,
        "axb",
        NOW + 10,
        False,
    )
    assert ended.expires is None


def test_a_purged_binding_is_kept_as_expired_in_time_order(store: Store) -> None:
    store.put(trip("t1", expires=NOW + 5), now=NOW)
    store.put(trip("t2", x=X2, a=C, b=D, expires=NOW + 6), now=NOW)
    store.put(trip("t3", a="+821011110000", b="+821022220000"), now=NOW)
    assert store.purge_expired(NOW + 60) == 2
    store.unbind("t3", now=NOW + 70)
    with store.reader() as txn:
        entries = list(store.history.since(txn, b"", 10))
        assert [(e.binding_id, e.expired) for e in entries] == [
            ("t1", True),
            ("t2", True),
            ("t3", False),
        ]
        # A cursor resumes after the entry it names; a limit stops the walk.
        after = list(store.history.since(txn, entries[0].cursor, 10))
        assert [e.binding_id for e in after] == ["t2", "t3"]
        assert [e.binding_id for e in store.history.since(txn, b"", 1)] == ["t1"]
    assert set(store.attribution(["t1", "t2", "t3"])) == {"t1", "t2", "t3"}


def test_a_change_that_rewrites_a_binding_leaves_one_entry(store: Store) -> None:
    store.put(trip("t1"), now=NOW)
    with store.transaction(NOW + 1) as t:
        t.put(replace(trip("t1"), out_id="changed"), replace=True)
    with store.transaction(NOW + 2) as t:
        t.put(replace(trip("t1"), out_id="again"), replace=True)
    # The live binding wins over what was kept of its earlier versions.
    assert store.attribution(["t1"]) == {"t1": Attribution(T, "trips", "again")}
    with store.reader() as txn:
        assert [e.binding_id for e in store.history.since(txn, b"", 10)] == ["t1"]


def test_pruning_forgets_in_time_order(store: Store) -> None:
    for n in range(5):
        store.put(trip(f"t{n}", a=f"+82101111000{n}", b=f"+82102222000{n}"), now=NOW)
        store.unbind(f"t{n}", now=NOW + n)
    with store.transaction(NOW + 100) as t:
        assert store.history.prune(t.txn, NOW + 3, limit=10) == 3
        assert store.history.prune(t.txn, NOW + 3, limit=10) == 0
    assert set(store.attribution([f"t{n}" for n in range(5)])) == {"t3", "t4"}
