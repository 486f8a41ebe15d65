"""Keys and tenants (``ansim keys``/``ansim tenants`` and the admin API), the audit log,
and housekeeping's retention, over real HTTP and the real command line."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from api_helpers import ApiServer, party, pool_numbers
from test_api_bindings import error, rules

from api.app import housekeeping
from api.keys import digest, new_token, parse_token

NUMBERS = pool_numbers(4)


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def server(tmp_path: Path, clock: Clock) -> Iterator[ApiServer]:
    with ApiServer(tmp_path / "numbers.lmdb", clock=clock) as srv:
        yield srv


def ansim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "b2bua.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_key_format_and_digest() -> None:
    token = new_token()
    text = str(token)
    assert text.startswith("ak_") and len(text) == 3 + 16 + 1 + 43
    assert parse_token(text) == token
    for bad in (
        "",
        text[:-1],
        text + "x",
        "xx" + text[2:],
        text.replace("_", "-", 1),
        text[:3] + "A" + text[4:],
        text[:-1] + "!",
    ):
        assert parse_token(bad) is None, bad
    other = new_token()
    assert other != token and digest(other) != digest(token) and len(digest(token)) == 32


def test_cli_keys_and_tenants_against_a_running_api(server: ApiServer) -> None:
    store = str(server.path)
    made = ansim("tenants", "set", "acme", "--numbers", "+82507100", "--store", store)
    assert made.returncode == 0, made.stderr
    made = ansim(
        "keys",
        "create",
        "--tenant",
        "acme",
        "--scope",
        "pools:write",
        "--scope",
        "pools:read",
        "--name",
        "ci",
        "--store",
        store,
    )
    assert made.returncode == 0, made.stderr
    token = made.stdout.split("token (shown only now): ")[1].strip()
    key_id = parse_token(token).key_id  # type: ignore[union-attr]
    with server.client(token) as api:
        answer = api.post("/v1/pools", json={"name": "p", "numbers": [{"number": NUMBERS[0]}]})
        assert answer.status_code == 201, answer.text
    listed = ansim("keys", "list", "--store", store)
    assert key_id in listed.stdout and "live" in listed.stdout and token not in listed.stdout
    assert "+82507100" in ansim("tenants", "list", "--store", store).stdout
    revoked = ansim("keys", "revoke", key_id, "--store", store)
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    with server.client(token) as api:
        assert api.get("/v1/pools").status_code == 401
    assert ansim("keys", "revoke", "nosuchkey", "--store", store).returncode == 1
    bad = ansim("keys", "create", "--tenant", "Bad!", "--scope", "admin", "--store", store)
    assert bad.returncode == 1
    bad = ansim("keys", "create", "--tenant", "t", "--scope", "root", "--store", store)
    assert bad.returncode == 2 and "invalid choice" in bad.stderr
    # The secret is nowhere in the store's file; its digest is.
    data = (server.path / "data.mdb").read_bytes()
    parsed = parse_token(token)
    assert parsed is not None and parsed.secret.encode() not in data
    assert digest(parsed) in data


def test_admin_api_manages_keys_and_tenants(server: ApiServer) -> None:
    admin_token = server.tenant("operator", frozenset({"admin"}), numbers=())
    with server.client(admin_token) as admin:
        put = admin.put("/v1/admin/tenants/acme", json={"numbers": ["+82507100"]})
        assert put.status_code == 200 and put.json()["numbers"] == ["+82507100"]
        assert admin.get("/v1/admin/tenants/acme").json()["id"] == "acme"
        error(admin.get("/v1/admin/tenants/nobody"), 404, "not-found")
        details = error(
            admin.put("/v1/admin/tenants/acme", json={"numbers": ["82507"]}), 422, "validation"
        )
        assert rules(details) == {("numbers[0]", "invalid-value")}
        created = admin.post(
            "/v1/admin/keys", json={"tenant": "acme", "scopes": ["pools:read"], "name": "ro"}
        )
        assert created.status_code == 201
        body = created.json()
        assert body["scopes"] == ["pools:read"] and body["revoked_at"] is None
        details = error(
            admin.post("/v1/admin/keys", json={"tenant": "acme", "scopes": ["root"]}),
            422,
            "validation",
        )
        assert rules(details) == {("scopes", "bad-scope")}
        listed = admin.get("/v1/admin/keys").json()["items"]
        assert {k["tenant"] for k in listed} == {"operator", "acme"}
        assert body["token"] not in admin.get("/v1/admin/keys").text
        assert all("token" not in k for k in listed)
        error(admin.delete("/v1/admin/keys/nosuchkey"), 404, "not-found")
        with server.client(body["token"]) as ro:
            assert ro.get("/v1/pools").status_code == 200
            assert error(ro.post("/v1/pools", json={"name": "x"}), 403, "forbidden") == []
        assert admin.delete(f"/v1/admin/keys/{body['key_id']}").status_code == 204
        with server.client(body["token"]) as ro:
            error(ro.get("/v1/pools"), 401, "unauthenticated")
        data = (server.path / "data.mdb").read_bytes()
        assert body["token"].split("_", 2)[2].encode() not in data


def test_audit_records_every_write_and_every_read_of_numbers(server: ApiServer) -> None:
    token = server.tenant("acme")
    admin_token = server.tenant("operator", frozenset({"admin"}), numbers=())
    before = time.time() - 1
    with server.client(token) as api:
        api.post("/v1/pools", json={"name": "trips", "numbers": [{"number": n} for n in NUMBERS]})
        made = api.post(
            "/v1/bindings", json={"kind": "axb", "pool": "trips", "a": party(1), "b": party(2)}
        ).json()
        api.get(f"/v1/bindings/{made['id']}")
        api.get("/v1/bindings", params={"number": party(1)})
        api.patch(f"/v1/bindings/{made['id']}", json={"out_id": "o-9"})
        api.post(
            "/v1/bindings/batch", json={"items": [{"kind": "ax", "x": NUMBERS[3], "a": party(3)}]}
        )
        api.delete(f"/v1/bindings/{made['id']}")
        api.patch("/v1/pools/trips", json={"capacity": 9})
        api.get("/v1/pools")  # no real numbers: not audited
        api.get("/v1/bindings/b_nothere")  # not found: nothing read
        key_id = parse_token(token).key_id  # type: ignore[union-attr]
    with server.client(admin_token) as admin:
        admin.post("/v1/admin/keys", json={"tenant": "acme", "scopes": ["pools:read"]})
        page = admin.get("/v1/admin/audit", params={"tenant": "acme", "limit": 1000}).json()
        records: list[dict[str, Any]] = page["items"]
        actions = [r["action"] for r in records if r["key_id"] == key_id]
        assert actions == [
            "pool.create",
            "binding.create",
            "binding.read",
            "binding.list",
            "binding.update",
            "binding.create",
            "binding.delete",
            "pool.update",
        ]
        for record in records:
            assert record["tenant"] == "acme"
            assert record["source"] == "127.0.0.1"
            assert party(1) not in record["object"] and party(2) not in record["object"]
        assert records[1]["object"] == made["id"]
        assert records[3]["object"].startswith("number=+8210****0001")
        assert any(
            r["action"] == "key.create" for r in admin.get("/v1/admin/audit").json()["items"]
        )
        # Paging and time bounds.
        first = admin.get("/v1/admin/audit", params={"limit": 2}).json()
        second = admin.get(
            "/v1/admin/audit", params={"limit": 2, "after": first["next_after"]}
        ).json()
        assert first["items"][1]["cursor"] == first["next_after"]
        assert second["items"][0]["at"] >= first["items"][1]["at"]
        assert second["items"][0]["cursor"] > first["next_after"]
        later = admin.get("/v1/admin/audit", params={"since": "2999-01-01T00:00:00Z"}).json()
        assert later["items"] == []
        early = admin.get("/v1/admin/audit", params={"until": "2000-01-01T00:00:00Z"}).json()
        assert early["items"] == []
        since = admin.get("/v1/admin/audit", params={"since": _iso(before)}).json()["items"]
        assert len(since) == 9  # acme's 8 and the key
        error(admin.get("/v1/admin/audit", params={"after": "zz"}), 422, "validation")


def _iso(epoch: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat()


def test_housekeeping_prunes_what_has_expired(server: ApiServer, clock: Clock) -> None:
    token = server.tenant("acme")
    ctx = server.context
    with server.client(token) as api:
        api.post(
            "/v1/pools",
            json={
                "name": "trips",
                "cooloff_seconds": 600,
                "numbers": [{"number": n} for n in NUMBERS],
            },
        )
        body = {"kind": "axb", "pool": "trips", "a": party(1), "b": party(2), "expires_in": 60}
        first = api.post("/v1/bindings", json=body, headers={"Idempotency-Key": "k1"}).json()
        gone = api.post("/v1/bindings", json=dict(body, a=party(3)))
        assert api.delete(f"/v1/bindings/{gone.json()['id']}").status_code == 204
        assert api.get("/v1/pools/trips").json()["bindings"] == 1
        clock.offset = 120  # the first binding has expired
        server.write(housekeeping(ctx, None))
        assert api.get("/v1/pools/trips").json()["bindings"] == 0  # purged
        assert ctx.store.get(first["id"]) is None
        # Still within the idempotency window: the first answer comes back.
        assert (
            api.post("/v1/bindings", json=body, headers={"Idempotency-Key": "k1"}).json() == first
        )
        with ctx.store.reader() as txn:
            cooling = set(ctx.store.pools.cooling(txn, party(1), 0))
        assert cooling == {first["x"]}
        clock.offset = 31 * 86400  # past every retention
        server.write(housekeeping(ctx, None))
        with ctx.store.reader() as txn:
            assert ctx.control.idempotent(txn, "acme", "k1") is None
            assert ctx.control.audit_log(txn) == []
            assert set(ctx.store.pools.cooling(txn, party(1), 0)) == set()
            assert set(ctx.store.pools.cooling(txn, party(3), 0)) == set()
        again = api.post(
            "/v1/bindings", json=dict(body, expires_in=600), headers={"Idempotency-Key": "k1"}
        )
        assert again.status_code == 201 and again.json()["id"] != first["id"]


def test_audit_source_is_the_peer_not_a_forwarded_header(server: ApiServer) -> None:
    token = server.tenant("acme")
    with server.client(token) as api:
        made = api.post("/v1/pools", json={"name": "p"}, headers={"X-Forwarded-For": "203.0.113.9"})
        assert made.status_code == 201
    with server.context.store.reader() as txn:
        records = server.context.control.audit_log(txn, tenant="acme")
    assert [(r.action, r.source) for r in records] == [("pool.create", "127.0.0.1")]
