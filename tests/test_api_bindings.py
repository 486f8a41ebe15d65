"""Bindings through the API over real HTTP: every kind, X given or from a pool, reads by
id / X / real number / out_id, changes, unbinding, batches, idempotency, and refusals
that name the field and the rule; the engine's lookup sees what the API wrote."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ApiServer, party, pool_numbers

from translate.bindings import Route

NUMBERS = pool_numbers(20)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ApiServer]:
    with ApiServer(tmp_path / "numbers.lmdb") as srv:
        yield srv


@pytest.fixture
def api(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client(server.tenant("acme")) as client:
        created = client.post(
            "/v1/pools",
            json={
                "name": "trips",
                "cooloff_seconds": 0,
                "numbers": [{"number": n} for n in NUMBERS],
            },
        )
        assert created.status_code == 201, created.text
        yield client


def bind(api: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("kind", "axb")
    if "x" not in body:
        body.setdefault("pool", "trips")
    response = api.post("/v1/bindings", json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def error(response: httpx.Response, status: int, code: str) -> list[dict[str, Any]]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()["error"]
    assert body["code"] == code, body
    details: list[dict[str, Any]] = body["details"]
    return details


def rules(details: list[dict[str, Any]]) -> set[tuple[str | None, str]]:
    return {(d["field"], d["rule"]) for d in details}


def test_axb_from_pool_reaches_the_engine(server: ApiServer, api: httpx.Client) -> None:
    made = bind(api, a="010-1111-0001", b="+82 10 2222 0002", expires_in=600, out_id="order-1")
    assert made["kind"] == "axb" and made["pool"] == "trips" and made["x"] in NUMBERS
    assert (made["a"], made["b"]) == ("+821011110001", "+821022220002")
    assert made["out_id"] == "order-1" and made["live"] is True
    expires = dt.datetime.fromisoformat(made["expires_at"]).timestamp()
    assert abs(expires - (time.time() + 600)) < 5
    store = server.context.store
    assert store.lookup(made["x"], made["a"], time.time()) == Route(
        made["b"], made["x"], made["id"], "axb", False, None, "A->B", tenant="acme"
    )
    # Another process, as an engine worker would: the binding is committed.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "b2bua.cli",
            "numbers",
            "lookup",
            made["x"],
            "--from",
            made["b"],
            "--store",
            str(server.path),
            "--show-numbers",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"call {made['a']} presenting {made['x']}" in out.stdout


@pytest.mark.parametrize("kind", ["ax", "axn"])
def test_ax_and_axn_with_x_given(server: ApiServer, api: httpx.Client, kind: str) -> None:
    body: dict[str, Any] = {"kind": kind, "x": NUMBERS[3], "a": party(1), "max_seconds": 300}
    if kind == "axn":
        body["b"] = party(2)
    else:
        body["present"] = "caller"
    made = bind(api, **body)
    assert made["x"] == NUMBERS[3] and made["pool"] == "trips"
    route = server.context.store.lookup(NUMBERS[3], party(9), time.time())
    assert isinstance(route, Route) and route.callee == party(1) and route.max_seconds == 300
    # X holds it alone now: the pool does not share it.
    for n in range(5):
        assert bind(api, a=party(100 + n), b=party(200 + n))["x"] != NUMBERS[3]


def test_limits_hours_and_expires_at(server: ApiServer, api: httpx.Client) -> None:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(days=2)).replace(microsecond=0)
    made = bind(
        api,
        a=party(1),
        b=party(2),
        expires_at=when.isoformat(),
        calls_per_hour=5,
        max_seconds=120,
        hours="09:00-18:00",
        timezone="Asia/Seoul",
    )
    assert dt.datetime.fromisoformat(made["expires_at"]) == when
    assert (made["hours"], made["timezone"]) == ("09:00-18:00", "Asia/Seoul")
    binding, source = server.context.store.get(made["id"]) or (None, None)
    assert source == "api" and binding is not None
    assert binding.tenant == "acme" and binding.calls_per_hour == 5
    assert binding.hours is not None and str(binding.hours) == "09:00-18:00"


def test_reads_by_id_x_number_and_out_id(api: httpx.Client) -> None:
    one = bind(api, a=party(1), b=party(2), out_id="order-7")
    two = bind(api, a=party(1), b=party(3), out_id="order-7")
    three = bind(api, a=party(4), b=party(5), x=one["x"])
    assert api.get(f"/v1/bindings/{one['id']}").json() == one
    by_number = api.get("/v1/bindings", params={"number": "010-0000-0001"}).json()
    assert {b["id"] for b in by_number["items"]} == {one["id"], two["id"]}
    by_out = api.get("/v1/bindings", params={"out_id": "order-7"}).json()
    assert {b["id"] for b in by_out["items"]} == {one["id"], two["id"]}
    by_x = api.get("/v1/bindings", params={"x": one["x"]}).json()
    assert {b["id"] for b in by_x["items"]} == {one["id"], three["id"]}
    assert api.get("/v1/bindings", params={"number": party(99)}).json()["items"] == []
    details = error(
        api.get("/v1/bindings", params={"x": one["x"], "number": party(1)}), 422, "validation"
    )
    assert rules(details) == {("number", "one-of")}
    details = error(api.get("/v1/bindings", params={"number": "12"}), 422, "validation")
    assert rules(details) == {("number", "bad-number")}


def test_listing_pages_through_everything(api: httpx.Client) -> None:
    made = {bind(api, a=party(2 * n), b=party(2 * n + 1))["id"] for n in range(25)}
    seen: list[str] = []
    after = None
    for _ in range(10):
        params: dict[str, Any] = {"limit": 7}
        if after:
            params["after"] = after
        page = api.get("/v1/bindings", params=params).json()
        seen += [b["id"] for b in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert seen == sorted(made)


def test_update_changes_and_clears(server: ApiServer, api: httpx.Client) -> None:
    made = bind(api, a=party(1), b=party(2), expires_in=60, max_seconds=30, out_id="o")
    changed = api.patch(
        f"/v1/bindings/{made['id']}",
        json={"b": "010-0000-0009", "expires_at": None, "max_seconds": None, "out_id": "p"},
    )
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["b"], body["expires_at"], body["max_seconds"], body["out_id"]) == (
        party(9),
        None,
        None,
        "p",
    )
    store = server.context.store
    now = time.time()
    assert isinstance(store.lookup(made["x"], party(9), now), Route)
    assert store.lookup(made["x"], party(2), now).reason == "not_party"  # type: ignore[union-attr]
    changed = api.patch(f"/v1/bindings/{made['id']}", json={"expires_in": 3600})
    expires = dt.datetime.fromisoformat(changed.json()["expires_at"]).timestamp()
    assert abs(expires - (now + 3600)) < 5
    changed = api.patch(
        f"/v1/bindings/{made['id']}", json={"hours": "22:00-06:00", "timezone": "UTC"}
    )
    assert changed.json()["hours"] == "22:00-06:00"
    assert api.get("/v1/bindings", params={"out_id": "o"}).json()["items"] == []
    # Parties that conflict on X: refused, binding unchanged.
    other = bind(api, x=made["x"], a=party(20), b=party(21))
    details = error(api.patch(f"/v1/bindings/{made['id']}", json={"a": party(20)}), 409, "conflict")
    assert rules(details) == {("a", "party-conflict")}
    assert api.get(f"/v1/bindings/{made['id']}").json()["a"] == party(1)
    details = error(
        api.patch(f"/v1/bindings/{made['id']}", json={"record": True, "media": "passthrough"}),
        422,
        "validation",
    )
    assert rules(details) == {("media", "record-passthrough")}
    assert api.get(f"/v1/bindings/{made['id']}").json()["record"] is False
    recorded = api.patch(f"/v1/bindings/{made['id']}", json={"record": True})
    assert recorded.status_code == 200, recorded.text
    assert (recorded.json()["record"], recorded.json()["media"]) == (True, None)
    details = error(
        api.patch(f"/v1/bindings/{made['id']}", json={"media": "passthrough"}), 422, "validation"
    )
    assert rules(details) == {("media", "record-passthrough")}
    relayed = api.patch(f"/v1/bindings/{made['id']}", json={"record": False, "media": "relay"})
    assert (relayed.json()["record"], relayed.json()["media"]) == (False, "relay")
    assert api.get(f"/v1/bindings/{made['id']}").json()["media"] == "relay"
    details = error(api.patch(f"/v1/bindings/{made['id']}", json={"a": None}), 422, "validation")
    assert rules(details) == {("a", "missing-field")}
    details = error(
        api.patch(f"/v1/bindings/{other['id']}", json={"b": party(20)}), 422, "validation"
    )
    assert rules(details) == {("b", "same-party")}


def test_unbind(server: ApiServer, api: httpx.Client) -> None:
    made = bind(api, a=party(1), b=party(2))
    assert api.delete(f"/v1/bindings/{made['id']}").status_code == 204
    assert server.context.store.lookup(made["x"], party(1), time.time()).reason == "unknown"  # type: ignore[union-attr]
    error(api.get(f"/v1/bindings/{made['id']}"), 404, "not-found")
    error(api.delete(f"/v1/bindings/{made['id']}"), 404, "not-found")
    pool = api.get("/v1/pools/trips").json()
    assert pool["bindings"] == 0


# Every rule a create checks on its own, one request each: (body changes, field, rule).
SINGLE_RULES: list[tuple[dict[str, Any], str | None, str]] = [
    ({"a": "12"}, "a", "bad-number"),
    ({"b": "+82 10 abc"}, "b", "bad-number"),
    ({"x": "not a number", "pool": None}, "x", "bad-number"),
    ({"pool": None}, "x", "one-of"),
    ({"x": NUMBERS[0]}, "x", "one-of"),
    ({"b": None}, "b", "missing-b"),
    ({"kind": "ax"}, "b", "unexpected-b"),
    ({"present": "caller"}, "present", "present-ax-only"),
    ({"b": "+821000000001"}, "b", "same-party"),
    ({"x": "+821000000001", "pool": None}, "x", "virtual-is-party"),
    ({"record": True, "media": "passthrough"}, "media", "record-passthrough"),
    ({"expires_in": 60, "expires_at": "2099-01-01T00:00:00Z"}, "expires_at", "one-of"),
    ({"expires_at": "2001-01-01T00:00:00+09:00"}, "expires_at", "expired"),
    ({"hours": "09:00-18:00"}, "timezone", "timezone-required"),
    ({"hours": "09:00-18:00", "timezone": "Mars/Olympus"}, "timezone", "bad-timezone"),
    ({"hours": "25:00-26:00", "timezone": "UTC"}, "hours", "bad-hours"),
    ({"area": "0532", "pool": None, "x": NUMBERS[0]}, "area", "invalid-value"),
    ({"expires_in": 0}, "expires_in", "invalid-value"),
    ({"max_seconds": -5}, "max_seconds", "invalid-value"),
    ({"calls_per_hour": "many"}, "calls_per_hour", "invalid-value"),
    ({"kind": "abx"}, "kind", "invalid-value"),
    ({"recrod": True}, "recrod", "unknown-field"),
    ({"a": None}, "a", "invalid-value"),
    ({"out_id": ""}, "out_id", "invalid-value"),
    ({"expires_at": "2099-01-01T00:00:00"}, "expires_at", "invalid-value"),  # no offset
]


@pytest.mark.parametrize(("changes", "field", "rule"), SINGLE_RULES)
def test_every_request_rule_names_field_and_rule(
    api: httpx.Client, changes: dict[str, Any], field: str | None, rule: str
) -> None:
    body: dict[str, Any] = {
        "kind": "axb",
        "a": "+821000000001",
        "b": "+821000000002",
        "pool": "trips",
    }
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None or k in ("a",)}
    details = error(api.post("/v1/bindings", json=body), 422, "validation")
    assert (field, rule) in rules(details), details
    assert api.get("/v1/bindings").json()["items"] == []


def test_missing_field_and_bad_json(api: httpx.Client) -> None:
    details = error(
        api.post("/v1/bindings", json={"kind": "axb", "pool": "trips"}), 422, "validation"
    )
    assert ("a", "missing-field") in rules(details)
    response = api.post(
        "/v1/bindings", content=b"{not json", headers={"content-type": "application/json"}
    )
    details = error(response, 422, "validation")
    assert any(d["rule"] == "invalid-json" for d in details), details
    details = error(api.post("/v1/bindings", json=[1, 2]), 422, "validation")
    assert details


def test_store_rules(server: ApiServer, api: httpx.Client) -> None:
    made = bind(api, a=party(1), b=party(2), x=NUMBERS[0])
    details = error(
        api.post(
            "/v1/bindings", json={"kind": "axb", "x": NUMBERS[0], "a": party(1), "b": party(3)}
        ),
        409,
        "conflict",
    )
    assert rules(details) == {("a", "party-conflict")}
    details = error(
        api.post(
            "/v1/bindings", json={"kind": "axb", "x": NUMBERS[0], "a": party(4), "b": party(2)}
        ),
        409,
        "conflict",
    )
    assert rules(details) == {("b", "party-conflict")}
    bind(api, kind="ax", x=NUMBERS[1], a=party(5))
    details = error(
        api.post(
            "/v1/bindings", json={"kind": "axn", "x": NUMBERS[1], "a": party(6), "b": party(7)}
        ),
        409,
        "conflict",
    )
    assert rules(details) == {("x", "duplicate-virtual")}
    # A real party that is itself a virtual number: bound, or only pooled.
    details = error(
        api.post(
            "/v1/bindings", json={"kind": "axb", "pool": "trips", "a": made["x"], "b": party(8)}
        ),
        422,
        "validation",
    )
    assert rules(details) == {("a", "virtual-as-party")}
    details = error(
        api.post(
            "/v1/bindings", json={"kind": "axb", "pool": "trips", "a": party(8), "b": NUMBERS[19]}
        ),
        422,
        "validation",
    )
    assert rules(details) == {("b", "virtual-as-party")}
    # X outside the tenant's pools.
    details = error(
        api.post("/v1/bindings", json={"kind": "ax", "x": "+825079999999", "a": party(8)}),
        422,
        "validation",
    )
    assert rules(details) == {("x", "number-not-owned")}
    details = error(
        api.post("/v1/bindings", json={"kind": "ax", "pool": "nope", "a": party(8)}),
        404,
        "not-found",
    )
    assert rules(details) == {("pool", "pool-not-found")}


def test_batch_all_or_nothing(server: ApiServer, api: httpx.Client) -> None:
    items = [
        {
            "kind": "axb",
            "pool": "trips",
            "a": party(2 * n),
            "b": party(2 * n + 1),
            "out_id": f"o{n}",
        }
        for n in range(1000)
    ]
    created = api.post("/v1/bindings/batch", json={"items": items})
    assert created.status_code == 201, created.text[:500]
    made = created.json()["items"]
    assert len(made) == 1000 and len({b["id"] for b in made}) == 1000
    counts: dict[str, int] = {}
    for b in made:
        counts[b["x"]] = counts.get(b["x"], 0) + 1
    assert set(counts.values()) == {50}  # 1,000 pairs spread over 20 numbers
    # One bad item among good ones: nothing is created, every refusal is listed.
    items = [
        {"kind": "axb", "pool": "trips", "a": party(5000 + 2 * n), "b": party(5001 + 2 * n)}
        for n in range(10)
    ]
    items[3]["b"] = "bad"
    items[7]["record"] = True
    items[7]["media"] = "passthrough"
    details = error(api.post("/v1/bindings/batch", json={"items": items}), 422, "validation")
    assert rules(details) == {
        ("items[3].b", "bad-number"),
        ("items[7].media", "record-passthrough"),
    }
    # Refusals found in the store: the pairs before them are undone too.
    items = [
        {"kind": "axb", "x": NUMBERS[0], "a": party(6000 + n), "b": party(7000 + n)}
        for n in range(5)
    ]
    items[4]["a"] = (
        made[0]["a"]
        if made[0]["x"] == NUMBERS[0]
        else next(b["a"] for b in made if b["x"] == NUMBERS[0])
    )
    details = error(api.post("/v1/bindings/batch", json={"items": items}), 409, "conflict")
    assert rules(details) == {("items[4].a", "party-conflict")}
    assert api.get("/v1/bindings", params={"number": party(6000)}).json()["items"] == []
    assert api.get("/v1/pools/trips").json()["bindings"] == 1000
    error(api.post("/v1/bindings/batch", json={"items": items * 201}), 422, "validation")
    error(api.post("/v1/bindings/batch", json={"items": []}), 422, "validation")


def test_idempotent_create_survives_a_restart(tmp_path: Path) -> None:
    body = {"kind": "axb", "pool": "trips", "a": party(1), "b": party(2), "expires_in": 600}
    with ApiServer(tmp_path / "s") as server:
        token = server.tenant("acme")
        with server.client(token) as api:
            api.post(
                "/v1/pools", json={"name": "trips", "numbers": [{"number": n} for n in NUMBERS]}
            )
            first = api.post("/v1/bindings", json=body, headers={"Idempotency-Key": "order-1/bind"})
            assert first.status_code == 201 and "Idempotent-Replayed" not in first.headers
            again = api.post("/v1/bindings", json=body, headers={"Idempotency-Key": "order-1/bind"})
            assert again.status_code == 201 and again.json() == first.json()
            assert again.headers["Idempotent-Replayed"] == "true"
            # Without the key the same body is a new request (and conflicts on no X).
            assert api.post("/v1/bindings", json=body).json()["id"] != first.json()["id"]
    with ApiServer(tmp_path / "s") as server, server.client(token) as api:
        again = api.post("/v1/bindings", json=body, headers={"Idempotency-Key": "order-1/bind"})
        assert again.status_code == 201 and again.json() == first.json()
        changed = dict(body, b=party(3))
        details = error(
            api.post("/v1/bindings", json=changed, headers={"Idempotency-Key": "order-1/bind"}),
            422,
            "idempotency-key-reused",
        )
        assert rules(details) == {("Idempotency-Key", "idempotency-key-reused")}
        # Keys are the tenant's own: another tenant's same key is a new request.
        other = server.tenant("globex", numbers=("+82507101",))
        with server.client(other) as api2:
            api2.post(
                "/v1/pools", json={"name": "trips", "numbers": [{"number": "+8250710100001"}]}
            )
            made = api2.post("/v1/bindings", json=body, headers={"Idempotency-Key": "order-1/bind"})
            assert made.status_code == 201 and made.json()["id"] != first.json()["id"]
        batch = {"items": [dict(body, a=party(10), b=party(11))]}
        one = api.post("/v1/bindings/batch", json=batch, headers={"Idempotency-Key": "b1"})
        two = api.post("/v1/bindings/batch", json=batch, headers={"Idempotency-Key": "b1"})
        assert one.status_code == two.status_code == 201 and one.json() == two.json()


def test_concurrent_binds_share_transactions(server: ApiServer, api: httpx.Client) -> None:
    import asyncio

    async def run() -> list[httpx.Response]:
        headers = dict(api.headers)
        async with httpx.AsyncClient(
            base_url=server.base_url, headers=headers, timeout=30
        ) as client:
            jobs = [
                client.post(
                    "/v1/bindings",
                    json={"kind": "axb", "pool": "trips", "a": party(2 * n), "b": party(2 * n + 1)},
                )
                for n in range(300)
            ]
            return await asyncio.gather(*jobs)

    answers = asyncio.run(run())
    assert [r.status_code for r in answers] == [201] * 300
    metrics = api.get("/metrics").text
    sizes = [
        line for line in metrics.splitlines() if line.startswith("ansim_api_write_batch_size_count")
    ]
    batches = float(sizes[0].split()[-1])
    assert batches < 300  # requests that overlap commit together
    assert json.loads(api.get("/v1/pools/trips").text)["bindings"] == 300


def test_unknown_and_repeated_query_parameters_are_refused(api: httpx.Client) -> None:
    bind(api, a=party(1), b=party(2))
    # A misspelt filter must not list everything.
    details = error(api.get("/v1/bindings", params={"numbr": party(1)}), 422, "validation")
    assert rules(details) == {("numbr", "unknown-field")}
    details = error(api.get("/v1/bindings?number=%2B821000000001&number=x"), 422, "validation")
    assert rules(details) == {("number", "invalid-value")}
