"""Webhook delivery, in the API process: the outboxes are read, events queued per
receiver, sent, retried, and set aside when too old.

Three outboxes feed it, each read from the position kept for it in the control tables:
the ``events`` table of the call records file (``call.*``, written by the engine's CDR
writer), the ``sms_events`` table of the SMS records file (``sms.*``), and the store's
history of ended bindings (``binding.expired``). The collector reads what is past each
position, builds one JSON body per event, and in one store transaction queues a delivery
for each receiver of the event's tenant that asked for its type and moves the positions
on (``api.webhooks``): an event is queued once, whatever restarts in between.

The sender takes the deliveries that are due, at most ``webhooks.concurrency`` at once
for one tenant (a slow receiver holds back only its own tenant), and POSTs each with a
fresh timestamp and signature. A 2xx removes the delivery; anything else, a timeout or
a connection error schedules the next attempt after an exponential backoff with jitter
(``retry_min`` doubled per attempt up to ``retry_max``, then a random half of it more or
less), until the delivery is ``dead_after`` seconds old, when it is moved to the dead
letters (``ansim_api_webhook_dead_letters_total``). Deliveries carry no order between
events.

With several API processes on one store only one delivers: the one holding the lock file
``api-webhooks.lock`` in the store's folder; the others try again every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import random
from collections.abc import Callable
from typing import Any

import httpx

from api.context import ApiContext
from api.records import call_events_after, iso, sms_events_after
from api.webhooks import Delivery, Hook, sign
from translate.store import Transaction

__all__ = ["WebhookDispatcher", "backoff", "envelope"]

log = logging.getLogger("ansim.api")

#: Events read from each outbox at a time.
BATCH = 500
#: Deliveries the sender takes from the table at a time.
TAKE = 200
LOCK_RETRY = 3.0


def backoff(attempts: int, retry_min: float, retry_max: float) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: exponential, capped,
    with jitter (between half and all of it)."""
    delay = min(retry_max, retry_min * (2 ** min(max(attempts - 1, 0), 40)))
    return delay / 2 + random.uniform(0, delay / 2)


