"""Call records and statistics over real HTTP: search by time range, X, binding, out_id
and status, paged; CSV export of the same selection; counts per day, month and year in
the tenant's time zone, grouped by binding, pool, trunk and tenant, with ASR, ACD and
minutes. The records are written by the engine's own CDR writer."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from api_helpers import ApiServer, party, pool_numbers

from b2bua.cdr import CallRecord, CdrWriter

SEOUL = ZoneInfo("Asia/Seoul")


def _at(day: str, hour: int) -> float:
    """Epoch seconds of ``day`` at ``hour`` o'clock in Seoul."""
    return dt.datetime.combine(dt.date.fromisoformat(day), dt.time(hour), SEOUL).timestamp()


def _record(b: dict[str, Any], at: float, status: int, seconds: int, trunk: str) -> CallRecord:
    answered = status == 200
    return CallRecord(
        f"c-{at}@127.0.0.2", "b@ansim", "bridge", "axb", "A->B", b["x"], b["a"], b["b"],
        b["x"], b["id"], "carrier", "udp", "127.0.0.2", 5060, trunk, at, at + 1,
        at + 2 if answered else None, at + 2 + seconds, 1000, 2000 if answered else None,
        seconds * 1000 if answered else None, status, 16, "caller", "caller_bye",
    )  # fmt: skip


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, list[Any]]]:
    folder: Path = tmp_path_factory.mktemp("records")
    cdr = folder / "cdr.sqlite"
    with ApiServer(folder / "numbers.lmdb", cdr=cdr) as server:
        token = server.tenant("acme")
        other = server.tenant("globex")
        with server.client(token) as api, server.client(other) as globex:
            pools = [("trips", pool_numbers(3)), ("meals", pool_numbers(3, 10))]
            for name, numbers in pools:
                body = {"name": name, "numbers": [{"number": n} for n in numbers]}
                api.post("/v1/pools", json=body).raise_for_status()
            trip = api.post("/v1/bindings", json={"kind": "axb", "pool": "trips", "a": party(1),
                            "b": party(2), "out_id": "trip-1"}).json()  # fmt: skip
            meal = api.post("/v1/bindings", json={"kind": "axb", "pool": "meals", "a": party(3),
                            "b": party(4), "out_id": "meal-1"}).json()  # fmt: skip
            admin = server.tenant("acme", frozenset({"admin", "stats:read"}), name="admin")
            with server.client(admin) as a:
                a.put("/v1/admin/tenants/acme", json={"numbers": ["+82507100"],
                      "timezone": "Asia/Seoul"}).raise_for_status()  # fmt: skip
            assert server.store is not None
            writer = CdrWriter(cdr, attribute=server.store.attribution)
            calls = [
                # 2026-11-03 23:30 Seoul is 14:30 UTC: the 3rd in Seoul, in UTC too.
                _record(trip, _at("2026-11-03", 23) + 1800, 200, 60, "t1"),
                _record(trip, _at("2026-11-04", 0) + 600, 200, 120, "t1"),  # 15:10 UTC the 3rd
                _record(trip, _at("2026-11-04", 9), 486, 0, "t2"),
                _record(meal, _at("2026-11-04", 10), 200, 30, "t2"),
                _record(meal, _at("2026-12-01", 10), 480, 0, "t1"),
            ]
            for r in calls:
                writer.add(r)
            writer.close()
            yield api, [trip, meal, calls, globex]


