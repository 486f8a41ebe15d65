"""The SMPP relay as a service the engine starts: ``SmppService(config, limits)``, with
the ``translate.limits.Limits`` that decides each message (lookup, caps, blocklists).

``await service.start()`` opens the queue and records, puts stored messages back in
line, listens for carriers and binds to the upstreams. ``await service.stop()`` is
graceful and bounded (5 s by default): stop accepting connections and requests, commit
and answer everything already received, unbind carriers, let the upstreams answer
what is in flight, unbind them, close the queue. Whatever is not delivered stays in the
queue for the next start. A carrier-side port that cannot be opened raises
:class:`ListenError` (an ``OSError``) with a one-line reason, after closing what
``start`` opened.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

from .client import UpstreamConnector
from .config import SmppConfig
from .queue import MessageQueue
from .records import SmsRecords
from .relay import Relay, Translator
from .server import SmppServer

log = logging.getLogger(__name__)


class ListenError(OSError):
    """The carrier-side port could not be opened (in use, not permitted, bad address)."""


class SmppService:
    """Carrier-side server, upstream binds and the relay between them, as one unit."""

    def __init__(self, config: SmppConfig, store: Translator) -> None:
        self.config = config
        self.store = store
        self.queue: MessageQueue | None = None
        self.records: SmsRecords | None = None
        self.relay: Relay | None = None
        self.server: SmppServer | None = None
        self.connectors: list[UpstreamConnector] = []
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        c = self.config
        self.queue = MessageQueue(
            c.queue.path, map_size=c.queue.map_size_mb << 20, fsync=c.queue.fsync
        )
        # The store's attribution gives records of tenants' bindings their owner.
        self.records = SmsRecords(c.records, attribute=getattr(self.store, "attribution", None))
        self.relay = Relay(c, self.store, c.numbers.plan(), self.queue, self.records, loop)
        restored = self.relay.load()
        if restored:
            log.info("%d stored messages back in line", restored)
        self.server = SmppServer(c.server, self.relay, loop)
        try:
            await self.server.start()
        except OSError as exc:
            self.queue.close()
            self.records.close()
            self.relay = self.server = None
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ListenError(
                exc.errno, f"cannot listen on {c.server.host}:{c.server.port}: {reason}"
            ) from exc
        log.info("listening for carrier binds on %s:%d", c.server.host, self.server.port)
        for upstream in c.upstreams:
            connector = UpstreamConnector(upstream, self.relay, loop)
            connector.start()
            self.connectors.append(connector)
        self._housekeeping = loop.create_task(self._housekeep())

    @property
    def port(self) -> int:
        """The carrier-side port actually bound (config may say 0)."""
        assert self.server is not None
        return self.server.port

    async def _housekeep(self) -> None:
        assert self.queue is not None and self.relay is not None
        ticks = 0
        while True:
            await asyncio.sleep(1.0)
            ticks += 1
            now = time.time()
            self.relay.sweep_expired(now)
            self.relay.sweep_held(now)
            if ticks % 600 == 0:
                removed = self.queue.expire_receipt_maps(now - self.config.queue.dlr_ttl)
                if removed:
                    log.info("forgot %d receipt id maps past their time", removed)

    async def stop(self, timeout: float = 5.0) -> None:
        """Graceful, bounded stop (see module docstring)."""
        if self.relay is None or self.server is None:
            return
        relay, server = self.relay, self.server
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        server.stop_accepting()
        relay.stop_accepting()
        relay.commit_now()
        relay.stop_sending()
        relay.cancel_retries()
        budget = max(0.5, timeout - 1.0)
        await asyncio.gather(
            server.close(budget * 0.6), *(c.stop(budget * 0.8) for c in self.connectors)
        )
        relay.commit_now()
        assert self.queue is not None and self.records is not None
        self.queue.close()
        self.records.close()
        self.relay = None
        self.server = None
        log.info("SMPP relay stopped")
