"""The operator number-map file format (``config/numbers/*.yaml``) as pydantic models.

These models describe the shape of a file; translate.compiler turns validated files into
bindings and checks the rules that need numbers, the clock and the other files.
``config/schema/numbers.schema.json`` is generated from ``MapFile`` (``json_schema()``),
so editors with a YAML language server validate maps as they are typed.

A file::

    version: 1              # optional
    plan:                   # optional: how national numbers in this file are written
      country_code: "82"
    defaults:               # optional: fields every binding below inherits
      timezone: Asia/Seoul
      max_seconds: 3600
    ax:  [ {x: 050-7000-1001, a: 010-1234-5678} ]
    axb: [ {id: trip-1, x: 050-7000-2001, a: 010-1111-2222, b: 010-3333-4444} ]
    axn: [ {x: 050-7000-3001, a: 02-555-0101, b: 010-5555-6666} ]
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

__all__ = [
    "TEXT_FIELDS",
    "AxEntry",
    "AxbEntry",
    "AxnEntry",
    "Defaults",
    "MapFile",
    "PlanSection",
    "json_schema",
]

#: Fields read as text even when YAML resolves them to numbers (unquoted 0212345678 is
#: an octal int to YAML): the compiler takes the text as written.
TEXT_FIELDS = ("id", "x", "a", "b", "country_code", "trunk_prefix", "international_prefix")

Text = StrictStr | StrictInt

Number = Annotated[
    Text,
    Field(description="A telephone number: E.164 (+8210...), national (010-...), 00-prefixed"),
]
Expiry = Annotated[
    dt.datetime | dt.date,
    Field(
        description="When the binding stops working: an ISO 8601 date-time (with an offset, "
        "or in `timezone`), or a date meaning 00:00 of that day in `timezone`"
    ),
]
HoursText = Annotated[
    str,
    Field(
        description="Daily window in `timezone`, e.g. 09:00-18:00; 22:00-06:00 wraps midnight",
        json_schema_extra={"pattern": r"^\s*\d{1,2}:\d{2}\s*-\s*\d{1,2}:\d{2}\s*$"},
    ),
]
Positive = Annotated[int, Field(gt=0)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class _Common(_Strict):
    record: bool | None = Field(
        None,
        description="Record calls on this binding, encrypted (its media is anchored: "
        "relay unless media says rtpengine)",
    )
    media: Literal["passthrough", "relay", "rtpengine"] | None = Field(
        None,
        description="How the engine carries the media of calls on this binding, "
        "overriding the trunk's media mode",
    )
    expires: Expiry | None = None
    max_seconds: Positive | None = Field(None, description="Longest call allowed, seconds")
    calls_per_hour: Positive | None = Field(
        None, description="Calls admitted per sliding hour (counted in each worker process)"
    )
    hours: HoursText | None = None
    timezone: str | None = Field(
        None, description="IANA time zone (Asia/Seoul) for `hours` and local `expires`"
    )
    note: str | None = Field(None, description="Free text for operators; ignored")


class Defaults(_Common):
    """Values inherited by every binding of the file that does not set them."""

    present: Literal["virtual", "caller"] | None = Field(
        None, description="Default for ax bindings"
    )


class AxEntry(_Common):
    """X reaches A from any caller."""

    id: Text | None = Field(None, description="Binding id; defaults to ax:<X in E.164>")
    x: Number
    a: Number
    present: Literal["virtual", "caller"] | None = Field(
        None, description="What A sees as caller: the virtual number (default) or the caller"
    )


class AxbEntry(_Common):
    """A and B reach each other through X; both see X."""

    id: Text = Field(description="Binding id (required: one X holds many pairs)")
    x: Number
    a: Number
    b: Number


class AxnEntry(_Common):
    """Anyone reaches A through X; A calling X reaches its default B."""

    id: Text | None = Field(None, description="Binding id; defaults to axn:<X in E.164>")
    x: Number
    a: Number
    b: Number = Field(description="Where A's own calls to X go")


class PlanSection(_Strict):
    """How national numbers in this file are written (defaults: the engine's plan)."""

    country_code: Text | None = Field(None, description="E.g. 82 (Korea), 86 (China)")
    trunk_prefix: Text | None = Field(None, description="National prefix, e.g. 0")
    international_prefix: Text | None = Field(None, description="E.g. 00")


class MapFile(_Strict):
    """One number-map file: defaults and lists of bindings by kind."""

    model_config = ConfigDict(extra="forbid", title="ansim number map")

    version: Literal[1] = 1
    plan: PlanSection | None = None
    defaults: Defaults | None = None
    ax: list[AxEntry] = Field(default_factory=list)
    axb: list[AxbEntry] = Field(default_factory=list)
    axn: list[AxnEntry] = Field(default_factory=list)


def json_schema() -> dict[str, Any]:
    """The JSON Schema shipped as config/schema/numbers.schema.json."""
    schema = MapFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema
