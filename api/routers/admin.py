"""``/v1/admin``: tenants, API keys and the audit log, for keys with the ``admin`` scope.

These routes span tenants by design (an operator manages every platform's keys); all the
other routes see only the key's own tenant.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.control import AuditRecord, KeyRecord, Principal, Tenant
from api.deps import app_context, scoped
from api.errors import ApiError, ErrorDetail, error_responses
from api.keys import SCOPES
from api.routers.admin_models import (
    AuditOut,
    AuditPage,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyOut,
    TenantList,
    TenantOut,
    TenantPut,
)
from translate.bindings import NAME_PATTERN, time_zone
from translate.store import Transaction

__all__ = ["audit_out", "key_out", "router", "tenant_out"]

router = APIRouter(prefix="/v1/admin", tags=["admin"])

Admin = Annotated[Principal, Depends(scoped("admin"))]
TenantId = Annotated[str, Path(pattern=NAME_PATTERN, description="The tenant's id")]
KeyId = Annotated[str, Path(min_length=1, max_length=64, description="The key's id")]
_ERRORS = error_responses(401, 403, 404, 422, 503)
#: RFC 3339 date-time with an offset, as query text.
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"


def _when(epoch: float | None) -> dt.datetime | None:
    return None if epoch is None else dt.datetime.fromtimestamp(epoch, dt.UTC)


def tenant_out(t: Tenant) -> TenantOut:
    return TenantOut(
        id=t.id, numbers=list(t.numbers), timezone=t.timezone, created_at=_when(t.created)
    )


def key_out(k: KeyRecord) -> KeyOut:
    return KeyOut(
        key_id=k.key_id,
        tenant=k.tenant,
        scopes=sorted(k.scopes),
        name=k.name,
        created_at=_when(k.created),
        revoked_at=_when(k.revoked),
    )


def audit_out(r: AuditRecord) -> AuditOut:
    return AuditOut(
        at=_when(r.at),
        key_id=r.key_id,
        tenant=r.tenant,
        source=r.source,
        action=r.action,
        object=r.object,
        cursor=r.cursor,
    )


def check_scopes(scopes: list[str], field: str = "scopes") -> frozenset[str]:
    bad = [s for s in scopes if s not in SCOPES]
    if bad:
        message = f"unknown scope(s) {', '.join(bad)}; known: {', '.join(SCOPES)}"
        raise ApiError(
            "validation", message, [ErrorDetail(field=field, rule="bad-scope", message=message)]
        )
    return frozenset(scopes)


@router.get("/tenants", response_model=TenantList, responses=_ERRORS, summary="List tenants")
async def list_tenants(request: Request, who: Admin) -> TenantList:
    ctx = app_context(request)

    def read() -> list[Tenant]:
        with ctx.store.reader() as txn:
            return ctx.control.tenants(txn)

    return TenantList(items=[tenant_out(t) for t in await run_in_threadpool(read)])


@router.get(
    "/tenants/{tenant}", response_model=TenantOut, responses=_ERRORS, summary="Read a tenant"
)
async def read_tenant(tenant: TenantId, request: Request, who: Admin) -> TenantOut:
    ctx = app_context(request)
    with ctx.store.reader() as txn:
        found = ctx.control.tenant(txn, tenant)
    if found is None:
        raise ApiError("not-found", f"no tenant {tenant!r}")
    return tenant_out(found)


@router.put(
    "/tenants/{tenant}",
    response_model=TenantOut,
    responses=_ERRORS,
    summary="Create a tenant, or set the number prefixes it may put in pools and its time zone",
)
async def put_tenant(tenant: TenantId, body: TenantPut, request: Request, who: Admin) -> TenantOut:
    ctx = app_context(request)
    if body.timezone is not None:
        try:
            time_zone(body.timezone)
        except ValueError as exc:
            raise ApiError.invalid("timezone", "bad-timezone", str(exc)) from None

    def work(t: Transaction) -> Tenant:
        found = ctx.control.ensure_tenant(t.txn, tenant, t.now)
        zone = found.timezone if body.timezone is None else body.timezone
        updated = Tenant(tenant, found.created, tuple(dict.fromkeys(body.numbers)), zone)
        ctx.control.put_tenant(t.txn, updated)
        ctx.control.audit(
            t.txn, who, "tenant.put", f"{tenant} ({len(updated.numbers)} prefixes)", t.now
        )
        return updated

    return tenant_out(await ctx.writer.run(work))


@router.post(
    "/keys",
    status_code=201,
    response_model=KeyCreated,
    responses=_ERRORS,
    summary="Create an API key (its token is in this answer only)",
)
async def create_key(body: KeyCreate, request: Request, who: Admin) -> KeyCreated:
    ctx = app_context(request)
    scopes = check_scopes(body.scopes)

    def work(t: Transaction) -> KeyCreated:
        record, token = ctx.control.create_key(t.txn, body.tenant, scopes, body.name, t.now)
        ctx.control.audit(t.txn, who, "key.create", f"{record.key_id} for {body.tenant}", t.now)
        return KeyCreated(**key_out(record).model_dump(), token=str(token))

    created = await ctx.writer.run(work)
    return created


@router.get("/keys", response_model=KeyList, responses=_ERRORS, summary="List keys (no secrets)")
async def list_keys(
    request: Request,
    who: Admin,
    tenant: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Of this tenant only")
    ] = None,
) -> KeyList:
    ctx = app_context(request)

    def read() -> list[KeyRecord]:
        with ctx.store.reader() as txn:
            return ctx.control.keys(txn, tenant)

    return KeyList(items=[key_out(k) for k in await run_in_threadpool(read)])


@router.get("/keys/{key_id}", response_model=KeyOut, responses=_ERRORS, summary="Read a key")
async def read_key(key_id: KeyId, request: Request, who: Admin) -> KeyOut:
    ctx = app_context(request)
    with ctx.store.reader() as txn:
        found = ctx.control.key(txn, key_id)
    if found is None:
        raise ApiError("not-found", f"no key {key_id!r}")
    return key_out(found)


@router.delete(
    "/keys/{key_id}",
    status_code=204,
    response_class=Response,
    responses=_ERRORS,
    summary="Revoke a key (it stays listed, with its revocation time)",
)
async def revoke_key(key_id: KeyId, request: Request, who: Admin) -> Response:
    ctx = app_context(request)

    def work(t: Transaction) -> None:
        if ctx.control.revoke(t.txn, key_id, t.now) is None:
            raise ApiError("not-found", f"no key {key_id!r}")
        ctx.control.audit(t.txn, who, "key.revoke", key_id, t.now)

    await ctx.writer.run(work)
    return Response(status_code=204)


@router.get(
    "/audit",
    response_model=AuditPage,
    responses=_ERRORS,
    summary="The audit log in time order: every write, and every read of real numbers",
)
async def read_audit(
    request: Request,
    who: Admin,
    since: Annotated[str | None, Query(pattern=_RFC3339, description="From this time")] = None,
    until: Annotated[str | None, Query(pattern=_RFC3339, description="Before this time")] = None,
    tenant: Annotated[
        str | None, Query(pattern=NAME_PATTERN, description="Of this tenant only")
    ] = None,
    after: Annotated[
        str | None,
        Query(pattern="^[0-9a-f]{32}$", description="The next_after of the page before"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    ctx = app_context(request)
    moments = {name: _epoch(name, text) for name, text in (("since", since), ("until", until))}

    def read() -> list[AuditRecord]:
        with ctx.store.reader() as txn:
            return ctx.control.audit_log(
                txn,
                since=None if since is None else moments["since"],
                until=None if until is None else moments["until"],
                tenant=tenant,
                after=after,
                limit=limit + 1,
            )

    records = await run_in_threadpool(read)
    more = len(records) > limit
    items = [audit_out(r) for r in records[:limit]]
    return AuditPage(items=items, next_after=items[-1].cursor if more else None)


def _epoch(name: str, text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise ApiError.invalid(name, "invalid-value", f"{name}: {exc}") from None
