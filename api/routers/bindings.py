"""``/v1/bindings``: create (one, or a batch of up to 1,000), read, change and delete the
tenant's bindings. Every route's work on the store runs on the store writer's thread
(see api.writer); reads go there too, because each read of real numbers appends an
audit record."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from api.binding_ops import (
    BindSpec,
    counted,
    create,
    delete,
    find,
    owned,
    spec_of,
    update,
    view,
)
from api.context import ApiContext
from api.control import Principal
from api.deps import IDEMPOTENCY_HEADER, app_context, idempotency_key, scoped
from api.errors import ApiError, ErrorDetail, error_responses
from api.idempotency import Answer, fingerprint, once
from api.routers.bindings_models import (
    BindingBatch,
    BindingCreate,
    BindingList,
    BindingOut,
    BindingPage,
    BindingUpdate,
)
from translate.store import Transaction

__all__ = ["create_one", "delete_one", "router"]

router = APIRouter(prefix="/v1/bindings", tags=["bindings"])

Reader = Annotated[Principal, Depends(scoped("bindings:read"))]
Writer = Annotated[Principal, Depends(scoped("bindings:write"))]
BindingId = Annotated[str, Path(min_length=1, max_length=128, description="The binding's id")]
_WRITE_ERRORS = error_responses(401, 403, 404, 409, 422, 503)
_READ_ERRORS = error_responses(401, 403, 404, 422, 503)


def _json(status: int, content: bytes, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(content, status, headers=headers, media_type="application/json")


@router.post(
    "",
    status_code=201,
    response_model=BindingOut,
    responses=_WRITE_ERRORS,
    summary="Create a binding (scope bindings:write)",
    openapi_extra={"parameters": [IDEMPOTENCY_HEADER]},
)
async def create_binding(
    body: BindingCreate,
    request: Request,
    who: Writer,
) -> Response:
    """Bind A (and B) to a virtual number: ``x`` given, or the best fitting number of
    ``pool`` (see the README for how allocation chooses)."""
    ctx = app_context(request)
    status, content, replayed = await create_one(
        ctx, who, body, idempotency_key(request), request.url.path
    )
    return _json(status, content, replayed)


def create_one(
    ctx: ApiContext, who: Principal, body: BindingCreate, idem: str | None, path: str
) -> Awaitable[Answer]:
    """``POST /v1/bindings``'s work (also ``api.fast_path``'s): the request checked (an
    ApiError at once), then the binding created on the store writer; its answer. The
    unit touches nothing but the transaction (metrics are counted once it committed), so
    the writer may run it twice (``rerun``)."""
    spec = spec_of(body, ctx.plan, ctx.clock())
    print_ = b"" if idem is None else fingerprint("POST", path, body.model_dump_json().encode())

    def make(t: Transaction) -> tuple[int, bytes]:
        binding = create(t, ctx, who, spec, count=False)
        return 201, view(t, binding).model_dump_json().encode()

    return _counted(
        ctx, who, spec, ctx.writer.run(lambda t: once(t, ctx, who, idem, print_, make), rerun=True)
    )


async def _counted(
    ctx: ApiContext, who: Principal, spec: BindSpec, answer: Awaitable[Answer]
) -> Answer:
    try:
        result = await answer
    except ApiError as exc:
        counted(ctx, who, spec, exc)
        raise
    if not result[2]:  # a replayed answer created nothing now
        counted(ctx, who, spec, None)
    return result


def delete_one(ctx: ApiContext, who: Principal, binding_id: str) -> Awaitable[None]:
    """``DELETE /v1/bindings/{binding_id}``'s work (also ``api.fast_path``'s); like a
    create's, the unit may be run twice."""
    return ctx.writer.run(lambda t: delete(t, ctx, who, binding_id), rerun=True)


