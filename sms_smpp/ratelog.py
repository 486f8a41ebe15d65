"""Rate-limited log lines: a flood of one kind of event writes a few lines, not one each.

A carrier retrying a bad bind in a tight loop, or an upstream refusing every message,
would otherwise write one WARNING line per event and fill the disk. Each
:class:`RateLimitedLog` lets ``burst`` lines of its kind through, refilled at ``rate``
lines a second; a line it holds back is counted in
``ansim_smpp_log_lines_suppressed_total{kind}``, and the next line it writes says how
many were held back since the last one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import metrics as m


class RateLimitedLog:
    """One kind of log line, limited to a token bucket (see module docstring)."""

    def __init__(
        self,
        logger: logging.Logger,
        kind: str,
        *,
        burst: int = 5,
        rate: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._burst = float(burst)
        self._rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._counter = m.LOG_SUPPRESSED.labels(kind)
        self.suppressed = 0  # held back since the last line written

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Write the line if the bucket allows; returns whether it was written."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens < 1.0:
            self.suppressed += 1
            self._counter.inc()
            return False
        self._tokens -= 1.0
        if self.suppressed:
            msg += " (%d similar lines suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._logger.log(level, msg, *args)
        return True

    def warning(self, msg: str, *args: object) -> bool:
        return self.log(logging.WARNING, msg, *args)
