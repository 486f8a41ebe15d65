"""Abuse alerts: the one definition of the event raised when an abuse rule acts.

Today one rule raises one: the marketing-pattern rule (``translate.limits``) blocking a
real party that reached too many distinct parties through one virtual number (or one
tenant's numbers). The alert is written to the abuse store's outbox in the same
transaction as the block (``translate.abuse_store``), so it is never lost and never
raised twice; ``ansim limits alerts`` lists them, and the control API delivers them to
the tenant (a webhook of type ``EVENT_TYPE``) from the same outbox. It holds the real
number blocked: it is meant for the operator and the tenant, never for a log.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Final

__all__ = ["EVENT_TYPE", "MARKETING_BLOCK", "AbuseAlert"]

#: The alert's kind when the marketing rule blocks a party.
MARKETING_BLOCK: Final = "marketing_block"
#: The event type the control API delivers it as.
EVENT_TYPE: Final = "abuse.marketing_block"


@dataclass(frozen=True, slots=True)
class AbuseAlert:
    """One alert: ``party`` (E.164) reached ``distinct`` distinct parties within
    ``window`` seconds through ``scope`` ``scope_id`` (a virtual number, or a tenant)
    and is refused there until ``until`` (epoch seconds). ``medium`` (call or sms) and
    ``binding_id`` are of the attempt that tripped the rule."""

    kind: str
    at: float
    party: str
    scope: str  # "virtual" or "tenant"
    scope_id: str
    distinct: int
    window: float
    until: float
    medium: str
    binding_id: str | None = None
    tenant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AbuseAlert:
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})
