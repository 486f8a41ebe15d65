"""SMPP time fields (validity_period, schedule_delivery_time) to epoch seconds.

Absolute form ``YYMMDDhhmmsstnnp`` (t tenths, nn quarter hours from UTC, p '+' or '-'),
relative form ``YYMMDDhhmmss000R``. Relative years and months count as 365 and 30 days.
"""

from __future__ import annotations

import calendar


def parse_smpp_time(value: str, now: float) -> float | None:
    """Epoch seconds for an SMPP time string; None when empty; ValueError when invalid."""
    if not value:
        return None
    if len(value) != 16 or not value[:15].isdigit() or value[15] not in "+-R":
        raise ValueError(f"invalid SMPP time {value!r}")
    yy, mo, dd, hh, mi, ss = (int(value[i : i + 2]) for i in range(0, 12, 2))
    if value[15] == "R":
        return now + ((yy * 365 + mo * 30 + dd) * 24 + hh) * 3600 + mi * 60 + ss
    tenths = int(value[12])
    quarters = int(value[13:15])
    if not (1 <= mo <= 12 and 1 <= dd <= 31 and hh < 24 and mi < 60 and ss < 60 and quarters <= 48):
        raise ValueError(f"invalid SMPP time {value!r}")
    utc = calendar.timegm((2000 + yy, mo, dd, hh, mi, ss, 0, 0, 0)) + tenths / 10
    offset = quarters * 900
    return utc - offset if value[15] == "+" else utc + offset
