"""Authentication settings of a trunk (`trunks.yaml`): the digest credentials ansim
demands of the trunk's INVITEs (``auth``), those it answers the trunk's challenges with
(``credentials``), and ansim's registration at the trunk's registrar (``register``).

Passwords are held as ``SecretStr`` so that they never appear in a representation, an
error message or a log line; ``trunks.yaml`` holding them should be readable by the
engine's user only (README, "Authentication").
"""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["Algorithm", "InboundAuth", "OutboundCredentials", "RegisterSettings"]

#: Digest algorithms a trunk may be challenged with (RFC 8760), strongest first.
Algorithm = Literal["SHA-512-256", "SHA-256", "MD5"]


_DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = ("SHA-256", "MD5")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InboundAuth(_Strict):
    """The trunk's INVITEs must carry these digest credentials: ansim challenges every new
    INVITE without them, before any lookup."""

    username: str = Field(min_length=1, max_length=128)
    password: SecretStr = Field(min_length=1)
    realm: str | None = Field(
        None, min_length=1, description="realm of the challenge; null: the file's auth_realm"
    )
    algorithms: list[Algorithm] = Field(
        default_factory=lambda: list(_DEFAULT_ALGORITHMS),
        min_length=1,
        description="algorithms offered, one challenge each, in this order (RFC 8760: the "
        "strongest first; a client answers the first it knows)",
    )
    status: Literal[401, 407] = Field(
        407, description="407 Proxy Authentication Required (a proxy's challenge) or 401"
    )

    @field_validator("algorithms")
    @classmethod
    def _unique(cls, value: list[Algorithm]) -> list[Algorithm]:
        if len(set(value)) != len(value):
            raise ValueError("an algorithm is listed twice")
        return value

    @property
    def header(self) -> bytes:
        """The header the challenge goes in."""
        return b"proxy-authenticate" if self.status == 407 else b"www-authenticate"

    @property
    def answer_header(self) -> bytes:
        """The header the client's credentials come in."""
        return b"proxy-authorization" if self.status == 407 else b"authorization"


class OutboundCredentials(_Strict):
    """What ansim answers the trunk's 401/407 challenges with (INVITE, in-dialog
    requests, REGISTER)."""

    username: str = Field(min_length=1, max_length=128)
    password: SecretStr = Field(min_length=1)
    realm: str | None = Field(
        None, description="answer only challenges of this realm; null: any realm"
    )


class RegisterSettings(_Strict):
    """ansim registers itself at the trunk's registrar and keeps the registration fresh."""

    registrar: str | None = Field(
        None, description="HOST:PORT of the registrar (IP literal); null: the trunk's address"
    )
    aor: str | None = Field(
        None,
        pattern=r"^sips?:[^\s<>]+$",
        description="address of record registered (sip:user@domain); null: "
        "sip:<credentials username>@<registrar host>",
    )
    expires: int = Field(3600, ge=10, le=604800, description="seconds asked for")
    retry_min: float = Field(2.0, gt=0, le=3600, description="first retry after a failure, s")
    retry_max: float = Field(300.0, gt=0, le=86400, description="longest wait between retries, s")

    @field_validator("registrar")
    @classmethod
    def _registrar(cls, value: str | None) -> str | None:
        if value is not None:
            host, sep, port = value.rpartition(":")
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError("expected HOST:PORT")
            ipaddress.ip_address(host.strip("[]"))
        return value
