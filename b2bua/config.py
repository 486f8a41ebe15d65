"""The engine configuration (`config/ansim.yaml`): schema, defaults, loading with positions.

Every section is a pydantic model with unknown keys refused, so a typo is an error that
names its file:line:column rather than a silently ignored setting. The ``numbers``
section's model belongs to translate (``translate.settings``). Every relative path is
relative to the configuration folder, whatever the current directory.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.settings import ApiSettings
from media.settings import MediaSettings
from translate.limits import LimitSettings
from translate.settings import NumbersSettings, config_path
from translate.yaml_source import load_model

from .flood import SCANNERS, FloodLimits
from .overload import OverloadLimits


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Strict):
    """One SIP listening socket."""

    transport: Literal["udp", "tcp", "tls"]
    host: str
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``udp:HOST:PORT``, ``tcp:HOST:PORT`` or ``tls:HOST:PORT`` (an IPv6 host in
        brackets)."""
        proto, sep, rest = text.partition(":")
        host, sep2, port = rest.rpartition(":")
        if not sep or not sep2 or proto not in ("udp", "tcp", "tls") or not port.isdigit():
            raise ValueError(
                f"expected udp:HOST:PORT, tcp:HOST:PORT or tls:HOST:PORT, got {text!r}"
            )
        return cls(transport=proto, host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


class TimerSettings(_Strict):
    """RFC 3261 timer base values, seconds."""

    t1: float = Field(0.5, gt=0, le=10)
    t2: float = Field(4.0, gt=0, le=64)
    t4: float = Field(5.0, gt=0, le=64)


class TlsSettings(_Strict):
    """SIP over TLS: ansim's certificate, the CAs it trusts, and the handshake."""

    certificate: str | None = Field(
        None,
        description="PEM file of ansim's certificate (and its chain); needed by tls: listeners",
    )
    key: str | None = Field(None, description="PEM file of the certificate's private key")
    ca: str | None = Field(
        None,
        description="PEM file of the CAs trusted for peers' certificates (clients under mutual "
        "TLS, servers ansim connects to); null: the system's CAs",
    )
    verify_client: bool = Field(
        False,
        description="require a client certificate from every source (trunks can ask it for "
        "their own sources with their tls.verify_client)",
    )
    min_version: Literal["1.2", "1.3"] = "1.2"
    handshake_timeout: float = Field(5.0, gt=0, le=60)
    watch: bool = Field(
        True, description="load a renewed certificate when its files change (SIGHUP always does)"
    )

    def resolved(self, folder: str | Path) -> TlsSettings:
        def fix(path: str | None) -> str | None:
            return None if path is None else config_path(folder, path)

        return self.model_copy(
            update={"certificate": fix(self.certificate), "key": fix(self.key), "ca": fix(self.ca)}
        )


class ConnectionSettings(_Strict):
    """Limits on inbound TCP and TLS connections."""

    max_total: int = Field(4096, ge=1, description="open inbound connections in all")
    max_per_source: int = Field(
        32, ge=1, description="from one address outside the trunks and the allow-list"
    )
    max_per_trusted_source: int = Field(
        1024, ge=1, description="from one address of a trunk or of flood.allow"
    )
    message_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a message may take to arrive once its first byte has (and a new "
        "connection's first message): slower senders are disconnected",
    )


class SipSettings(_Strict):
    """SIP signalling: sockets, addressing and protocol limits."""

    listen: list[str] = ["udp:127.0.0.1:5060", "tcp:127.0.0.1:5060"]
    advertise: str | None = Field(
        None, description="host[:port] written in Via and Contact; defaults to the listen address"
    )
    symmetric_response: bool = Field(
        True,
        description="send responses to the source address and port of the request "
        "(as if every Via had rport), the usual choice toward carrier trunks and NAT",
    )
    max_message: int = Field(65536, ge=1500, le=1 << 20)
    tcp_idle_timeout: float = Field(120.0, gt=0)
    connections: ConnectionSettings = ConnectionSettings()
    tls: TlsSettings = TlsSettings()
    timers: TimerSettings = TimerSettings()
    user_agent: str = "ansim"

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one listen address is needed")
        for item in value:
            Listen.parse(item)
        return value

    @model_validator(mode="after")
    def _tls_needs_certificate(self) -> SipSettings:
        if any(item.startswith("tls:") for item in self.listen) and not (
            self.tls.certificate and self.tls.key
        ):
            raise ValueError("a tls: listen address needs tls.certificate and tls.key")
        return self

    def listeners(self) -> list[Listen]:
        return [Listen.parse(item) for item in self.listen]


class FloodSettings(_Strict):
    """Flood protection: limits on sources that are neither trunks nor allow-listed."""

    enabled: bool = True
    allow: list[str] = Field(
        ["127.0.0.0/8", "::1/128"],
        description="networks never limited, besides every trunk's accept_from and address",
    )
    requests: int = Field(16, ge=1, description="requests an unknown source may send ...")
    requests_seconds: float = Field(2.0, gt=0, description="... per this many seconds")
    calls: int = Field(4, ge=1, description="INVITEs an unknown source may send ...")
    calls_seconds: float = Field(2.0, gt=0, description="... per this many seconds")
    ban_seconds: float = Field(
        600.0, gt=0, description="how long a source over a limit is dropped after its last datagram"
    )
    scanners: list[str] = Field(
        default_factory=lambda: list(SCANNERS),
        description="User-Agent (or From) substrings of scanners, matched without case: banned",
    )
    drop_probes: bool = Field(
        True, description="OPTIONS and REGISTER from unknown sources get no answer"
    )

    @field_validator("allow")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    def limits(self) -> FloodLimits:
        return FloodLimits(
            requests=self.requests,
            requests_seconds=self.requests_seconds,
            calls=self.calls,
            calls_seconds=self.calls_seconds,
            ban_seconds=self.ban_seconds,
            scanners=tuple(self.scanners),
            drop_probes=self.drop_probes,
        )


class OverloadSettings(_Strict):
    """Overload control: new calls refused with 503 while the engine cannot keep up."""

    enabled: bool = True
    max_delay: float = Field(
        0.1,
        gt=0,
        le=5,
        description="seconds datagrams may wait in the receive queue before new calls are cut",
    )
    retry_after: int = Field(
        2, ge=0, le=3600, description="Retry-After of the 503 (seconds; 0: none)"
    )
    rfc7339: bool = Field(
        True,
        description="tell clients that put oc in their Via (RFC 7339) by how much to cut",
    )

    def limits(self) -> OverloadLimits:
        return OverloadLimits(max_delay=self.max_delay)


class SchedulingSettings(_Strict):
    """How the kernel schedules the engine's event-loop thread (``b2bua.loop_priority``)."""

    policy: Literal["normal", "rr", "fifo"] = Field(
        "normal",
        description="Linux scheduling policy of the thread that handles every SIP message: "
        "normal; rr or fifo (real time: it runs as soon as a message arrives, ahead of "
        "every normal process; the threads and processes it starts stay normal; needs "
        "CAP_SYS_NICE)",
    )
    priority: int = Field(10, ge=1, le=99, description="real-time priority (rr, fifo)")


class LoggingSettings(_Strict):
    """Log level and number masking."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    show_numbers: bool = Field(False, description="log real numbers unmasked (debugging only)")


class MetricsSettings(_Strict):
    """Prometheus exposition."""

    listen: str | None = Field("127.0.0.1:9460", description="host:port for /metrics, or null")


class EngineConfig(_Strict):
    """The whole of `ansim.yaml`. Relative paths are relative to the configuration folder;
    ``load_engine_config`` returns them resolved (absolute)."""

    sip: SipSettings = SipSettings()
    numbers: NumbersSettings = NumbersSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    api: ApiSettings = ApiSettings()
    flood: FloodSettings = FloodSettings()
    overload: OverloadSettings = OverloadSettings()
    scheduling: SchedulingSettings = SchedulingSettings()
    trunks: str = Field("trunks.yaml", description="trunk file")
    cdr: str = Field("../var/cdr.sqlite", description="SQLite file for call detail records")
    cdr_fsync: bool = Field(
        False,
        description="fdatasync the CDR journal as each call ends, before the messages that "
        "end it are sent, so that records survive power loss and not only a crash of the engine",
    )
    smpp: str | None = Field("smpp.yaml", description="SMPP relay config, or null for none")
    media: MediaSettings = Field(
        MediaSettings(),
        description="how calls' media is carried (passthrough, relay, rtpengine), the relay "
        "processes, recordings",
    )
    limits: LimitSettings = Field(
        LimitSettings(),
        description="caps on calls and SMS per binding, virtual number and tenant, the "
        "marketing-pattern rule, and where their shared counters and blocklists live",
    )

    def resolved(self, folder: str | Path) -> EngineConfig:
        """A copy with every path absolute, relative ones taken from ``folder``."""
        return self.model_copy(
            update={
                "numbers": self.numbers.resolved(folder),
                "sip": self.sip.model_copy(update={"tls": self.sip.tls.resolved(folder)}),
                "trunks": config_path(folder, self.trunks),
                "cdr": config_path(folder, self.cdr),
                "smpp": None if self.smpp is None else config_path(folder, self.smpp),
                "media": _media_resolved(self.media, folder),
                "limits": self.limits.resolved(folder),
            }
        )


def _media_resolved(media: MediaSettings, folder: str | Path) -> MediaSettings:
    """The media section with its paths (control sockets, recordings) made absolute."""
    rec = media.recording
    recording = rec.model_copy(
        update={
            "directory": config_path(folder, rec.directory),
            "audit_log": config_path(folder, rec.audit_log),
            "public_key": None if rec.public_key is None else config_path(folder, rec.public_key),
        }
    )
    relays = [
        r.model_copy(update={"control": config_path(folder, r.control)}) for r in media.relays
    ]
    return media.model_copy(update={"recording": recording, "relays": relays})


class ConfigFolderError(ValueError):
    """The configuration folder is missing (or not a folder)."""


def config_folder(path: str | Path) -> Path:
    """``path`` as the configuration folder; ConfigFolderError when there is none (an
    engine started in the wrong place must not run on a new empty store)."""
    folder = Path(path)
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise ConfigFolderError(f"configuration folder {os.fspath(path)} {what}")
    return folder


def json_schema() -> dict[str, object]:
    """The JSON Schema shipped as config/schema/ansim.schema.json (for editors)."""
    schema = EngineConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "ansim engine configuration"
    return schema


def load_engine_config(config_dir: str | Path) -> EngineConfig:
    """Load ``ansim.yaml`` from the folder ``config_dir`` (defaults for a missing file),
    with every path resolved against the folder. Raises ConfigFolderError for a missing
    folder and ConfigError listing every problem of the file."""
    folder = config_folder(config_dir)
    path = folder / "ansim.yaml"
    config = load_model(path, EngineConfig) if path.exists() else EngineConfig()
    return config.resolved(folder)
