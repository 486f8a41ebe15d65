"""translate.limits and translate.abuse_store on real LMDB: caps per binding, virtual
number and tenant, per hour and per day, for calls and SMS, exact across processes; the
marketing-pattern rule (its block, its alert, its window); blocklists; what a peek, a
prune and a failing store do."""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from translate.abuse_store import AbuseStore
from translate.bindings import Binding, Refusal, Route
from translate.limits import CALL, SMS, Caps, Limits, LimitSettings, MarketingRule
from translate.store import Store

X1, X2, X3 = "+825070001001", "+825070001002", "+825070001003"
A, B, C, D = "+821011110001", "+821011110002", "+821011110003", "+821011110004"
# 2026-11-02 10:30 UTC, a Monday
NOW = 1793615400.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "numbers", sync=False, snapshot_max_age=0) as s:
        yield s


@pytest.fixture
def abuse(tmp_path: Path) -> Iterator[AbuseStore]:
    with AbuseStore(tmp_path / "limits") as a:
        yield a


def limits(store: Store, abuse: AbuseStore, **settings: object) -> Limits:
    return Limits(store, abuse, LimitSettings(**settings))  # type: ignore[arg-type]


def admitted(decisions: list[Route | Refusal]) -> int:
    return sum(isinstance(d, Route) for d in decisions)


def reasons(decisions: list[Route | Refusal]) -> list[str]:
    return [d.reason if isinstance(d, Refusal) else "ok" for d in decisions]


def test_a_bindings_own_calls_per_hour_per_clock_hour(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("ax-1", "ax", X1, A, calls_per_hour=3), now=NOW)
    lim = limits(store, abuse)
    got = [lim.decide(X1, C, NOW + i, CALL) for i in range(5)]
    assert reasons(got) == ["ok"] * 3 + ["limit"] * 2
    assert got[3] == Refusal("limit", "ax-1")
    # SMS are counted apart, and have no cap here
    assert admitted([lim.decide(X1, C, NOW, SMS) for _ in range(5)]) == 5
    # a new clock hour (10:30 -> 11:00) counts from zero
    assert reasons([lim.decide(X1, C, NOW + 1800 + i, CALL) for i in range(4)]) == (
        ["ok"] * 3 + ["limit"]
    )


def test_default_caps_per_day_follow_the_time_zone(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("ax-1", "ax", X1, A), now=NOW)
    # Asia/Seoul: NOW is 19:30 local; the day turns at 15:00 UTC
    lim = limits(store, abuse, timezone="Asia/Seoul", binding=Caps(calls_per_day=2, sms_per_day=1))
    assert reasons([lim.decide(X1, C, NOW + i, CALL) for i in range(3)]) == ["ok", "ok", "limit"]
    assert reasons([lim.decide(X1, C, NOW + i, SMS) for i in range(2)]) == ["ok", "limit"]
    turn = 1793631600.0  # 2026-11-03 00:00 in Seoul
    assert lim.decide(X1, C, turn - 1, CALL) == Refusal("limit", "ax-1")
    assert isinstance(lim.decide(X1, C, turn, CALL), Route)
    assert lim.usage("binding", "ax-1", turn) == {  # only the caps configured are counted
        ("call", "hour"): 0,
        ("call", "day"): 1,
        ("sms", "hour"): 0,
        ("sms", "day"): 0,
    }


