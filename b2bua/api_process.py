"""The control API's processes, started and supervised by ``ansim serve``.

The API runs in processes of its own (``ansim api``), so no HTTP request ever waits in
the signalling loop: ``api.workers`` of them on ``api.listen``, sharing the port with
SO_REUSEPORT, each on the same configuration folder as the engine (same store, same
call and SMS records), at a lower scheduling priority than the engine's (``api.nice``,
and Linux's batch policy): where the API and the engine share busy CPUs, a call's
datagram is handled before an API request. One that exits while the engine runs is started again after a
short delay; stopping the engine stops them with SIGTERM (SIGKILL after a grace).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from .children import terminate

log = logging.getLogger(__name__)

__all__ = ["ApiProcesses"]

RESTART_DELAY = 1.0


class ApiProcesses:
    """``count`` ``ansim api`` children on ``config_dir``; use ``start`` and ``stop``."""

    def __init__(
        self, config_dir: Path, count: int, *, debug: bool = False, nice: int = 0
    ) -> None:
        self.config_dir = config_dir
        self.count = count
        self.debug = debug
        self.nice = nice
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._watchers: list[asyncio.Task[None]] = []
        self._stopping = False

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "b2bua.cli", "api", "--config", str(self.config_dir)]
        if self.debug:
            argv.append("--debug")
        return argv

    async def start(self) -> None:
        for index in range(self.count):
            await self._spawn(index)
            self._watchers.append(asyncio.create_task(self._watch(index)))

    async def _spawn(self, index: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=self._lower if self.nice else None,
        )
        self.procs[index] = proc
        log.info("control API process started", extra={"worker": index, "pid": proc.pid})

    def _lower(self) -> None:
        """In the child, before it runs: its nice raised by ``nice``, and the batch policy
        (SCHED_BATCH: it never preempts the engine when it wakes up)."""
        os.nice(self.nice)
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))

    async def _watch(self, index: int) -> None:
        while not self._stopping:
            proc = self.procs.get(index)
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping:
                return
            log.error("control API process %d exited with %s: restarting it", index, code)
            self.restarts += 1
            await asyncio.sleep(RESTART_DELAY)
            if self._stopping:
                return
            try:
                await self._spawn(index)
            except OSError as exc:
                log.error("control API process %d could not be restarted: %s", index, exc)

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        await terminate(self.procs.values(), timeout)
        await asyncio.gather(*self._watchers, return_exceptions=True)
