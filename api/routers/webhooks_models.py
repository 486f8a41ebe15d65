"""Request and response bodies of the webhook routes."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ALL_EVENTS",
    "DeadLetter",
    "DeadLetterPage",
    "EventType",
    "WebhookCreate",
    "WebhookCreated",
    "WebhookList",
    "WebhookOut",
    "WebhookSecret",
    "WebhookUpdate",
]

EventType = Literal[
    "call.started",
    "call.ringing",
    "call.answered",
    "call.completed",
    "sms.received",
    "sms.delivered",
    "binding.expired",
]
ALL_EVENTS: list[EventType] = [
    "call.started",
    "call.ringing",
    "call.answered",
    "call.completed",
    "sms.received",
    "sms.delivered",
    "binding.expired",
]
Url = Annotated[
    str,
    Field(
        min_length=8,
        max_length=2048,
        pattern=r"^https?://[^\s/?#@]+(/[^\s]*)?$",
        description="Where events are POSTed: an http or https URL",
        examples=["https://platform.example/ansim/events"],
    ),
]
Events = Annotated[
    list[EventType],
    Field(min_length=1, max_length=7, description="The event types this receiver gets"),
]
Description = Annotated[str, Field(max_length=256, description="What the receiver is for")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class WebhookCreate(_Strict):
    url: Url
    events: Events = Field(default_factory=lambda: list(ALL_EVENTS))
    description: Description = ""


class WebhookUpdate(_Strict):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    description: str
    created_at: dt.datetime
    secret_rotated_at: dt.datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(
        description="The signing secret: in this answer only (rotate it to get a new one)"
    )


class WebhookSecret(BaseModel):
    id: str
    secret: str = Field(description="The new signing secret: in this answer only")
    secret_rotated_at: dt.datetime


class WebhookList(BaseModel):
    items: list[WebhookOut]


class DeadLetter(BaseModel):
    event_id: str
    type: str
    attempts: int
    first_attempt_at: dt.datetime
    dead_at: dt.datetime
    last_error: str
    event: dict[str, Any] = Field(description="The event's body, as it was to be delivered")
    cursor: str


class DeadLetterPage(BaseModel):
    items: list[DeadLetter]
    next_after: str | None
