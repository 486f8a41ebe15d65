"""Store writes of a running engine (map reloads, purges of expired bindings), done on a
background thread, one at a time.

A write waits for LMDB's write lock, which another process may hold for long (``ansim
numbers load`` of a large map, ``ansim numbers repack``), and a reload compiles every
map file first; done on the event loop, either would stop all call handling meanwhile.
Lookups stay on the loop thread and see a write from their first lookup after it
commits (see ``translate.store.Store``). The thread is a daemon: an engine told to stop
while a write still waits for the lock exits without it, and LMDB drops the write.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from translate.numbers import NumberPlan
from translate.reload import DropGuard, ReloadResult, reload_maps
from translate.store import Store, StoreError

__all__ = ["StoreJobs"]

log = logging.getLogger("ansim")

#: Most bindings one purge deletes: the write lock is not held for long.
PURGE_LIMIT = 10_000


class StoreJobs:
    """Runs reloads and purges off the event loop, in the order asked, never two at once;
    a reload asked for while one runs is done again after it (the maps may have changed
    since it read them). A forced reload (SIGUSR1) skips the drop guard; asked for while
    a plain one waits, it takes that one's place."""

    def __init__(
        self,
        store: Store,
        maps: Path,
        plan: NumberPlan,
        loop: asyncio.AbstractEventLoop,
        guard: DropGuard | None = None,
    ) -> None:
        self.store = store
        self.maps = maps
        self.plan = plan
        self.guard = guard
        self._loop = loop
        self._wanted: list[str] = []
        self._running: str | None = None
        self._closed = False

    def reload(self) -> None:
        self._want("reload")

    def force_reload(self) -> None:
        if "reload" in self._wanted:
            self._wanted[self._wanted.index("reload")] = "forced reload"
        self._want("forced reload")

    def purge(self) -> None:
        self._want("purge")

    def reload_now(self, *, force: bool = False) -> ReloadResult:
        """Reload on the calling thread (at start, before any call is taken)."""
        guard = None if force else self.guard
        result = reload_maps(self.store, self.maps, self.plan, guard=guard)
        if not result.ok:
            log.error(
                "number map reload refused; the running map stays",
                extra={"errors": len(result.errors), "forced": force},
            )
        return result

    def _purge_now(self) -> None:
        try:
            purged = self.store.purge_expired(time.time(), limit=PURGE_LIMIT)
        except StoreError as exc:
            log.error("purging expired bindings failed: %s", exc)
            return
        if purged:
            log.info("expired bindings purged", extra={"count": purged})

    def _want(self, job: str) -> None:
        if self._closed or job in self._wanted:
            return
        self._wanted.append(job)
        self._next()

    def _next(self) -> None:
        if self._running is not None or not self._wanted or self._closed:
            return
        job = self._wanted.pop(0)
        work: Callable[[], object]
        if job == "reload":
            work = self.reload_now
        elif job == "forced reload":
            work = lambda: self.reload_now(force=True)  # noqa: E731
        else:
            work = self._purge_now
        self._running = job
        threading.Thread(
            target=self._run,
            args=(job, work),
            name=f"ansim-store-{job.replace(' ', '-')}",
            daemon=True,
        ).start()

    def _run(self, job: str, work: Callable[[], object]) -> None:
        try:
            work()
        except Exception:
            log.exception("store %s failed", job)
        finally:
            try:
                self._loop.call_soon_threadsafe(self._finished)
            except RuntimeError:  # the loop is closed: the engine has stopped
                pass

    def _finished(self) -> None:
        self._running = None
        self._next()

    async def close(self, timeout: float) -> bool:
        """Take no more jobs and wait up to ``timeout`` s for the one under way; False
        when it is still running (the store must then be left open)."""
        self._closed = True
        self._wanted.clear()
        deadline = self._loop.time() + timeout
        while self._running is not None and self._loop.time() < deadline:
            await asyncio.sleep(0.05)
        if self._running is not None:
            log.warning("leaving the store %s unfinished: it still waits", self._running)
            return False
        return True
