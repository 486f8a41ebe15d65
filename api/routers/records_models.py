"""Response bodies of the records and statistics routes.

A record is shown as the engine stores it (columns of ``b2bua.cdr`` and
``sms_smpp.records``), times in ISO 8601 UTC with milliseconds, durations in
milliseconds; columns a newer engine adds are left out until they are described here.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CallRecordOut",
    "CallRecordPage",
    "SmsRecordOut",
    "SmsRecordPage",
    "StatsItem",
    "StatsOut",
]


class _Record(BaseModel):
    model_config = ConfigDict(extra="ignore")


class CallRecordOut(_Record):
    """One call (see the README's call detail records for each column)."""

    record_id: str | None
    a_call_id: str
    b_call_id: str | None
    call_type: str | None
    binding_kind: str | None
    direction: str | None
    virtual: str | None
    caller: str | None
    callee: str | None
    presented: str | None
    binding_id: str | None
    in_trunk: str | None
    src_transport: str | None
    src_ip: str | None
    src_port: int | None
    trunk: str | None
    invite_at: dt.datetime
    ring_at: dt.datetime | None
    answer_at: dt.datetime | None
    end_at: dt.datetime | None
    ring_ms: int | None
    setup_ms: int | None
    duration_ms: int | None
    status: int
    q850_cause: int | None
    ended_by: str | None
    reason: str | None
    tenant: str | None
    pool: str | None
    out_id: str | None


class CallRecordPage(BaseModel):
    items: list[CallRecordOut]
    next_after: str | None = Field(description="Give as `after` for the next page; null: last")


class SmsRecordOut(_Record):
    """One SMS relayed (or refused) through a virtual number."""

    id: str = Field(description="The message id ansim gave the sender")
    direction: str = Field(description="mt: carrier to upstream; mo: upstream to carrier")
    system_id: str
    source: str
    destination: str
    callee: str | None
    presented: str | None
    binding_id: str | None
    data_coding: int | None
    length: int | None
    part: str | None
    received_at: dt.datetime
    status: str
    error: int | None
    upstream: str | None
    upstream_id: str | None
    submitted_at: dt.datetime | None
    dlr_state: int | None
    done_at: dt.datetime | None
    reason: str | None = Field(None, description="Why a refused message was refused")
    tenant: str | None
    pool: str | None
    out_id: str | None


class SmsRecordPage(BaseModel):
    items: list[SmsRecordOut]
    next_after: str | None = Field(description="Give as `after` for the next page; null: last")


class StatsItem(BaseModel):
    """What one period (and group) counted."""

    period: str = Field(description="2026-11-01 (day), 2026-11 (month) or 2026 (year)")
    group: str | None = Field(description="The binding, pool, trunk or tenant; null ungrouped")
    calls: int
    answered: int
    asr: float | None = Field(description="Answer-seizure ratio: answered / calls")
    acd_seconds: float | None = Field(description="Average call duration of answered calls")
    minutes: float = Field(description="Minutes talked (answer to end), to the hundredth")
    sms_received: int = Field(description="SMS taken for the numbers")
    sms_sent: int = Field(
        description="Of them, relayed on to the real party (submitted or delivered)"
    )


class StatsOut(BaseModel):
    period: Literal["day", "month", "year"]
    timezone: str
    since: dt.date
    until: dt.date = Field(description="First day not counted")
    group_by: str | None
    items: list[StatsItem]