def test_search_filters_and_pages(world: tuple[httpx.Client, list[Any]]) -> None:
    api, (trip, meal, calls, globex) = world
    found = api.get("/v1/records/calls").json()
    assert [r["record_id"] for r in found["items"]] == [c.record_id for c in calls]
    assert found["next_after"] is None
    assert found["items"][0]["tenant"] == "acme" and found["items"][0]["pool"] == "trips"

    def ids(**params: Any) -> list[str]:
        answer = api.get("/v1/records/calls", params=params)
        assert answer.status_code == 200, answer.text
        return [r["record_id"] for r in answer.json()["items"]]

    assert ids(binding_id=meal["id"]) == [calls[3].record_id, calls[4].record_id]
    assert ids(out_id="trip-1") == [c.record_id for c in calls[:3]]
    assert ids(x=trip["x"]) == [c.record_id for c in calls[:3]]
    national = "0" + trip["x"][3:]
    assert ids(x=national) == ids(x=trip["x"])  # any written form of X
    assert ids(status=486) == [calls[2].record_id]
    assert ids(since="2026-11-04T00:00:00+09:00", until="2026-11-04T10:00:00+09:00") == [
        calls[1].record_id, calls[2].record_id,
    ]  # fmt: skip
    # Pages of two, in order, every record once.
    seen: list[str] = []
    after = None
    for _ in range(5):
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = api.get("/v1/records/calls", params=params).json()
        seen += [r["record_id"] for r in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == [c.record_id for c in calls]
    one = api.get(f"/v1/records/calls/{calls[0].record_id}").json()
    assert (one["caller"], one["callee"], one["duration_ms"]) == (party(1), party(2), 60000)
    assert api.get("/v1/records/calls", params={"after": "!!"}).status_code == 422
    assert api.get("/v1/records/calls", params={"x": "not-a-number"}).status_code == 422
    assert globex.get(f"/v1/records/calls/{calls[0].record_id}").status_code == 404
    assert globex.get("/v1/records/calls").json()["items"] == []


def test_csv_export(world: tuple[httpx.Client, list[Any]]) -> None:
    api, (_trip, _meal, calls, globex) = world
    answer = api.get("/v1/records/calls/export", params={"out_id": "trip-1"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert [r["record_id"] for r in rows] == [c.record_id for c in calls[:3]]
    assert rows[0]["caller"] == party(1) and rows[0]["status"] == "200"
    assert rows[0]["invite_at"].startswith("2026-11-03T14:30:00")
    empty = globex.get("/v1/records/calls/export")
    assert next(iter(csv.reader(io.StringIO(empty.text))))[:2] == ["record_id", "a_call_id"]
    assert len(empty.text.splitlines()) == 1


def test_statistics_per_day_month_year(world: tuple[httpx.Client, list[Any]]) -> None:
    api, (trip, meal, _calls, _globex) = world

    def stats(**params: Any) -> list[dict[str, Any]]:
        answer = api.get("/v1/stats", params=params)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["timezone"] == params.get("timezone", "Asia/Seoul")
        items: list[dict[str, Any]] = body["items"]
        return items

    days = stats(period="day", since="2026-11-01", until="2026-12-02")
    assert [(d["period"], d["calls"], d["answered"]) for d in days] == [
        ("2026-11-03", 1, 1), ("2026-11-04", 3, 2), ("2026-12-01", 1, 0),
    ]  # fmt: skip
    nov4 = days[1]
    assert nov4["asr"] == round(2 / 3, 4)
    assert nov4["acd_seconds"] == 75.0  # (120 + 30) / 2
    assert nov4["minutes"] == 2.5
    # The same calls counted in UTC days: 23:30 and 00:10 Seoul are both the 3rd.
    utc = stats(period="day", since="2026-11-01", until="2026-12-02", timezone="UTC")
    assert [(d["period"], d["calls"]) for d in utc] == [
        ("2026-11-03", 2), ("2026-11-04", 2), ("2026-12-01", 1),
    ]  # fmt: skip
    months = stats(period="month", since="2026-01-01", until="2027-01-01")
    assert [(m["period"], m["calls"], m["answered"]) for m in months] == [
        ("2026-11", 4, 3), ("2026-12", 1, 0),
    ]  # fmt: skip
    assert months[0]["minutes"] == 3.5
    years = stats(period="year", since="2026-01-01", until="2027-01-01")
    assert [(y["period"], y["calls"]) for y in years] == [("2026", 5)]
    by_pool = stats(period="month", since="2026-11-01", until="2026-12-01", group_by="pool")
    assert [(g["group"], g["calls"], g["answered"]) for g in by_pool] == [
        ("meals", 1, 1), ("trips", 3, 2),
    ]  # fmt: skip
    by_binding = stats(period="year", since="2026-01-01", until="2027-01-01",
                       group_by="binding")  # fmt: skip
    assert {g["group"]: g["calls"] for g in by_binding} == {trip["id"]: 3, meal["id"]: 2}
    by_trunk = stats(period="year", since="2026-01-01", until="2027-01-01", group_by="trunk")
    assert {g["group"]: g["calls"] for g in by_trunk} == {"t1": 3, "t2": 2}
    by_tenant = stats(period="year", since="2026-01-01", until="2027-01-01", group_by="tenant")
    assert [(g["group"], g["calls"]) for g in by_tenant] == [("acme", 5)]
    bad = api.get("/v1/stats", params={"period": "day", "since": "2026-12-01",
                                       "until": "2026-11-01"})  # fmt: skip
    assert bad.status_code == 422
