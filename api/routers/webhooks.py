"""``/v1/webhooks``: the tenant's event receivers (scope ``webhooks:write``). A receiver's
signing secret is in the answer that makes it and in the one that rotates it, never in
another; see ``api.webhooks`` for what is sent and how a receiver checks it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import secrets
from typing import Annotated

import httpx
from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.control import Principal
from api.deps import app_context, scoped
from api.errors import ApiError, error_responses
from api.routers.webhooks_models import (
    DeadLetter,
    DeadLetterPage,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookOut,
    WebhookSecret,
    WebhookUpdate,
)
from api.webhooks import Hook, WebhookTables, new_secret
from translate.store import Transaction

__all__ = ["router"]

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Writer = Annotated[Principal, Depends(scoped("webhooks:write"))]
HookId = Annotated[
    str,
    Path(pattern="^wh_[a-z2-7]{16}$", description="The receiver's id", examples=["wh_" + "a" * 16]),
]
_ERRORS = error_responses(401, 403, 404, 422, 503)


def _when(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


def _out(h: Hook) -> WebhookOut:
    return WebhookOut(
        id=h.id,
        url=h.url,
        events=list(h.events),
        description=h.description,
        created_at=_when(h.created),
        secret_rotated_at=_when(h.rotated),
    )


def _check_url(url: str) -> None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as exc:
        raise ApiError.invalid("url", "invalid-value", f"not a URL: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ApiError.invalid("url", "invalid-value", "an http or https URL with a host")


def _tables(request: Request) -> WebhookTables:
    return app_context(request).webhooks


def _owned(tables: WebhookTables, t: Transaction, who: Principal, hook_id: str) -> Hook:
    found = tables.hook(t.txn, hook_id)
    if found is None or found.tenant != who.tenant:
        raise ApiError("not-found", f"no webhook {hook_id!r}")
    return found


def _new_id() -> str:
    return "wh_" + base64.b32encode(secrets.token_bytes(10)).decode().lower()


@router.post(
    "",
    status_code=201,
    response_model=WebhookCreated,
    responses=error_responses(401, 403, 422, 503),
    summary="Add a receiver of events; its secret is in this answer only (webhooks:write)",
)
async def create_webhook(body: WebhookCreate, request: Request, who: Writer) -> WebhookCreated:
    ctx = app_context(request)
    tables = _tables(request)
    _check_url(body.url)
    events = tuple(dict.fromkeys(body.events))

    def work(t: Transaction) -> Hook:
        hook = Hook(_new_id(), who.tenant, body.url, events, new_secret(), t.now, t.now,
                    body.description)  # fmt: skip
        tables.put_hook(t.txn, hook)
        ctx.control.audit(t.txn, who, "webhook.create", hook.id, t.now)
        return hook

    hook = await ctx.writer.run(work)
    return WebhookCreated(**_out(hook).model_dump(), secret=hook.secret)


@router.get(
    "",
    response_model=WebhookList,
    responses=error_responses(401, 403, 422, 503),
    summary="List the tenant's receivers, without secrets (webhooks:write)",
)
async def list_webhooks(request: Request, who: Writer) -> WebhookList:
    ctx = app_context(request)
    with ctx.store.reader() as txn:
        hooks = _tables(request).hooks(txn, who.tenant)
    return WebhookList(items=[_out(h) for h in hooks])


@router.get(
    "/{hook_id}",
    response_model=WebhookOut,
    responses=_ERRORS,
    summary="Read a receiver, without its secret (webhooks:write)",
)
async def read_webhook(hook_id: HookId, request: Request, who: Writer) -> WebhookOut:
    ctx = app_context(request)
    with ctx.store.reader() as txn:
        found = _tables(request).hook(txn, hook_id)
    if found is None or found.tenant != who.tenant:
        raise ApiError("not-found", f"no webhook {hook_id!r}")
    return _out(found)


@router.patch(
    "/{hook_id}",
    response_model=WebhookOut,
    responses=_ERRORS,
    summary="Change a receiver's URL, events or description (webhooks:write)",
)
async def update_webhook(
    hook_id: HookId, body: WebhookUpdate, request: Request, who: Writer
) -> WebhookOut:
    ctx = app_context(request)
    tables = _tables(request)
    given = body.model_fields_set
    for field in ("url", "events"):
        if field in given and getattr(body, field) is None:
            raise ApiError.invalid(field, "missing-field", f"{field} cannot be cleared")
    if body.url is not None:
        _check_url(body.url)

    def work(t: Transaction) -> Hook:
        old = _owned(tables, t, who, hook_id)
        new = Hook(
            old.id,
            old.tenant,
            body.url or old.url,
            tuple(dict.fromkeys(body.events)) if body.events else old.events,
            old.secret,
            old.created,
            old.rotated,
            old.description if body.description is None else body.description,
        )
        tables.put_hook(t.txn, new)
        ctx.control.audit(t.txn, who, "webhook.update", hook_id, t.now)
        return new

    return _out(await ctx.writer.run(work))


@router.delete(
    "/{hook_id}",
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
    summary="Remove a receiver; what was queued for it is not sent (webhooks:write)",
)
async def delete_webhook(hook_id: HookId, request: Request, who: Writer) -> Response:
    ctx = app_context(request)
    tables = _tables(request)

    def work(t: Transaction) -> None:
        tables.delete_hook(t.txn, _owned(tables, t, who, hook_id))
        ctx.control.audit(t.txn, who, "webhook.delete", hook_id, t.now)

    await ctx.writer.run(work)
    return Response(status_code=204)


@router.post(
    "/{hook_id}/secret",
    response_model=WebhookSecret,
    responses=_ERRORS,
    summary="Rotate the signing secret: the new one signs every delivery from now on, and is"
    " in this answer only (webhooks:write)",
)
async def rotate_secret(hook_id: HookId, request: Request, who: Writer) -> WebhookSecret:
    ctx = app_context(request)
    tables = _tables(request)

    def work(t: Transaction) -> Hook:
        old = _owned(tables, t, who, hook_id)
        new = Hook(old.id, old.tenant, old.url, old.events, new_secret(), old.created, t.now,
                   old.description)  # fmt: skip
        tables.put_hook(t.txn, new)
        ctx.control.audit(t.txn, who, "webhook.rotate", hook_id, t.now)
        return new

    hook = await ctx.writer.run(work)
    return WebhookSecret(id=hook.id, secret=hook.secret, secret_rotated_at=_when(hook.rotated))


@router.get(
    "/{hook_id}/dead",
    response_model=DeadLetterPage,
    responses=_ERRORS,
    summary="Events set aside undelivered after webhooks.dead_after (webhooks:write)",
)
async def dead_letters(
    hook_id: HookId,
    request: Request,
    who: Writer,
    after: Annotated[
        str | None,
        Query(pattern="^[0-9a-f]{32}$", description="The next_after of the page before"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> DeadLetterPage:
    ctx = app_context(request)
    tables = _tables(request)
    with ctx.store.reader() as txn:
        found = tables.hook(txn, hook_id)
        if found is None or found.tenant != who.tenant:
            raise ApiError("not-found", f"no webhook {hook_id!r}")
        page, more = tables.dead(txn, hook_id, bytes.fromhex(after) if after else b"", limit)
    items = [
        DeadLetter(
            event_id=d.event_id,
            type=d.type,
            attempts=d.attempts,
            first_attempt_at=_when(d.first_at),
            dead_at=_when(at),
            last_error=d.last_error,
            event=json.loads(d.body),
            cursor=d.key.hex(),
        )
        for at, d in page
    ]
    return DeadLetterPage(items=items, next_after=None if more is None else more.hex())
