"""What the bindings routes do: requests checked into bindings, and the units of work on
the store that create, read, change and remove them.

Checks that need only the request (numbers, expiry, hours, kinds) run before the request
is queued for the store, and report every problem at once. Checks that need the store
(the pool, the virtual number's owner, conflicts with other bindings) run in the write
transaction, where ``translate`` applies the same rules as to the operator's maps; a
conflict it finds is answered 409 with the store's own rule name.

Every unit that writes, or that returns real numbers, appends an audit record in the
same transaction.

The units run on the store writer (``api.writer``), each in a savepoint that is undone
when it raises, and a unit whose put or unbind is refused always raises: so they write
bindings with ``nested=False`` (no savepoint of the store's own inside the writer's).
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from api.context import ApiContext
from api.control import Principal
from api.errors import ApiError, ErrorDetail
from api.routers.bindings_models import BindingCreate, BindingOut, BindingUpdate
from translate.allocation import PoolExhausted, allocate
from translate.bindings import RECORD_PASSTHROUGH, Binding, Hours, binding_problems
from translate.numbers import NumberError, NumberPlan, mask, normalise
from translate.store import ConflictError, Transaction

__all__ = [
    "BindSpec",
    "counted",
    "create",
    "delete",
    "find",
    "owned",
    "spec_of",
    "update",
    "view",
]

#: Store rule names -> the request field they are about ("virtual" is the API's "x").
_FIELDS = {"virtual": "x"}


class _Problems:
    """Details gathered while checking a request, with a prefix for batch items."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.details: list[ErrorDetail] = []

    def add(self, field: str | None, rule: str, message: str) -> None:
        where = (
            f"{self.prefix}.{field}" if self.prefix and field else (field or self.prefix or None)
        )
        self.details.append(ErrorDetail(field=where, rule=rule, message=message))

    def raise_if_any(self, code: str = "validation") -> None:
        if self.details:
            raise ApiError(code, self.details[0].message, self.details)


@dataclass(frozen=True, slots=True)
class BindSpec:
    """A create request, checked and normalised; ``x`` is None until allocated."""

    kind: str
    a: str
    b: str | None
    x: str | None
    pool: str | None
    area: str | None
    strict: bool
    expires: float | None
    max_seconds: int | None
    calls_per_hour: int | None
    hours: Hours | None
    present: str
    out_id: str | None
    prefix: str = ""
    record: bool = False
    media: str | None = None


def _number(problems: _Problems, field: str, raw: str, plan: NumberPlan) -> str | None:
    number = normalise(raw, plan)
    if isinstance(number, NumberError):
        problems.add(field, "bad-number", f"{field}: not a telephone number: {number}")
        return None
    return number


def _hours(problems: _Problems, text: str | None, timezone: str | None) -> Hours | None:
    if text is None:
        if timezone is not None:
            _zone(problems, timezone)
        return None
    if timezone is None:
        problems.add("timezone", "timezone-required", "hours need a timezone")
        return None
    if not _zone(problems, timezone):
        return None
    try:
        return Hours.parse(text, timezone)
    except ValueError as exc:
        problems.add("hours", "bad-hours", str(exc))
        return None


