"""Request and response bodies of the bindings routes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from translate.bindings import NAME_PATTERN
from translate.pools import AREA_PATTERN

__all__ = [
    "BindingBatch",
    "BindingCreate",
    "BindingList",
    "BindingOut",
    "BindingPage",
    "BindingUpdate",
    "Number",
]

Number = Annotated[
    str,
    Field(
        min_length=1,
        max_length=64,
        description="A telephone number in any usual written form (`+82 10-1234-5678`, "
        "`010-1234-5678`, `tel:` URI); answers give it in E.164",
        examples=["+821012345678"],
    ),
]
PoolName = Annotated[str, Field(pattern=NAME_PATTERN, description="A pool of the tenant")]
Area = Annotated[str, Field(pattern=AREA_PATTERN, description="An area tag of pool numbers")]
OutId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=128,
        description="The platform's own reference (an order id); not unique",
    ),
]
Hours = Annotated[
    str,
    Field(
        pattern=r"^[0-9]{2}:[0-9]{2}-[0-9]{2}:[0-9]{2}$",
        description="Daily window the binding works in, `09:00-18:00` (`22:00-06:00` wraps)",
    ),
]
TimeZone = Annotated[str, Field(min_length=1, max_length=64, description="IANA time zone")]
MaxSeconds = Annotated[int, Field(ge=1, le=86_400, description="Longest call, seconds")]
PerHour = Annotated[int, Field(ge=1, le=1_000_000, description="Calls admitted an hour")]
ExpiresIn = Annotated[
    int, Field(ge=1, le=10 * 366 * 86_400, description="Seconds from now until the binding ends")
]


def _text_only(value: object) -> object:
    if not isinstance(value, str):
        raise ValueError("a date-time is written as RFC 3339 text, 2026-12-01T09:00:00+09:00")
    return value


#: RFC 3339 text with an offset (no epoch numbers: the document says a string).
Moment = Annotated[AwareDatetime, Field(strict=False), BeforeValidator(_text_only)]


class _Strict(BaseModel):
    """Request bodies: unknown fields refused, and no type coercion ("5" is not 5, "yes"
    not true), so the body must be what the OpenAPI document says."""

    model_config = ConfigDict(extra="forbid", strict=True)


class BindingCreate(_Strict):
    """A new binding: ``x`` given, or taken from ``pool``."""

    kind: Literal["ax", "axb", "axn"] = Field(
        description="ax: anyone reaches A; axb: A and B reach each other; axn: anyone "
        "reaches A, A reaches B"
    )
    a: Number
    b: Number | None = Field(None, description="Required for axb and axn")
    x: Number | None = Field(None, description="The virtual number, one of the tenant's pools")
    pool: PoolName | None = Field(None, description="Take the virtual number from this pool")
    area: Area | None = Field(None, description="With pool: prefer numbers of this area")
    area_strict: bool = Field(False, description="With area: only numbers of that area")
    expires_in: ExpiresIn | None = None
    expires_at: Moment | None = Field(None, description="When the binding ends")
    record: bool = Field(
        False, description="Record calls (encrypted); the call's media must be relay or rtpengine"
    )
    media: Literal["passthrough", "relay", "rtpengine"] | None = Field(
        None, description="How the call's media is carried; null: the trunk's mode"
    )
    max_seconds: MaxSeconds | None = None
    calls_per_hour: PerHour | None = None
    hours: Hours | None = None
    timezone: TimeZone | None = Field(None, description="IANA time zone of `hours`")
    present: Literal["virtual", "caller"] = Field(
        "virtual", description="ax only: A sees X (virtual) or the real caller"
    )
    out_id: OutId | None = None


class BindingUpdate(_Strict):
    """Changes to a binding; a field left out stays, a null clears it."""

    a: Number | None = None
    b: Number | None = None
    expires_in: ExpiresIn | None = None
    expires_at: Moment | None = Field(None, description="null: never expires")
    record: bool | None = None
    media: Literal["passthrough", "relay", "rtpengine"] | None = None
    max_seconds: MaxSeconds | None = None
    calls_per_hour: PerHour | None = None
    hours: Hours | None = None
    timezone: TimeZone | None = None
    out_id: OutId | None = None


class BindingBatch(_Strict):
    """Up to 1,000 bindings created together: all of them, or none."""

    items: list[BindingCreate] = Field(min_length=1, max_length=1000)


class BindingOut(BaseModel):
    """A binding as stored, numbers in E.164."""

    id: str
    kind: Literal["ax", "axb", "axn"]
    x: str
    a: str
    b: str | None
    pool: str | None = Field(description="The pool X belongs to")
    present: Literal["virtual", "caller"]
    record: bool
    media: Literal["passthrough", "relay", "rtpengine"] | None = Field(
        description="How the call's media is carried; null: the trunk's mode"
    )
    expires_at: dt.datetime | None
    max_seconds: int | None
    calls_per_hour: int | None
    hours: str | None
    timezone: str | None
    out_id: str | None
    live: bool = Field(description="false once expired (until the binding is purged)")


class BindingList(BaseModel):
    items: list[BindingOut]


class BindingPage(BaseModel):
    items: list[BindingOut]
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last page"
    )
