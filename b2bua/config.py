"""The engine configuration (`config/ansim.yaml`): schema, defaults, loading with positions.

Every section is a pydantic model with unknown keys refused, so a typo is an error that
names its file:line:column rather than a silently ignored setting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from translate.yaml_source import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Listen(_Strict):
    """One SIP listening socket."""

    transport: Literal["udp", "tcp"]
    host: str
    port: int = Field(ge=1, le=65535)

    @classmethod
    def parse(cls, text: str) -> Listen:
        """``udp:HOST:PORT`` or ``tcp:HOST:PORT`` (an IPv6 host in brackets)."""
        proto, sep, rest = text.partition(":")
        host, sep2, port = rest.rpartition(":")
        if not sep or not sep2 or proto not in ("udp", "tcp") or not port.isdigit():
            raise ValueError(f"expected udp:HOST:PORT or tcp:HOST:PORT, got {text!r}")
        return cls(transport=proto, host=host.strip("[]"), port=int(port))

    def __str__(self) -> str:
        return f"{self.transport}:{self.host}:{self.port}"


class TimerSettings(_Strict):
    """RFC 3261 timer base values, seconds."""

    t1: float = Field(0.5, gt=0, le=10)
    t2: float = Field(4.0, gt=0, le=64)
    t4: float = Field(5.0, gt=0, le=64)


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

    def listeners(self) -> list[Listen]:
        return [Listen.parse(item) for item in self.listen]


class NumberSettings(_Strict):
    """The translation store and the operator's number maps."""

    store: str = "var/numbers.lmdb"
    maps: str = "config/numbers"
    country_code: str = Field("82", pattern=r"^[1-9][0-9]{0,2}$")
    trunk_prefix: str = Field("0", pattern=r"^[0-9]{0,3}$")
    international_prefix: str = Field("00", pattern=r"^[0-9]{1,4}$")
    watch: bool = Field(True, description="reload the maps when a file under `maps` changes")


class LoggingSettings(_Strict):
    """Log level and number masking."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    show_numbers: bool = Field(False, description="log real numbers unmasked (debugging only)")


class MetricsSettings(_Strict):
    """Prometheus exposition."""

    listen: str | None = Field("127.0.0.1:9460", description="host:port for /metrics, or null")


class EngineConfig(_Strict):
    """The whole of `ansim.yaml`."""

    sip: SipSettings = SipSettings()
    numbers: NumberSettings = NumberSettings()
    logging: LoggingSettings = LoggingSettings()
    metrics: MetricsSettings = MetricsSettings()
    trunks: str = Field("trunks.yaml", description="trunk file, relative to the config folder")
    cdr: str = Field("var/cdr.sqlite", description="SQLite file for call detail records")
    cdr_fsync: bool = Field(
        False,
        description="fdatasync the CDR journal as each call ends, before the messages that "
        "end it are sent, so that records survive power loss and not only a crash of the engine",
    )
    smpp: str | None = Field(
        "smpp.yaml", description="SMPP relay config, relative to the config folder"
    )


def load_engine_config(config_dir: str | Path) -> EngineConfig:
    """Load ``ansim.yaml`` from ``config_dir`` (defaults for a missing file)."""
    path = Path(config_dir) / "ansim.yaml"
    if not path.exists():
        return EngineConfig()
    return load_model(path, EngineConfig)