def envelope(
    event_id: str,
    kind: str,
    at: float,
    tenant: str,
    binding_id: str | None,
    out_id: str | None,
    pool: str | None,
    data: dict[str, Any],
) -> bytes:
    """The JSON body of one event, as every receiver gets it."""
    body = {
        "id": event_id,
        "type": kind,
        "created_at": iso(at),
        "tenant": tenant,
        "binding_id": binding_id,
        "out_id": out_id,
        "pool": pool,
        "data": data,
    }
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookDispatcher:
    """Collects events into deliveries and sends them (see the module docstring)."""

    def __init__(
        self,
        ctx: ApiContext,
        *,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
    ) -> None:
        self.ctx = ctx
        self.tables = ctx.webhooks
        self.settings = ctx.settings.webhooks
        self._client_factory = client_factory
        self._client: httpx.AsyncClient | None = None
        self._wake = asyncio.Event()
        self._inflight: set[bytes] = set()
        self._per_tenant: dict[str, int] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock_fd: int | None = None

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        """Deliver until cancelled (only while this process holds the delivery lock)."""
        while not self._take_lock():
            await asyncio.sleep(LOCK_RETRY)
        timeout = httpx.Timeout(self.settings.timeout)
        self._client = (
            self._client_factory()
            if self._client_factory is not None
            else httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        )
        collector = asyncio.create_task(self._collect_forever())
        try:
            await self._send_forever()
        finally:
            collector.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(collector, *self._tasks, return_exceptions=True)
            await self._client.aclose()
            self._release_lock()

    def _take_lock(self) -> bool:
        path = os.path.join(self.ctx.store.path, "api-webhooks.lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def _collect_forever(self) -> None:
        while True:
            try:
                read = await self.collect()
            except Exception:
                log.exception("collecting webhook events failed")
                read = 0
            if not read:
                await asyncio.sleep(self.settings.poll)

    async def _send_forever(self) -> None:
        while True:
            try:
                self.send_due()
            except Exception:
                log.exception("sending webhooks failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.poll)

    # ------------------------------------------------------------------ collecting

    async def collect(self) -> int:
        """Queue deliveries for what the outboxes hold past their positions; how many
        events were read (0: nothing new)."""
        ctx, tables = self.ctx, self.tables
        loop = asyncio.get_running_loop()
        with ctx.store.reader() as txn:
            start = {name: tables.position(txn, name) for name in ("calls", "sms", "ended")}
            hooks = tables.hooks(txn)
        calls_at = int(start["calls"] or 0)
        sms_at = int(start["sms"] or 0)
        ended_at = bytes(start["ended"] or b"")
        calls = await loop.run_in_executor(None, call_events_after, ctx.cdr, calls_at, BATCH)
        sms = await loop.run_in_executor(None, sms_events_after, ctx.sms, sms_at, BATCH)
        with ctx.store.reader() as txn:
            ended = list(ctx.store.history.since(txn, ended_at, BATCH))
        if not (calls or sms or ended):
            return 0
        by_tenant: dict[str, list[Hook]] = {}
        for hook in hooks:
            by_tenant.setdefault(hook.tenant, []).append(hook)
        bodies: list[tuple[str, str, str, bytes]] = []  # tenant, event id, type, body
        for e in calls:
            data: dict[str, Any] = {"call_id": e["call_id"]}
            if e["type"] == "call.completed":
                data["cdr"] = e["record"]
            elif e["data"]:
                data.update(json.loads(e["data"]))
            body = envelope(
                e["event_id"], e["type"], e["at"], e["tenant"], e["binding_id"], e["out_id"],
                e["pool"], data,
            )  # fmt: skip
            bodies.append((e["tenant"], e["event_id"], e["type"], body))
        for e in sms:
            rec = e["record"]
            body = envelope(
                e["event_id"], e["type"], e["at"], e["tenant"], rec.get("binding_id"),
                rec.get("out_id"), rec.get("pool"), {"sms": rec},
            )  # fmt: skip
            bodies.append((e["tenant"], e["event_id"], e["type"], body))
        for b in ended:
            if not b.expired:
                continue
            event_id = f"ev_{b.binding_id}.expired"
            data = {
                "x": b.virtual,
                "kind": b.kind,
                "expired_at": iso(b.expires),
                "removed_at": iso(b.ended_at),
            }
            body = envelope(
                event_id, "binding.expired", b.ended_at, b.tenant, b.binding_id, b.out_id,
                b.pool, data,
            )  # fmt: skip
            bodies.append((b.tenant, event_id, "binding.expired", body))
        moved = {
            "calls": calls[-1]["seq"] if calls else calls_at,
            "sms": sms[-1]["seq"] if sms else sms_at,
            "ended": ended[-1].cursor if ended else ended_at,
        }

        def work(t: Transaction) -> int:
            for name, value in start.items():  # another collector moved on: leave it be
                if tables.position(t.txn, name) != value:
                    return 0
            n = 0
            for tenant, event_id, kind, body in bodies:
                for hook in by_tenant.get(tenant, ()):
                    if kind in hook.events:
                        tables.queue(t.txn, hook, event_id, kind, body, t.now)
                        n += 1
            for name, value in moved.items():
                tables.set_position(t.txn, name, value)
            return n

        queued: int = await ctx.writer.run(work)
        if queued:
            ctx.metrics.webhook_queued.inc(queued)
            self._wake.set()
        return len(calls) + len(sms) + len(ended)

    # ------------------------------------------------------------------ sending

    def send_due(self) -> int:
        """Start sending what is due (within the per-tenant limits); how many started."""
        ctx = self.ctx
        limit = self.settings.concurrency
        started = 0
        with ctx.store.reader() as txn:
            due = list(self.tables.due(txn, ctx.clock(), TAKE + len(self._inflight)))
            ctx.metrics.webhook_pending.set(self.tables.pending(txn))
        for d in due:
            if d.key in self._inflight or self._per_tenant.get(d.tenant, 0) >= limit:
                continue
            self._inflight.add(d.key)
            self._per_tenant[d.tenant] = self._per_tenant.get(d.tenant, 0) + 1
            task = asyncio.create_task(self._send(d))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        return started

    async def _send(self, d: Delivery) -> None:
        ctx, tables = self.ctx, self.tables
        try:
            with ctx.store.reader() as txn:
                hook = tables.hook(txn, d.hook_id)
            if hook is None or d.type not in hook.events:
                await ctx.writer.run(lambda t: self._finish(t, d))
                ctx.metrics.webhook_deliveries.labels("dropped").inc()
                return
            error = await self._post(hook, d)
            if error is None:
                await ctx.writer.run(lambda t: self._finish(t, d))
                ctx.metrics.webhook_deliveries.labels("delivered").inc()
                return
            now = ctx.clock()
            s = self.settings
            if now - d.first_at >= s.dead_after:
                await ctx.writer.run(lambda t: self._bury(t, d, error))
                ctx.metrics.webhook_deliveries.labels("dead").inc()
                ctx.metrics.webhook_dead.labels(d.tenant).inc()
                log.warning(
                    "webhook event set aside after %d attempts: %s",
                    d.attempts + 1,
                    error,
                    extra={"tenant": d.tenant, "hook": d.hook_id, "event_id": d.event_id},
                )
                return
            due = now + backoff(d.attempts + 1, s.retry_min, s.retry_max)
            await ctx.writer.run(lambda t: self._retry(t, d, due, error))
            ctx.metrics.webhook_deliveries.labels("failed").inc()
        finally:
            self._inflight.discard(d.key)
            self._per_tenant[d.tenant] -= 1
            self._wake.set()

    async def _post(self, hook: Hook, d: Delivery) -> str | None:
        """Send ``d`` to ``hook``; None when answered 2xx, else why not."""
        assert self._client is not None
        stamp = int(self.ctx.clock())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ansim-webhooks/1",
            "Ansim-Event-Id": d.event_id,
            "Ansim-Event-Type": d.type,
            "Ansim-Timestamp": str(stamp),
            "Ansim-Signature": sign(hook.secret, stamp, d.body),
            "Ansim-Delivery-Attempt": str(d.attempts + 1),
        }
        try:
            answer = await self._client.post(hook.url, content=d.body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        if 200 <= answer.status_code < 300:
            return None
        return f"HTTP {answer.status_code}"

    def _finish(self, t: Transaction, d: Delivery) -> None:
        if self.tables.get(t.txn, d.key) is not None:
            self.tables.done(t.txn, d)

    def _retry(self, t: Transaction, d: Delivery, due: float, error: str) -> None:
        if self.tables.get(t.txn, d.key) is not None:
            self.tables.retry(t.txn, d, due, error)

    def _bury(self, t: Transaction, d: Delivery, error: str) -> None:
        if self.tables.get(t.txn, d.key) is not None:
            self.tables.bury(t.txn, d, t.now, error)
