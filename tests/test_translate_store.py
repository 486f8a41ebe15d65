"""Tests for translate.store: every binding kind, every refusal, writers, expiry, stats."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from translate_helpers import NOW, X1, X2, A, B, C, D, ax, axb, axn

import translate.store as store_module
from translate.bindings import Binding, Hours, Refusal, Route
from translate.layout import (
    FLAG_PRESENT_CALLER,
    FLAG_RECORD,
    decode_binding,
    encode_binding,
    route_value,
)
from translate.store import ConflictError, Store, StoreError


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "numbers.lmdb", map_size=64 << 20) as s:
        yield s


def route(result: Route | Refusal) -> Route:
    assert isinstance(result, Route), result
    return result


def refusal(result: Route | Refusal) -> Refusal:
    assert isinstance(result, Refusal), result
    return result


def test_ax_any_caller_reaches_a_and_sees_x(store: Store) -> None:
    store.put(ax(max_seconds=600), now=NOW)
    for caller in (C, D, B):
        assert store.lookup(X1, caller, NOW) == Route(A, X1, "ax-1", "ax", False, 600, "N->A")


def test_record_and_media_reach_the_route_through_the_api(store: Store) -> None:
    store.put(ax(record=True, media="rtpengine"), now=NOW)
    assert store.lookup(X1, C, NOW) == Route(A, X1, "ax-1", "ax", True, None, "N->A", "rtpengine")


def test_record_with_passthrough_is_refused(store: Store) -> None:
    with pytest.raises(ConflictError) as info:
        store.put(ax(record=True, media="passthrough"), now=NOW)
    assert [c.rule for c in info.value.conflicts] == ["record-passthrough"]
    assert store.lookup(X1, C, NOW) == Refusal("unknown", None)


def test_the_layout_keeps_the_record_flag_and_media() -> None:
    for media in (None, "passthrough", "relay", "rtpengine"):
        binding = ax(record=media != "passthrough", present="caller", media=media)
        assert decode_binding(binding.id, encode_binding(binding, "api")) == (binding, "api")
        flags = msgpack.unpackb(route_value(binding, A))[0]
        assert bool(flags & FLAG_RECORD) == binding.record and flags & FLAG_PRESENT_CALLER


def test_a_binding_stored_before_media_modes_decodes() -> None:
    old = msgpack.packb(["ax", X1, A, None, False, True, None, None, None, None, "yaml"])
    binding, source = decode_binding("ax-1", old)
    assert (binding.record, binding.media, source) == (True, None, "yaml")


def test_ax_present_caller(store: Store) -> None:
    store.put(ax(present="caller"), now=NOW)
    assert store.lookup(X1, C, NOW) == Route(A, C, "ax-1", "ax", False, None, "N->A")


def test_axb_each_party_reaches_the_other(store: Store) -> None:
    store.put(axb(), now=NOW)
    assert store.lookup(X1, A, NOW) == Route(B, X1, "axb-1", "axb", False, None, "A->B")
    assert store.lookup(X1, B, NOW) == Route(A, X1, "axb-1", "axb", False, None, "B->A")


def test_axb_outsider_is_not_party(store: Store) -> None:
    store.put(axb(), now=NOW)
    assert store.lookup(X1, C, NOW) == Refusal("not_party", None)


def test_axb_many_pairs_on_one_x(store: Store) -> None:
    store.put(axb("p1", a=A, b=B), now=NOW)
    store.put(axb("p2", a=C, b=D), now=NOW)
    assert route(store.lookup(X1, C, NOW)).callee == D
    assert route(store.lookup(X1, B, NOW)).callee == A
    assert route(store.lookup(X1, D, NOW)).binding_id == "p2"


def test_ax_on_axb_number_takes_outsiders(store: Store) -> None:
    store.put(axb(), now=NOW)
    store.put(ax("desk", a=D), now=NOW)
    assert route(store.lookup(X1, A, NOW)).callee == B
    assert store.lookup(X1, C, NOW) == Route(D, X1, "desk", "ax", False, None, "N->A")


def test_axn_others_reach_a_and_a_reaches_default_b(store: Store) -> None:
    store.put(axn(), now=NOW)
    assert store.lookup(X1, C, NOW) == Route(A, X1, "axn-1", "axn", False, None, "N->A")
    assert store.lookup(X1, A, NOW) == Route(B, X1, "axn-1", "axn", False, None, "A->B")
    assert store.lookup(X1, B, NOW) == Route(A, X1, "axn-1", "axn", False, None, "N->A")


def test_entries_written_without_a_direction(store: Store) -> None:
    """A store written before directions were recorded: ax routes can only be N->A, an
    axb or axn entry answers with no direction rather than a wrong one."""
    import msgpack

    from translate.layout import DIRECTION_SHIFT

    store.put(ax(), now=NOW)
    store.put(axb(x=X2), now=NOW)
    with store._env.begin(write=True, db=store._routes) as txn:
        for key, raw in list(txn.cursor()):
            value = msgpack.unpackb(raw)
            value[0] &= (1 << DIRECTION_SHIFT) - 1
            txn.put(key, msgpack.packb(value))
    store.release()
    assert route(store.lookup(X1, C, NOW)).direction == "N->A"
    assert route(store.lookup(X2, A, NOW)) == Route(B, X2, "axb-1", "axb", False, None, "")


def test_unknown(store: Store) -> None:
    store.put(ax(x=X2), now=NOW)
    assert store.lookup(X1, C, NOW) == Refusal("unknown", None)
    assert store.lookup("+8250700010010", C, NOW) == Refusal("unknown", None)


@pytest.mark.parametrize("binding", [ax(), axb(), axn()], ids=["ax", "axb", "axn"])
def test_expired_at_lookup_time(store: Store, binding: object) -> None:
    from dataclasses import replace

    store.put(replace(binding, expires=NOW + 60), now=NOW)  # type: ignore[type-var]
    assert isinstance(store.lookup(X1, A, NOW + 59.9), Route)
    result = refusal(store.lookup(X1, A, NOW + 60))
    assert result.reason == "expired"
    assert result.binding_id is not None


def test_calls_per_hour_and_tenant_reach_the_route_uncounted(store: Store) -> None:
    """The store only reads the binding's cap and tenant: counting is translate.limits'."""
    from dataclasses import replace

    store.put(replace(ax(calls_per_hour=3), tenant="acme"), now=NOW)  # type: ignore[type-var]
    for i in range(10):
        result = route(store.lookup(X1, C, NOW + i))
        assert (result.calls_per_hour, result.tenant) == (3, "acme")
    got = store.get("ax-1")
    assert got is not None and got[0].tenant == "acme"
    assert route(store.lookup(X1, C, NOW)) == Route(
        A, X1, "ax-1", "ax", False, None, "N->A", "", 3, "acme"
    )


def test_allowed_hours(store: Store) -> None:
    store.put(ax(hours=Hours.parse("09:00-18:00", "Asia/Seoul"), max_seconds=60), now=NOW)
    # NOW is 09:00 in Seoul (UTC+9)
    assert route(store.lookup(X1, C, NOW)).max_seconds == 60
    assert isinstance(store.lookup(X1, C, NOW + 9 * 3600 - 1), Route)
    assert store.lookup(X1, C, NOW + 9 * 3600) == Refusal("hours", "ax-1")
    assert store.lookup(X1, C, NOW - 1) == Refusal("hours", "ax-1")


def test_hours_wrapping_midnight(store: Store) -> None:
    store.put(ax(hours=Hours.parse("22:00-06:00", "UTC")), now=NOW)
    assert isinstance(store.lookup(X1, C, NOW), Route)
    assert isinstance(store.lookup(X1, C, NOW + 5 * 3600 + 3599), Route)
    assert store.lookup(X1, C, NOW + 6 * 3600) == Refusal("hours", "ax-1")
    assert isinstance(store.lookup(X1, C, NOW + 22 * 3600), Route)


def test_conflicts(store: Store) -> None:
    store.put(axb("p1", a=A, b=B), now=NOW)
    store.put(ax("h1"), now=NOW)
    with pytest.raises(ConflictError) as info:
        store.put(axb("p2", a=C, b=B), now=NOW)
    assert [(c.rule, c.other_id) for c in info.value.conflicts] == [("party-conflict", "p1")]
    assert "+8210****0002" in info.value.conflicts[0].message
    with pytest.raises(ConflictError) as info:
        store.put(axn("h2", a=D, b=C), now=NOW)
    assert [(c.rule, c.other_id) for c in info.value.conflicts] == [("duplicate-virtual", "h1")]
    with pytest.raises(ConflictError) as info:
        store.put(ax("p1", x=X2), now=NOW)
    assert info.value.conflicts[0].rule == "duplicate-id"
    with pytest.raises(ConflictError) as info:
        store.put(axn("n1", x=X1, a=A, b=D), now=NOW)
    rules = sorted(c.rule for c in info.value.conflicts)
    assert rules == ["duplicate-virtual", "party-conflict"]
    # a refused write changed nothing
    assert store.get("p2") is None and store.get("h2") is None and store.get("n1") is None
    assert route(store.lookup(X1, B, NOW)).callee == A


def test_same_number_on_different_x_is_fine(store: Store) -> None:
    store.put(axb("p1", x=X1), now=NOW)
    store.put(axb("p2", x=X2), now=NOW)
    assert route(store.lookup(X2, A, NOW)).binding_id == "p2"


def test_invalid_bindings_refused(store: Store) -> None:
    with pytest.raises(ConflictError) as info:
        store.put(axb("bad", a=A, b=A), now=NOW)
    assert [c.rule for c in info.value.conflicts] == ["same-party"]
    with pytest.raises(ConflictError) as info:
        store.put(ax("bad", a="01012345678"), now=NOW)
    assert [c.rule for c in info.value.conflicts] == ["bad-number"]
    with pytest.raises(ConflictError) as info:
        store.put(ax("old", expires=NOW - 1), now=NOW)
    assert [c.rule for c in info.value.conflicts] == ["expired"]


def test_expired_binding_does_not_block_a_new_one(store: Store) -> None:
    store.put(axb("old", expires=NOW + 10), now=NOW)
    store.put(axb("new", a=A, b=C), now=NOW + 20)
    assert store.get("old") is None
    assert route(store.lookup(X1, A, NOW + 20)).callee == C


def test_unbind(store: Store) -> None:
    store.put(axb("p1"), now=NOW)
    store.put(axn("n1", x=X2), now=NOW)
    assert store.unbind("p1") is True
    assert store.unbind("p1") is False
    assert store.lookup(X1, A, NOW) == Refusal("unknown", None)
    assert store.unbind("n1") is True
    assert store.lookup(X2, A, NOW) == Refusal("unknown", None)
    assert store.stats(NOW).total == 0


def test_put_replace(store: Store) -> None:
    store.put(ax("h1", a=A), now=NOW)
    store.put(ax("h1", a=B), now=NOW, replace=True)
    assert route(store.lookup(X1, C, NOW)).callee == B


def test_purge_expired(store: Store) -> None:
    store.put(axb("p1", expires=NOW + 10), now=NOW)
    store.put(axb("p2", a=C, b=D, expires=NOW + 20), now=NOW)
    store.put(ax("h1", x=X2, expires=NOW + 10), now=NOW)
    store.put(axn("n1", x="+825070001003", expires=NOW + 10), now=NOW)
    stats = store.stats(NOW + 15)
    assert stats.expired == {"axb": 1, "ax": 1, "axn": 1}
    assert store.purge_expired(NOW + 15, limit=2) == 2
    assert store.purge_expired(NOW + 15) == 1
    assert store.purge_expired(NOW + 15) == 0
    assert store.get("p2") is not None
    assert store.lookup(X1, A, NOW + 15) == Refusal("not_party", None)  # p2 still on X1
    assert store.lookup(X2, A, NOW + 15) == Refusal("unknown", None)
    assert store.lookup(X1, C, NOW + 15) == Route(D, X1, "p2", "axb", False, None, "A->B")
    assert store.stats(NOW + 15).counts == {"api": {"ax": 0, "axb": 1, "axn": 0}}


def test_replace_source_leaves_other_source_alone(store: Store) -> None:
    store.put(axb("api-1", x=X2), now=NOW, source="api")
    first = store.replace_source("yaml", [ax("y1"), axb("y2", a=C, b=D)], now=NOW)
    assert (first.added, first.removed, first.changed, first.unchanged) == (2, 0, 0, 0)
    second = store.replace_source("yaml", [ax("y1"), axb("y3", a=C, b=D)], now=NOW)
    assert (second.added, second.removed, second.changed, second.unchanged) == (1, 1, 0, 1)
    third = store.replace_source("yaml", [ax("y1", a=B)], now=NOW)
    assert (third.added, third.removed, third.changed, third.unchanged) == (0, 1, 1, 0)
    assert route(store.lookup(X1, C, NOW)).callee == B
    assert store.ids("yaml") == ["y1"]
    assert store.ids("api") == ["api-1"]
    assert route(store.lookup(X2, A, NOW)).binding_id == "api-1"
    store.replace_source("yaml", [], now=NOW)
    assert store.ids("yaml") == []
    assert store.stats(NOW).counts["api"]["axb"] == 1


def test_replace_source_conflict_with_api_changes_nothing(store: Store) -> None:
    store.replace_source("yaml", [ax("y1")], now=NOW)
    store.put(axb("api-1", x=X2, a=A, b=B), now=NOW)
    with pytest.raises(ConflictError) as info:
        store.replace_source("yaml", [ax("y2"), axb("y3", x=X2, a=B, b=C)], now=NOW)
    assert [(c.binding_id, c.rule) for c in info.value.conflicts] == [("y3", "party-conflict")]
    assert store.ids("yaml") == ["y1"]
    assert store.get("y2") is None


def test_get_and_on_virtual(store: Store) -> None:
    store.put(ax("desk", a=D), now=NOW)
    store.put(axb("p1", a=A, b=B), now=NOW, source="api")
    store.put(axb("p2", a=C, b="+821055550005"), now=NOW)
    found = store.on_virtual(X1)
    assert [(b.id, source) for b, source in found] == [
        ("desk", "api"),
        ("p1", "api"),
        ("p2", "api"),
    ]
    got = store.get("p1")
    assert got is not None and got[0] == axb("p1", a=A, b=B)
    assert store.on_virtual(X2) == []


def test_binding_round_trip(store: Store) -> None:
    binding = axb(
        "full",
        expires=NOW + 3600.5,
        max_seconds=120,
        calls_per_hour=5,
        hours=Hours.parse("08:30-20:00", "Asia/Shanghai"),
    )
    store.put(binding, now=NOW, source="yaml")
    assert store.get("full") == (binding, "yaml")


def test_stats_and_size(store: Store) -> None:
    store.put_many([ax(f"h{i}", x=f"+8250700{i:05d}") for i in range(50)], now=NOW)
    store.replace_source("yaml", [axb("p", x=X2)], now=NOW, loaded={"at": NOW, "files": 1})
    stats = store.stats(NOW)
    assert stats.counts == {"api": {"ax": 50}, "yaml": {"axb": 1}}
    assert stats.total == 51
    assert stats.loaded == {"yaml": {"at": NOW, "files": 1}}
    assert stats.size_bytes > 0


def test_put_many_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(ConflictError):
        store.put_many([ax("h1"), ax("h2")], now=NOW)
    assert store.stats(NOW).total == 0


def test_readonly_store(tmp_path: Path) -> None:
    path = tmp_path / "ro.lmdb"
    with pytest.raises(StoreError, match="no store"):
        Store(path, readonly=True)
    with Store(path, map_size=16 << 20) as writer:
        writer.put(ax(), now=NOW)
    with Store(path, readonly=True) as reader:
        assert route(reader.lookup(X1, C, NOW)).callee == A
        with pytest.raises(StoreError, match="read-only"):
            reader.unbind("ax-1")


def test_source_must_be_known(store: Store) -> None:
    with pytest.raises(ValueError):
        store.put(ax(), now=NOW, source="csv")


def test_map_full_is_a_store_error(tmp_path: Path) -> None:
    with Store(tmp_path / "small.lmdb", map_size=256 << 10) as small:
        with pytest.raises(StoreError, match="full"):
            small.put_many((ax(f"h{i}", x=f"+8250700{i:05d}") for i in range(20000)), now=NOW)
        assert small.stats(NOW).total == 0


WRITER = """
import sys
from translate.bindings import Binding
from translate.store import Store
with Store(sys.argv[1], map_size=16 << 20) as store:
    store.put(Binding(sys.argv[2], "ax", sys.argv[3], sys.argv[4]), now=float(sys.argv[5]))
