"""The relay's media port range: even RTP ports, each with RTCP on the next port; sans-IO.

Ports are handed out in a rotating order, so a port freed by an ended call is reused
last (a late packet of the old call then finds nothing, rather than a new call). The
caller binds the pair; a pair that another process holds is reported with
:meth:`PortPool.unusable` and set aside until :meth:`PortPool.retry_unusable`.
"""

from __future__ import annotations

from collections import deque

__all__ = ["PortPool", "PortsExhausted"]


class PortsExhausted(Exception):
    """Every pair of the range is in use."""


class PortPool:
    """Pairs (rtp, rtp + 1) with rtp even, from ``low`` to ``high`` inclusive."""

    def __init__(self, low: int, high: int) -> None:
        first = low + (low & 1)
        if not 1024 <= first < high <= 65535:
            raise ValueError(f"port range {low}-{high} holds no RTP/RTCP pair above 1023")
        self.low, self.high = low, high
        self._free: deque[int] = deque(range(first, high, 2))
        self._used: set[int] = set()
        self._unusable: set[int] = set()

    @property
    def free(self) -> int:
        return len(self._free)

    def take(self) -> int:
        """The RTP port of a free pair."""
        if not self._free:
            raise PortsExhausted(f"no free port pair in {self.low}-{self.high}")
        port = self._free.popleft()
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        """Give a pair back (it goes to the end of the queue)."""
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)

    def unusable(self, port: int) -> None:
        """A pair taken that could not be bound: keep it out until retried."""
        self._used.discard(port)
        self._unusable.add(port)

    def retry_unusable(self) -> None:
        self._free.extend(sorted(self._unusable))
        self._unusable.clear()
