"""Caps on inbound stream connections (TCP and TLS), sans-IO: in total and per source
address, with a higher cap for trusted sources (the trunks and the allow-list), so that
one address cannot take every connection slot or every file descriptor.
"""

from __future__ import annotations

from collections.abc import Callable


class ConnectionLimits:
    """Counts of open inbound connections; ``open`` admits one or says why not."""

    def __init__(
        self,
        max_total: int = 4096,
        max_per_source: int = 32,
        max_per_trusted: int = 1024,
        is_trusted: Callable[[str], bool] | None = None,
    ) -> None:
        self.max_total = max_total
        self.max_per_source = max_per_source
        self.max_per_trusted = max_per_trusted
        self.is_trusted = is_trusted
        self.total = 0
        self.by_source: dict[str, int] = {}

    def open(self, host: str) -> str | None:
        """Count a new inbound connection from ``host``: None when admitted, else the
        reason it is refused ("total" or "per_source")."""
        if self.total >= self.max_total:
            return "total"
        n = self.by_source.get(host, 0)
        trusted = self.is_trusted is not None and self.is_trusted(host)
        if n >= (self.max_per_trusted if trusted else self.max_per_source):
            return "per_source"
        self.by_source[host] = n + 1
        self.total += 1
        return None

    def release(self, host: str) -> None:
        """An admitted connection from ``host`` has closed."""
        n = self.by_source.get(host, 0)
        if n <= 1:
            self.by_source.pop(host, None)
        else:
            self.by_source[host] = n - 1
        if self.total > 0:
            self.total -= 1
