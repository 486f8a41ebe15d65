"""What each refusal of a call or a message is answered with: the one table for all.

A lookup that refuses (``translate.bindings.Refusal``) names a reason; the SIP side
answers a call with the status and phrase here, the SMPP side a submit_sm (or an SMS
from upstream) with the command_status here, and ``ansim numbers lookup`` prints both.
Nobody keeps a table of their own, so the three cannot disagree.

``bad_number`` is not a lookup result: it is the answer when the dialled number does
not normalise to a telephone number (garbage, or a number cut short for its range).
``limit``, ``virtual_limit``, ``tenant_limit``, ``blocked`` and ``marketing`` are the
answers of ``translate.limits`` (caps, blocklists, the marketing-pattern rule), asked
by calls and SMS alike.
The SMPP statuses are SMPP 3.4 command_status values (section 5.1.3); this package
imports nothing of sms_smpp, so they are written here as numbers with their names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["REFUSALS", "RefusalAnswer", "answer"]


@dataclass(frozen=True, slots=True)
class RefusalAnswer:
    """How one refusal reason is answered on each side."""

    reason: str
    meaning: str
    sip_status: int
    sip_phrase: str
    smpp_status: int
    smpp_name: str

    def describe(self) -> str:
        """``SIP 403 Forbidden, SMPP ESME_RX_T_APPN (0x64)``."""
        return (
            f"SIP {self.sip_status} {self.sip_phrase},"
            f" SMPP {self.smpp_name} (0x{self.smpp_status:02X})"
        )


def _table(*rows: RefusalAnswer) -> dict[str, RefusalAnswer]:
    return {row.reason: row for row in rows}


#: Refusal reason -> its answers. "expired" answers as "unknown" does: a caller learns
#: nothing from the difference.
REFUSALS: Final[dict[str, RefusalAnswer]] = _table(
    RefusalAnswer(
        "unknown",
        "X is not bound (or its binding was purged after expiry)",
        404,
        "Not Found",
        0x0B,
        "ESME_RINVDSTADR",
    ),
    RefusalAnswer(
        "expired",
        "the binding that matched has expired and is not purged yet",
        404,
        "Not Found",
        0x0B,
        "ESME_RINVDSTADR",
    ),
    RefusalAnswer(
        "not_party",
        "X holds only axb pairs and the caller is in none of them",
        403,
        "Forbidden",
        0x0A,
        "ESME_RINVSRCADR",
    ),
    RefusalAnswer(
        "hours",
        "outside the binding's allowed hours",
        403,
        "Forbidden",
        0x64,
        "ESME_RX_T_APPN",
    ),
    RefusalAnswer(
        "limit",
        "a cap of the binding (calls or SMS per hour or per day) is reached",
        486,
        "Busy Here",
        0x58,
        "ESME_RTHROTTLED",
    ),
    RefusalAnswer(
        "virtual_limit",
        "a cap of the virtual number (calls or SMS per hour or per day) is reached",
        486,
        "Busy Here",
        0x58,
        "ESME_RTHROTTLED",
    ),
    RefusalAnswer(
        "tenant_limit",
        "a cap of the virtual number's tenant (calls or SMS per hour or per day) is reached",
        486,
        "Busy Here",
        0x58,
        "ESME_RTHROTTLED",
    ),
    RefusalAnswer(
        "blocked",
        "the caller is on the global blocklist or on the blocklist of X's tenant",
        403,
        "Forbidden",
        0x66,
        "ESME_RX_R_APPN",
    ),
    RefusalAnswer(
        "marketing",
        "the caller is blocked on X (or its tenant) by the marketing-pattern rule",
        403,
        "Forbidden",
        0x66,
        "ESME_RX_R_APPN",
    ),
    RefusalAnswer(
        "bad_number",
        "the dialled number is not a telephone number (or is cut short for its range)",
        404,
        "Not Found",
        0x0B,
        "ESME_RINVDSTADR",
    ),
)


def answer(reason: str) -> RefusalAnswer:
    """The answers for ``reason``; a reason missing from the table answers as unknown."""
    return REFUSALS.get(reason) or REFUSALS["unknown"]