@router.post(
    "/batch",
    status_code=201,
    response_model=BindingList,
    responses=_WRITE_ERRORS,
    summary="Create up to 1,000 bindings, all or none (scope bindings:write)",
    openapi_extra={"parameters": [IDEMPOTENCY_HEADER]},
)
async def create_bindings(
    body: BindingBatch,
    request: Request,
    who: Writer,
) -> Response:
    """Every item is checked; when any is refused, none is created and the answer lists
    every refusal, each field prefixed with its item (``items[3].b``)."""
    ctx = app_context(request)
    idem = idempotency_key(request)
    now = ctx.clock()
    details: list[ErrorDetail] = []
    specs = []
    for index, item in enumerate(body.items):
        try:
            specs.append(spec_of(item, ctx.plan, now, prefix=f"items[{index}]"))
        except ApiError as exc:
            details.extend(exc.details)
    if details:
        raise ApiError("validation", details[0].message, details)
    print_ = fingerprint("POST", request.url.path, body.model_dump_json().encode())

    def make(t: Transaction) -> tuple[int, bytes]:
        made = []
        code: str | None = None
        for spec in specs:
            try:
                made.append(create(t, ctx, who, spec))
            except ApiError as exc:
                code = code or exc.code
                details.extend(exc.details)
        if code is not None:
            raise ApiError(code, details[0].message, details)
        return 201, BindingList(items=[view(t, b) for b in made]).model_dump_json().encode()

    status, content, replayed = await ctx.writer.run(
        lambda t: once(t, ctx, who, idem, print_, make)
    )
    return _json(status, content, replayed)


@router.get(
    "",
    response_model=BindingPage,
    responses=_READ_ERRORS,
    summary="Find bindings by X, by real number, by out_id, or list them (bindings:read)",
)
async def list_bindings(
    request: Request,
    who: Reader,
    x: Annotated[str | None, Query(max_length=64, description="On this virtual number")] = None,
    number: Annotated[
        str | None, Query(max_length=64, description="With this real number as A or B")
    ] = None,
    out_id: Annotated[str | None, Query(max_length=128, description="With this out_id")] = None,
    after: Annotated[
        str | None, Query(max_length=128, description="The next_after of the page before")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Response:
    ctx = app_context(request)

    def work(t: Transaction) -> bytes:
        page, next_after = find(
            t, ctx, who, x=x, number=number, out_id=out_id, after=after, limit=limit
        )
        items = [view(t, b) for b in page]
        return BindingPage(items=items, next_after=next_after).model_dump_json().encode()

    return _json(200, await ctx.writer.run(work))


@router.get(
    "/{binding_id}",
    response_model=BindingOut,
    responses=_READ_ERRORS,
    summary="Read a binding (scope bindings:read)",
)
async def read_binding(binding_id: BindingId, request: Request, who: Reader) -> Response:
    ctx = app_context(request)

    def work(t: Transaction) -> bytes:
        binding = owned(t, who, binding_id)
        ctx.control.audit(t.txn, who, "binding.read", binding_id, t.now)
        return view(t, binding).model_dump_json().encode()

    return _json(200, await ctx.writer.run(work))


@router.patch(
    "/{binding_id}",
    response_model=BindingOut,
    responses=_WRITE_ERRORS,
    summary="Change a binding: expiry, parties, limits, out_id (scope bindings:write)",
)
async def update_binding(
    binding_id: BindingId, body: BindingUpdate, request: Request, who: Writer
) -> Response:
    ctx = app_context(request)

    def work(t: Transaction) -> bytes:
        return view(t, update(t, ctx, who, binding_id, body)).model_dump_json().encode()

    return _json(200, await ctx.writer.run(work))


@router.delete(
    "/{binding_id}",
    status_code=204,
    response_class=Response,
    responses=_WRITE_ERRORS,
    summary="Unbind (scope bindings:write)",
)
async def delete_binding(binding_id: BindingId, request: Request, who: Writer) -> Response:
    await delete_one(app_context(request), who, binding_id)
    return Response(status_code=204)