def test_virtual_and_tenant_caps(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("p1", "axb", X1, A, B), now=NOW)
    store.put(Binding("p2", "axb", X1, C, D), now=NOW)
    store.put(Binding("t1", "ax", X2, A, tenant="acme"), now=NOW)
    store.put(Binding("t2", "ax", X3, A, tenant="acme"), now=NOW)
    lim = limits(
        store,
        abuse,
        virtual=Caps(calls_per_hour=3),
        tenant=Caps(calls_per_hour=100, sms_per_hour=1),
        tenants={"acme": Caps(calls_per_hour=2)},  # sms_per_hour: the tenant default
    )
    # X1's cap is shared by its two pairs
    got = [lim.decide(X1, A, NOW, CALL), lim.decide(X1, C, NOW, CALL), lim.decide(X1, B, NOW, CALL)]
    assert reasons(got) == ["ok"] * 3
    assert lim.decide(X1, D, NOW, CALL) == Refusal("virtual_limit", "p2")
    # acme's two numbers share its cap; its SMS cap comes from the default
    got = [lim.decide(X2, C, NOW, CALL), lim.decide(X3, C, NOW, CALL), lim.decide(X2, D, NOW, CALL)]
    assert reasons(got) == ["ok", "ok", "tenant_limit"]
    assert reasons([lim.decide(X3, C, NOW, SMS), lim.decide(X2, C, NOW, SMS)]) == [
        "ok",
        "tenant_limit",
    ]
    assert lim.refused == {
        ("virtual_limit", CALL): 1,
        ("tenant_limit", CALL): 1,
        ("tenant_limit", SMS): 1,
    }


def test_refused_attempts_do_not_count(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("ax-1", "ax", X1, A, tenant="acme"), now=NOW)
    lim = limits(store, abuse, binding=Caps(calls_per_hour=2), tenant=Caps(calls_per_hour=3))
    for _ in range(10):
        lim.decide(X1, C, NOW, CALL)
    # the binding refused eight: the tenant counted only the two admitted
    assert lim.usage("tenant", "acme", NOW)[(CALL, "hour")] == 2
    assert lim.usage("binding", "ax-1", NOW)[(CALL, "hour")] == 2


def _worker(paths: tuple[str, str], n: int, start: object, out: object) -> None:
    with Store(paths[0], readonly=True, snapshot_max_age=0) as s, AbuseStore(paths[1]) as a:
        lim = Limits(s, a, LimitSettings(virtual=Caps(calls_per_hour=150)))
        start.wait(10)  # type: ignore[attr-defined]
        got = sum(isinstance(lim.decide(X1, C, NOW, CALL), Route) for _ in range(n))
    out.put(got)  # type: ignore[attr-defined]


def test_caps_hold_across_processes(tmp_path: Path, store: Store, abuse: AbuseStore) -> None:
    """Four processes race for a cap of 150 with 100 attempts each: exactly 150 admitted."""
    store.put(Binding("ax-1", "ax", X1, A), now=NOW)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    paths = (str(tmp_path / "numbers"), str(tmp_path / "limits"))
    procs = [ctx.Process(target=_worker, args=(paths, 100, start, out)) for _ in range(4)]
    for p in procs:
        p.start()
    try:
        time.sleep(1.0)
        start.set()
        counts = [out.get(timeout=60) for _ in procs]
    finally:
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
    assert sum(counts) == 150, counts
    assert limits(store, abuse).usage("virtual", X1, NOW)[(CALL, "hour")] == 150


