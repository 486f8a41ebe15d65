"""Dependencies of the routes (FastAPI ``Depends``): the app's context and the caller.

``scoped(scope)`` authenticates the request's API key (``Authorization: Bearer ak_...``)
and checks it carries ``scope``: no key, or a malformed, unknown or revoked one, is a
401; a key without the scope a 403. The key check is one LMDB read (it never waits for
a lock) and one HMAC, done on the event loop.

Each parameter and sub-dependency FastAPI resolves costs some microseconds a request, so
the dependency reads the header itself rather than through ``fastapi.security``, and the
handlers take the context from the request (``app_context``) rather than from a
dependency; ``SECURITY_SCHEME`` is what the OpenAPI document says about keys (added by
``api.app`` to every operation that answers 401).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Final

from fastapi import Depends, Request

from api.context import ApiContext
from api.control import Principal
from api.errors import ApiError
from api.keys import SCOPES, KeyToken, parse_token

__all__ = [
    "IDEMPOTENCY_HEADER",
    "SECURITY_SCHEME",
    "Ctx",
    "app_context",
    "bearer_token",
    "context",
    "idempotency_key",
    "idempotency_key_value",
    "key_principal",
    "known_query",
    "scoped",
]

SECURITY_SCHEME: Final = {
    "apiKey": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, as `Authorization: Bearer ak_...` (`ansim keys create`)",
    }
}
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="ansim"'}


async def context(request: Request) -> ApiContext:
    """The app's ApiContext (async: FastAPI runs a plain function in its thread pool)."""
    return app_context(request)


def app_context(request: Request) -> ApiContext:
    ctx: ApiContext = request.app.state.ctx
    return ctx


Ctx = Annotated[ApiContext, Depends(context)]
_by_scope: dict[str, Callable[..., Awaitable[Principal]]] = {}


def scoped(scope: str) -> Callable[..., Awaitable[Principal]]:
    """The dependency that yields the Principal of a key carrying ``scope``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")
    found = _by_scope.get(scope)
    if found is not None:
        return found

    async def principal(request: Request) -> Principal:
        token = bearer_token(request.headers.get("authorization"))
        if request.query_params:
            await known_query(request)
        source = request.client.host if request.client is not None else ""
        return key_principal(app_context(request), token, scope, source)

    principal.__name__ = f"key_with_{scope.replace(':', '_')}"
    _by_scope[scope] = principal
    return principal


def bearer_token(header: str | None) -> KeyToken:
    """The API key an ``Authorization`` header carries; ApiError (401) when there is none."""
    if header is None:
        raise ApiError("unauthenticated", "an API key is required", headers=_CHALLENGE)
    scheme, _, credentials = header.partition(" ")
    token = parse_token(credentials.strip()) if scheme.lower() == "bearer" else None
    if token is None:
        raise ApiError("unauthenticated", "not an ansim API key", headers=_CHALLENGE)
    return token


def key_principal(ctx: ApiContext, token: KeyToken, scope: str, source: str) -> Principal:
    """The Principal of ``token`` if it is a live key carrying ``scope`` (one LMDB read and
    one HMAC); ApiError 401 or 403 otherwise."""
    with ctx.store.reader() as txn:
        record = ctx.control.authenticate(txn, token)
    if record is None:
        raise ApiError("unauthenticated", "unknown or revoked API key", headers=_CHALLENGE)
    if scope not in record.scopes:
        raise ApiError("forbidden", f"this key lacks the scope {scope}")
    return Principal(record.key_id, record.tenant, record.scopes, source)


_query_names: dict[int, frozenset[str]] = {}


async def known_query(request: Request) -> None:
    """Refuse query parameters the route does not have (a misspelt filter, ``?numbr=...``,
    must not quietly list everything) and parameters given twice (which one counts?)."""
    params = request.query_params
    if not params:
        return
    keys = params.keys()
    if len(params.multi_items()) != len(keys):
        twice = next(k for k in keys if len(params.getlist(k)) > 1)
        raise ApiError.invalid(twice, "invalid-value", f"query parameter {twice!r} given twice")
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    names = _query_names.get(id(route))
    if names is None:
        names = frozenset(_query_aliases(dependant))
        _query_names[id(route)] = names
    unknown = sorted(set(request.query_params) - names)
    if unknown:
        raise ApiError.invalid(
            unknown[0],
            "unknown-field",
            f"unknown query parameter(s): {', '.join(map(repr, unknown))}",
        )


def _query_aliases(dependant: Any) -> set[str]:
    names = {p.alias for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_aliases(sub)
    return names


_IDEMPOTENCY_CHARS = frozenset(chr(c) for c in range(0x21, 0x7F))
#: The Idempotency-Key header as the OpenAPI document describes it.
IDEMPOTENCY_HEADER: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Any client-chosen printable string: a retry with the same key gets the "
    "first answer (kept 24 hours by default)",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


def idempotency_key(request: Request) -> str | None:
    """The request's Idempotency-Key (1-255 printable ASCII), None when absent."""
    return idempotency_key_value(request.headers.get("idempotency-key"))


def idempotency_key_value(key: str | None) -> str | None:
    """``key`` (an Idempotency-Key header's value) checked; ApiError when malformed."""
    if key is not None and not (0 < len(key) <= 255 and set(key) <= _IDEMPOTENCY_CHARS):
        raise ApiError.invalid(
            "Idempotency-Key", "invalid-value", "Idempotency-Key is 1-255 printable characters"
        )
    return key
