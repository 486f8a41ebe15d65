"""Stopping the child processes ``ansim serve`` supervises (media relays, API processes):
SIGTERM to each, then SIGKILL to any still running after the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterable


async def terminate(procs: Iterable[asyncio.subprocess.Process], timeout: float) -> None:
    """Ask every process in ``procs`` to stop, wait up to ``timeout`` seconds for each,
    and kill those that have not."""
    procs = list(procs)
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
