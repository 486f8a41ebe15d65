"""Trunks and routes (`config/trunks.yaml`): who may send calls, where calls go.

A trunk names the networks its calls come from, where calls to it are sent, how its
numbers are written, and how long to wait for it. Routes map callee prefixes (E.164,
longest match wins) to an ordered list of trunks tried in turn on 408, 5xx, timeout or
transport error.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from translate.numbers import NumberPlan, is_number, national_form, normalise
from translate.yaml_source import load_model

from .sip.bodies import BodyPolicy, pass_body_problem
from .sip.routing import Peer

# Headers ansim writes itself on every leg: naming one in pass_headers would send the
# other leg's value beside (or instead of) ansim's own.
BUILT_HEADERS = frozenset(
    (
        "via", "from", "to", "call-id", "cseq", "max-forwards", "contact", "route",
        "record-route", "p-asserted-identity", "content-type", "content-length",
        "content-disposition", "content-encoding", "allow", "supported", "require",
        "unsupported", "accept", "session-expires", "min-se", "rseq", "rack",
    )
)  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlanSettings(_Strict):
    """How a trunk writes numbers nationally."""

    country_code: str = Field("82", pattern=r"^[1-9][0-9]{0,2}$")
    trunk_prefix: str = Field("0", pattern=r"^[0-9]{0,3}$")
    international_prefix: str = Field("00", pattern=r"^[0-9]{1,4}$")


class Trunk(_Strict):
    """One carrier trunk."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    accept_from: list[str] = Field(default_factory=list, description="networks calls may come from")
    address: str | None = Field(
        None, description="host:port calls to this trunk are sent to (IP literal)"
    )
    transport: Literal["udp", "tcp"] = "udp"
    plan: PlanSettings = PlanSettings()
    number_format: Literal["e164", "national"] = Field(
        "e164", description="how callee and presented numbers are written toward this trunk"
    )
    invite_timeout: float = Field(
        4.0, gt=0, le=60, description="seconds without any response before failover"
    )
    no_answer_timeout: float = Field(
        90.0, gt=0, le=600, description="seconds of ringing before giving up (480)"
    )

    @field_validator("accept_from")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("expected HOST:PORT")
            ipaddress.ip_address(host.strip("[]"))
        return value

    def number_plan(self) -> NumberPlan:
        p = self.plan
        return NumberPlan(p.country_code, p.trunk_prefix, p.international_prefix)

    def peer(self) -> Peer:
        assert self.address is not None
        host, _, port = self.address.rpartition(":")
        return (self.transport, host.strip("[]"), int(port))

    def write_number(self, e164: str) -> str:
        """``e164`` (a canonical number) as this trunk expects to see it. A national-only
        number (no E.164 form, such as China's 700 range) is never written with "+": as
        its national number toward a trunk of its own country, with the trunk's
        international prefix toward any other."""
        national = national_form(e164)
        if national is not None:
            if national[0] == self.plan.country_code:
                return national[1]
            return self.plan.international_prefix + e164[1:]
        if self.number_format == "national":
            cc = "+" + self.plan.country_code
            if e164.startswith(cc):
                return self.plan.trunk_prefix + e164[len(cc) :]
        return e164


class Route(_Strict):
    """Callees starting with ``prefix`` go to ``trunks``, tried in order."""

    prefix: str = Field(pattern=r"^\+[0-9]*$")
    trunks: list[str] = Field(min_length=1)


class TrunkConfig(_Strict):
    """The whole of `trunks.yaml`."""

    trunks: list[Trunk] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)
    unknown_source: Literal["reject", "drop"] = Field(
        "reject", description="requests from outside every trunk's networks: 403, or no answer"
    )
    pass_headers: list[str] = Field(
        default_factory=list,
        description="header names passed from one leg to the other (all others are built fresh or dropped)",
    )
    pass_bodies: list[str] = Field(
        default_factory=list,
        description=(
            "content types of bodies (or multipart parts) passed from one leg to the other as "
            "received; SDP and DTMF are always rebuilt, every other type is dropped"
        ),
    )

    @field_validator("pass_headers")
    @classmethod
    def _pass_headers(cls, value: list[str]) -> list[str]:
        for name in value:
            if name.strip().lower() in BUILT_HEADERS:
                raise ValueError(f"{name} is written by ansim on each leg and cannot be passed")
        return value

    @field_validator("pass_bodies")
    @classmethod
    def _pass_bodies(cls, value: list[str]) -> list[str]:
        for mime in value:
            problem = pass_body_problem(mime)
            if problem is not None:
                raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _check_routes(self) -> TrunkConfig:
        names = [t.name for t in self.trunks]
        if len(set(names)) != len(names):
            raise ValueError("trunk names must be unique")
        for route in self.routes:
            for name in route.trunks:
                if name not in names:
                    raise ValueError(f"route {route.prefix!r} names unknown trunk {name!r}")
                trunk = self.trunks[names.index(name)]
                if trunk.address is None:
                    raise ValueError(
                        f"route {route.prefix!r} uses trunk {name!r}, which has no address"
                    )
        return self


class TrunkTable:
    """Compiled trunk config: source address → trunk, callee → ordered trunks."""

    def __init__(self, config: TrunkConfig) -> None:
        self.config = config
        self.by_name = {t.name: t for t in config.trunks}
        self._plans = {t.name: t.number_plan() for t in config.trunks}
        self._nets = [
            (ipaddress.ip_network(net, strict=False), t)
            for t in config.trunks
            for net in t.accept_from
        ]
        self._by_ip: dict[str, Trunk | None] = {}
        self._routes = sorted(config.routes, key=lambda r: len(r.prefix), reverse=True)
        self.pass_headers = tuple(h.strip().lower().encode() for h in config.pass_headers)
        self.body_policy = BodyPolicy(tuple(m.strip().lower().encode() for m in config.pass_bodies))

    def trunk_for_source(self, host: str) -> Trunk | None:
        try:
            return self._by_ip[host]
        except KeyError:
            pass
        addr = ipaddress.ip_address(host)
        found = None
        for net, trunk in self._nets:
            if addr in net:
                found = trunk
                break
        if len(self._by_ip) < 65536:
            self._by_ip[host] = found
        return found

    def trunks_for(self, callee: str) -> list[Trunk]:
        for route in self._routes:
            if callee.startswith(route.prefix):
                return [self.by_name[n] for n in route.trunks]
        return []

    def plan_of(self, trunk: Trunk) -> NumberPlan:
        return self._plans[trunk.name]

    def normalise(self, raw: str, trunk: Trunk | None, default: NumberPlan) -> str | None:
        value = normalise(raw, self._plans[trunk.name] if trunk is not None else default)
        return value if isinstance(value, str) and is_number(value) else None


def load_trunks(path: str | Path) -> TrunkTable:
    p = Path(path)
    if not p.exists():
        return TrunkTable(TrunkConfig())
    return TrunkTable(load_model(p, TrunkConfig))
