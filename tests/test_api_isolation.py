"""Tenant isolation and authentication, on every route of the app, found by walking its
routes (a route added later is covered, or the walk fails asking for its parameters):
no key is a 401, a key without the scope a 403, another tenant's key a 404 on each of the
first tenant's objects and never a sight of its data."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ALL_SCOPES, ApiServer, party, pool_numbers, write_records
from fastapi.routing import APIRoute, iter_route_contexts

#: Routes anyone may call.
PUBLIC = {("GET", "/healthz"), ("GET", "/docs")}
#: Routes a key with only metrics:read may call.
METRICS = {("GET", "/metrics")}


@dataclass
class World:
    server: ApiServer
    acme: str  # token with every tenant scope
    globex: str  # another tenant's token, same scopes
    bare: str  # acme token with metrics:read only
    admin: str
    binding: dict[str, Any]
    key_id: str
    record_id: str
    sms_id: str
    hook_id: str
    secrets: list[str]  # what globex must never see


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder: Path = tmp_path_factory.mktemp("isolation")
    with ApiServer(folder / "numbers.lmdb", cdr=folder / "cdr.sqlite") as server:
        acme = server.tenant("acme")
        globex = server.tenant("globex", numbers=("+82507101",))
        bare = server.tenant("acme", frozenset({"metrics:read"}))
        admin = server.tenant("operator", frozenset({"admin"}), numbers=())
        numbers = pool_numbers(3)
        with server.client(acme) as api:
            api.post(
                "/v1/pools",
                json={"name": "acme-trips", "numbers": [{"number": n} for n in numbers]},
            ).raise_for_status()
            made = api.post(
                "/v1/bindings",
                json={
                    "kind": "axb",
                    "pool": "acme-trips",
                    "a": party(1),
                    "b": party(2),
                    "out_id": "acme-order-1",
                },
            )
            made.raise_for_status()
            hook = api.post(
                "/v1/webhooks",
                json={"url": "http://127.0.0.9:9/hook", "events": ["call.completed"]},
            )
            hook.raise_for_status()
        binding = made.json()
        record_id, sms_id = write_records(server, folder / "cdr.sqlite", binding)
        with server.client(admin) as api:
            keys = api.get("/v1/admin/keys", params={"tenant": "acme"}).json()["items"]
        key_id = keys[0]["key_id"]
        hook_id = hook.json()["id"]
        yield World(
            server,
            acme,
            globex,
            bare,
            admin,
            binding,
            key_id,
            record_id,
            sms_id,
            hook_id,
            [binding["id"], party(1), party(2), "acme-order-1", key_id, record_id, hook_id],
        )


def _routes(world: World) -> list[tuple[str, str, APIRoute]]:
    routes = []
    for context in iter_route_contexts(world.server.app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            for method in sorted(context.methods or ()):
                routes.append((method, context.path, route))
    assert len(routes) > 20
    return routes


def _path(world: World, path: str) -> str:
    values = {
        "binding_id": world.binding["id"],
        "pool": "acme-trips",
        "number": world.binding["x"],
        "tenant": "acme",
        "key_id": world.key_id,
        "record_id": world.record_id,
        "sms_id": world.sms_id,
        "hook_id": world.hook_id,
    }
    out = path
    for name, value in values.items():
        out = out.replace("{" + name + "}", value)
    assert "{" not in out, f"give the isolation walk a value for {path}"
    return out


def _body_name(route: APIRoute) -> str | None:
    field = route.body_field
    return None if field is None else str(field.field_info.annotation.__name__)  # type: ignore[union-attr]


def _body(world: World, route: APIRoute) -> Any:
    name = _body_name(route)
    if name is None:
        return None
    create = {"kind": "axb", "pool": "acme-trips", "a": party(7), "b": party(8)}
    bodies: dict[str, Any] = {
        "BindingCreate": create,
        "BindingBatch": {"items": [create]},
        "BindingUpdate": {"out_id": "changed"},
        "PoolCreate": {"name": "walk-new"},
        "PoolUpdate": {"capacity": 5},
        "PoolNumbersAdd": {"numbers": [{"number": pool_numbers(1, 10)[0]}]},
        "PoolNumberUpdate": {"area": "walk"},
        "TenantPut": {"numbers": []},
        "KeyCreate": {"tenant": "acme", "scopes": ["bindings:read"]},
        "WebhookCreate": {"url": "http://127.0.0.9:9/new", "events": ["call.started"]},
        "WebhookUpdate": {"description": "changed"},
    }
    assert name in bodies, f"give the isolation walk a body for {name}"
    return bodies[name]


def _query(world: World, route: APIRoute) -> dict[str, str]:
    values = {
        "x": world.binding["x"],
        "number": party(1),
        "out_id": "acme-order-1",
        "tenant": "acme",
    }
    names = {p.alias for p in route.dependant.query_params}
    return {k: v for k, v in values.items() if k in names}


def _call(
    world: World, token: str | None, method: str, path: str, route: APIRoute
) -> httpx.Response:
    with world.server.client(token) as client:
        return client.request(
            method, _path(world, path), json=_body(world, route), params=_query(world, route)
        )


def test_every_route_wants_a_key(world: World) -> None:
    for method, path, route in _routes(world):
        if (method, path) in PUBLIC:
            assert _call(world, None, method, path, route).status_code == 200
            continue
        for token in (None, "ak_bogus", "ak_" + "a" * 16 + "_" + "b" * 43):
            answer = _call(world, token, method, path, route)
            assert answer.status_code == 401, (method, path, token, answer.text)
            assert answer.json()["error"]["code"] == "unauthenticated"
            assert answer.headers["www-authenticate"].startswith("Bearer")


def test_every_route_wants_its_scope(world: World) -> None:
    for method, path, route in _routes(world):
        if (method, path) in PUBLIC | METRICS:
            continue
        answer = _call(world, world.bare, method, path, route)
        assert answer.status_code == 403, (method, path, answer.text)
        assert answer.json()["error"]["code"] == "forbidden"


def test_another_tenant_finds_nothing_of_the_first(world: World) -> None:
    objects = {"{binding_id}", "{pool}", "{number}", "{record_id}", "{sms_id}", "{hook_id}"}
    for method, path, route in _routes(world):
        if (method, path) in PUBLIC | METRICS:
            continue
        answer = _call(world, world.globex, method, path, route)
        if path.startswith("/v1/admin"):
            assert answer.status_code == 403, (method, path, answer.text)
        elif any(o in path for o in objects) or (
            method == "POST" and (_body_name(route) or "").startswith("Binding")
        ):
            assert answer.status_code == 404, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "not-found"
        else:
            assert answer.status_code < 500, (method, path, answer.text)
        asked = str(answer.request.url) + answer.request.content.decode()
        for secret in world.secrets:
            if secret not in asked:  # an error may name what was asked for, nothing more
                assert secret not in answer.text, (method, path, secret)
    # Nothing of acme's changed.
    with world.server.client(world.acme) as api:
        assert api.get(f"/v1/bindings/{world.binding['id']}").json() == world.binding
        pool = api.get("/v1/pools/acme-trips").json()
        assert (pool["capacity"], pool["numbers"], pool["bindings"]) == (1000, 3, 1)
        assert [p["name"] for p in api.get("/v1/pools").json()["items"]] == ["acme-trips"]
        assert api.get(f"/v1/webhooks/{world.hook_id}").json()["description"] == ""
        calls = api.get("/v1/records/calls").json()["items"]
        assert [c["record_id"] for c in calls] == [world.record_id]
        assert [m["id"] for m in api.get("/v1/records/sms").json()["items"]] == [world.sms_id]
        days = api.get("/v1/stats", params={"period": "day"}).json()["items"]
        assert [(d["calls"], d["answered"], d["sms_received"]) for d in days] == [(1, 1, 1)]
    # What globex searches and counts is its own: nothing.
    with world.server.client(world.globex) as api:
        assert api.get("/v1/records/calls").json()["items"] == []
        assert api.get("/v1/records/sms").json()["items"] == []
        assert api.get("/v1/stats").json()["items"] == []
        hooks = api.get("/v1/webhooks").json()["items"]  # the walk made one of its own
        assert [h["url"] for h in hooks] == ["http://127.0.0.9:9/new"]
        export = api.get("/v1/records/calls/export")
        assert export.status_code == 200 and world.record_id not in export.text


def test_revoked_key_is_refused_at_once(world: World) -> None:
    token = world.server.tenant("acme", ALL_SCOPES, name="to-revoke")
    with world.server.client(token) as api:
        assert api.get("/v1/pools").status_code == 200
    with world.server.client(world.admin) as admin:
        keys = admin.get("/v1/admin/keys", params={"tenant": "acme"}).json()["items"]
        key_id = next(k["key_id"] for k in keys if k["name"] == "to-revoke")
        assert admin.delete(f"/v1/admin/keys/{key_id}").status_code == 204
        assert admin.get(f"/v1/admin/keys/{key_id}").json()["revoked_at"] is not None
    with world.server.client(token) as api:
        assert api.get("/v1/pools").status_code == 401
    # A live key's id with another secret: refused (the secret is checked, not the id).
    forged = world.acme[: 3 + 16 + 1] + ("A" if world.acme[-1] != "A" else "B") * 43
    with world.server.client(forged) as api:
        assert api.get("/v1/pools").status_code == 401
    with world.server.client(world.acme) as api:
        assert api.get("/v1/pools").status_code == 200