def _zone(problems: _Problems, name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        problems.add("timezone", "bad-timezone", f"unknown time zone {name!r}")
        return False
    return True


def _expiry(
    problems: _Problems,
    expires_in: int | None,
    expires_at: dt.datetime | None,
    now: float,
) -> float | None:
    if expires_in is not None and expires_at is not None:
        problems.add("expires_at", "one-of", "give expires_in or expires_at, not both")
        return None
    expires = now + expires_in if expires_in is not None else None
    if expires_at is not None:
        expires = expires_at.timestamp()
        if expires <= now:
            problems.add("expires_at", "expired", "expires_at is not in the future")
    return expires


def spec_of(body: BindingCreate, plan: NumberPlan, now: float, prefix: str = "") -> BindSpec:
    """Check a create request on its own; ApiError (validation) listing every problem."""
    problems = _Problems(prefix)
    a = _number(problems, "a", body.a, plan)
    b = None if body.b is None else _number(problems, "b", body.b, plan)
    x = None if body.x is None else _number(problems, "x", body.x, plan)
    if (body.x is None) == (body.pool is None):
        problems.add("x", "one-of", "give x (a virtual number) or pool, one of them")
    if body.pool is None and (body.area is not None or body.area_strict):
        problems.add("area", "invalid-value", "area and area_strict go with pool")
    if body.kind in ("axb", "axn") and body.b is None:
        problems.add("b", "missing-b", f"{body.kind} needs b")
    if body.kind == "ax" and body.b is not None:
        problems.add("b", "unexpected-b", "ax has no b; use axb or axn")
    if body.kind != "ax" and body.present != "virtual":
        problems.add("present", "present-ax-only", "present: caller is only for ax")
    if a is not None and a == b:
        problems.add("b", "same-party", "a and b are the same number")
    if x is not None and x in (a, b):
        problems.add("x", "virtual-is-party", "the virtual number is also a real party")
    if body.record and body.media == "passthrough":
        problems.add("media", "record-passthrough", RECORD_PASSTHROUGH)
    expires = _expiry(problems, body.expires_in, body.expires_at, now)
    hours = _hours(problems, body.hours, body.timezone)
    problems.raise_if_any()
    assert a is not None
    return BindSpec(
        kind=body.kind,
        a=a,
        b=b,
        x=x,
        pool=body.pool,
        area=body.area,
        strict=body.area_strict,
        expires=expires,
        max_seconds=body.max_seconds,
        calls_per_hour=body.calls_per_hour,
        hours=hours,
        present=body.present,
        out_id=body.out_id,
        prefix=prefix,
        record=body.record,
        media=body.media,
    )


def new_id() -> str:
    """A fresh binding id: ``b_``, the time in milliseconds (48 bits) and 32 random bits, in
    base32. Ids made one after the other sort one after the other, so the tables keyed by
    id (bindings, sources, owners) take a batch of new bindings on their last page instead
    of one page each: a commit writes far fewer pages."""
    stamp = int(time.time() * 1000).to_bytes(6, "big")
    return "b_" + base64.b32encode(stamp + secrets.token_bytes(4)).decode().lower()


def _check_parties(t: Transaction, problems: _Problems, binding: Binding) -> None:
    """virtual-as-party: a real party that is itself a virtual number (bound, or pooled)."""
    pools = t.store.pools
    for field, number in (("a", binding.a), ("b", binding.b)):
        if number is not None and (t.route_exists(number) or pools.number(t.txn, number)):
            problems.add(field, "virtual-as-party", f"{field} ({mask(number)}) is a virtual number")


def _conflicts(t: Transaction, problems: _Problems, binding: Binding, error: ConflictError) -> None:
    for conflict in error.conflicts:
        field: str | None = None
        if conflict.rule == "party-conflict":
            field = next(
                (
                    f
                    for f, n in (("a", binding.a), ("b", binding.b))
                    if n is not None and t.route_exists(binding.virtual, n)
                ),
                None,
            )
        elif conflict.rule == "duplicate-virtual":
            field = "x"
        problems.add(field, conflict.rule, conflict.message)


def create(
    t: Transaction, ctx: ApiContext, who: Principal, spec: BindSpec, *, count: bool = True
) -> Binding:
    """Allocate (when from a pool) and write one binding; ApiError on any refusal.
    ``count``: the binding (or the pool's exhaustion) is counted in the metrics here;
    without it the caller counts once the write is committed (``counted``)."""
    problems = _Problems(spec.prefix)
    tenant = who.tenant
    pools = t.store.pools
    allocated = spec.pool is not None
    if spec.pool is not None:
        pool = pools.get(t.txn, tenant, spec.pool)
        if pool is None:
            problems.add("pool", "pool-not-found", f"no pool {spec.pool!r}")
            problems.raise_if_any("not-found")
        assert pool is not None
        try:
            x = allocate(t, pool, spec.kind, spec.a, spec.b, area=spec.area, strict=spec.strict)
        except PoolExhausted as exc:
            if count:
                ctx.metrics.pool_exhausted.labels(tenant, pool.name).inc()
            problems.add("pool", exc.rule, exc.message)
            problems.raise_if_any("pool-exhausted")
            raise
    else:
        assert spec.x is not None
        x = spec.x
        held = pools.number(t.txn, x)
        if held is None or held.tenant != tenant:
            problems.add("x", "number-not-owned", f"{x} is in none of this tenant's pools")
    binding = Binding(
        id=new_id(),
        kind=spec.kind,  # type: ignore[arg-type]
        virtual=x,
        a=spec.a,
        b=spec.b,
        present=spec.present,  # type: ignore[arg-type]
        expires=spec.expires,
        max_seconds=spec.max_seconds,
        calls_per_hour=spec.calls_per_hour,
        hours=spec.hours,
        tenant=tenant,
        out_id=spec.out_id,
        record=spec.record,
        media=spec.media,  # type: ignore[arg-type]
    )
    _check_parties(t, problems, binding)
    problems.raise_if_any()
    try:
        t.put(binding, source="api", nested=False)
    except ConflictError as exc:
        _conflicts(t, problems, binding, exc)
        problems.raise_if_any("conflict")
    ctx.control.audit(t.txn, who, "binding.create", binding.id, t.now)
    if count:
        ctx.metrics.created.labels(binding.kind, "yes" if allocated else "no").inc()
    return binding


def counted(ctx: ApiContext, who: Principal, spec: BindSpec, error: ApiError | None) -> None:
    """The metrics of a create made with ``count=False``, once its outcome is known."""
    if error is None:
        ctx.metrics.created.labels(spec.kind, "yes" if spec.pool is not None else "no").inc()
    elif error.code == "pool-exhausted" and spec.pool is not None:
        ctx.metrics.pool_exhausted.labels(who.tenant, spec.pool).inc()


def owned(t: Transaction, who: Principal, binding_id: str) -> Binding:
    """The tenant's binding ``binding_id``; not-found for anyone else's, or none."""
    found = t.get(binding_id)
    if found is None or found[0].tenant != who.tenant:
        raise ApiError("not-found", f"no binding {binding_id!r}")
    return found[0]


def update(
    t: Transaction,
    ctx: ApiContext,
    who: Principal,
    binding_id: str,
    body: BindingUpdate,
) -> Binding:
    """Apply a PATCH: the fields given, a null clearing; the same rules as a create."""
    old = owned(t, who, binding_id)
    given = body.model_fields_set
    problems = _Problems()
    changes: dict[str, Any] = {}
    for field in ("a", "b"):
        if field not in given:
            continue
        raw = getattr(body, field)
        if raw is None:
            if field == "a" or old.kind != "ax":
                problems.add(field, "missing-field", f"{field} cannot be cleared")
            continue
        number = _number(problems, field, raw, ctx.plan)
        if number is not None:
            changes[field] = number
    if "expires_in" in given or "expires_at" in given:
        changes["expires"] = _expiry(problems, body.expires_in, body.expires_at, t.now)
    if "record" in given:
        changes["record"] = bool(body.record)
    if "media" in given:
        changes["media"] = body.media
    record = changes.get("record", old.record)
    if record and changes.get("media", old.media) == "passthrough":
        problems.add("media", "record-passthrough", RECORD_PASSTHROUGH)
    for field in ("max_seconds", "calls_per_hour", "out_id"):
        if field in given:
            changes[field] = getattr(body, field)
    if "hours" in given or "timezone" in given:
        text = body.hours if "hours" in given else (None if old.hours is None else str(old.hours))
        zone = body.timezone if "timezone" in given else (old.hours and old.hours.timezone)
        changes["hours"] = _hours(problems, text, zone or None)
    problems.raise_if_any()
    new = replace(old, **changes)
    for rule, field, message in binding_problems(new):
        problems.add(_FIELDS.get(field, field), rule, message)
    if new.a != old.a or new.b != old.b:
        _check_parties(t, problems, new)
    problems.raise_if_any()
    try:
        t.put(new, source="api", replace=True, nested=False)
    except ConflictError as exc:
        _conflicts(t, problems, new, exc)
        problems.raise_if_any("conflict")
    ctx.control.audit(t.txn, who, "binding.update", binding_id, t.now)
    return new


def delete(t: Transaction, ctx: ApiContext, who: Principal, binding_id: str) -> None:
    owned(t, who, binding_id)
    t.unbind(binding_id, nested=False)
    ctx.control.audit(t.txn, who, "binding.delete", binding_id, t.now)


def find(
    t: Transaction,
    ctx: ApiContext,
    who: Principal,
    *,
    x: str | None,
    number: str | None,
    out_id: str | None,
    after: str | None,
    limit: int,
) -> tuple[list[Binding], str | None]:
    """The tenant's bindings on X, with a real number, with an out_id, or all; a page of
    ``limit`` in id order after ``after``, and the cursor of the next page."""
    given = [name for name, v in (("x", x), ("number", number), ("out_id", out_id)) if v]
    if len(given) > 1:
        raise ApiError.invalid(given[1], "one-of", "filter by one of x, number, out_id")
    tenant = who.tenant
    owners = t.store.owners
    ids: Iterable[str]
    if x is not None:
        virtual = _query_number("x", x, ctx.plan)
        ids = sorted(b.id for b, _ in t.on_virtual(virtual) if b.tenant == tenant)
        what = f"x={virtual}"
    elif number is not None:
        real = _query_number("number", number, ctx.plan)
        ids = sorted(bid for _, bid, _ in owners.by_number(t.txn, tenant, real))
        what = f"number={mask(real)}"
    elif out_id is not None:
        ids = owners.by_out_id(t.txn, tenant, out_id)
        what = f"out_id={out_id}"
    else:
        ids = owners.ids(t.txn, tenant, after or "", limit + 1)
        what = "all"
    page: list[Binding] = []
    more = False
    for bid in ids:
        if after and bid <= after:
            continue
        if len(page) == limit:
            more = True
            break
        found = t.get(bid)
        if found is not None and found[0].tenant == tenant:
            page.append(found[0])
    ctx.control.audit(t.txn, who, "binding.list", f"{what} ({len(page)} found)", t.now)
    return page, (page[-1].id if more and page else None)


def _query_number(field: str, raw: str, plan: NumberPlan) -> str:
    number = normalise(raw, plan)
    if isinstance(number, NumberError):
        raise ApiError.invalid(field, "bad-number", f"{field}: not a telephone number: {number}")
    return number


def view(t: Transaction, binding: Binding) -> BindingOut:
    """The answer body for a binding."""
    held = t.store.pools.number(t.txn, binding.virtual)
    pool = held.pool if held is not None and held.tenant == binding.tenant else None
    hours = binding.hours
    return BindingOut(
        id=binding.id,
        kind=binding.kind,
        x=binding.virtual,
        a=binding.a,
        b=binding.b,
        pool=pool,
        present=binding.present,
        record=binding.record,
        media=binding.media,
        expires_at=None
        if binding.expires is None
        else dt.datetime.fromtimestamp(binding.expires, dt.UTC),
        max_seconds=binding.max_seconds,
        calls_per_hour=binding.calls_per_hour,
        hours=None if hours is None else str(hours),
        timezone=None if hours is None else hours.timezone,
        out_id=binding.out_id,
        live=binding.live(t.now),
    )


Unit = Callable[[Transaction], Any]
