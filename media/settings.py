"""Media configuration models (pydantic, unknown keys refused) and the mode rule.

The engine's configuration embeds :class:`MediaSettings` as its ``media`` section and a
:data:`MediaMode` field on each trunk and binding; :func:`resolve_mode` is the one rule
that turns them into a call's mode. ``relay_argv`` gives the command line of each relay
process the entry point starts.

``media`` section::

    media:
      mode: passthrough            # default for trunks that name none
      media_timeout: 60            # s without RTP either way: the call is ended
      hold_timeout: null           # s, while no party is expected to send (null: never)
      relays:                      # one process each (the engine picks one per call)
        - {control: ../var/run/relay-0.sock, address: 203.0.113.20, ports: 30000-34999}
        - {control: ../var/run/relay-1.sock, address: 203.0.113.20, ports: 35000-39999}
      rtpengine: {ng: "127.0.0.1:2223"}
      recording:
        directory: ../var/recordings
        public_key: recording-pub.pem   # the operator's RSA public key
        retention_days: 90

Paths are relative to the configuration folder (the engine resolves them).
"""

from __future__ import annotations

import ipaddress
import re
import sys
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "MediaMode",
    "MediaSettings",
    "RecordingSettings",
    "RelayProcessSettings",
    "RtpengineSettings",
    "relay_argv",
    "resolve_mode",
]

MediaMode = Literal["passthrough", "relay", "rtpengine"]
_RANGE = re.compile(r"^(\d+)-(\d+)$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelayProcessSettings(_Strict):
    """One relay process: its control socket, the IP its media ports bind, its port range."""

    control: str
    address: str = "127.0.0.1"
    advertise: str | None = Field(
        None, description="IP written in SDP c= when it differs from address"
    )
    ports: str = "30000-39999"

    @field_validator("ports")
    @classmethod
    def _check_ports(cls, value: str) -> str:
        match = _RANGE.match(value)
        if not match or not 1024 <= int(match.group(1)) < int(match.group(2)) <= 65535:
            raise ValueError("ports must be LOW-HIGH within 1024-65535")
        return value


class RtpengineSettings(_Strict):
    """The rtpengine daemon's ng control address, and where the parties' RTCP goes."""

    ng: str = "127.0.0.1:2223"
    retry_s: float = Field(0.5, gt=0)
    attempts: int = Field(4, ge=1, le=10)
    rtcp_sink: str = Field(
        "127.0.0.1:0",
        description="IP:port (port 0: any free one) of a socket ansim binds and never "
        "reads; every party is told to send its RTCP there (a=rtcp with an address), so "
        "that none of it reaches rtpengine, which forwards an RTCP packet without a "
        "report in it (an SDES or a BYE alone, or ahead of the report) unchanged to the "
        "other party. Set it to an address of this host that the parties can reach.",
    )

    def address(self) -> tuple[str, int]:
        host, _, port = self.ng.rpartition(":")
        return host.strip("[]"), int(port)

    def sink_address(self) -> tuple[str, int]:
        host, _, port = self.rtcp_sink.rpartition(":")
        return host.strip("[]"), int(port)

    @field_validator("rtcp_sink")
    @classmethod
    def _sink(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        try:
            ip = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError("rtcp_sink must be IP:port with a literal IP") from None
        if not sep or not port.isdigit() or int(port) > 65535 or ip.is_unspecified:
            raise ValueError("rtcp_sink must be IP:port, the IP one of this host's (not 0.0.0.0)")
        return value


class RecordingSettings(_Strict):
    """Where encrypted recordings go, the key they are wrapped for, and how long they stay."""

    directory: str = "../var/recordings"
    public_key: str | None = None
    retention_days: float | None = Field(None, gt=0)
    audit_log: str = "../var/recordings-audit.log"
    chunk_seconds: float = Field(1.0, gt=0, le=10)


class MediaSettings(_Strict):
    """The engine configuration's ``media`` section."""

    mode: MediaMode = "passthrough"
    latch: Literal["address", "strict", "any"] = Field(
        "address",
        description="which first packet latches a relayed leg: from the SDP's or the "
        "signalling's IP (address), the SDP's IP and port only (strict), or from anywhere "
        "(any: parties behind NAT, or whose media leaves from another address than their "
        "SDP names)",
    )
    media_timeout: float = Field(60.0, gt=0)
    hold_timeout: float | None = Field(None, gt=0)
    relays: list[RelayProcessSettings] = []
    rtpengine: RtpengineSettings | None = None
    recording: RecordingSettings = RecordingSettings()


def resolve_mode(
    trunk: MediaMode | None,
    binding: MediaMode | None,
    record: bool,
    default: MediaMode = "passthrough",
) -> MediaMode:
    """A call's media mode: the binding's if it names one, else the trunk's, else the
    default; a recorded call is never ``passthrough`` (its media must reach ansim), so it
    is anchored in ``relay`` mode instead."""
    mode = binding or trunk or default
    if record and mode == "passthrough":
        return "relay"
    return mode


def relay_argv(settings: MediaSettings, index: int) -> list[str]:
    """The command line of relay process ``index`` (``python -m media.relay ...``)."""
    relay = settings.relays[index]
    argv = [
        sys.executable,
        "-m",
        "media.relay",
        "--control",
        relay.control,
        "--address",
        relay.address,
        "--ports",
        relay.ports,
        "--media-timeout",
        str(settings.media_timeout),
    ]
    if settings.hold_timeout is not None:
        argv += ["--hold-timeout", str(settings.hold_timeout)]
    rec = settings.recording
    if rec.public_key:
        argv += [
            "--recordings",
            rec.directory,
            "--recording-key",
            rec.public_key,
            "--chunk-seconds",
            str(rec.chunk_seconds),
        ]
    return argv
