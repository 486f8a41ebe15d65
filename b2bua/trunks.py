"""Trunks and routes (`config/trunks.yaml`): who may send calls, where calls go.

A trunk names the networks its calls come from, where calls to it are sent, how its
numbers are written, and how long to wait for it. Routes map callee prefixes (E.164,
longest match wins) to an ordered list of trunks tried in turn on 408, 5xx, timeout or
transport error.
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from media.settings import MediaMode
from translate.numbers import NumberPlan, is_number, national_form, normalise
from translate.yaml_source import load_model

from .sip.bodies import BodyPolicy, pass_body_problem
from .sip.routing import Peer
from .trunk_auth import InboundAuth, OutboundCredentials, RegisterSettings

log = logging.getLogger(__name__)

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


class TrunkTls(_Strict):
    """TLS toward and from one trunk (with ``transport: tls``, or for its inbound
    connections)."""

    verify_client: bool = Field(
        False,
        description="connections from this trunk's networks must present a certificate "
        "issued by `ca` (mutual TLS)",
    )
    ca: str | None = Field(
        None,
        description="PEM file of the CAs this trunk's certificates come from (relative to the "
        "configuration folder); null: sip.tls.ca, else the system's CAs",
    )
    peer_names: list[str] = Field(
        default_factory=list,
        description="names (DNS subjectAltName or CN) one of which the trunk's client "
        "certificate must carry; empty: any certificate from `ca`",
    )
    server_name: str | None = Field(
        None,
        description="name the trunk's server certificate must carry (and SNI); null: the "
        "certificate chain is verified, not its name",
    )
    verify_server: bool = Field(
        True, description="verify the trunk's server certificate (false only for tests)"
    )


class Trunk(_Strict):
    """One carrier trunk."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    accept_from: list[str] = Field(default_factory=list, description="networks calls may come from")
    address: str | None = Field(
        None, description="host:port calls to this trunk are sent to (IP literal)"
    )
    transport: Literal["udp", "tcp", "tls"] = "udp"
    tls: TrunkTls | None = None
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
    media: MediaMode | None = Field(
        None,
        description="how the media of calls from this trunk (or, for calls from a trunk "
        "naming none, to it) is carried; null: the media section's mode; a binding's "
        "media overrides it",
    )
    record: bool = Field(False, description="record every call from this trunk (encrypted)")
    srtp: Literal["mandatory", "optional", "off"] | None = Field(
        None,
        description="relay mode: what calls to this trunk are offered: mandatory (RTP/SAVP "
        "with ansim's SDES keys), optional (RTP/AVP with them: best effort), off (plain "
        "RTP); null: the caller's profile",
    )
    auth: InboundAuth | None = Field(
        None,
        description="digest credentials this trunk's INVITEs must carry (challenged with 407 "
        "or 401); with no accept_from the trunk is known by them alone",
    )
    credentials: OutboundCredentials | None = Field(
        None, description="what ansim answers this trunk's 401/407 challenges with"
    )
    registration: RegisterSettings | None = Field(
        None, description="register ansim at this trunk's registrar (needs credentials)"
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
    auth_realm: str = Field(
        "ansim", min_length=1, description="realm of the trunks' challenges that name none"
    )
    nonce_lifetime: float = Field(
        300.0, ge=1, le=86400, description="seconds a challenge's nonce is good for (then stale)"
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
        self._check_auth()
        return self

    def _check_auth(self) -> None:
        seen: dict[tuple[str, str], str] = {}
        statuses = set()
        for t in self.trunks:
            if t.registration is not None:
                if t.credentials is None:
                    raise ValueError(f"trunk {t.name!r} registers but has no credentials")
                if t.registration.registrar is None and t.address is None:
                    raise ValueError(f"trunk {t.name!r} registers but has no registrar or address")
            if t.auth is None:
                continue
            key = (t.auth.realm or self.auth_realm, t.auth.username)
            if key in seen:
                raise ValueError(
                    f"trunks {seen[key]!r} and {t.name!r} have the same auth username in one realm"
                )
            seen[key] = t.name
            if not t.accept_from:
                statuses.add(t.auth.status)
        if len(statuses) > 1:
            raise ValueError("trunks known by their credentials alone must share one auth status")


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
        # Trunks that authenticate: by (realm, username); those known by credentials alone
        # are challenged for requests from addresses no trunk accepts.
        self.auth_realm = config.auth_realm
        self.by_credentials = {
            (t.auth.realm or config.auth_realm, t.auth.username): t
            for t in config.trunks
            if t.auth is not None
        }
        self.credential_only = [
            t for t in config.trunks if t.auth is not None and not t.accept_from
        ]
        self.pass_headers = tuple(h.strip().lower().encode() for h in config.pass_headers)
        self.body_policy = BodyPolicy(tuple(m.strip().lower().encode() for m in config.pass_bodies))

    def trusted_networks(self) -> list[str]:
        """Every trunk's accept_from networks and the host of its address: the sources
        flood protection never limits."""
        nets = [net for t in self.config.trunks for net in t.accept_from]
        for t in self.config.trunks:
            if t.address is not None:
                nets.append(t.address.rpartition(":")[0].strip("[]"))
        return nets

    def trunk_for_address(self, peer: Peer) -> Trunk | None:
        """The trunk whose address is ``peer`` (transport, host, port), if any."""
        for t in self.config.trunks:
            if t.address is not None and t.peer() == peer:
                return t
        return None

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
    config = load_model(p, TrunkConfig)
    if any(t.auth or t.credentials for t in config.trunks) and p.stat().st_mode & 0o077:
        log.warning("%s holds trunk passwords and others may read it: chmod 600 it", p)
    return TrunkTable(config)