def test_marketing_rule_blocks_after_n_distinct_parties(store: Store, abuse: AbuseStore) -> None:
    """C reaches A, B, then D through X1 (bindings replaced between calls, as a trip
    platform does): the third distinct party is one too many with distinct=2."""
    rule = MarketingRule(distinct=2, window=3600, block_for=600)
    lim = limits(store, abuse, marketing=rule)
    store.put(Binding("b1", "ax", X1, A), now=NOW)
    assert isinstance(lim.decide(X1, C, NOW, CALL), Route)
    assert isinstance(lim.decide(X1, C, NOW + 1, SMS), Route)  # the same party again
    store.put(Binding("b1", "ax", X1, B), now=NOW, replace=True)
    assert isinstance(lim.decide(X1, C, NOW + 2, CALL), Route)
    store.put(Binding("b1", "ax", X1, D), now=NOW, replace=True)
    assert lim.decide(X1, C, NOW + 3, SMS) == Refusal("marketing", "b1")
    # blocked on X1 for block_for, calls and SMS alike, even toward a party it reached
    store.put(Binding("b1", "ax", X1, A), now=NOW, replace=True)
    assert lim.decide(X1, C, NOW + 4, CALL) == Refusal("marketing", "b1")
    assert lim.decide(X1, C, NOW + 602, CALL) == Refusal("marketing", "b1")
    assert isinstance(lim.decide(X1, C, NOW + 604, CALL), Route)
    # others are not blocked, nor is C on another X
    assert isinstance(lim.decide(X1, B, NOW + 5, CALL), Route)
    store.put(Binding("b2", "ax", X2, D), now=NOW)
    assert isinstance(lim.decide(X2, C, NOW + 5, CALL), Route)
    # one alert in the outbox, with what the API needs to deliver it
    (alert,) = abuse.alerts()
    assert (alert.kind, alert.party, alert.scope, alert.scope_id) == (
        "marketing_block",
        C,
        "virtual",
        X1,
    )
    assert (alert.distinct, alert.window, alert.until, alert.medium, alert.binding_id) == (
        3,
        3600,
        NOW + 603,
        SMS,
        "b1",
    )
    assert lim.alerts == 1
    (block,) = abuse.entries("marketing")
    assert (block.number, block.scope, block.scope_id, block.until) == (C, "virtual", X1, NOW + 603)


def test_marketing_rule_per_tenant_and_its_window(store: Store, abuse: AbuseStore) -> None:
    rule = MarketingRule(distinct=2, window=3600, block_for=600, scope="tenant")
    lim = limits(store, abuse, marketing=rule)
    for i, (x, a) in enumerate(((X1, A), (X2, B), (X3, D))):
        store.put(Binding(f"t{i}", "ax", x, a, tenant="acme"), now=NOW)
    assert reasons([lim.decide(X1, C, NOW, CALL), lim.decide(X2, C, NOW, CALL)]) == ["ok", "ok"]
    # a new window (11:00) starts from zero: A and B again, then D, are two more
    later = NOW + 1800
    assert reasons([lim.decide(X3, C, later, CALL), lim.decide(X1, C, later, CALL)]) == [
        "ok",
        "ok",
    ]
    assert lim.decide(X2, C, later, CALL) == Refusal("marketing", "t1")
    # the block is on the tenant: all of acme's numbers
    assert lim.decide(X3, C, later + 1, SMS) == Refusal("marketing", "t2")
    (alert,) = abuse.alerts()
    assert (alert.scope, alert.scope_id, alert.tenant) == ("tenant", "acme", "acme")


def test_marketing_scope_tenant_falls_back_to_the_virtual_number(
    store: Store, abuse: AbuseStore
) -> None:
    lim = limits(store, abuse, marketing=MarketingRule(distinct=1, scope="tenant"))
    store.put(Binding("m1", "ax", X1, A), now=NOW)
    store.put(Binding("m2", "ax", X2, B), now=NOW)
    assert reasons([lim.decide(X1, C, NOW, CALL), lim.decide(X2, C, NOW, CALL)]) == ["ok", "ok"]
    store.put(Binding("m1", "ax", X1, D), now=NOW, replace=True)
    assert lim.decide(X1, C, NOW, CALL) == Refusal("marketing", "m1")
    assert abuse.alerts()[0].scope == "virtual"


def test_blocklists(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("g", "ax", X1, A), now=NOW)
    store.put(Binding("t", "ax", X2, A, tenant="acme"), now=NOW)
    lim = limits(store, abuse)
    abuse.block(C, tenant="acme", now=NOW, note="complaint 4711")
    assert isinstance(lim.decide(X1, C, NOW, CALL), Route)
    assert lim.decide(X2, C, NOW, SMS) == Refusal("blocked", "t")
    abuse.block(D, tenant=None, now=NOW, until=NOW + 60)
    assert lim.decide(X1, D, NOW, CALL) == Refusal("blocked", "g")
    assert lim.decide(X2, D, NOW + 59, CALL) == Refusal("blocked", "t")
    assert isinstance(lim.decide(X1, D, NOW + 60, CALL), Route)  # the entry has ended
    # with caps counting, blocked attempts are refused before anything is counted
    capped = limits(store, abuse, virtual=Caps(calls_per_hour=5))
    assert capped.decide(X2, C, NOW, CALL) == Refusal("blocked", "t")
    assert capped.usage("virtual", X2, NOW)[(CALL, "hour")] == 0
    entries = {(e.number, e.scope, e.scope_id, e.note) for e in abuse.entries("blocklist")}
    assert entries == {(C, "tenant", "acme", "complaint 4711"), (D, "global", "", None)}
    assert abuse.unblock(C, tenant="acme") and not abuse.unblock(C, tenant="acme")
    assert isinstance(lim.decide(X2, C, NOW, CALL), Route)
    # an unknown caller (no number) is not looked up in the lists
    assert isinstance(lim.decide(X1, "", NOW, CALL), Route)


