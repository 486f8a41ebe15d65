"""Bindings of virtual numbers to real ones, and the answers a lookup gives.

Three kinds of binding, for a virtual number X and a calling party C (all canonical numbers:
E.164, or a national-only number written the same way, see translate.numbers):

``ax``
    X reaches A from any caller. A sees X (``present="virtual"``) or the real caller
    (``present="caller"``).
``axb``
    A calling X reaches B, B calling X reaches A, both see X. Anyone else is refused
    (``not_party``) unless X also has an ``ax`` or ``axn`` binding, which then takes the
    callers outside the pairs: that is the out-of-binding policy. One X serves many pairs
    as long as no real number is in two live pairs on the same X.
``axn``
    Anyone but A calling X reaches A, and A sees X; A calling X reaches the binding's
    default B (``b``), and B sees X.

Each binding has an operator- or API-chosen ``id``, an optional expiry (epoch seconds),
a ``record`` flag, an optional media mode (``passthrough``, ``relay``, ``rtpengine``:
how the engine carries the call's media, overriding the trunk's) and optional limits:
maximum call length, calls per hour, allowed hours. Bindings made through the API also
carry their owner: the ``tenant`` (the platform that made it, which alone may see or
change it, and whose caps and blocklist apply to its calls and messages:
``translate.limits``) and an ``out_id``, free text the platform uses for its own
reference (an order id). Neither takes part in a lookup.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final, Literal, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from translate.numbers import is_number, mask

__all__ = [
    "KINDS",
    "MEDIA_MODES",
    "NAME_PATTERN",
    "RECORD_PASSTHROUGH",
    "Binding",
    "Hours",
    "Kind",
    "Refusal",
    "Route",
    "binding_problems",
    "is_name",
    "time_zone",
]

Kind = Literal["ax", "axb", "axn"]
KINDS: Final[tuple[Kind, ...]] = ("ax", "axb", "axn")
#: How a binding may ask the engine to carry its calls' media (None: the trunk decides).
MediaMode = Literal["passthrough", "relay", "rtpengine"]
MEDIA_MODES: Final[tuple[MediaMode, ...]] = ("passthrough", "relay", "rtpengine")
#: Why ``record=True`` with ``media: passthrough`` is refused (rule ``record-passthrough``).
RECORD_PASSTHROUGH: Final = "a recorded call cannot be passthrough: its media must reach ansim"


@dataclass(frozen=True, slots=True)
class Hours:
    """A daily window in which a binding may be used, in a time zone.

    ``start`` and ``end`` are minutes after midnight; a window with ``end <= start``
    wraps past midnight (22:00-06:00).
    """

    start: int
    end: int
    timezone: str

    @classmethod
    def parse(cls, text: str, timezone: str) -> Hours:
        """``"09:00-18:00"`` in ``timezone`` (an IANA name); ValueError when malformed."""
        first, sep, second = text.partition("-")
        if not sep:
            raise ValueError(f"hours must look like 09:00-18:00, got {text!r}")
        time_zone(timezone)
        return cls(_minutes(first), _minutes(second), timezone)

    def __str__(self) -> str:
        return (
            f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"
        )


def time_zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; ValueError for anything else (``Asia``, a folder of
    the zone database, and names too long for a file name included)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}") from None


def _minutes(text: str) -> int:
    hour, sep, minute = text.strip().partition(":")
    if not (sep and hour.isdigit() and minute.isdigit() and len(minute) == 2):
        raise ValueError(f"time must look like 09:30, got {text.strip()!r}")
    value = int(hour) * 60 + int(minute)
    if int(minute) > 59 or value > 24 * 60:
        raise ValueError(f"time out of range: {text.strip()!r}")
    return value


@dataclass(frozen=True, slots=True)
class Binding:
    """One binding, with numbers already canonical; see the module docstring for kinds."""

    id: str
    kind: Kind
    virtual: str
    a: str
    b: str | None = None
    present: Literal["virtual", "caller"] = "virtual"
    record: bool = False
    expires: float | None = None
    max_seconds: int | None = None
    calls_per_hour: int | None = None
    hours: Hours | None = None
    tenant: str | None = None
    out_id: str | None = None
    media: MediaMode | None = None

    def parties(self) -> tuple[str, ...]:
        """Real numbers that have a caller-specific route on X: both of an axb, A of an axn."""
        if self.kind == "axb":
            return (self.a, self.b) if self.b is not None else (self.a,)
        if self.kind == "axn":
            return (self.a,)
        return ()

    def numbers(self) -> tuple[str, ...]:
        """The real numbers of the binding: A, and B where there is one."""
        return (self.a,) if self.b is None else (self.a, self.b)

    def has_head(self) -> bool:
        """Whether the binding answers callers without a caller-specific route on X."""
        return self.kind != "axb"

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires

    def describe(self) -> str:
        """A one-line summary with real numbers masked (for logs and the CLI)."""
        parts = [f"{self.kind} {self.id!r} {self.virtual} -> a={mask(self.a)}"]
        if self.b is not None:
            parts.append(f"b={mask(self.b)}")
        if self.kind == "ax" and self.present == "caller":
            parts.append("present=caller")
        if self.record:
            parts.append("record")
        if self.media is not None:
            parts.append(f"media={self.media}")
        if self.expires is not None:
            when = dt.datetime.fromtimestamp(self.expires, dt.UTC)
            parts.append(f"expires={when.isoformat(timespec='seconds')}")
        if self.max_seconds is not None:
            parts.append(f"max_seconds={self.max_seconds}")
        if self.calls_per_hour is not None:
            parts.append(f"calls_per_hour={self.calls_per_hour}")
        if self.hours is not None:
            parts.append(f"hours={self.hours} {self.hours.timezone}")
        if self.tenant is not None:
            parts.append(f"tenant={self.tenant}")
        return " ".join(parts)


def binding_problems(binding: Binding) -> list[tuple[str, str, str]]:
    """Problems of one binding on its own, as (rule, field, message); empty when valid.

    Cross-binding rules (duplicates, conflicts) and expiry are checked by the store and
    the map compiler, which see the other bindings and the clock.
    """
    out: list[tuple[str, str, str]] = []
    if not binding.id or len(binding.id) > 128 or not binding.id.isprintable():
        out.append(("bad-id", "id", "id must be 1-128 printable characters"))
    if binding.kind not in KINDS:
        out.append(("bad-kind", "kind", f"kind must be one of {', '.join(KINDS)}"))
    for field in ("virtual", "a", "b"):
        value = getattr(binding, field)
        if value is not None and not is_number(value):
            out.append(("bad-number", field, f"{field} is not a number in canonical form"))
    if binding.kind in ("axb", "axn") and binding.b is None:
        out.append(("missing-b", "b", f"{binding.kind} needs b"))
    if binding.kind == "ax" and binding.b is not None:
        out.append(("unexpected-b", "b", "ax has no b; use axb or axn"))
    if binding.kind != "ax" and binding.present != "virtual":
        out.append(("present-ax-only", "present", "present: caller is only for ax"))
    if binding.b is not None and binding.a == binding.b:
        out.append(("same-party", "b", "a and b are the same number"))
    if binding.media is not None and binding.media not in MEDIA_MODES:
        out.append(("bad-media", "media", f"media must be one of {', '.join(MEDIA_MODES)}"))
    if binding.record and binding.media == "passthrough":
        out.append(("record-passthrough", "media", RECORD_PASSTHROUGH))
    if binding.virtual in (binding.a, binding.b):
        out.append(("virtual-is-party", "virtual", "the virtual number is also a real party"))
    for field in ("max_seconds", "calls_per_hour"):
        value = getattr(binding, field)
        if value is not None and value <= 0:
            out.append(("bad-limit", field, f"{field} must be positive"))
    if binding.tenant is not None and not is_name(binding.tenant):
        out.append(("bad-tenant", "tenant", f"tenant must match {NAME_PATTERN}"))
    out_id = binding.out_id
    if out_id is not None and (not out_id or len(out_id) > 128 or not out_id.isprintable()):
        out.append(("bad-out-id", "out_id", "out_id must be 1-128 printable characters"))
    return out


#: Tenant and pool names: short, lower case, safe in keys (no separator), URLs and labels.
NAME_PATTERN: Final = "^[a-z0-9][a-z0-9_-]{0,63}$"
_NAME_FIRST: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_NAME_REST: Final = _NAME_FIRST | frozenset("_-")


def is_name(text: str) -> bool:
    """Whether ``text`` is a valid tenant or pool name (see NAME_PATTERN)."""
    return 0 < len(text) <= 64 and text[0] in _NAME_FIRST and all(c in _NAME_REST for c in text[1:])


class Route(NamedTuple):
    """A lookup's answer when the call goes ahead.

    ``callee`` is the real number to call, ``present`` the number the callee must see as
    caller, ``kind`` the binding kind, ``record`` whether to record, ``max_seconds`` the
    longest the call may last (None: no limit), ``direction`` who calls whom in the
    binding's terms: "N->A" (anyone to A of an ax or axn), "A->B" (A to B of an axb, A to
    the default B of an axn), "B->A" (B to A of an axb), or "" for an axb or axn entry
    written before directions were recorded; ``media`` the binding's media mode ("" when
    it names none: the trunk's applies); ``calls_per_hour`` the binding's own cap and
    ``tenant`` its tenant ("" for none), for ``translate.limits``. A named tuple: the
    store builds one per lookup, and a tuple is the cheapest object to build.
    """

    callee: str
    present: str
    binding_id: str
    kind: str
    record: bool
    max_seconds: int | None
    direction: str = ""
    media: str = ""
    calls_per_hour: int | None = None
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A lookup's (or ``translate.limits``') answer when the call or message must not go
    ahead; ``reason`` is a key of ``translate.refusals.REFUSALS``, which says how each
    is answered."""

    reason: str
    binding_id: str | None
