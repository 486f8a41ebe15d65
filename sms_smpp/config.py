"""SMPP relay configuration: the pydantic model of ``config/smpp.yaml``.

Loaded with :func:`load_config`, which goes through ``translate.yaml_source.load_model``
so that a mistake is reported as ``file:line:column: reason`` and the file is refused
whole. Relative paths in the file (``queue.path``, ``records``, ``translate_store``) are
relative to the folder the file is in (the configuration folder), not to the current
directory; ``load_config`` returns them absolute.
"""

from __future__ import annotations

import os
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from translate.numbers import NumberPlan
from translate.settings import config_path
from translate.yaml_source import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


BindType = Literal["transmitter", "receiver", "transceiver"]


def _all_bind_types() -> list[BindType]:
    return ["transmitter", "receiver", "transceiver"]


class Account(_Strict):
    """A carrier ESME/SMSC allowed to bind to ansim."""

    system_id: str = Field(min_length=1, max_length=15)
    password: str = Field(max_length=8)
    bind_types: list[BindType] = Field(default_factory=_all_bind_types)
    max_binds: int = Field(default=8, ge=1)


class ServerConfig(_Strict):
    """Where carriers bind to ansim."""

    host: str = "127.0.0.1"
    port: int = Field(default=2775, ge=0, le=65535)
    system_id: str = Field(default="ansim", max_length=15)
    accounts: list[Account] = Field(default_factory=list)
    enquire_link_interval: float = Field(default=30.0, ge=0)
    response_timeout: float = Field(default=10.0, gt=0)
    bind_timeout: float = Field(default=10.0, gt=0)
    window: int = Field(default=100, ge=1, description="outstanding deliver_sm per bind")
    #: bind attempts per remote address: a bucket of `bind_burst` refilled at `bind_rate`/s
    bind_burst: int = Field(default=10, ge=1)
    bind_rate: float = Field(default=1.0, gt=0)
    #: where mobile-originated SMS arriving from upstream go (an account's system_id)
    mo_system_id: str | None = None
    #: while carriers are paced (see queue.forward_backlog), a submit_sm waits unanswered
    #: at most this long for room, then is answered ESME_RTHROTTLED (and not stored)
    pace_hold: float = Field(default=2.0, gt=0)
    #: at most this many submit_sm wait per bind; more are answered ESME_RTHROTTLED at once
    pace_queue: int = Field(default=1000, ge=1)

    @model_validator(mode="after")
    def _unique_accounts(self) -> ServerConfig:
        seen: set[str] = set()
        for account in self.accounts:
            if account.system_id in seen:
                raise ValueError(f"duplicate account system_id {account.system_id!r}")
            seen.add(account.system_id)
        if self.mo_system_id is not None and self.mo_system_id not in seen:
            raise ValueError(f"mo_system_id {self.mo_system_id!r} is not an account")
        return self


class Upstream(_Strict):
    """An upstream SMSC ansim binds to."""

    name: str = Field(min_length=1)
    host: str
    port: int = Field(ge=1, le=65535)
    system_id: str = Field(min_length=1, max_length=15)
    password: str = Field(max_length=8)
    system_type: str = Field(default="", max_length=12)
    bind: Literal["transceiver", "transmitter"] = "transceiver"
    #: lower is preferred; traffic goes to the best priority with a live bind
    priority: int = 0
    window: int = Field(default=100, ge=1)
    enquire_link_interval: float = Field(default=30.0, ge=0)
    response_timeout: float = Field(default=10.0, gt=0)
    reconnect_min: float = Field(default=0.2, gt=0)
    reconnect_max: float = Field(default=10.0, gt=0)
    #: vendor TLV carrying ansim's message id on each submit_sm (idempotency key), or null
    message_id_tlv: int | None = Field(default=0x1401, ge=0x1400, le=0x3FFF)
    #: largest submit_sm (octets, header included) this upstream takes, or null for no
    #: limit: a longer message_payload is split into concatenated parts at submit time,
    #: and a message that cannot be split is refused with ESME_RINVMSGLEN
    max_pdu_size: int | None = Field(default=None, ge=512, le=70_000)


class QueueConfig(_Strict):
    """The store-and-forward queue."""

    path: str = "../var/smpp-queue"
    map_size_mb: int = Field(default=1024, ge=16)
    #: fsync each commit (an accepted message survives power loss, not only a crash)
    fsync: bool = True
    max_pending: int = Field(default=200_000, ge=1)
    #: with an upstream bound, carriers are paced past this many messages waiting for it
    forward_backlog: int = Field(default=1000, ge=1)
    default_validity: float = Field(default=48 * 3600.0, gt=0)
    max_validity: float = Field(default=7 * 24 * 3600.0, gt=0)
    retry_min: float = Field(default=1.0, gt=0)
    retry_max: float = Field(default=60.0, gt=0)
    #: sends upstream left without an answer (no response in response_timeout, or the
    #: link lost with it the oldest request unanswered) before a message is set aside,
    #: its sender getting a REJECTD receipt
    max_unanswered: int = Field(default=3, ge=1)
    dlr_ttl: float = Field(default=72 * 3600.0, gt=0)
    #: a receipt that arrives before the submit_sm_resp carrying its id is held (on disk)
    #: this long for that id to arrive, then dropped and counted as unmatched
    receipt_hold: float = Field(default=3600.0, gt=0)
    #: at most this many held; past it the oldest is dropped (counted as evicted)
    receipt_hold_max: int = Field(default=50_000, ge=1)


class NumbersConfig(_Strict):
    """How national numbers in SMPP addresses of unknown or national type are read."""

    country_code: str = Field(default="82", pattern=r"^[1-9][0-9]{0,2}$")
    trunk_prefix: str = Field(default="0", pattern=r"^[0-9]*$")
    international_prefix: str = Field(default="00", pattern=r"^[0-9]+$")

    def plan(self) -> NumberPlan:
        return NumberPlan(self.country_code, self.trunk_prefix, self.international_prefix)


class SmppConfig(_Strict):
    """Top of config/smpp.yaml."""

    enabled: bool = False
    server: ServerConfig = Field(default_factory=ServerConfig)
    upstreams: list[Upstream] = Field(default_factory=list)
    queue: QueueConfig = Field(default_factory=QueueConfig)
    records: str = "../var/cdr.sqlite"
    numbers: NumbersConfig = Field(default_factory=lambda: NumbersConfig())
    #: the translation store `ansim smpp run` opens; null: the engine's (`numbers.store`
    #: of ansim.yaml). `ansim serve` always passes its own.
    translate_store: str | None = None

    @model_validator(mode="after")
    def _unique_upstreams(self) -> SmppConfig:
        names = [u.name for u in self.upstreams]
        if len(names) != len(set(names)):
            raise ValueError("upstream names must be unique")
        return self

    def resolved(self, folder: str | os.PathLike[str]) -> SmppConfig:
        """A copy with every path absolute, relative ones taken from ``folder``."""
        store = self.translate_store
        return self.model_copy(
            update={
                "queue": self.queue.model_copy(
                    update={"path": config_path(folder, self.queue.path)}
                ),
                "records": config_path(folder, self.records),
                "translate_store": None if store is None else config_path(folder, store),
            }
        )


def load_config(path: str | os.PathLike[str]) -> SmppConfig:
    """Load and validate config/smpp.yaml, its paths resolved against its folder; raises
    translate's ConfigError."""
    return load_model(path, SmppConfig).resolved(os.path.dirname(os.path.abspath(path)))
