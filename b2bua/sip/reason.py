"""Release causes: the Q.850 cause of a Reason header, and the one SIP-status-to-Q.850 table.

A call detail record names why a call ended with an ITU-T Q.850 cause value, the
figure billing and fraud systems of telephone networks key on. The cause is taken from
a ``Reason: Q.850;cause=N`` header (RFC 3326; in responses, RFC 6432) of the message
that ended the call when it carries one, and otherwise mapped from the SIP status with
``Q850_BY_STATUS``, the response-to-cause table of RFC 3398 (section 8.2.6.1) completed
for the statuses that table leaves open. Pure functions on bytes and ints.
"""

from __future__ import annotations

from typing import Final

from .headers import split_values

NORMAL_CLEARING: Final = 16
USER_BUSY: Final = 17
NO_USER_RESPONDING: Final = 18
REDIRECTED: Final = 23  # "redirection to new destination"
BEARER_NOT_IMPLEMENTED: Final = 65
TEMPORARY_FAILURE: Final = 41
RECOVERY_ON_TIMER_EXPIRY: Final = 102
INTERWORKING: Final = 127

#: SIP final status -> Q.850 cause. RFC 3398 section 8.2.6.1, plus: 2xx is a normal
#: clearing; 487 (the caller's CANCEL) too, as a gateway releases on CANCEL; 488 and 606,
#: which RFC 3398 maps by their Warning header, are "bearer capability not implemented"
#: (the Warning codes they carry are about media); 3xx, which ansim never passes on, is
#: "redirection to new destination".
Q850_BY_STATUS: Final[dict[int, int]] = {
    200: NORMAL_CLEARING,
    400: TEMPORARY_FAILURE,
    401: 21,
    402: 21,
    403: 21,
    404: 1,
    405: 63,
    406: 79,
    407: 21,
    408: RECOVERY_ON_TIMER_EXPIRY,
    410: 22,
    413: INTERWORKING,
    414: INTERWORKING,
    415: 79,
    416: INTERWORKING,
    420: INTERWORKING,
    421: INTERWORKING,
    423: INTERWORKING,
    480: NO_USER_RESPONDING,
    481: TEMPORARY_FAILURE,
    482: 25,
    483: 25,
    484: 28,
    485: 1,
    486: USER_BUSY,
    487: NORMAL_CLEARING,
    488: BEARER_NOT_IMPLEMENTED,
    500: TEMPORARY_FAILURE,
    501: 79,
    502: 38,
    503: TEMPORARY_FAILURE,
    504: RECOVERY_ON_TIMER_EXPIRY,
    505: INTERWORKING,
    513: INTERWORKING,
    600: USER_BUSY,
    603: 21,
    604: 1,
    606: BEARER_NOT_IMPLEMENTED,
}


def q850_for_status(status: int) -> int | None:
    """The Q.850 cause for SIP final status ``status``; a status the table does not list
    is taken as the x00 of its class (RFC 3261 section 8.1.3.2). None below 200."""
    cause = Q850_BY_STATUS.get(status)
    if cause is not None:
        return cause
    if 200 <= status < 300:
        return NORMAL_CLEARING
    if 300 <= status < 400:
        return REDIRECTED
    return Q850_BY_STATUS.get(status // 100 * 100)


def q850_cause(values: list[bytes]) -> int | None:
    """The cause of the first Q.850 value among Reason header ``values`` (each header
    line's value; one line may hold several, comma-separated), or None: no Q.850 value,
    or its cause missing or outside 0-127."""
    for line in values:
        for item in split_values(line):
            params = _params(item)
            if not params or params[0].strip().lower() != b"q.850":
                continue
            for param in params[1:]:
                name, _, value = param.partition(b"=")
                if name.strip().lower() == b"cause":
                    value = value.strip()
                    if value.isdigit() and len(value) <= 3 and int(value) <= 127:
                        return int(value)
                    return None
            return None
    return None


def _params(item: bytes) -> list[bytes]:
    """``item`` split on the semicolons outside quoted strings (a text="..." may hold one)."""
    if item.find(b'"') < 0:
        return item.split(b";")
    out: list[bytes] = []
    start = 0
    quoted = False
    i = 0
    n = len(item)
    while i < n:
        ch = item[i]
        if quoted:
            if ch == 0x5C:
                i += 1
            elif ch == 0x22:
                quoted = False
        elif ch == 0x22:
            quoted = True
        elif ch == 0x3B:
            out.append(item[start:i])
            start = i + 1
        i += 1
    out.append(item[start:])
    return out
