"""``/v1/pools``: the tenant's virtual-number pools and their numbers.

Writes run on the store writer's thread and are audited; reads (virtual numbers and
counts only, nothing private) run in the thread pool on a read snapshot. A number may
join a pool only when it lies in a prefix the operator granted the tenant (``ansim
tenants set``) and carries no binding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Annotated, TypeVar

import lmdb
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from api.context import ApiContext
from api.control import Principal
from api.deps import IDEMPOTENCY_HEADER, app_context, idempotency_key, scoped
from api.errors import ApiError, ErrorDetail, error_responses
from api.idempotency import fingerprint, once
from api.routers.pools_models import (
    PoolCreate,
    PoolList,
    PoolNumberIn,
    PoolNumberOut,
    PoolNumberPage,
    PoolNumbersAdd,
    PoolNumbersAdded,
    PoolNumberUpdate,
    PoolOut,
    PoolUpdate,
)
from translate.numbers import NumberError, normalise
from translate.pools import Pool, PoolError, PoolNumber
from translate.store import Transaction

__all__ = ["router"]

router = APIRouter(prefix="/v1/pools", tags=["pools"])

Reader = Annotated[Principal, Depends(scoped("pools:read"))]
Writer = Annotated[Principal, Depends(scoped("pools:write"))]
PoolName = Annotated[str, Path(min_length=1, max_length=64, description="The pool's name")]
NumberPath = Annotated[str, Path(min_length=1, max_length=64, description="A number of the pool")]
_WRITE_ERRORS = error_responses(401, 403, 404, 409, 422, 503)
_READ_ERRORS = error_responses(401, 403, 404, 422)
#: PoolError rules -> error code
_CODES = {
    "pool-not-found": "not-found",
    "number-not-found": "not-found",
    "pool-exists": "conflict",
    "pool-in-use": "conflict",
    "number-in-use": "conflict",
    "number-in-pool": "conflict",
}
R = TypeVar("R")


def _error(exc: PoolError, field: str | None = None) -> ApiError:
    detail = ErrorDetail(field=field or exc.field, rule=exc.rule, message=exc.message)
    return ApiError(_CODES.get(exc.rule, "validation"), exc.message, [detail])


def _json(status: int, content: bytes) -> Response:
    return Response(content, status, media_type="application/json")


def _pool_out(pool: Pool) -> PoolOut:
    return PoolOut(
        name=pool.name,
        capacity=pool.capacity,
        cooloff_seconds=pool.cooloff,
        numbers=pool.numbers,
        bindings=pool.bindings,
        created_at=dt.datetime.fromtimestamp(pool.created, dt.UTC),
    )


def _number_out(held: PoolNumber) -> PoolNumberOut:
    return PoolNumberOut(
        number=held.number, area=held.area, load=held.load, exclusive=bool(held.heads)
    )


async def _read(ctx: ApiContext, work: Callable[[lmdb.Transaction], R]) -> R:
    def run() -> R:
        with ctx.store.reader() as txn:
            return work(txn)

    return await run_in_threadpool(run)


def _pool(txn: lmdb.Transaction, ctx: ApiContext, who: Principal, name: str) -> Pool:
    pool = ctx.store.pools.get(txn, who.tenant, name)
    if pool is None:
        raise ApiError("not-found", f"no pool {name!r}")
    return pool


def _number(ctx: ApiContext, raw: str, field: str) -> str:
    number = normalise(raw, ctx.plan)
    if isinstance(number, NumberError):
        raise ApiError.invalid(field, "bad-number", f"{field}: not a telephone number: {number}")
    return number


def _add_numbers(
    t: Transaction, ctx: ApiContext, who: Principal, name: str, items: list[PoolNumberIn], base: str
) -> int:
    """Put numbers into a pool, all or none; ApiError listing every refusal."""
    tenant = ctx.control.tenant(t.txn, who.tenant)
    details: list[ErrorDetail] = []
    code = "validation"
    for index, item in enumerate(items):
        field = f"{base}[{index}].number"
        number = normalise(item.number, ctx.plan)
        if isinstance(number, NumberError):
            details.append(ErrorDetail(field=field, rule="bad-number", message=str(number)))
            continue
        if tenant is None or not tenant.may_use(number):
            message = f"{number} is outside the prefixes granted to this tenant"
            details.append(ErrorDetail(field=field, rule="number-not-granted", message=message))
            continue
        if t.route_exists(number):
            message = f"{number} has bindings from elsewhere"
            details.append(ErrorDetail(field=field, rule="number-bound", message=message))
            continue
        try:
            ctx.store.pools.add_number(t.txn, who.tenant, name, number, item.area)
        except PoolError as exc:
            error = _error(exc, field)
            code = error.code if code == "validation" else code
            details.extend(error.details)
    if details:
        raise ApiError(code, details[0].message, details)
    return len(items)


@router.post(
    "",
    status_code=201,
    response_model=PoolOut,
    responses=_WRITE_ERRORS,
    summary="Create a pool, with numbers or without (scope pools:write)",
    openapi_extra={"parameters": [IDEMPOTENCY_HEADER]},
)
async def create_pool(body: PoolCreate, request: Request, who: Writer) -> Response:
    ctx = app_context(request)
    print_ = fingerprint("POST", "/v1/pools", body.model_dump_json().encode())

    def make(t: Transaction) -> tuple[int, bytes]:
        pool = Pool(who.tenant, body.name, body.capacity, body.cooloff_seconds, t.now)
        try:
            ctx.store.pools.create(t.txn, pool)
        except PoolError as exc:
            raise _error(exc) from None
        if body.numbers:
            _add_numbers(t, ctx, who, body.name, body.numbers, "numbers")
        ctx.control.audit(
            t.txn, who, "pool.create", f"{body.name} ({len(body.numbers)} numbers)", t.now
        )
        stored = _pool(t.txn, ctx, who, body.name)
        return 201, _pool_out(stored).model_dump_json().encode()

    status, content, _ = await ctx.writer.run(
        lambda t: once(t, ctx, who, idempotency_key(request), print_, make)
    )
    return _json(status, content)


@router.get("", response_model=PoolList, responses=_READ_ERRORS, summary="List pools (pools:read)")
async def list_pools(request: Request, who: Reader) -> PoolList:
    ctx = app_context(request)
    pools = await _read(ctx, lambda txn: ctx.store.pools.of_tenant(txn, who.tenant))
    return PoolList(items=[_pool_out(p) for p in pools])


@router.get(
    "/{pool}", response_model=PoolOut, responses=_READ_ERRORS, summary="Read a pool (pools:read)"
)
async def read_pool(pool: PoolName, request: Request, who: Reader) -> PoolOut:
    ctx = app_context(request)
    return _pool_out(await _read(ctx, lambda txn: _pool(txn, ctx, who, pool)))


@router.patch(
    "/{pool}",
    response_model=PoolOut,
    responses=_WRITE_ERRORS,
    summary="Change a pool's capacity or cool-off (scope pools:write)",
)
async def update_pool(pool: PoolName, body: PoolUpdate, request: Request, who: Writer) -> PoolOut:
    ctx = app_context(request)

    def work(t: Transaction) -> Pool:
        old = _pool(t.txn, ctx, who, pool)
        new = Pool(
            old.tenant,
            old.name,
            old.capacity if body.capacity is None else body.capacity,
            old.cooloff if body.cooloff_seconds is None else body.cooloff_seconds,
            old.created,
        )
        ctx.store.pools.update(t.txn, new)
        ctx.control.audit(t.txn, who, "pool.update", pool, t.now)
        return _pool(t.txn, ctx, who, pool)

    return _pool_out(await ctx.writer.run(work))


@router.delete(
    "/{pool}",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
    summary="Delete a pool whose numbers carry no binding (scope pools:write)",
)
async def delete_pool(pool: PoolName, request: Request, who: Writer) -> Response:
    ctx = app_context(request)

    def work(t: Transaction) -> None:
        _pool(t.txn, ctx, who, pool)
        try:
            ctx.store.pools.delete(t.txn, who.tenant, pool)
        except PoolError as exc:
            raise _error(exc) from None
        ctx.control.audit(t.txn, who, "pool.delete", pool, t.now)

    await ctx.writer.run(work)
    return Response(status_code=204)


@router.get(
    "/{pool}/numbers",
    response_model=PoolNumberPage,
    responses=_READ_ERRORS,
    summary="The pool's numbers with their load, in number order (pools:read)",
)
async def list_numbers(
    pool: PoolName,
    request: Request,
    who: Reader,
    after: Annotated[
        str | None, Query(max_length=64, description="next_after of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> PoolNumberPage:
    ctx = app_context(request)

    def work(txn: lmdb.Transaction) -> PoolNumberPage:
        _pool(txn, ctx, who, pool)
        members = ctx.store.pools.members(txn, who.tenant, pool, after or "", limit + 1)
        items = []
        for number in members[:limit]:
            held = ctx.store.pools.number(txn, number)
            if held is not None:
                items.append(_number_out(held))
        more = len(members) > limit
        return PoolNumberPage(items=items, next_after=members[limit - 1] if more else None)

    return await _read(ctx, work)


@router.post(
    "/{pool}/numbers",
    status_code=201,
    response_model=PoolNumbersAdded,
    responses=_WRITE_ERRORS,
    summary="Add up to 10,000 numbers, all or none (scope pools:write)",
)
async def add_numbers(
    pool: PoolName, body: PoolNumbersAdd, request: Request, who: Writer
) -> Response:
    ctx = app_context(request)

    def work(t: Transaction) -> bytes:
        _pool(t.txn, ctx, who, pool)
        added = _add_numbers(t, ctx, who, pool, body.numbers, "numbers")
        ctx.control.audit(t.txn, who, "pool.numbers.add", f"{pool} ({added} numbers)", t.now)
        return PoolNumbersAdded(added=added).model_dump_json().encode()

    return _json(201, await ctx.writer.run(work))


def _member(
    txn: lmdb.Transaction, ctx: ApiContext, who: Principal, pool: str, number: str
) -> PoolNumber:
    _pool(txn, ctx, who, pool)
    held = ctx.store.pools.number(txn, number)
    if held is None or (held.tenant, held.pool) != (who.tenant, pool):
        raise ApiError("not-found", f"{number} is not in pool {pool!r}")
    return held


@router.get(
    "/{pool}/numbers/{number}",
    response_model=PoolNumberOut,
    responses=_READ_ERRORS,
    summary="One number of the pool (pools:read)",
)
async def read_number(
    pool: PoolName, number: NumberPath, request: Request, who: Reader
) -> PoolNumberOut:
    ctx = app_context(request)
    virtual = _number(ctx, number, "number")
    return _number_out(await _read(ctx, lambda txn: _member(txn, ctx, who, pool, virtual)))


@router.patch(
    "/{pool}/numbers/{number}",
    response_model=PoolNumberOut,
    responses=_WRITE_ERRORS,
    summary="Change a number's area tag (scope pools:write)",
)
async def update_number(
    pool: PoolName, number: NumberPath, body: PoolNumberUpdate, request: Request, who: Writer
) -> PoolNumberOut:
    ctx = app_context(request)
    virtual = _number(ctx, number, "number")

    def work(t: Transaction) -> PoolNumber:
        _member(t.txn, ctx, who, pool, virtual)
        moved = ctx.store.pools.set_area(t.txn, virtual, body.area)
        ctx.control.audit(t.txn, who, "pool.number.update", f"{pool} {virtual}", t.now)
        return moved

    return _number_out(await ctx.writer.run(work))


@router.delete(
    "/{pool}/numbers/{number}",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
    summary="Take a number carrying no binding out of the pool (scope pools:write)",
)
async def remove_number(
    pool: PoolName, number: NumberPath, request: Request, who: Writer
) -> Response:
    ctx = app_context(request)
    virtual = _number(ctx, number, "number")

    def work(t: Transaction) -> None:
        _member(t.txn, ctx, who, pool, virtual)
        try:
            ctx.store.pools.remove_number(t.txn, who.tenant, pool, virtual)
        except PoolError as exc:
            raise _error(exc) from None
        ctx.control.audit(t.txn, who, "pool.number.remove", f"{pool} {virtual}", t.now)

    await ctx.writer.run(work)
    return Response(status_code=204)
