"""The API's errors: one table of error codes, one of detail rules, one JSON shape.

Every error answer is ``{"error": {"code", "message", "details": [{"field", "rule",
"message"}]}}``. ``code`` (a key of ERROR_CODES) fixes the HTTP status; each detail names
the request field it is about (``items[3].b``, ``expires_at``; null when it is about the
request as a whole) and the rule broken (a key of RULES). Codes and rules are stable:
clients may branch on them; messages are for people and may change.

Rules of a binding are the translation store's own (``translate.bindings``,
``translate.store``, ``translate.pools``), so the API refuses exactly what an operator's
map would, under the same names.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final

from pydantic import BaseModel, Field

__all__ = [
    "ERROR_CODES",
    "RULES",
    "ApiError",
    "ErrorBody",
    "ErrorDetail",
    "ErrorResponse",
    "error_responses",
    "fault",
    "field_path",
    "pydantic_details",
]

#: code -> (HTTP status, meaning)
ERROR_CODES: Final[dict[str, tuple[int, str]]] = {
    "unauthenticated": (401, "no API key, or one that is malformed, unknown or revoked"),
    "forbidden": (403, "the key lacks the scope the operation needs"),
    "not-found": (404, "no such object for this tenant (other tenants' objects included)"),
    "method-not-allowed": (405, "the path exists but not with this method"),
    "conflict": (409, "the request conflicts with the bindings or pools as they stand"),
    "pool-exhausted": (409, "no number of the pool fits the binding"),
    "payload-too-large": (413, "the request body is larger than the API accepts"),
    "validation": (422, "the request breaks a rule: each detail names the field and rule"),
    "idempotency-key-reused": (422, "the Idempotency-Key was first used with another request"),
    "internal": (500, "a fault in ansim (logged); the request may be retried"),
    "store-unavailable": (503, "the store cannot be written now (full, or being opened)"),
}

#: rule -> meaning, for ``details[].rule``
RULES: Final[dict[str, str]] = {
    # the shape of the request
    "missing-field": "a required field is absent",
    "unknown-field": "a field the request does not have",
    "invalid-value": "a value of the wrong type, length or range",
    "invalid-json": "the body is not a JSON document",
    "one-of": "exactly one of the named fields must be given",
    "too-many-items": "more items than one request takes",
    # numbers
    "bad-number": "not a telephone number (any usual written form is accepted)",
    "bad-prefix": "not a number prefix (+ and 1-15 digits)",
    "bad-area": "areas are 1-32 letters, digits, '_' or '-'",
    # a binding on its own (translate.bindings)
    "bad-id": "binding ids are 1-128 printable characters",
    "bad-kind": "kind must be ax, axb or axn",
    "missing-b": "axb and axn need b",
    "unexpected-b": "ax has no b",
    "present-ax-only": "present: caller is only for ax",
    "same-party": "a and b are the same number",
    "virtual-is-party": "the virtual number is also a real party of the binding",
    "bad-limit": "limits must be positive",
    "bad-out-id": "out_id is 1-128 printable characters",
    "bad-tenant": "tenant names match ^[a-z0-9][a-z0-9_-]{0,63}$",
    "bad-hours": "hours must look like 09:00-18:00",
    "bad-timezone": "not an IANA time zone name",
    "timezone-required": "hours need a timezone",
    "expired": "the expiry is not in the future",
    "record-passthrough": "record: true cannot go with media: passthrough",
    # a binding among the others (translate.store)
    "duplicate-id": "a binding with this id exists",
    "duplicate-virtual": "the number already has an ax or axn binding",
    "party-conflict": "a real number would have two routes on one virtual number",
    "virtual-as-party": "a real party is itself a virtual number (a call loop)",
    "number-not-owned": "the virtual number is in none of the tenant's pools",
    # pools (translate.pools, translate.allocation)
    "pool-not-found": "no pool of this name for the tenant",
    "pool-exists": "a pool of this name exists",
    "pool-in-use": "the pool's numbers carry bindings",
    "pool-exhausted": "no number of the pool fits the binding",
    "number-in-pool": "the number is in a pool already",
    "number-not-found": "the number is not in this pool",
    "number-in-use": "the number carries bindings",
    "number-bound": "the number has bindings from elsewhere (an operator map)",
    "number-not-granted": "the number is outside the prefixes granted to the tenant",
    # tenants and keys
    "tenant-not-found": "no such tenant",
    "bad-scope": "not a known scope",
    "key-revoked": "the key is revoked already",
    "idempotency-key-reused": "the Idempotency-Key was first used with another request",
}


class ErrorDetail(BaseModel):
    """One problem: the field it is about (null: the request), the rule, a message."""

    field: str | None = None
    rule: str
    message: str


class ErrorBody(BaseModel):
    code: str = Field(description="a key of the error-code table (README, API section)")
    message: str
    details: list[ErrorDetail] = []


class ErrorResponse(BaseModel):
    """What every error answer holds."""

    error: ErrorBody


class ApiError(Exception):
    """An error answer; raised anywhere a request is handled, rendered by the app."""

    def __init__(
        self,
        code: str,
        message: str | None = None,
        details: Iterable[ErrorDetail] = (),
        headers: dict[str, str] | None = None,
    ) -> None:
        status, meaning = ERROR_CODES[code]
        self.code = code
        self.status = status
        self.message = message or meaning
        self.details = list(details)
        self.headers = headers
        super().__init__(self.message)

    @classmethod
    def invalid(cls, field: str | None, rule: str, message: str) -> ApiError:
        """A 422 with one detail."""
        return cls("validation", message, [ErrorDetail(field=field, rule=rule, message=message)])

    def body(self) -> bytes:
        body = ErrorBody(code=self.code, message=self.message, details=self.details)
        return ErrorResponse(error=body).model_dump_json().encode()


def field_path(loc: Sequence[str | int]) -> str | None:
    """``("items", 3, "b")`` -> ``"items[3].b"``; None for an empty path."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or None


def pydantic_details(errors: Iterable[Any], strip: int = 0) -> list[ErrorDetail]:
    """Details for pydantic errors; ``strip`` drops leading loc parts ("body")."""
    out: list[ErrorDetail] = []
    for err in errors:
        kind = err.get("type", "")
        loc = tuple(err.get("loc", ()))[strip:]
        if kind == "missing":
            rule = "missing-field"
        elif kind == "extra_forbidden":
            rule = "unknown-field"
        elif kind in ("json_invalid", "model_attributes_type") or kind.startswith("json_"):
            rule = "invalid-json"
        else:
            rule = "invalid-value"
        out.append(ErrorDetail(field=field_path(loc), rule=rule, message=str(err.get("msg", ""))))
    return out


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route: these statuses, each answered with ErrorResponse."""
    meanings: dict[int, list[str]] = {}
    for code, (status, meaning) in ERROR_CODES.items():
        meanings.setdefault(status, []).append(f"`{code}`: {meaning}")
    return {
        status: {"model": ErrorResponse, "description": "; ".join(meanings.get(status, []))}
        for status in statuses
    }


def fault(exc: Exception) -> ApiError:
    """The answer to an exception no route turned into an ApiError: the store not
    available (503, logged as such), or anything else (500, logged with its traceback)."""
    log = logging.getLogger("ansim.api")
    if type(exc).__name__ == "StoreError":
        log.error("store unavailable: %s", exc)
        return ApiError("store-unavailable", str(exc))
    log.error("API request failed", exc_info=exc)
    return ApiError("internal")
