"""Usage limits and abuse rules: what they decide for a call or a message.

``Limits.decide(virtual, caller, now, medium)`` is the one decision calls and SMS both
ask for: the translation store's lookup (``Store.lookup``: unknown, expired, not a
party, outside the binding's ``hours``), then, for a route, in this order:

1. **Blocklists**: the caller on the global blocklist, or on the blocklist of X's
   tenant (``blocked``).
2. **The marketing rule's blocks**: the caller blocked on X (or on X's tenant) by the
   rule below, until the block ends (``marketing``).
3. **The marketing-pattern rule** (``marketing`` in the settings): a real party that
   reaches more than ``distinct`` distinct parties through one X (``scope: virtual``)
   or through the numbers of one tenant (``scope: tenant``; X itself for a binding
   without tenant) within a window of ``window`` seconds is blocked there for
   ``block_for`` seconds; the attempt that crosses the line is refused, an alert is
   raised (``translate.abuse_events``: the outbox of the abuse store, a metric, a log
   line). Calls and messages count together: a party is reached by either.
4. **Caps** per binding (``limit``), per virtual number (``virtual_limit``) and per
   tenant (``tenant_limit``): calls and messages admitted per clock hour and per
   calendar day (in ``timezone``). A binding's own ``calls_per_hour`` replaces the
   default for that binding. Refused attempts do not count.

How each refusal is answered is ``translate.refusals``' (SIP status, SMPP status).
Every count and block is shared by all processes through the abuse store
(``translate.abuse_store``): one small write transaction per call or message that
something counts, exact across processes. Windows are fixed (clock hours, calendar
days, windows of the marketing rule since the epoch): a party can place up to twice a
cap across the turn of an hour, as with any fixed-window counter. With no cap and no
rule configured, a call costs one read of the blocklists (one read transaction).

Should the abuse store fail (full, or broken), the attempt is admitted and the error
logged (at most once a minute): a broken counter does not stop the service.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import time
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from datetime import time as day_time
from typing import Any, Final, Literal, Protocol
from zoneinfo import ZoneInfo

import lmdb
import msgpack
from pydantic import BaseModel, ConfigDict, Field, field_validator

from translate.abuse_events import MARKETING_BLOCK, AbuseAlert
from translate.abuse_store import (
    KIND_BLOCKLIST,
    KIND_MARKETING,
    SEP,
    AbuseStore,
    AbuseStoreError,
    block_key,
    hour_bytes,
    party_hash,
)
from translate.bindings import Refusal, Route, is_name, time_zone
from translate.history import Attribution
from translate.numbers import mask

__all__ = [
    "CALL",
    "SMS",
    "Caps",
    "LimitSettings",
    "Limits",
    "MarketingRule",
    "within_hours",
]

log = logging.getLogger(__name__)

CALL: Final = "call"
SMS: Final = "sms"
Medium = Literal["call", "sms"]
_U32 = struct.Struct("<I")
_W = struct.Struct(">I")
_pack_u32 = _U32.pack
_unpack_u32 = _U32.unpack


def within_hours(start: int, end: int, timezone: str, now: float) -> bool:
    """Whether ``now`` falls in the daily window [start, end) minutes in ``timezone``.

    A window with end <= start wraps past midnight; 00:00-24:00 is always open.
    """
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    minute = local.hour * 60 + local.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


# -- settings (the ``limits:`` section of ansim.yaml) -------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Caps(_Strict):
    """Calls and messages admitted per clock hour and per calendar day (null: no cap)."""

    calls_per_hour: int | None = Field(None, gt=0)
    calls_per_day: int | None = Field(None, gt=0)
    sms_per_hour: int | None = Field(None, gt=0)
    sms_per_day: int | None = Field(None, gt=0)

    def of(self, medium: str) -> tuple[int | None, int | None]:
        """(per hour, per day) for ``medium``."""
        if medium == CALL:
            return self.calls_per_hour, self.calls_per_day
        return self.sms_per_hour, self.sms_per_day

    def over(self, defaults: Caps) -> Caps:
        """These caps, each unset one taken from ``defaults``."""
        return Caps(
            **{
                name: getattr(self, name)
                if getattr(self, name) is not None
                else getattr(defaults, name)
                for name in Caps.model_fields
            }
        )


class MarketingRule(_Strict):
    """A party reaching more than ``distinct`` distinct parties through one X (or one
    tenant's numbers) within ``window`` seconds is blocked there for ``block_for``."""

    distinct: int = Field(gt=0, description="distinct parties a real party may reach")
    window: float = Field(86400.0, ge=60, le=30 * 86400, description="seconds")
    block_for: float = Field(86400.0, ge=60, description="seconds the party stays blocked")
    scope: Literal["virtual", "tenant"] = Field(
        "virtual", description="counted per virtual number, or per tenant (all its numbers)"
    )


class LimitSettings(_Strict):
    """Caps, the marketing rule and where their shared counters live."""

    store: str = Field(
        "../var/limits.lmdb",
        description="LMDB folder of the shared counters, blocks and blocklists "
        "(relative to the configuration folder)",
    )
    timezone: str = Field("UTC", description="when a calendar day starts, for per-day caps")
    binding: Caps = Field(Caps(), description="caps of every binding")
    virtual: Caps = Field(Caps(), description="caps of every virtual number")
    tenant: Caps = Field(Caps(), description="caps of every tenant")
    tenants: dict[str, Caps] = Field(
        default_factory=dict, description="one tenant's caps (unset ones: `tenant`'s)"
    )
    marketing: MarketingRule | None = None

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        time_zone(value)
        return value

    @field_validator("tenants")
    @classmethod
    def _tenants(cls, value: dict[str, Caps]) -> dict[str, Caps]:
        for name in value:
            if not is_name(name):
                raise ValueError(f"{name!r} is not a tenant name")
        return value

    def resolved(self, folder: str | os.PathLike[str]) -> LimitSettings:
        from translate.settings import config_path

        return self.model_copy(update={"store": config_path(folder, self.store)})


# -- the decision -------------------------------------------------------------------------------


class Translator(Protocol):
    """What Limits needs of translate.store.Store."""

    def lookup(self, virtual: str, caller: str, now: float) -> Route | Refusal: ...


class Limits:
    """Decides calls and messages with the lookup, the blocklists, the marketing rule and
    the caps (module docstring). One per process, on the thread that decides."""

    def __init__(self, store: Translator, abuse: AbuseStore, settings: LimitSettings) -> None:
        self.store = store
        self.abuse = abuse
        self.settings = settings
        self.rule = settings.marketing
        self._zone = ZoneInfo(settings.timezone)
        self._binding = {m: settings.binding.of(m) for m in (CALL, SMS)}
        self._virtual = {m: settings.virtual.of(m) for m in (CALL, SMS)}
        self._tenant_caps: dict[str, dict[str, tuple[int | None, int | None]]] = {}
        self._hour = -1
        self._midnight = 0.0
        self._hour_end = b""
        self._day_end = b""
        self._error_logged = 0.0
        self._blocks_pruned = 0.0
        # (reason, medium) -> refusals; alerts raised; store errors: read by metrics.
        self.refused: dict[tuple[str, str], int] = {}
        self.alerts = 0
        self.errors = 0

    def attribution(self, binding_ids: Iterable[str]) -> Mapping[str, Attribution]:
        """The owners of ``binding_ids``, from the store decisions are made on (its
        ``attribution``; none when it keeps no owners), for the records' writer threads."""
        found = getattr(self.store, "attribution", None)
        return {} if found is None else found(binding_ids)

    def decide(self, virtual: str, caller: str, now: float, medium: str) -> Route | Refusal:
        """The decision for a call (``medium`` CALL) or a message (SMS) from ``caller`` to
        ``virtual`` at epoch time ``now``: the Route, counted, or a Refusal."""
        route = self.store.lookup(virtual, caller, now)
        if isinstance(route, Refusal):
            return route
        refusal = self.check(route, virtual, caller, now, medium)
        return route if refusal is None else refusal

    def peek(self, virtual: str, caller: str, now: float, medium: str) -> Route | Refusal:
        """The decision ``decide`` would make now, with nothing counted or blocked (for
        ``ansim numbers lookup``)."""
        route = self.store.lookup(virtual, caller, now)
        if isinstance(route, Refusal):
            return route
        refusal = self.check(route, virtual, caller, now, medium, count=False)
        return route if refusal is None else refusal

    def _buckets(self, now: float) -> None:
        """The end hours of the current hour's and day's buckets."""
        hour = int(now // 3600)
        if hour == self._hour and now < self._midnight:
            return
        self._hour = hour
        self._hour_end = hour_bytes(hour + 1)
        zone = self._zone
        today = datetime.fromtimestamp(now, zone).date()
        midnight = datetime.combine(today + timedelta(days=1), day_time(0), zone).timestamp()
        self._midnight = midnight
        self._day_end = hour_bytes(math.ceil(midnight / 3600))

    def _tenant(self, tenant: str, medium: str) -> tuple[int | None, int | None]:
        caps = self._tenant_caps.get(tenant)
        if caps is None:
            s = self.settings
            own = s.tenants.get(tenant)
            merged = own.over(s.tenant) if own is not None else s.tenant
            caps = self._tenant_caps[tenant] = {m: merged.of(m) for m in (CALL, SMS)}
        return caps[medium]

    def check(
        self,
        route: Route,
        virtual: str,
        caller: str,
        now: float,
        medium: str,
        *,
        count: bool = True,
    ) -> Refusal | None:
        """Blocklists, the marketing rule and the caps for ``route`` (see the module
        docstring); the attempt is counted when admitted (unless ``count`` is False)."""
        if now >= self._midnight or int(now // 3600) != self._hour:
            self._buckets(now)
        m = b"c" if medium == CALL else b"s"
        caps: list[tuple[bytes, int, str]] = []
        per_hour, per_day = self._binding[medium]
        if medium == CALL and route.calls_per_hour is not None:
            per_hour = route.calls_per_hour
        if per_hour is not None or per_day is not None:
            bid = route.binding_id.encode()
            if per_hour is not None:
                caps.append((self._hour_end + m + b"hb" + bid, per_hour, "limit"))
            if per_day is not None:
                caps.append((self._day_end + m + b"db" + bid, per_day, "limit"))
        per_hour, per_day = self._virtual[medium]
        if per_hour is not None:
            caps.append((self._hour_end + m + b"hx" + virtual.encode(), per_hour, "virtual_limit"))
        if per_day is not None:
            caps.append((self._day_end + m + b"dx" + virtual.encode(), per_day, "virtual_limit"))
        tenant = route.tenant
        if tenant:
            per_hour, per_day = self._tenant(tenant, medium)
            if per_hour is not None:
                caps.append(
                    (self._hour_end + m + b"ht" + tenant.encode(), per_hour, "tenant_limit")
                )
            if per_day is not None:
                caps.append((self._day_end + m + b"dt" + tenant.encode(), per_day, "tenant_limit"))
        rule = self.rule
        blocks = []
        scope_code = b"x"
        scope_id = virtual
        if caller:
            blocks.append(block_key(KIND_BLOCKLIST, b"g", "", caller))
            if tenant:
                blocks.append(block_key(KIND_BLOCKLIST, b"t", tenant, caller))
            if rule is not None:
                if rule.scope == "tenant" and tenant:
                    scope_code, scope_id = b"t", tenant
                blocks.append(block_key(KIND_MARKETING, scope_code, scope_id, caller))
        try:
            if not caps and (rule is None or not caller):
                return self._read_only(blocks, route, now, medium, count)
            return self._counted(
                blocks, caps, route, caller, now, medium, scope_code, scope_id, tenant, count
            )
        except (lmdb.Error, AbuseStoreError) as exc:
            self.errors += 1
            if now - self._error_logged >= 60:
                self._error_logged = now
                log.error("abuse store failed; admitting without counting: %s", exc)
            return None

    def _blocked(self, txn: lmdb.Transaction, blocks: list[bytes], now: float) -> str | None:
        db = self.abuse.blocks
        for key in blocks:
            raw = txn.get(key, db=db)
            if raw is not None:
                until = msgpack.unpackb(raw)[0]
                if until is None or now < until:
                    return "blocked" if key[:1] == KIND_BLOCKLIST else "marketing"
        return None

    def _refuse(self, reason: str, route: Route, medium: str) -> Refusal:
        key = (reason, medium)
        self.refused[key] = self.refused.get(key, 0) + 1
        return Refusal(reason, route.binding_id)

    def _read_only(
        self, blocks: list[bytes], route: Route, now: float, medium: str, count: bool
    ) -> Refusal | None:
        if not blocks:
            return None
        with self.abuse.read() as txn:
            reason = self._blocked(txn, blocks, now)
        if reason is None:
            return None
        return self._refuse(reason, route, medium) if count else Refusal(reason, route.binding_id)

    def _counted(
        self,
        blocks: list[bytes],
        caps: list[tuple[bytes, int, str]],
        route: Route,
        caller: str,
        now: float,
        medium: str,
        scope_code: bytes,
        scope_id: str,
        tenant: str,
        count: bool,
    ) -> Refusal | None:
        abuse = self.abuse
        counts = abuse.counts
        txn = abuse.write() if count else abuse.read()
        try:
            reason = self._blocked(txn, blocks, now)
            if reason is not None:
                txn.abort()
                return (
                    self._refuse(reason, route, medium)
                    if count
                    else Refusal(reason, route.binding_id)
                )
            puts: list[tuple[bytes, bytes, Any]] = []
            rule = self.rule
            if rule is not None and caller:
                window = int(now // rule.window)
                end = hour_bytes(math.ceil((window + 1) * rule.window / 3600))
                base = (
                    scope_code + scope_id.encode() + SEP + caller.encode() + SEP + _W.pack(window)
                )
                seen = end + base + party_hash(route.callee)
                if txn.get(seen, db=abuse.distinct) is None:
                    count_key = end + b"mw" + base
                    raw = txn.get(count_key, db=counts)
                    reached = (_unpack_u32(raw)[0] if raw is not None else 0) + 1
                    if reached > rule.distinct:
                        if not count:
                            txn.abort()
                            return Refusal("marketing", route.binding_id)
                        self._block(txn, route, caller, now, medium, scope_code, scope_id, tenant,
                                    reached)  # fmt: skip
                        abuse.commit(txn)
                        return self._refuse("marketing", route, medium)
                    puts.append((seen, b"", abuse.distinct))
                    puts.append((count_key, _pack_u32(reached), counts))
            for key, limit, reason in caps:
                raw = txn.get(key, db=counts)
                n = _unpack_u32(raw)[0] if raw is not None else 0
                if n >= limit:
                    txn.abort()
                    return (
                        self._refuse(reason, route, medium)
                        if count
                        else Refusal(reason, route.binding_id)
                    )
                puts.append((key, _pack_u32(n + 1), counts))
            if not count:
                txn.abort()
                return None
            for key, value, db in puts:
                txn.put(key, value, db=db)
        except BaseException:
            txn.abort()
            raise
        abuse.commit(txn)
        return None

    def _block(
        self,
        txn: lmdb.Transaction,
        route: Route,
        caller: str,
        now: float,
        medium: str,
        scope_code: bytes,
        scope_id: str,
        tenant: str,
        reached: int,
    ) -> None:
        """The marketing rule blocks ``caller`` on its scope, with its alert."""
        rule = self.rule
        assert rule is not None
        until = now + rule.block_for
        note = f"marketing rule: {reached} distinct parties within {rule.window:g} s"
        abuse = self.abuse
        txn.put(
            block_key(KIND_MARKETING, scope_code, scope_id, caller),
            msgpack.packb([until, now, note]),
            db=abuse.blocks,
        )
        scope = "tenant" if scope_code == b"t" else "virtual"
        alert = AbuseAlert(
            kind=MARKETING_BLOCK,
            at=now,
            party=caller,
            scope=scope,
            scope_id=scope_id,
            distinct=reached,
            window=rule.window,
            until=until,
            medium=medium,
            binding_id=route.binding_id,
            tenant=tenant or None,
        )
        txn.put(abuse.alert_key(now), msgpack.packb(alert.to_dict()), db=abuse.alerts_db)
        self.alerts += 1
        log.warning(
            "marketing pattern: party blocked",
            extra={
                "party": mask(caller),
                "scope": scope,
                "scope_id": scope_id,
                "distinct": reached,
                "window": rule.window,
                "until": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until)),
                "medium": medium,
                "binding": route.binding_id,
            },
        )

    def usage(self, scope: str, scope_id: str, now: float) -> dict[tuple[str, str], int]:
        """What ``scope`` ("binding", "virtual" or "tenant") ``scope_id`` has used in the
        current hour and day: {(medium, "hour" or "day"): count}."""
        self._buckets(now)
        code = {"binding": b"b", "virtual": b"x", "tenant": b"t"}[scope]
        out = {}
        for medium, m in ((CALL, b"c"), (SMS, b"s")):
            for period, end, p in (("hour", self._hour_end, b"h"), ("day", self._day_end, b"d")):
                out[(medium, period)] = self.abuse.count(end + m + p + code + scope_id.encode())
        return out

    def caps_of(self, scope: str, scope_id: str, medium: str) -> tuple[int | None, int | None]:
        """The (per hour, per day) caps that apply to ``scope`` ``scope_id`` (a binding's
        own calls_per_hour is not known here: see its binding)."""
        if scope == "tenant":
            return self._tenant(scope_id, medium)
        return (self._binding if scope == "binding" else self._virtual)[medium]

    # -- housekeeping -------------------------------------------------------------------------
    def prune(self, now: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired counters (see AbuseStore.prune), and once an
        hour the marketing rule's ended blocks."""
        if now - self._blocks_pruned >= 3600:
            self._blocks_pruned = now
            self.abuse.prune_blocks(now)
        return self.abuse.prune(now, limit)
