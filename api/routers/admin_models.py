"""Request and response bodies of the admin routes (tenants, keys, audit)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from translate.bindings import NAME_PATTERN

__all__ = [
    "AuditOut",
    "AuditPage",
    "KeyCreate",
    "KeyCreated",
    "KeyList",
    "KeyOut",
    "TenantList",
    "TenantOut",
    "TenantPut",
]

Prefix = Annotated[
    str,
    Field(pattern=r"^\+[1-9][0-9]{0,14}$", description="An E.164 prefix, `+8250712`"),
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TenantPut(_Strict):
    numbers: list[Prefix] = Field(
        [], max_length=1000, description="Prefixes whose numbers the tenant may put in pools"
    )
    timezone: str | None = Field(
        None,
        max_length=64,
        description="IANA time zone its statistics are counted in (absent: unchanged; new: UTC)",
    )


class TenantOut(BaseModel):
    id: str
    numbers: list[str]
    timezone: str
    created_at: dt.datetime


class TenantList(BaseModel):
    items: list[TenantOut]


class KeyCreate(_Strict):
    tenant: str = Field(pattern=NAME_PATTERN, description="Created when it does not exist")
    scopes: list[str] = Field(min_length=1, max_length=16)
    name: str = Field("", max_length=128, description="What the key is for")


class KeyOut(BaseModel):
    key_id: str
    tenant: str
    scopes: list[str]
    name: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None


class KeyCreated(KeyOut):
    token: str = Field(description="The key itself: shown this once, never stored")


class KeyList(BaseModel):
    items: list[KeyOut]


class AuditOut(BaseModel):
    at: dt.datetime
    key_id: str | None
    tenant: str
    source: str
    action: str
    object: str
    cursor: str


class AuditPage(BaseModel):
    items: list[AuditOut]
    next_after: str | None
