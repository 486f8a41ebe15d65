"""``api.fast_path`` answers exactly what the app's own routes answer: the same requests,
valid and refused in every way, sent over real HTTP to two servers on identical stores,
one with the fast path and one without, get the same statuses, headers, bodies, store
contents and request metrics."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from api_helpers import ApiServer, party, pool_numbers

from api.fast_path import FastBindings

NOW = 1_900_000_000.0
NUMBERS = pool_numbers(6)
_ID = re.compile(r"\bb_[a-z2-7]{16}\b")  # api.binding_ops.new_id


class Pair:
    """The two servers, and what each tenant's keys are on both (same tokens differ)."""

    def __init__(self, fast: ApiServer, plain: ApiServer) -> None:
        self.servers = (fast, plain)
        self.tokens: dict[str, tuple[str, str]] = {}

    def tenant(self, name: str, scopes: frozenset[str] | None = None) -> None:
        kwargs: dict[str, Any] = {} if scopes is None else {"scopes": scopes}
        fast, plain = (s.tenant(name.split("/")[0], **kwargs) for s in self.servers)
        self.tokens[name] = (fast, plain)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Pair]:
    with (
        ApiServer(tmp_path / "fast.lmdb", clock=lambda: NOW) as fast,
        ApiServer(tmp_path / "plain.lmdb", clock=lambda: NOW, fast=False) as plain,
    ):
        both = Pair(fast, plain)
        both.tenant("acme")
        both.tenant("acme/reader", frozenset({"bindings:read"}))
        both.tenant("other")
        for server, token in zip(both.servers, both.tokens["acme"], strict=True):
            with server.client(token) as client:
                made = client.post(
                    "/v1/pools",
                    json={
                        "name": "trips",
                        "cooloff_seconds": 0,
                        "numbers": [{"number": n} for n in NUMBERS],
                    },
                )
                assert made.status_code == 201, made.text
        yield both


def normal(response: httpx.Response, ids: dict[str, str]) -> tuple[Any, ...]:
    """What must be equal: status, the headers the routes set, the body with binding ids
    replaced by their order of appearance on that server."""
    text = response.text

    def rename(match: re.Match[str]) -> str:
        return ids.setdefault(match.group(0), f"id{len(ids):014d}")

    body = _ID.sub(rename, text)
    headers = {
        k: response.headers.get(k)
        for k in ("content-type", "idempotent-replayed", "www-authenticate", "content-length")
    }
    if headers["content-length"] is not None:
        headers["content-length"] = str(len(body.encode()))  # ids have one length anyway
    return response.status_code, headers, json.loads(body) if body else None


def raw(server: ApiServer, data: bytes) -> bytes:
    """One request as written, on its own connection; the status line and body."""
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        answer = b""
        while b"\r\n\r\n" not in answer:
            answer += sock.recv(65536)
        head, _, rest = answer.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: (\d+)", head)
        while length and len(rest) < int(length.group(1)):
            rest += sock.recv(65536)
    return head.split(b"\r\n")[0] + b"\r\n" + rest


