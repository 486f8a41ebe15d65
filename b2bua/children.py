"""The child processes ``ansim serve`` supervises (media relays, API processes): each
started again a moment after it exits, and stopped with SIGTERM, then SIGKILL for any
still running after the timeout; on Linux each is also sent SIGTERM by the kernel when
the engine dies without stopping it (SIGKILL, the OOM killer), so that no API process
goes on serving, unsupervised, beside the engine started after it."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
# Loaded in the engine, not in the child between fork and exec.
_libc = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
)


def dies_with_parent(then: Callable[[], None] | None = None) -> Callable[[], None]:
    """A ``preexec_fn`` for a child of this process: the kernel sends the child SIGTERM
    when this process dies (``PR_SET_PDEATHSIG``), and a child whose parent died before
    that was set exits at once; then ``then`` runs, if given."""
    parent = os.getpid()

    def setup() -> None:
        if _libc is not None:
            _libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
            if os.getppid() != parent:
                os._exit(1)
        if then is not None:
            then()

    return setup


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


class Supervisor(abc.ABC):
    """Child processes by index, each started again ``restart_delay`` seconds after it
    exits, until ``stop``. Subclasses start one in ``_spawn`` (and set ``procs[index]``),
    name it in ``kind`` for the log, and may act on an exit in ``_lost``."""

    kind = "child process"
    logger = log
    restart_delay = 1.0

    def __init__(self) -> None:
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.restarts = 0
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []

    @abc.abstractmethod
    async def _spawn(self, index: int) -> None:
        """Start process ``index`` and set ``procs[index]``."""

    def _lost(self, index: int) -> None:  # noqa: B027 (a hook, doing nothing unless overridden)
        """Process ``index`` exited and is about to be started again."""

    async def _start(self, count: int) -> None:
        for index in range(count):
            await self._spawn(index)
            self._watchers.append(asyncio.create_task(self._watch(index)))

    async def _watch(self, index: int) -> None:
        while not self._stopping:
            proc = self.procs.get(index)
            if proc is None:
                return
            code = await proc.wait()
            if self._stopping:
                return
            self.logger.error("%s %d exited with %s: restarting it", self.kind, index, code)
            self._lost(index)
            self.restarts += 1
            await asyncio.sleep(self.restart_delay)
            if self._stopping:
                return
            try:
                await self._spawn(index)
            except Exception as exc:
                self.logger.error("%s %d could not be restarted: %s", self.kind, index, exc)

    async def _stop(self, timeout: float) -> None:
        self._stopping = True
        for task in self._watchers:
            task.cancel()
        await terminate(self.procs.values(), timeout)
        await asyncio.gather(*self._watchers, return_exceptions=True)