"""


def write_elsewhere(path: Path, binding_id: str, x: str, a: str) -> None:
    """Add an ax binding from another process (LMDB allows one Store per process)."""
    subprocess.run(
        [sys.executable, "-c", WRITER, str(path), binding_id, x, a, str(NOW)],
        check=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )


def test_lookup_snapshot_is_reused_until_released(tmp_path: Path) -> None:
    path = tmp_path / "s.lmdb"
    with Store(path, map_size=16 << 20) as writer:
        writer.put(ax("h1"), now=NOW)
    with Store(path, readonly=True, snapshot_max_age=3600) as reader:
        assert route(reader.lookup(X1, C, NOW)).callee == A
        write_elsewhere(path, "h2", X2, B)
        assert reader.lookup(X2, C, NOW) == Refusal("unknown", None)  # same snapshot
        reader.release()
        assert route(reader.lookup(X2, C, NOW)).callee == B
    with Store(path, readonly=True, snapshot_max_age=0) as reader:
        assert reader.lookup("+825070001003", C, NOW) == Refusal("unknown", None)
        write_elsewhere(path, "h3", "+825070001003", D)
        assert route(reader.lookup("+825070001003", C, NOW)).callee == D


def test_own_writes_are_seen_at_once(tmp_path: Path) -> None:
    with Store(tmp_path / "s.lmdb", map_size=16 << 20, snapshot_max_age=3600) as store:
        assert store.lookup(X1, C, NOW) == Refusal("unknown", None)
        store.put(ax(), now=NOW)
        assert route(store.lookup(X1, C, NOW)).callee == A
        store.unbind("ax-1")
        assert store.lookup(X1, C, NOW) == Refusal("unknown", None)


def ax_range(first: int, n: int, step: int = 1) -> list[Binding]:
    return [ax(f"h{i}", x=f"+8250700{i:05d}", a=f"+8210000{i:05d}") for i in range(first, n, step)]


def routes_shape(store: Store) -> tuple[int, int]:
    stats = store.stats(NOW)
    return stats.route_entries, stats.route_pages


def test_batches_larger_than_a_flush(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # Puts wait in the writer and go to the tables in flushes; rules must hold across
    # what is flushed and what still waits, and the batch stays all or nothing.
    monkeypatch.setattr(store_module, "FLUSH_ROUTES", 5)
    batch = [
        *ax_range(0, 12),
        axb("pair", x=X2, a=A, b=B),
        ax("dup-early", x="+825070000003"),  # X of h3, flushed already
        axb("dup-party", x=X2, a=C, b=B),  # B's route on X2 still waits
        ax("h4", x="+825070009999"),  # an id written in this batch
    ]
    with pytest.raises(ConflictError) as info:
        store.put_many(batch, now=NOW)
    assert sorted((c.binding_id, c.rule, c.other_id) for c in info.value.conflicts) == [
        ("dup-early", "duplicate-virtual", "h3"),
        ("dup-party", "party-conflict", "pair"),
        ("h4", "duplicate-id", "h4"),
    ]
    assert routes_shape(store)[0] == 0 and store.stats(NOW).total == 0

    assert store.put_many(batch[:13], now=NOW) == 13
    assert route(store.lookup("+825070000011", C, NOW)).binding_id == "h11"
    assert route(store.lookup(X2, A, NOW)).callee == B
    assert routes_shape(store)[0] == 14
    # A replace removes and adds within one transaction: a changed binding, a new one.
    result = store.replace_source(
        "api", [*ax_range(0, 11), axb("pair", x=X2, a=A, b=D), ax("h99", x=X1)], now=NOW
    )
    assert (result.added, result.changed, result.removed, result.unchanged) == (1, 1, 1, 11)
    assert route(store.lookup(X2, D, NOW)).callee == A
    assert store.lookup(X2, B, NOW) == Refusal("not_party", None)
    assert store.lookup("+825070000011", C, NOW) == Refusal("unknown", None)
    assert route(store.lookup(X1, C, NOW)).binding_id == "h99"
    assert store.stats(NOW).counts == {"api": {"ax": 12, "axb": 1}}


def test_loads_write_routes_in_key_order(tmp_path: Path) -> None:
    # The same 20,000 bindings (fewer routes than one flush), given in number order and
    # shuffled: the writer sorts what it writes, so the table comes out as compact.
    import random

    bindings = ax_range(0, 20_000)
    shapes = []
    for order in ("sorted", "shuffled"):
        if order == "shuffled":
            random.Random(7).shuffle(bindings)
        with Store(tmp_path / order, map_size=64 << 20) as s:
            s.put_many(bindings, now=NOW)
            shapes.append(routes_shape(s))
    (entries, in_order), (_, shuffled) = shapes
    assert entries == 20_000
    assert shuffled <= in_order * 1.02, (shuffled, in_order)


def test_repack_fills_the_pages_of_the_routes_table(store: Store) -> None:
    # Numbers loaded in the middle of stored ones split pages in half; repack rewrites
    # the table with full pages and the same answers.
    store.put_many(ax_range(0, 30_000, 2), now=NOW)
    store.put_many(ax_range(1, 30_000, 2), now=NOW)
    entries, before = routes_shape(store)
    probes = [f"+8250700{i:05d}" for i in (*range(0, 30_000, 997), 30_000)]
    answers = [store.lookup(x, C, NOW) for x in probes]
    assert store.repack() == (before, routes_shape(store)[1])
    after = routes_shape(store)[1]
    assert routes_shape(store)[0] == entries == 30_000
    assert after < before * 0.75, (before, after)
    assert [store.lookup(x, C, NOW) for x in probes] == answers
    assert answers[-1] == Refusal("unknown", None)
    assert store.repack() == (after, after)
    store.put(ax("late", x="+825079999999"), now=NOW)  # the store takes writes as before
    assert route(store.lookup("+825079999999", C, NOW)).binding_id == "late"


def test_a_skipped_append_undoes_the_write(store: Store) -> None:
    # LMDB skips an appended key that is not past the last one instead of failing; the
    # writer checks the count so that such a slip loses no route.
    store.put(ax(), now=NOW)
    with pytest.raises(StoreError, match="wrote 0 of 1"), store._write() as txn:
        cursor = txn.cursor(db=store._routes)
        store_module._put_sorted(cursor, [(b"+0", b"")], append=True)
    assert routes_shape(store)[0] == 1


def _mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


@pytest.fixture
def wide_umask() -> Iterator[None]:
    old = os.umask(0o022)  # what most shells have: 0644 files, 0755 folders
    try:
        yield
    finally:
        os.umask(old)


def test_a_new_store_is_its_owners_only(tmp_path: Path, wide_umask: None) -> None:
    before = tmp_path / "srv"
    before.mkdir(mode=0o755)
    path = before / "var" / "state" / "numbers.lmdb"
    with Store(path, map_size=64 << 20) as store:
        store.put(ax(), now=NOW)
    assert _mode(path) == 0o700
    assert _mode(path.parent) == 0o700 and _mode(path.parent.parent) == 0o700  # made here
    assert _mode(before) == 0o755  # there before: not ansim's to change
    assert _mode(path / "data.mdb") == 0o600 and _mode(path / "lock.mdb") == 0o600


def test_a_store_readable_by_others_is_tightened_with_a_warning(
    tmp_path: Path, wide_umask: None, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "numbers.lmdb"
    Store(path, map_size=64 << 20).close()
    os.chmod(path, 0o755)
    os.chmod(path / "data.mdb", 0o644)
    os.chmod(path / "lock.mdb", 0o664)
    with caplog.at_level("WARNING"):
        Store(path, map_size=64 << 20).close()
    assert (_mode(path), _mode(path / "data.mdb"), _mode(path / "lock.mdb")) == (
        0o700,
        0o600,
        0o600,
    )
    warnings = [r.getMessage() for r in caplog.records]
    assert f"{path} was readable beyond its owner (mode 0755): tightened to 0700" in warnings
    assert any("data.mdb was readable beyond its owner (mode 0644)" in w for w in warnings)
    caplog.clear()
    with caplog.at_level("WARNING"):
        Store(path, map_size=64 << 20).close()
    assert not caplog.records  # nothing more to say once tight
