"""Once a second: housekeeping of flood protection and overload control, and their log
lines, rate limited so that a flood or an overload never floods the log.

A ban is logged as it starts, at most one line a second (several bans in that second
are summed up in one line with a few of their addresses); an overload is logged when it
starts and ends, and every 10 seconds while it lasts, with the share of new calls
refused and the queueing delay.
"""

from __future__ import annotations

import logging

from .endpoint import SipEndpoint
from .flood import REASONS, FloodGuard
from .overload import OverloadDetector

log = logging.getLogger("ansim.edge")

OVERLOAD_EVERY = 10.0  # seconds between log lines while an overload lasts


class EdgeLog:
    """Calls ``expire``/``tick`` on the guard and the detector, and logs what changed."""

    def __init__(
        self,
        flood: FloodGuard | None,
        overload: OverloadDetector | None,
        endpoint: SipEndpoint,
    ) -> None:
        self.flood = flood
        self.overload = overload
        self.endpoint = endpoint
        self._shedding = False
        self._logged_at = 0.0
        self._rejected_at_start = 0

    def tick(self, now: float) -> None:
        flood = self.flood
        if flood is not None:
            bans, more = flood.take_new_bans()
            if len(bans) == 1 and not more:
                host, reason = bans[0]
                log.warning(
                    "banned source %s for %.0f s: %s",
                    host,
                    flood.limits.ban_seconds,
                    _why(reason, flood),
                    extra={"source": host, "reason": REASONS[reason]},
                )
            elif bans:
                shown = ", ".join(f"{h} ({REASONS[r]})" for h, r in bans[:5])
                log.warning(
                    "banned %d sources for %.0f s, among them %s",
                    len(bans) + more,
                    flood.limits.ban_seconds,
                    shown,
                    extra={"bans": len(bans) + more},
                )
            flood.expire(now)
        ov = self.overload
        if ov is None:
            return
        ov.tick(now)
        stats = self.endpoint.stats
        if ov.shedding and not self._shedding:
            self._shedding = True
            self._logged_at = now
            self._rejected_at_start = stats.overload_rejected
            log.warning(
                "overload: refusing %d%% of new calls with 503 (queueing delay %.0f ms)",
                round((1 - ov.admit_share) * 100),
                ov.cut_delay * 1000,
                extra={
                    "admit_share": round(ov.admit_share, 3),
                    "delay_ms": round(ov.cut_delay * 1000),
                },
            )
        elif ov.shedding and now - self._logged_at >= OVERLOAD_EVERY:
            self._logged_at = now
            log.warning(
                "overload goes on: refusing %d%% of new calls (queueing delay %.0f ms), "
                "%d refused so far",
                round((1 - ov.admit_share) * 100),
                ov.delay * 1000,
                stats.overload_rejected - self._rejected_at_start,
                extra={"admit_share": round(ov.admit_share, 3), "delay_ms": round(ov.delay * 1000)},
            )
        elif not ov.shedding and self._shedding:
            self._shedding = False
            log.warning(
                "overload over: %d new calls were refused",
                stats.overload_rejected - self._rejected_at_start,
            )


def _why(reason: int, flood: FloodGuard) -> str:
    limits = flood.limits
    name = REASONS[reason]
    if name == "rate":
        return f"more than {limits.requests} requests in {limits.requests_seconds:g} s"
    if name == "calls":
        return f"more than {limits.calls} INVITEs in {limits.calls_seconds:g} s"
    if name == "scanner":
        return "a scanner's fingerprint"
    return name
