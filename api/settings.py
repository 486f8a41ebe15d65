"""The API's settings (the ``api`` section of ``ansim.yaml``) and how ``ansim api`` finds
them.

``ApiSettings`` is the schema, unknown keys refused like every section of the engine
configuration; the process that composes the engine can hold it as its ``api`` field.
``load_settings`` reads, from a configuration folder's ``ansim.yaml``, the ``api``
section and what else of the file the API needs (the store and the number plan of the
``numbers`` section, the call records file ``cdr``, and the SMS records file that the
``smpp`` file names), every path relative to the configuration folder; the rest of the
file is the engine's to check.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from translate.numbers import NumberPlan
from translate.settings import NumbersSettings, config_path
from translate.yaml_source import ConfigError, SourceError, load_yaml, validation_errors

__all__ = ["ApiSettings", "Loaded", "WebhookSettings", "load_settings", "parse_listen"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class WebhookSettings(_Strict):
    """How the API delivers webhooks."""

    timeout: float = Field(5.0, gt=0, le=60, description="seconds to wait for a receiver's answer")
    concurrency: int = Field(
        4, ge=1, le=256, description="requests in flight to one tenant's receivers at once"
    )
    retry_min: float = Field(1.0, gt=0, le=3600, description="first retry after about this")
    retry_max: float = Field(600.0, gt=0, le=86400, description="longest wait between two attempts")
    dead_after: float = Field(
        86400.0,
        gt=0,
        description="seconds after which an event not yet delivered is set aside (dead letter)",
    )
    dead_days: float = Field(7.0, gt=0, description="how long dead letters are kept")
    poll: float = Field(
        0.25, gt=0, le=10, description="seconds between looks for new events in the outboxes"
    )


class ApiSettings(_Strict):
    """The control API process."""

    listen: str | None = Field(
        "127.0.0.1:8080",
        description="HOST:PORT the API serves HTTP on; null: `ansim serve` starts no API",
    )
    idempotency_hours: float = Field(
        24.0, gt=0, le=24 * 30, description="how long a retried create returns the first answer"
    )
    audit_days: float = Field(30.0, gt=0, description="how long audit records are kept")
    max_batch: int = Field(
        512, ge=1, le=10_000, description="most requests one store write transaction takes"
    )
    commit_interval: float = Field(
        0.002,
        ge=0,
        le=0.1,
        description="s: least time from one store write transaction's start to the next's; "
        "the writes of that time share one commit and its fsync (0: commit as soon as the "
        "last commit is done)",
    )
    workers: int = Field(
        1, ge=1, le=64, description="API processes serving the same port (SO_REUSEPORT)"
    )
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="how much lower than the engine's the scheduling priority of the API "
        "processes `ansim serve` starts is (Unix nice; 0: the same as the engine's)",
    )
    scheduling: Literal["normal", "batch", "idle"] = Field(
        "batch",
        description="Linux scheduling policy of the API processes `ansim serve` starts: "
        "normal; batch (SCHED_BATCH: an API process waking up does not preempt the engine); "
        "idle (SCHED_IDLE: it runs only on CPU time the engine, media and other processes "
        "leave, and gives way at once when one of them wakes; on a host whose CPUs are all "
        "busy it gets almost none)",
    )
    history_days: float = Field(
        7.0,
        gt=0,
        description="how long the owner of an ended binding is kept for the records written after",
    )
    webhooks: WebhookSettings = WebhookSettings()

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value


class _NumbersView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    store: str = NumbersSettings().store
    country_code: str = "82"
    trunk_prefix: str = "0"
    international_prefix: str = "00"


class _FileView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    api: ApiSettings = ApiSettings()
    numbers: _NumbersView = _NumbersView()
    cdr: str = "../var/cdr.sqlite"
    smpp: str | None = "smpp.yaml"


class _SmppView(BaseModel):
    model_config = ConfigDict(extra="ignore")

    records: str = "../var/cdr.sqlite"


class Loaded(BaseModel):
    """What ``ansim api`` runs with: ``cdr`` the call records file, ``sms`` the SMS
    records file (None without an SMPP file)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: ApiSettings
    store: str
    plan: NumberPlan
    cdr: str | None = None
    sms: str | None = None


def load_settings(config_dir: str | Path) -> Loaded:
    """Settings from ``config_dir/ansim.yaml`` (defaults when it is absent); ConfigError
    with file:line:column when the ``api`` section is wrong."""
    path = Path(config_dir) / "ansim.yaml"
    if not path.exists():
        view = _FileView()
        return Loaded(
            settings=ApiSettings(),
            store=config_path(config_dir, _NumbersView().store),
            plan=NumberPlan(),
            cdr=config_path(config_dir, view.cdr),
            sms=_sms_records(config_dir, view.smpp),
        )
    data, positions = load_yaml(path)
    try:
        view = _FileView.model_validate(data or {})
    except ValidationError as exc:
        raise ConfigError(validation_errors(exc, positions)) from None
    numbers = view.numbers
    try:
        plan = NumberPlan(numbers.country_code, numbers.trunk_prefix, numbers.international_prefix)
    except ValueError as exc:
        line, column = positions.at(("numbers",))
        raise ConfigError([SourceError(str(path), line, column, f"bad-plan: {exc}")]) from None
    return Loaded(
        settings=view.api,
        store=config_path(config_dir, numbers.store),
        plan=plan,
        cdr=config_path(config_dir, view.cdr),
        sms=_sms_records(config_dir, view.smpp),
    )


def _sms_records(config_dir: str | Path, smpp: str | None) -> str | None:
    """The SMS records file the SMPP file names (its own relative paths are relative to
    the configuration folder too); None without one. Errors in that file are the
    engine's to report: a file that cannot be read here only means no SMS records."""
    if smpp is None:
        return None
    path = Path(config_path(config_dir, smpp))
    if not path.exists():
        return None
    try:
        data, _ = load_yaml(path)
        view = _SmppView.model_validate(data or {})
    except (ConfigError, ValidationError):
        return None
    return config_path(config_dir, view.records)
