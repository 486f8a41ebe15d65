"""Progress display for long loads: a bar on a terminal, percentage lines otherwise.

Shown only once a phase has at least ``threshold`` items, so small maps load quietly.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["ProgressBar"]


class ProgressBar:
    """Callable as ``bar(phase, done, total)``; call ``close()`` when the work ends."""

    def __init__(
        self, stream: TextIO | None = None, *, threshold: int = 5000, width: int = 30
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.threshold = threshold
        self.width = width
        self.tty = self.stream.isatty()
        self._phase = ""
        self._last_step = -1
        self._last_draw = 0.0
        self._open_line = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        if total < self.threshold:
            return
        if phase != self._phase:
            self._end_line()
            self._phase = phase
            self._last_step = -1
        fraction = min(done / total, 1.0)
        if self.tty:
            now = time.monotonic()
            if done < total and now - self._last_draw < 0.1:
                return
            self._last_draw = now
            filled = int(fraction * self.width)
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{phase:<9} [{bar}] {fraction:6.1%} {done}/{total}")
            self._open_line = True
        else:
            step = int(fraction * 10)  # a line every 10 %
            if step == self._last_step:
                return
            self._last_step = step
            self.stream.write(f"{phase}: {step * 10}% ({done}/{total})\n")
        self.stream.flush()

    def _end_line(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False

    def close(self) -> None:
        self._end_line()
