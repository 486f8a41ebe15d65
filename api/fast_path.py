"""The two busiest routes, ``POST /v1/bindings`` and ``DELETE /v1/bindings/{binding_id}``,
answered without the framework's per-request machinery.

A platform binds and unbinds once per order, thousands of times a second. Through
FastAPI and Starlette each of those requests spent about two thirds of its event-loop time
in routing, dependency solving, request objects and the middleware chain, and one third
in its own work (``bench/api_bench.py --profile``). This ASGI layer, in front of the
app's own middleware, answers those two routes itself when the request is one it can take
whole, and hands everything else to the app untouched:

- it takes only the exact path, no query string, no root path, a declared
  ``Content-Length`` within the app's limit (a create), ``Content-Type:
  application/json`` (a create), and a live API key with ``bindings:write``;
- the body is decoded and validated as the route does (``json.loads``, then the route's
  pydantic model), and the route's own work runs (``routers.bindings.create_one`` and
  ``delete_one``: the same checks, the same unit of work on the store writer, the same
  JSON);
- anything it does not take, or that fails before the work is queued (a missing or bad
  key, a body that does not validate, a bad ``Idempotency-Key``), goes to the app with
  the body it read replayed, so every refusal there is the app's own answer;
- a refusal from the work itself (a conflict, an exhausted pool) is rendered as the app's
  handlers render it (``ApiError.body``, ``errors.fault``), and the request is counted in
  the same metrics under the same route template.
"""

from __future__ import annotations

import json
import time
from typing import Any

from api.context import ApiContext
from api.deps import bearer_token, idempotency_key_value, key_principal
from api.errors import ApiError, fault
from api.routers.bindings import create_one, delete_one
from api.routers.bindings_models import BindingCreate

__all__ = ["FastBindings"]

_PATH = "/v1/bindings"
_ITEM = "/v1/bindings/"
_ITEM_TEMPLATE = "/v1/bindings/{binding_id}"
_JSON = b"application/json"
_REPLAYED = [(b"idempotent-replayed", b"true")]


class _NotHere(Exception):
    """The request goes to the app."""


class FastBindings:
    """ASGI middleware: the create and delete of one binding (see the module docstring)."""

    def __init__(self, app: Any, ctx: ApiContext, max_body: int) -> None:
        self.app = app
        self.ctx = ctx
        self.max_body = max_body
        self.taken = 0  # requests answered here rather than by the app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not scope["query_string"] and not scope.get("root_path"):
            method, path = scope["method"], scope["path"]
            if method == "POST" and path == _PATH:
                await self._create(scope, receive, send)
                return
            if method == "DELETE" and path.startswith(_ITEM):
                binding_id = path[len(_ITEM) :]
                if 0 < len(binding_id) <= 128 and "/" not in binding_id:
                    await self._delete(scope, receive, send, binding_id)
                    return
        await self.app(scope, receive, send)

    # -- the two routes --------------------------------------------------------------------
    async def _create(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        headers = _headers(scope)
        length = headers.get(b"content-length")
        body: bytes | None = None  # None: not read (the app reads it itself)
        try:
            if (
                headers.get(b"content-type") != _JSON
                or length is None
                or not length.isdigit()
                or int(length) > self.max_body
            ):
                raise _NotHere
            body, whole = await _read_body(receive, int(length))
            if not whole:
                raise _NotHere
            ctx = self.ctx
            who = key_principal(ctx, _token(headers), "bindings:write", _source(scope))
            idem = idempotency_key_value(_text(headers.get(b"idempotency-key")))
            model = BindingCreate.model_validate(json.loads(body))
            answer = create_one(ctx, who, model, idem, _PATH)
        except Exception:  # _NotHere, a refusal, or a fault: the app answers as it would
            await self.app(scope, receive if body is None else _replay(body, receive), send)
            return
        try:
            status, content, replayed = await answer
        except Exception as exc:
            await self._error(send, exc, "POST", _PATH, started)
            return
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-length", b"%d" % len(content)),
                    (b"content-type", _JSON),
                    *(_REPLAYED if replayed else ()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        self._count("POST", _PATH, status, started)

    async def _delete(self, scope: Any, receive: Any, send: Any, binding_id: str) -> None:
        started = time.perf_counter()
        try:
            who = key_principal(self.ctx, _token(_headers(scope)), "bindings:write", _source(scope))
        except Exception:  # a refusal or a fault: the app answers as it would
            await self.app(scope, receive, send)
            return
        try:
            await delete_one(self.ctx, who, binding_id)
        except Exception as exc:
            await self._error(send, exc, "DELETE", _ITEM_TEMPLATE, started)
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        self._count("DELETE", _ITEM_TEMPLATE, 204, started)

    # -- answers ---------------------------------------------------------------------------
    async def _error(
        self, send: Any, exc: Exception, method: str, template: str, started: float
    ) -> None:
        error = exc if isinstance(exc, ApiError) else fault(exc)
        content = error.body()
        headers = [(b"content-length", b"%d" % len(content)), (b"content-type", _JSON)]
        for name, value in (error.headers or {}).items():
            headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        await send({"type": "http.response.start", "status": error.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})
        self._count(method, template, error.status, started)

    def _count(self, method: str, template: str, status: int, started: float) -> None:
        self.taken += 1
        metrics = self.ctx.metrics
        metrics.requests.labels(method, template, str(status)).inc()
        metrics.latency.labels(template).observe(time.perf_counter() - started)


def _headers(scope: Any) -> dict[bytes, bytes]:
    """The request's headers by lowercase name, the first of each (as the app reads them)."""
    out: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        out.setdefault(name, value)
    return out


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _token(headers: dict[bytes, bytes]) -> Any:
    return bearer_token(_text(headers.get(b"authorization")))


def _source(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


async def _read_body(receive: Any, length: int) -> tuple[bytes, bool]:
    """The body, and whether it is whole and of the declared length (if not, what was
    read goes to the app, which decides)."""
    chunks: list[bytes] = []
    size = 0
    whole = False
    while size <= length:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            whole = size == length
            break
    return b"".join(chunks), whole


def _replay(body: bytes, receive: Any) -> Any:
    """``receive`` for the app: the body already read first, then the client's messages."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
