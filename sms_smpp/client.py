"""Upstream side: ansim binds to one or more upstream SMSCs.

:class:`UpstreamLink` is one connection (a :class:`~sms_smpp.link.Link` in the ESME
role) that submits within a window and hands receipts and mobile-originated messages to
the relay. :class:`UpstreamConnector` keeps one upstream bound: connect, bind, and after
any loss reconnect with exponential backoff and jitter. Which bound upstream gets
traffic (failover by priority) is the relay's choice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import struct
from collections.abc import Callable

from . import events as ev
from . import metrics as m
from .config import Upstream
from .link import Link
from .pdu import Bind, Cmd
from .queue import Message
from .relay import Relay
from .session import Role, State

log = logging.getLogger(__name__)

_BIND_CMD = {"transceiver": Cmd.BIND_TRANSCEIVER, "transmitter": Cmd.BIND_TRANSMITTER}
_TLV_HEAD = struct.Struct(">HH")


class UpstreamLink(Link):
    """One bind to an upstream SMSC."""

    def __init__(self, config: Upstream, relay: Relay, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(Role.ESME, loop, enquire_link_interval=config.enquire_link_interval,
                         response_timeout=config.response_timeout)
        self.config = config
        self.name = config.name
        self.relay = relay
        self.window = config.window
        self.bound = loop.create_future()
        self._up = False
        self._id_tag = config.message_id_tlv

    def on_connected(self) -> None:
        c = self.config
        self.session.send_request(
            Bind(_BIND_CMD[c.bind], system_id=c.system_id, password=c.password,
                 system_type=c.system_type), self.loop.time())

    def has_window(self) -> bool:
        return self.session.outstanding < self.window and self.session.bound

    def submit(self, msg: Message, now: float) -> None:
        body = msg.body
        if self._id_tag is not None:
            mid = msg.id.encode() + b"\0"
            body = body + _TLV_HEAD.pack(self._id_tag, len(mid)) + mid
        self.session.send_body(Cmd.SUBMIT_SM, body, now, msg)

    def handle_events(self, events: list[ev.Event]) -> None:
        m.PDUS_IN_UPSTREAM.inc(len(events))
        relay = self.relay
        unanswered: list[Message] = []
        for event in events:
            if type(event) is ev.ResponseReceived:
                relay.on_upstream_response(self, event.pdu, event.context)
            elif type(event) is ev.RequestReceived:
                pdu = event.pdu
                if pdu.command_id in (Cmd.DELIVER_SM, Cmd.DATA_SM):
                    relay.on_upstream_deliver(self, pdu)
                else:
                    self.session.respond(pdu, 0)
            elif type(event) is ev.RequestTimedOut:
                if isinstance(event.context, Message):
                    if self.session.state is State.CLOSED:
                        unanswered.append(event.context)
                    else:
                        relay.on_upstream_timeout(self, event.context)
            elif type(event) is ev.Bound:
                log.info("bound to upstream %s", self.name)
                self._up = True
                if not self.bound.done():
                    self.bound.set_result(True)
                relay.upstream_up(self)
            elif type(event) is ev.BindRefused:
                log.warning("upstream %s refused the bind: status 0x%x", self.name, event.status)
                if not self.bound.done():
                    self.bound.set_result(False)
            elif type(event) is ev.ProtocolError:
                m.PROTOCOL_ERRORS.labels("upstream").inc()
            elif type(event) is ev.Closed:
                if not self.bound.done():
                    self.bound.set_result(False)
                if self._up:
                    self._up = False
                    log.warning("upstream %s: %s", self.name, event.reason)
                    relay.upstream_down(self, unanswered)
                unanswered = []
        if unanswered:
            relay.upstream_down(self, unanswered)


def _returning(link: UpstreamLink) -> Callable[[], UpstreamLink]:
    return lambda: link


class UpstreamConnector:
    """Keeps one upstream bound for as long as it runs (see module docstring)."""

    def __init__(self, config: Upstream, relay: Relay, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.relay = relay
        self.loop = loop
        self.link: UpstreamLink | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = self.loop.create_task(self._run(), name=f"upstream-{self.config.name}")

    async def _run(self) -> None:
        c = self.config
        delay = c.reconnect_min
        while not self._stopping:
            link = UpstreamLink(c, self.relay, self.loop)
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(_returning(link), c.host, c.port), timeout=5.0)
            except (TimeoutError, OSError) as exc:
                log.info("upstream %s unreachable: %s", c.name, exc)
            else:
                self.link = link
                ok = await link.bound
                if ok:
                    delay = c.reconnect_min
                await link.closed
                self.link = None
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(c.reconnect_max, delay * 2)

    async def stop(self, timeout: float) -> None:
        """Let in-flight submits be answered (within ``timeout``), unbind, stop reconnecting."""
        self._stopping = True
        link = self.link
        deadline = self.loop.time() + timeout
        if link is not None and link.session.bound:
            while link.session.outstanding and self.loop.time() < deadline:
                await asyncio.sleep(0.01)
            if link.session.bound:
                link.session.unbind(self.loop.time())
                link.flush()
            try:
                await asyncio.wait_for(asyncio.shield(link.closed),
                                       max(0.05, deadline - self.loop.time()))
            except TimeoutError:
                pass
        if link is not None:
            link.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
