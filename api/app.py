"""The control API application: ``create_app(context)`` builds it from its collaborators.

Routers, one per resource (``api/routers``), are included here, with the error handlers
that give every failure the one JSON shape of ``api.errors``, request metrics, a body size
limit, ``/healthz``, ``/metrics``, the OpenAPI 3.1 document at ``/openapi.json`` and
Swagger UI at ``/docs``. Swagger UI's files come from the fastapi-offline package and are
served by the app itself: nothing is fetched from a CDN.

The lifespan starts the store writer, the webhook dispatcher (``api.delivery``) and a
housekeeping task (every minute: purge of expired bindings, so pools count only live ones;
pruning of idempotency records, audit records, cool-off records, the history of ended
bindings and dead letters past their retention), and stops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from importlib.resources import files
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import ApiContext
from api.control import Principal
from api.delivery import WebhookDispatcher
from api.deps import SECURITY_SCHEME, scoped
from api.errors import ERROR_CODES, ApiError, error_responses, fault, pydantic_details
from api.fast_path import FastBindings
from api.metrics import RequestMetrics
from api.routers import admin, bindings, pools, records, webhooks
from translate.store import Transaction

__all__ = ["MAX_BODY", "create_app", "housekeeping"]

log = logging.getLogger("ansim.api")

#: Largest request body accepted (a batch of 1,000 bindings is about 300 KB).
MAX_BODY = 4 << 20
HOUSEKEEPING_EVERY = 60.0
#: Most records one housekeeping pass removes from each table (the write lock stays short).
PRUNE_LIMIT = 10_000
_STATUS_CODES = {404: "not-found", 405: "method-not-allowed", 413: "payload-too-large"}
_DOCS_STATIC = "/docs/static"


class Health(BaseModel):
    status: str


def _error_response(exc: ApiError) -> Response:
    return Response(exc.body(), exc.status, headers=exc.headers, media_type="application/json")


def housekeeping(ctx: ApiContext, cursor: bytes | None) -> Any:
    """The unit of work of one housekeeping pass; returns the cool-off walk's position."""

    def work(t: Transaction) -> bytes | None:
        now = t.now
        settings = ctx.settings
        t.purge_expired(limit=PRUNE_LIMIT)
        ctx.control.prune_idempotency(t.txn, now - settings.idempotency_hours * 3600, PRUNE_LIMIT)
        ctx.control.prune_audit(t.txn, now - settings.audit_days * 86400, PRUNE_LIMIT)
        ctx.store.history.prune(t.txn, now - settings.history_days * 86400, PRUNE_LIMIT)
        ctx.webhooks.prune_dead(t.txn, now - settings.webhooks.dead_days * 86400, PRUNE_LIMIT)
        pools = ctx.store.pools
        longest = pools.longest_cooloff(t.txn)
        return pools.prune_cooloff(t.txn, now - longest, start=cursor or b"", limit=PRUNE_LIMIT)

    return work


def create_app(ctx: ApiContext, *, deliver: bool = True, fast: bool = True) -> FastAPI:
    """The API app on ``ctx`` (store, control tables, writer, settings, metrics); with
    ``deliver``, it also delivers webhooks while it runs (``api.delivery``); with
    ``fast``, single creates and deletes of bindings take ``api.fast_path``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.writer.start()
        tasks = [asyncio.create_task(_housekeep(ctx))]
        if deliver:
            tasks.append(asyncio.create_task(WebhookDispatcher(ctx).run()))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await asyncio.get_running_loop().run_in_executor(None, ctx.writer.stop)

    app = FastAPI(
        title="ansim control API",
        version="1",
        summary="Bindings of virtual numbers, number pools, tenants and keys",
        description='Errors answer `{"error": {"code", "message", "details"}}`; the '
        "codes: " + ", ".join(f"`{c}` ({s})" for c, (s, _) in ERROR_CODES.items()) + ".",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    routers = (
        bindings.router,
        pools.router,
        records.router,
        records.stats_router,
        webhooks.router,
        admin.router,
    )
    for router in routers:
        app.include_router(router, max_body_size=MAX_BODY)
    _add_handlers(app)
    _add_service_routes(app, ctx)
    app.openapi = lambda: _document(app)  # type: ignore[method-assign]
    app.add_middleware(RequestMetrics, metrics=ctx.metrics)
    app.add_middleware(_DeclaredBodyLimit)
    if fast:
        app.add_middleware(FastBindings, ctx=ctx, max_body=MAX_BODY)  # outermost
    return app


def _document(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with the API key scheme on every operation that answers 401."""
    if app.openapi_schema is None:
        document = get_openapi(
            title=app.title,
            version=app.version,
            summary=app.summary,
            description=app.description,
            routes=app.routes,
        )
        document.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEME
        for operations in document["paths"].values():
            for operation in operations.values():
                if "401" in operation.get("responses", {}):
                    operation["security"] = [{name: []} for name in SECURITY_SCHEME]
        app.openapi_schema = document
    return app.openapi_schema


async def _housekeep(ctx: ApiContext) -> None:
    cursor: bytes | None = None
    while True:
        await asyncio.sleep(HOUSEKEEPING_EVERY)
        try:
            cursor = await ctx.writer.run(housekeeping(ctx, cursor))
        except Exception:
            log.exception("API housekeeping failed")


def _add_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        details = pydantic_details(exc.errors(), strip=1)
        message = details[0].message if details else "invalid request"
        return _error_response(ApiError("validation", message, details))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 400:  # a body FastAPI could not read (not UTF-8, say)
            error = ApiError.invalid(None, "invalid-json", str(exc.detail))
            return _error_response(error)
        code = _STATUS_CODES.get(exc.status_code, "internal")
        headers = None if exc.headers is None else dict(exc.headers)
        return _error_response(ApiError(code, str(exc.detail), headers=headers))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return _error_response(fault(exc))


def _add_service_routes(app: FastAPI, ctx: ApiContext) -> None:
    static = files("fastapi_offline") / "static"
    app.mount(_DOCS_STATIC, StaticFiles(directory=str(static)), name="docs-static")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="ansim control API",
            swagger_js_url=f"{_DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{_DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{_DOCS_STATIC}/favicon.png",
        )

    @app.get("/healthz", response_model=Health, tags=["service"], summary="Liveness (no key)")
    async def healthz() -> Health:
        return Health(status="ok")

    @app.get(
        "/metrics",
        tags=["service"],
        summary="Prometheus metrics (scope metrics:read)",
        response_class=Response,
        responses={
            200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
            **error_responses(401, 403),
        },
    )
    async def metrics(who: Annotated[Principal, Depends(scoped("metrics:read"))]) -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)


class _DeclaredBodyLimit:
    """Answers a request that declares a body over MAX_BODY with the API's own 413 (FastAPI's
    ``max_body_size``, which also stops streamed bodies, answers those in plain text)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            for name, value in scope["headers"]:
                if name == b"content-length" and (not value.isdigit() or int(value) > MAX_BODY):
                    body = ApiError("payload-too-large").body()
                    headers = [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ]
                    await send({"type": "http.response.start", "status": 413, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    return
        await self.app(scope, receive, send)
