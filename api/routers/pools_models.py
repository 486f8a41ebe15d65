"""Request and response bodies of the pools routes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from api.routers.bindings_models import Number
from translate.bindings import NAME_PATTERN
from translate.pools import AREA_PATTERN

__all__ = [
    "PoolCreate",
    "PoolList",
    "PoolNumberIn",
    "PoolNumberOut",
    "PoolNumberPage",
    "PoolNumberUpdate",
    "PoolNumbersAdd",
    "PoolNumbersAdded",
    "PoolOut",
    "PoolUpdate",
]

Capacity = Annotated[
    int, Field(ge=1, le=1_000_000, description="Most bindings one number of the pool carries")
]
Cooloff = Annotated[
    float,
    Field(
        ge=0,
        le=30 * 86_400,
        description="Seconds after a party's binding on a number ends before the pool "
        "gives that number to the same party again",
    ),
]
Area = Annotated[str, Field(pattern=AREA_PATTERN, description="Area tag (a city, an area code)")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PoolNumberIn(_Strict):
    number: Number
    area: Area | None = None


class PoolCreate(_Strict):
    name: str = Field(pattern=NAME_PATTERN, description="Unique among the tenant's pools")
    capacity: Capacity = 1000
    cooloff_seconds: Cooloff = 60
    numbers: list[PoolNumberIn] = Field([], max_length=10_000)


class PoolUpdate(_Strict):
    capacity: Capacity | None = None
    cooloff_seconds: Cooloff | None = None


class PoolOut(BaseModel):
    name: str
    capacity: int
    cooloff_seconds: float
    numbers: int = Field(description="Numbers in the pool")
    bindings: int = Field(description="Bindings on them (expired ones until purged)")
    created_at: dt.datetime


class PoolList(BaseModel):
    items: list[PoolOut]


class PoolNumbersAdd(_Strict):
    numbers: list[PoolNumberIn] = Field(min_length=1, max_length=10_000)


class PoolNumbersAdded(BaseModel):
    added: int


class PoolNumberUpdate(_Strict):
    area: Area | None = Field(description="The new area tag; null removes it")


class PoolNumberOut(BaseModel):
    number: str
    area: str | None
    load: int = Field(description="Bindings on the number")
    exclusive: bool = Field(description="Held by an ax or axn binding")


class PoolNumberPage(BaseModel):
    items: list[PoolNumberOut]
    next_after: str | None
