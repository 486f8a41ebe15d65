"""The API's settings (the ``api`` section of ``ansim.yaml``) and how ``ansim api`` finds
them.

``ApiSettings`` is the schema, unknown keys refused like every section of the engine
configuration; the process that composes the engine can hold it as its ``api`` field.
``load_settings`` reads, from a configuration folder's ``ansim.yaml``, the ``api``
section and the two things of the ``numbers`` section the API needs too (the store,
relative to the configuration folder like every path there, and the number plan); the
rest of the file is the engine's to check.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from translate.numbers import NumberPlan
from translate.settings import NumbersSettings, config_path
from translate.yaml_source import ConfigError, SourceError, load_yaml, validation_errors

__all__ = ["ApiSettings", "Loaded", "load_settings", "parse_listen"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (an IPv6 host in brackets) -> (host, port); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)


class ApiSettings(_Strict):
    """The control API process."""

    listen: str = Field("127.0.0.1:8080", description="HOST:PORT the API serves HTTP on")
    idempotency_hours: float = Field(
        24.0, gt=0, le=24 * 30, description="how long a retried create returns the first answer"
    )
    audit_days: float = Field(30.0, gt=0, description="how long audit records are kept")
    max_batch: int = Field(
        512, ge=1, le=10_000, description="most requests one store write transaction takes"
    )

    @field_validator("listen")
    @classmethod
    def _check_listen(cls, value: str) -> str:
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


class Loaded(BaseModel):
    """What ``ansim api`` runs with."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    settings: ApiSettings
    store: str
    plan: NumberPlan


def load_settings(config_dir: str | Path) -> Loaded:
    """Settings from ``config_dir/ansim.yaml`` (defaults when it is absent); ConfigError
    with file:line:column when the ``api`` section is wrong."""
    path = Path(config_dir) / "ansim.yaml"
    if not path.exists():
        return Loaded(
            settings=ApiSettings(),
            store=config_path(config_dir, _NumbersView().store),
            plan=NumberPlan(),
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
    return Loaded(settings=view.api, store=config_path(config_dir, numbers.store), plan=plan)
