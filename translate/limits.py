"""Per-binding usage limits checked at lookup time: calls per hour and allowed hours.

Calls per hour are counted **in each worker process**, in memory: the store is shared
by several processes and read without locks, and a shared counter would turn every
lookup into a write transaction serialised across processes. With N workers a binding
limited to L calls per hour therefore admits at most L calls per hour in each worker
(between L and N x L in all). Operators who need an exact global limit should set
L / N. The window is sliding and exact within a process: a call is refused when L calls
were admitted in the 3,600 seconds before it. Refused calls do not count.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from zoneinfo import ZoneInfo

__all__ = ["CallRateLimiter", "within_hours"]

_WINDOW = 3600.0


class CallRateLimiter:
    """Sliding one-hour call counters for the bindings of one process."""

    __slots__ = ("_calls", "_prune_at")

    def __init__(self) -> None:
        self._calls: dict[str, deque[float]] = {}
        self._prune_at = 4096

    def admit(self, binding_id: str, limit: int, now: float) -> bool:
        """Count a call for ``binding_id`` and return True, or return False when over limit."""
        calls = self._calls.get(binding_id)
        if calls is None or calls.maxlen != limit:
            calls = deque(calls or (), maxlen=limit)
            self._calls[binding_id] = calls
            if len(self._calls) > self._prune_at:
                self._prune(now)
        if len(calls) == limit and now - calls[0] < _WINDOW:
            return False
        calls.append(now)
        return True

    def count(self, binding_id: str, now: float) -> int:
        """Calls admitted for ``binding_id`` in the last hour (in this process)."""
        calls = self._calls.get(binding_id, ())
        return sum(1 for t in calls if now - t < _WINDOW)

    def _prune(self, now: float) -> None:
        idle = [
            key for key, calls in self._calls.items() if not calls or now - calls[-1] >= _WINDOW
        ]
        for key in idle:
            del self._calls[key]
        self._prune_at = max(4096, 2 * len(self._calls))


def within_hours(start: int, end: int, timezone: str, now: float) -> bool:
    """Whether ``now`` falls in the daily window [start, end) minutes in ``timezone``.

    A window with end <= start wraps past midnight; 00:00-24:00 is always open.
    """
    local = datetime.fromtimestamp(now, ZoneInfo(timezone))
    minute = local.hour * 60 + local.minute
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end
