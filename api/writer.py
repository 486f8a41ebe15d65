"""Store writes of the API, off the event loop and many to a transaction (group commit).

An LMDB write waits for the environment's write lock, which a map reload or a repack in
another process may hold for seconds, and every commit ends with an fsync. Done on
uvicorn's event loop either would stop every request meanwhile; done one request to a
transaction, the fsyncs alone would cap the API at a few thousand writes a second.

So request handlers hand their unit of work (a function of a
``translate.store.Transaction``) to ``StoreWriter.run`` and await it. One thread takes
the units queued meanwhile, up to ``max_batch``, runs each in a savepoint of one write
transaction (a unit that raises is undone alone and gets its exception), commits once,
and only then resolves the awaiting handlers: nobody is told "created" before the
binding is on disk. While one batch commits, the next one queues, so batches grow with
the load and the commit cost per request shrinks.

A savepoint is an LMDB nested transaction, which copies every page it writes that the
batch has written already: in a busy batch most of them. A unit that touches nothing
but the transaction may say so (``rerun=True``: the single create and delete of a
binding); a batch made only of such units runs them straight in the transaction, and
if one of them raises, the whole batch is undone and run again unit by unit in
savepoints, and the next batch too. Each answer is the same either way.

A commit's fsync costs about a quarter of a millisecond of CPU whatever the batch holds.
Under a steady, spread-out load (requests arriving one by one, each soon after the last
commit) every batch would hold one or two requests and the fsyncs would take most of
the API's CPU; so a batch starts no sooner than ``min_interval`` (``api.commit_interval``)
after the start of the one before, and the requests of that time share its commit. A
request that finds the writer idle since longer waits for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from prometheus_client import CollectorRegistry, Histogram

from translate.store import Store, Transaction

__all__ = ["StoreWriter"]

log = logging.getLogger("ansim.api")

T = TypeVar("T")


@dataclass(slots=True)
class _Unit(Generic[T]):
    work: Callable[[Transaction], T]
    loop: asyncio.AbstractEventLoop | None
    future: Any  # asyncio.Future on a loop, or a _Waiter for callers on other threads
    rerun: bool = False  # work may be run twice, the first run undone


class _Undo(Exception):
    """A unit of a batch run without savepoints raised: the batch is undone."""


class _Waiter:
    """A result slot for ``StoreWriter.call`` from a plain thread."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


_STOP = object()


class StoreWriter:
    """One thread that runs units of work against the store, a batch per transaction."""

    def __init__(
        self,
        store: Store,
        *,
        max_batch: int = 512,
        min_interval: float = 0.0,
        clock: Callable[[], float] = time.time,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.store = store
        self.max_batch = max_batch
        self.min_interval = min_interval
        self.clock = clock
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._plain = True  # the last batch had no failure: try the next without savepoints
        self.batch_size = Histogram(
            "ansim_api_write_batch_size",
            "Units of work committed by one store write transaction",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.batch_seconds = Histogram(
            "ansim_api_write_batch_seconds",
            "Time from a batch's start to its commit, lock wait and fsync included",
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1, 5),
            registry=registry,
        )

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name="api-writer", daemon=True)
                self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the thread."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(_STOP)
            thread.join(timeout)

    async def run(self, work: Callable[[Transaction], T], *, rerun: bool = False) -> T:
        """Run ``work`` in a savepoint of the next batch; its result once committed.
        ``rerun``: ``work`` reads and writes nothing but the transaction, so it may be run
        twice, the first run undone (see the module docstring)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Unit(work, loop, future, rerun))
        return await future

    def call(self, work: Callable[[Transaction], T], timeout: float | None = None) -> T:
        """``run`` for a caller outside an event loop (blocks until committed)."""
        waiter = _Waiter()
        self._queue.put(_Unit(work, None, waiter))
        if not waiter.done.wait(timeout):
            raise TimeoutError("store write did not finish in time")
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    def _main(self) -> None:
        last = 0.0
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            # A batch starts no sooner than min_interval after the one before, so that
            # the requests of that time share its commit (and fsync).
            wait = last + self.min_interval - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            last = time.perf_counter()
            batch: list[_Unit[Any]] = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    unit = self._queue.get_nowait()
                except queue.Empty:
                    break
                if unit is _STOP:
                    stop = True
                    break
                batch.append(unit)
            self._run_batch(batch)
            if stop:
                return

    def _run_batch(self, batch: list[_Unit[Any]]) -> None:
        started = time.perf_counter()
        outcomes: list[tuple[Any, BaseException | None]] | None = None
        if self._plain and all(unit.rerun for unit in batch):
            outcomes = self._run_plain(batch)
        if outcomes is None:
            outcomes = self._run_savepoints(batch)
            self._plain = all(error is None for _, error in outcomes)
        self.batch_size.observe(len(batch))
        self.batch_seconds.observe(time.perf_counter() - started)
        self._resolve_all(batch, outcomes)

    def _run_plain(self, batch: list[_Unit[Any]]) -> list[tuple[Any, BaseException | None]] | None:
        """Every unit straight in one transaction; None (nothing written) when one raised
        or the commit failed."""
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self.store.transaction(self.clock()) as t:
                for unit in batch:
                    try:
                        outcomes.append((unit.work(t), None))
                    except Exception as exc:
                        raise _Undo from exc
        except Exception:
            return None
        return outcomes

    def _run_savepoints(self, batch: list[_Unit[Any]]) -> list[tuple[Any, BaseException | None]]:
        outcomes: list[tuple[Any, BaseException | None]] = []
        try:
            with self.store.transaction(self.clock()) as t:
                for unit in batch:
                    try:
                        with t.savepoint() as sp:
                            outcomes.append((unit.work(sp), None))
                    except Exception as exc:
                        outcomes.append((None, exc))
        except Exception as exc:  # the commit itself failed: nothing was written
            log.error("store write failed: %s", exc)
            outcomes = [(None, exc)] * len(batch)
        return outcomes

    def _resolve_all(
        self, batch: list[_Unit[Any]], outcomes: list[tuple[Any, BaseException | None]]
    ) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, Any, BaseException | None]]] = {}
        for unit, (result, error) in zip(batch, outcomes, strict=True):
            if unit.loop is None:
                waiter: _Waiter = unit.future
                waiter.result, waiter.error = result, error
                waiter.done.set()
            else:
                by_loop.setdefault(unit.loop, []).append((unit.future, result, error))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_resolve, items)
            except RuntimeError:
                pass  # the loop is closed: nobody waits any more


def _resolve(items: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
    for future, result, error in items:
        if future.cancelled():
            continue
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)