def test_peek_counts_nothing(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("ax-1", "ax", X1, A, calls_per_hour=1), now=NOW)
    lim = limits(store, abuse, marketing=MarketingRule(distinct=1))
    for _ in range(3):
        assert isinstance(lim.peek(X1, C, NOW, CALL), Route)
    assert isinstance(lim.decide(X1, C, NOW, CALL), Route)
    assert lim.peek(X1, C, NOW, CALL) == Refusal("limit", "ax-1")
    store.put(Binding("ax-1", "ax", X1, B), now=NOW, replace=True)
    assert lim.peek(X1, C, NOW + 3600, CALL) == Refusal("marketing", "ax-1")  # would be
    assert abuse.entries() == [] and abuse.alerts() == []
    assert lim.refused == {}


def test_prune_deletes_only_what_no_longer_counts(store: Store, abuse: AbuseStore) -> None:
    store.put(Binding("ax-1", "ax", X1, A), now=NOW)
    lim = limits(
        store,
        abuse,
        binding=Caps(calls_per_hour=9, calls_per_day=9),
        marketing=MarketingRule(distinct=5, window=7200),
    )
    lim.decide(X1, C, NOW, CALL)
    assert len(list(abuse.keys(abuse.counts))) == 3 and len(list(abuse.keys(abuse.distinct))) == 1
    assert lim.prune(NOW) == 0
    assert lim.prune(NOW + 1800) == 1  # the hour's counter
    assert lim.prune(NOW + 5400) == 2  # the two-hour window's count and party
    assert lim.usage("binding", "ax-1", NOW + 5400)[(CALL, "day")] == 1
    assert lim.prune(NOW + 86400) == 1
    assert list(abuse.keys(abuse.counts)) == []
    # and at most `limit` a call
    for i in range(30):
        store.put(Binding(f"b{i}", "ax", f"+82507000{2000 + i}", A), now=NOW)
        lim.decide(f"+82507000{2000 + i}", C, NOW, CALL)
    assert lim.prune(NOW + 86400, limit=10) == 10


def test_a_failing_store_admits_and_counts_the_failure(tmp_path: Path, store: Store) -> None:
    store.put(Binding("ax-1", "ax", X1, A), now=NOW)
    with AbuseStore(tmp_path / "tiny", map_size=64 * 1024) as tiny:
        lim = limits(store, tiny, binding=Caps(calls_per_hour=1_000_000))
        got = [lim.decide(f"{X1}", f"+8210{30000000 + i}", NOW, CALL) for i in range(3000)]
        assert admitted(got) == 3000
        # distinct binding counters would fill 64 KiB: keep writing new keys until it is full
        later = []
        for i in range(3000):
            store.put(replace(Binding(f"z{i}", "ax", f"+8250800{10000 + i}", A)), now=NOW)
            later.append(lim.decide(f"+8250800{10000 + i}", C, NOW, CALL))
        assert lim.errors > 0 and admitted(later) == 3000


def test_the_store_is_private(tmp_path: Path) -> None:
    with AbuseStore(tmp_path / "private"):
        pass
    assert (tmp_path / "private").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "private" / "data.mdb").stat().st_mode & 0o777 == 0o600