def test_the_same_answers_with_and_without_the_fast_path(pair: Pair) -> None:
    fast, plain = pair.servers
    ids: tuple[dict[str, str], dict[str, str]] = ({}, {})
    created: dict[str, tuple[str, str]] = {}

    def both(
        method: str,
        path: str,
        who: str | None = "acme",
        *,
        auth: str | None = None,
        remember: str | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        answers = []
        got = []
        for i, server in enumerate(pair.servers):
            headers = dict(kwargs.pop("headers", {}) if i == 1 else kwargs.get("headers", {}))
            if auth is not None:
                headers["Authorization"] = auth
            elif who is not None:
                headers["Authorization"] = f"Bearer {pair.tokens[who][i]}"
            send = {k: v for k, v in kwargs.items() if k not in ("headers", "chunks")}
            if "chunks" in kwargs:  # a chunked body (a fresh iterator for each server)
                send["content"] = iter(kwargs["chunks"])
            url = path
            if "{" in path:  # an id made earlier on each server
                url = path.format(**{k: v[i] for k, v in created.items()})
            with httpx.Client(base_url=server.base_url, timeout=20) as client:
                response = client.request(method, url, headers=headers, **send)
            got.append(response)
            answers.append(normal(response, ids[i]))
        assert answers[0] == answers[1], (method, path, answers)
        if remember is not None:
            created[remember] = tuple(r.json()["id"] for r in got)  # type: ignore[assignment]
        return answers[0]

    axb = {"kind": "axb", "pool": "trips", "a": party(1), "b": party(2), "expires_in": 600}
    assert both("POST", "/v1/bindings", json=axb, remember="first")[0] == 201
    # Every written form of a number, and X given.
    ax = {"kind": "ax", "x": NUMBERS[5], "a": "010-1111-0003"}
    assert both("POST", "/v1/bindings", json=ax, remember="ax")[0] == 201
    # Idempotency: first, replay, the same key for another body, a malformed key.
    key = {"Idempotency-Key": "order-77"}
    second = axb | {"a": party(3), "b": party(4)}
    assert both("POST", "/v1/bindings", json=second, headers=key)[0] == 201
    assert both("POST", "/v1/bindings", json=second, headers=key)[1]["idempotent-replayed"]
    reused = both("POST", "/v1/bindings", json=axb, headers=key)
    assert reused[2]["error"]["code"] == "idempotency-key-reused"
    assert both("POST", "/v1/bindings", json=second, headers={"Idempotency-Key": "a b"})[0] == 422
    # Refused by the store: X bound already, a number the tenant was not granted, a
    # party that is itself a virtual number; then the pool runs out.
    for body in (
        ax | {"a": party(5)},
        ax | {"x": "+82507999999999"},
        axb | {"a": NUMBERS[0]},
    ):
        assert both("POST", "/v1/bindings", json=body)[0] >= 400
    statuses = [
        both("POST", "/v1/bindings", json=axb | {"a": party(9), "b": party(20 + n)})[0]
        for n in range(8)
    ]
    assert 201 in statuses and statuses[-1] == 409  # pool-exhausted
    # Refused by the request: every kind of bad body.
    for content in (
        b"{",
        b"[]",
        b"null",
        b'{"kind": "axb"}',
        json.dumps(axb | {"extra": 1}).encode(),
        json.dumps(axb | {"expires_in": "600"}).encode(),
        json.dumps(axb | {"a": "not a number"}).encode(),
        json.dumps(axb | {"b": axb["a"]}).encode(),
        json.dumps(axb | {"x": NUMBERS[1]}).encode(),
        json.dumps(axb | {"expires_at": "2020-01-01T00:00:00Z"}).encode(),
        b"\xff\xfe",
    ):
        headers = {"Content-Type": "application/json"}
        assert both("POST", "/v1/bindings", content=content, headers=headers)[0] == 422
    # Other content types, a charset, chunked bodies, a query string, a trailing slash.
    body = json.dumps(axb | {"a": party(30), "b": party(31)}).encode()
    for ctype in ("application/json; charset=utf-8", "text/plain", "application/x-www-form"):
        both("POST", "/v1/bindings", content=body, headers={"Content-Type": ctype})
    both("POST", "/v1/bindings", chunks=[body[:10], body[10:]])
    both("POST", "/v1/bindings?debug=1", json=axb)
    both("POST", "/v1/bindings/", json=axb)
    # Keys: none, not a bearer, malformed, unknown, without the scope.
    assert both("POST", "/v1/bindings", None, json=axb)[0] == 401
    for auth in ("Basic dXNlcjpwdw==", "Bearer nope", "bearer ak_" + "a" * 60):
        assert both("POST", "/v1/bindings", auth=auth, json=axb)[0] == 401
    assert both("POST", "/v1/bindings", "acme/reader", json=axb)[0] == 403

    # Deletes: another tenant's, with no key, a long id, an escaped slash, a query
    # string; the tenant's own (twice), and a missing one.
    assert both("DELETE", "/v1/bindings/{first}", "other")[0] == 404
    assert both("DELETE", "/v1/bindings/{first}", None)[0] == 401
    assert both("DELETE", "/v1/bindings/{first}", "acme/reader")[0] == 403
    both("DELETE", "/v1/bindings/" + "b" * 129)
    both("DELETE", "/v1/bindings/a%2Fb")
    both("DELETE", "/v1/bindings/{first}?x=1")
    assert both("DELETE", "/v1/bindings/{first}")[0] == 204
    assert both("DELETE", "/v1/bindings/{first}")[0] == 404
    assert both("DELETE", "/v1/bindings/{ax}/")[0] in (404, 405, 307)
    assert both("DELETE", "/v1/bindings/b_nothing")[0] == 404

    # Requests as a client writes them by hand: a declared length over the limit, a
    # body shorter than declared and the connection closed.
    for data in (
        b"POST /v1/bindings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer %s\r\nContent-Length: 99999999\r\n\r\n",
    ):
        answers = [
            raw(s, data % pair.tokens["acme"][i].encode()) for i, s in enumerate((fast, plain))
        ]
        assert answers[0] == answers[1] and answers[0].startswith(b"HTTP/1.1 413"), answers

    # What each store holds, and what each server counted.
    def listing(server: ApiServer, token: str) -> Any:
        with server.client(token) as client:
            page = client.get("/v1/bindings", params={"limit": 1000}).json()["items"]
        return sorted((b["kind"], b["x"], b["a"], b["b"], b["expires_at"]) for b in page)

    assert listing(fast, pair.tokens["acme"][0]) == listing(plain, pair.tokens["acme"][1])

    def counted(server: ApiServer, token: str) -> list[str]:
        with server.client(token) as client:
            text = client.get("/metrics").text
        return sorted(
            line
            for line in text.splitlines()
            if line.startswith("ansim_api_requests_total{") and "/v1/bindings" in line
        )

    counts = [counted(s, pair.tokens["acme"][i]) for i, s in enumerate((fast, plain))]
    assert counts[0] == counts[1] and counts[0], counts
    # And the fast path did take the plain creates and deletes, and only on one server.
    layers = [_fast_layer(s.app) for s in (fast, plain)]
    assert layers[1] is None and layers[0] is not None
    assert layers[0].taken >= 8, layers[0].taken


def _fast_layer(app: Any) -> FastBindings | None:
    layer = app.middleware_stack
    while layer is not None and not isinstance(layer, FastBindings):
        layer = getattr(layer, "app", None)
    return layer
