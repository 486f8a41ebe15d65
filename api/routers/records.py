"""``/v1/records``: search and export the tenant's call and SMS records (scope
``records:read``), and ``/v1/stats``: their counts per day, month or year (``stats:read``).

Records hold real numbers, so every search, read and export is audited (in the store,
through the writer) before it is answered. Only the tenant's own records are found;
another tenant's record answers 404, as if there were none. The files are read in the
thread pool (``api.records``), never on the event loop.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from api.control import Principal
from api.deps import app_context, scoped
from api.errors import ApiError, error_responses
from api.records import CALLS, SMS, Filters, RecordKind, bad_cursor, export, export_columns, search
from api.records import stats as count_stats
from api.routers.records_models import (
    CallRecordOut,
    CallRecordPage,
    SmsRecordOut,
    SmsRecordPage,
    StatsItem,
    StatsOut,
)
from api.stats import Period, default_range, figures, periods
from translate.bindings import NAME_PATTERN, time_zone
from translate.numbers import NumberError, normalise
from translate.store import Transaction

__all__ = ["router", "stats_router"]

router = APIRouter(prefix="/v1/records", tags=["records"])
stats_router = APIRouter(prefix="/v1/stats", tags=["statistics"])

Reader = Annotated[Principal, Depends(scoped("records:read"))]
StatsReader = Annotated[Principal, Depends(scoped("stats:read"))]
_ERRORS = error_responses(401, 403, 404, 422, 503)
_RFC3339 = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})$"
_CSV: dict[int | str, dict[str, Any]] = {
    200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": "CSV"}
}
SMS_STATUSES = Literal[
    "queued", "submitted", "delivered", "undeliverable", "expired", "failed", "refused", "rejected"
]

Since = Annotated[
    str | None, Query(pattern=_RFC3339, description="From this time (RFC 3339), included")
]
Until = Annotated[str | None, Query(pattern=_RFC3339, description="Before this time (RFC 3339)")]
X = Annotated[str | None, Query(min_length=1, max_length=64, description="On this virtual number")]
BindingId = Annotated[
    str | None, Query(min_length=1, max_length=128, description="Through this binding")
]
OutId = Annotated[
    str | None, Query(min_length=1, max_length=128, description="Of bindings with this out_id")
]
After = Annotated[
    str | None,
    Query(pattern="^[A-Za-z0-9_-]{1,200}$", description="The next_after of the page before"),
]
Limit = Annotated[int, Query(ge=1, le=1000)]


def _epoch(field: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text).timestamp()
    except ValueError as exc:
        raise ApiError.invalid(field, "invalid-value", f"{field}: {exc}") from None


def _filters(
    request: Request,
    since: str | None,
    until: str | None,
    x: str | None,
    binding_id: str | None,
    out_id: str | None,
    status: int | str | None,
) -> Filters:
    virtual = None
    if x is not None:
        found = normalise(x, app_context(request).plan)
        if isinstance(found, NumberError):
            raise ApiError.invalid("x", "bad-number", f"x: not a telephone number: {found}")
        virtual = found
    return Filters(
        since=_epoch("since", since),
        until=_epoch("until", until),
        x=virtual,
        binding_id=binding_id,
        out_id=out_id,
        status=status,
    )


async def _audit(request: Request, who: Principal, action: str, what: str) -> None:
    ctx = app_context(request)

    def work(t: Transaction) -> None:
        ctx.control.audit(t.txn, who, action, what, t.now)

    await ctx.writer.run(work)


def _described(f: Filters) -> str:
    """The filters of a search for its audit record (they hold no real number)."""
    parts = [f"{k}={v}" for k, v in dataclasses.asdict(f).items() if v is not None]
    return " ".join(parts) or "all"


async def _search(
    request: Request, who: Principal, kind: RecordKind, f: Filters, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    if bad_cursor(after):
        raise ApiError.invalid("after", "invalid-value", "after: not a cursor of this search")
    path = _path(request, kind)
    items, more = await run_in_threadpool(
        lambda: search(path, kind, who.tenant, f, after=after, limit=limit)
    )
    await _audit(
        request, who, f"records.{kind.table}.search", f"{_described(f)} ({len(items)} found)"
    )
    return items, more


def _path(request: Request, kind: RecordKind) -> str | None:
    ctx = app_context(request)
    return ctx.cdr if kind is CALLS else ctx.sms


async def _one(request: Request, who: Principal, kind: RecordKind, key: str) -> dict[str, Any]:
    path = _path(request, kind)
    items, _ = await run_in_threadpool(
        lambda: search(path, kind, who.tenant, Filters(), limit=1, key=key)
    )
    if not items:
        raise ApiError("not-found", f"no record {key!r}")
    await _audit(request, who, f"records.{kind.table}.read", key)
    return items[0]


def _csv(path: str | None, kind: RecordKind, tenant: str, f: Filters) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    header = False
    for names, values in export(path, kind, tenant, f):
        if not header:
            writer.writerow(names)
            header = True
        writer.writerow(values)
        if buffer.tell() > 1 << 16:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if not header:
        writer.writerow(export_columns(path, kind))
    yield buffer.getvalue()


async def _export(request: Request, who: Principal, kind: RecordKind, f: Filters) -> Response:
    await _audit(request, who, f"records.{kind.table}.export", _described(f))
    rows = _csv(_path(request, kind), kind, who.tenant, f)
    name = f"{kind.table}.csv"
    return StreamingResponse(
        iterate_in_threadpool(rows),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


# -- calls -------------------------------------------------------------------------------


@router.get(
    "/calls",
    response_model=CallRecordPage,
    responses=_ERRORS,
    summary="Search the tenant's call records, in INVITE time order (records:read)",
)
async def search_calls(
    request: Request,
    who: Reader,
    since: Since = None,
    until: Until = None,
    x: X = None,
    binding_id: BindingId = None,
    out_id: OutId = None,
    status: Annotated[
        int | None, Query(ge=100, le=699, description="The final SIP status the caller got")
    ] = None,
    after: After = None,
    limit: Limit = 100,
) -> CallRecordPage:
    f = _filters(request, since, until, x, binding_id, out_id, status)
    items, more = await _search(request, who, CALLS, f, after, limit)
    return CallRecordPage(items=[CallRecordOut(**r) for r in items], next_after=more)


@router.get(
    "/calls/export",
    response_class=Response,
    responses={**_CSV, **error_responses(401, 403, 422, 503)},
    summary="Every call record the filters select, as CSV (records:read)",
)
async def export_calls(
    request: Request,
    who: Reader,
    since: Since = None,
    until: Until = None,
    x: X = None,
    binding_id: BindingId = None,
    out_id: OutId = None,
    status: Annotated[int | None, Query(ge=100, le=699)] = None,
) -> Response:
    return await _export(
        request, who, CALLS, _filters(request, since, until, x, binding_id, out_id, status)
    )


@router.get(
    "/calls/{record_id}",
    response_model=CallRecordOut,
    responses=_ERRORS,
    summary="Read one call record (records:read)",
)
async def read_call(
    record_id: Annotated[str, Path(min_length=1, max_length=128)], request: Request, who: Reader
) -> CallRecordOut:
    return CallRecordOut(**await _one(request, who, CALLS, record_id))


# -- SMS ---------------------------------------------------------------------------------


@router.get(
    "/sms",
    response_model=SmsRecordPage,
    responses=_ERRORS,
    summary="Search the tenant's SMS records, in arrival order (records:read)",
)
async def search_sms(
    request: Request,
    who: Reader,
    since: Since = None,
    until: Until = None,
    x: X = None,
    binding_id: BindingId = None,
    out_id: OutId = None,
    status: Annotated[SMS_STATUSES | None, Query(description="The message's state")] = None,
    after: After = None,
    limit: Limit = 100,
) -> SmsRecordPage:
    f = _filters(request, since, until, x, binding_id, out_id, status)
    items, more = await _search(request, who, SMS, f, after, limit)
    return SmsRecordPage(items=[SmsRecordOut(**r) for r in items], next_after=more)


@router.get(
    "/sms/export",
    response_class=Response,
    responses={**_CSV, **error_responses(401, 403, 422, 503)},
    summary="Every SMS record the filters select, as CSV (records:read)",
)
async def export_sms(
    request: Request,
    who: Reader,
    since: Since = None,
    until: Until = None,
    x: X = None,
    binding_id: BindingId = None,
    out_id: OutId = None,
    status: Annotated[SMS_STATUSES | None, Query()] = None,
) -> Response:
    return await _export(
        request, who, SMS, _filters(request, since, until, x, binding_id, out_id, status)
    )


@router.get(
    "/sms/{sms_id}",
    response_model=SmsRecordOut,
    responses=_ERRORS,
    summary="Read one SMS record by its message id (records:read)",
)
async def read_sms(
    sms_id: Annotated[str, Path(min_length=1, max_length=128)], request: Request, who: Reader
) -> SmsRecordOut:
    return SmsRecordOut(**await _one(request, who, SMS, sms_id))


# -- statistics --------------------------------------------------------------------------


def _date(field: str, text: str | None) -> dt.date | None:
    if text is None:
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise ApiError.invalid(field, "invalid-value", f"{field}: {exc}") from None


@stats_router.get(
    "",
    response_model=StatsOut,
    responses=error_responses(401, 403, 422, 503),
    summary="Calls, answered, ASR, ACD, minutes and SMS per day, month or year (stats:read)",
)
async def read_stats(
    request: Request,
    who: StatsReader,
    period: Annotated[Period, Query(description="day, month or year")] = "day",
    since: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="First day (local date)"),
    ] = None,
    until: Annotated[
        str | None,
        Query(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", description="First day not counted"),
    ] = None,
    group_by: Annotated[
        Literal["binding", "pool", "trunk", "tenant"] | None,
        Query(description="Count per binding, pool, trunk (calls: out; SMS: upstream) or tenant"),
    ] = None,
    timezone: Annotated[
        str | None,
        Query(min_length=1, max_length=64, description="IANA time zone (default: the tenant's)"),
    ] = None,
    tenant: Annotated[
        str | None,
        Query(pattern=NAME_PATTERN, description="With an admin key: this tenant (default: all)"),
    ] = None,
) -> StatsOut:
    ctx = app_context(request)
    admin = "admin" in who.scopes
    if tenant is not None and not admin:
        raise ApiError("forbidden", "only an admin key reads another tenant's statistics")
    whose = tenant if admin else who.tenant
    if timezone is None:
        with ctx.store.reader() as txn:
            found = ctx.control.tenant(txn, whose or who.tenant)
        timezone = found.timezone if found is not None else "UTC"
    try:
        zone = time_zone(timezone)
    except ValueError as exc:
        raise ApiError.invalid("timezone", "bad-timezone", str(exc)) from None
    first, after = _date("since", since), _date("until", until)
    last_day = dt.datetime.now(zone).date() if after is None else after - dt.timedelta(days=1)
    default_first, default_after = default_range(period, last_day)
    first = first or default_first
    after = after or default_after
    if after <= first:
        raise ApiError.invalid("until", "invalid-value", "until must come after since")
    try:
        start, end, buckets = periods(period, first, after, zone)
    except ValueError as exc:
        raise ApiError.invalid("since", "invalid-value", str(exc)) from None
    rows = await run_in_threadpool(lambda: count_stats(ctx.cdr, ctx.sms, whose, buckets, group_by))
    return StatsOut(
        period=period,
        timezone=timezone,
        since=start,
        until=end,
        group_by=group_by,
        items=[StatsItem.model_validate(figures(r)) for r in rows],
    )
