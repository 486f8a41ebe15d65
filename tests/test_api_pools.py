"""Pools through the API over real HTTP: CRUD, numbers and who may pool them, allocation
by area, capacity, cool-off and exhaustion (with its error code and its metric)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ApiServer, party, pool_numbers
from test_api_bindings import error, rules

from translate.bindings import Binding

NUMBERS = pool_numbers(6)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with ApiServer(tmp_path / "numbers.lmdb") as srv:
        yield srv


@pytest.fixture
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client(server.tenant("acme")) as client:
        yield client


def pool(api: httpx.Client, name: str = "trips", **body: Any) -> dict[str, Any]:
    body.setdefault("numbers", [{"number": n} for n in NUMBERS])
    answer = api.post("/v1/pools", json={"name": name, **body})
    assert answer.status_code == 201, answer.text
    result: dict[str, Any] = answer.json()
    return result


def pair(api: httpx.Client, a: str, b: str, **body: Any) -> httpx.Response:
    return api.post("/v1/bindings", json={"kind": "axb", "pool": "trips", "a": a, "b": b, **body})


def test_pool_crud(api: httpx.Client) -> None:
    made = pool(api, capacity=50, cooloff_seconds=30)
    assert (made["name"], made["capacity"], made["cooloff_seconds"], made["numbers"]) == (
        "trips",
        50,
        30.0,
        6,
    )
    assert api.get("/v1/pools/trips").json() == made
    pool(api, "empty", numbers=[])
    assert [p["name"] for p in api.get("/v1/pools").json()["items"]] == ["empty", "trips"]
    error(api.post("/v1/pools", json={"name": "trips"}), 409, "conflict")
    details = error(api.post("/v1/pools", json={"name": "Bad Name"}), 422, "validation")
    assert rules(details) == {("name", "invalid-value")}
    changed = api.patch("/v1/pools/trips", json={"capacity": 7})
    assert (changed.json()["capacity"], changed.json()["cooloff_seconds"]) == (7, 30.0)
    assert api.delete("/v1/pools/empty").status_code == 204
    error(api.get("/v1/pools/empty"), 404, "not-found")
    error(api.delete("/v1/pools/empty"), 404, "not-found")


def test_numbers_of_a_pool(server: ApiServer, api: httpx.Client) -> None:
    pool(api, numbers=[{"number": NUMBERS[0], "area": "0532"}, {"number": "0507-100-00001"}])
    added = api.post(
        "/v1/pools/trips/numbers", json={"numbers": [{"number": n} for n in NUMBERS[2:]]}
    )
    assert added.status_code == 201 and added.json() == {"added": 4}
    page = api.get("/v1/pools/trips/numbers", params={"limit": 4}).json()
    assert [n["number"] for n in page["items"]] == NUMBERS[:4]
    assert page["items"][0] == {"number": NUMBERS[0], "area": "0532", "load": 0, "exclusive": False}
    rest = api.get("/v1/pools/trips/numbers", params={"after": page["next_after"]}).json()
    assert [n["number"] for n in rest["items"]] == NUMBERS[4:] and rest["next_after"] is None
    assert api.get(f"/v1/pools/trips/numbers/{NUMBERS[1]}").json()["area"] is None
    moved = api.patch(f"/v1/pools/trips/numbers/{NUMBERS[1]}", json={"area": "0531"})
    assert moved.json()["area"] == "0531"
    # Refusals: outside the grant, bound elsewhere, in a pool already, bad numbers.
    server.context.store.put(
        Binding("map", "ax", pool_numbers(1, 50)[0], party(9)), now=time.time(), source="yaml"
    )
    body = {
        "numbers": [
            {"number": "+825079999999"},
            {"number": pool_numbers(1, 50)[0]},
            {"number": NUMBERS[0]},
            {"number": "12"},
            {"number": pool_numbers(1, 60)[0], "area": "bad area"},
        ]
    }
    answer = api.post("/v1/pools/trips/numbers", json=body)
    details = error(answer, 422, "validation")
    assert rules(details) == {("numbers[4].area", "invalid-value")}
    body["numbers"].pop()
    details = error(api.post("/v1/pools/trips/numbers", json=body), 409, "conflict")
    assert rules(details) == {
        ("numbers[0].number", "number-not-granted"),
        ("numbers[1].number", "number-bound"),
        ("numbers[2].number", "number-in-pool"),
        ("numbers[3].number", "bad-number"),
    }
    assert api.get("/v1/pools/trips").json()["numbers"] == 6
    # In use: neither the number nor the pool can go.
    made = pair(api, party(1), party(2)).json()
    details = error(api.delete(f"/v1/pools/trips/numbers/{made['x']}"), 409, "conflict")
    assert rules(details) == {("number", "number-in-use")}
    details = error(api.delete("/v1/pools/trips"), 409, "conflict")
    assert rules(details) == {(None, "pool-in-use")}
    assert api.delete(f"/v1/bindings/{made['id']}").status_code == 204
    assert api.delete(f"/v1/pools/trips/numbers/{made['x']}").status_code == 204
    error(api.get(f"/v1/pools/trips/numbers/{made['x']}"), 404, "not-found")
    assert api.delete("/v1/pools/trips").status_code == 204


def test_a_tenant_without_grants_pools_nothing(server: ApiServer) -> None:
    with server.client(server.tenant("bare", numbers=())) as api:
        details = error(
            api.post("/v1/pools", json={"name": "p", "numbers": [{"number": NUMBERS[0]}]}),
            422,
            "validation",
        )
        assert rules(details) == {("numbers[0].number", "number-not-granted")}
        assert api.get("/v1/pools").json()["items"] == []  # the pool went with the refusal


def test_allocation_by_area(api: httpx.Client) -> None:
    areas = ["0532", "0532", "010", None, None, None]
    pool(
        api,
        capacity=1,
        numbers=[
            {"number": n, **({"area": a} if a else {})} for n, a in zip(NUMBERS, areas, strict=True)
        ],
    )
    got = [pair(api, party(2 * n), party(2 * n + 1), area="0532").json()["x"] for n in range(3)]
    assert got[:2] == NUMBERS[:2] and got[2] in NUMBERS[2:]
    details = error(
        pair(api, party(50), party(51), area="0532", area_strict=True), 409, "pool-exhausted"
    )
    assert rules(details) == {("pool", "pool-exhausted")}


def test_exhaustion_is_an_error_code_and_a_metric(server: ApiServer, api: httpx.Client) -> None:
    pool(api, capacity=2, numbers=[{"number": n} for n in NUMBERS[:2]])
    for n in range(4):
        assert pair(api, party(2 * n), party(2 * n + 1)).status_code == 201
    for n in range(3):
        error(pair(api, party(100 + n), party(200 + n)), 409, "pool-exhausted")
    with server.client(server.tenant("acme", frozenset({"metrics:read"}))) as metrics:
        text = metrics.get("/metrics").text
    assert 'ansim_api_pool_exhausted_total{pool="trips",tenant="acme"} 3.0' in text
    assert 'ansim_api_bindings_created_total{allocated="yes",kind="axb"} 4.0' in text
    assert 'route="/v1/bindings",status="409"' in text


def test_cooloff_through_the_api(api: httpx.Client) -> None:
    pool(api, cooloff_seconds=3600, numbers=[{"number": n} for n in NUMBERS[:2]])
    first = pair(api, party(1), party(2)).json()
    assert api.delete(f"/v1/bindings/{first['id']}").status_code == 204
    again = pair(api, party(1), party(3)).json()
    assert again["x"] != first["x"]  # A left `first` a moment ago
    error(pair(api, party(1), party(4)), 409, "pool-exhausted")  # holds one, cools on other
    assert pair(api, party(5), party(6)).json()["x"] == first["x"]  # others may have it
    api.patch("/v1/pools/trips", json={"cooloff_seconds": 0})
    assert api.delete(f"/v1/bindings/{again['id']}").status_code == 204
    assert pair(api, party(1), party(7)).status_code == 201
