"""The control API's processes, started and supervised by ``ansim serve``.

The API runs in processes of its own (``ansim api``), so no HTTP request ever waits in
the signalling loop: ``api.workers`` of them on ``api.listen``, sharing the port with
SO_REUSEPORT, each on the same configuration folder as the engine (same store, same
call and SMS records), at a lower scheduling priority than the engine's (``api.nice``
and ``api.scheduling``, Linux's batch policy by default): where the API and the engine
share busy CPUs, a call's datagram is handled before an API request. One that exits
while the engine runs is started again after a short delay; stopping the engine stops
them with SIGTERM (SIGKILL after a grace), and an engine that dies takes them with it
(``children.dies_with_parent``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from .children import Supervisor, dies_with_parent

log = logging.getLogger(__name__)

__all__ = ["POLICIES", "ApiProcesses"]

#: ``api.scheduling`` values and the Linux policies they name
POLICIES = {"normal": os.SCHED_OTHER, "batch": os.SCHED_BATCH, "idle": os.SCHED_IDLE}


class ApiProcesses(Supervisor):
    """``count`` ``ansim api`` children on ``config_dir``; use ``start`` and ``stop``."""

    kind = "control API process"
    logger = log

    def __init__(
        self,
        config_dir: Path,
        count: int,
        *,
        debug: bool = False,
        nice: int = 0,
        scheduling: str = "normal",
    ) -> None:
        super().__init__()
        self.config_dir = config_dir
        self.count = count
        self.debug = debug
        self.nice = nice
        self.policy = POLICIES[scheduling]

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "b2bua.cli", "api", "--config", str(self.config_dir)]
        if self.debug:
            argv.append("--debug")
        return argv

    async def start(self) -> None:
        await self._start(self.count)

    async def _spawn(self, index: int) -> None:
        proc = await asyncio.create_subprocess_exec(
            *self.argv(),
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=dies_with_parent(
                self._lower if self.nice or self.policy != os.SCHED_OTHER else None
            ),
        )
        self.procs[index] = proc
        log.info("control API process started", extra={"worker": index, "pid": proc.pid})

    def _lower(self) -> None:
        """In the child, before it runs: its nice raised by ``nice``, and its scheduling
        policy set (SCHED_BATCH: it does not preempt the engine when it wakes up;
        SCHED_IDLE: the engine preempts it at once when the engine wakes up)."""
        if self.nice:
            os.nice(self.nice)
        if self.policy != os.SCHED_OTHER:
            os.sched_setscheduler(0, self.policy, os.sched_param(0))

    async def stop(self, timeout: float = 5.0) -> None:
        await self._stop(timeout)
