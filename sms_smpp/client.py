"""Upstream side: ansim binds to one or more upstream SMSCs.

:class:`UpstreamLink` is one connection (a :class:`~sms_smpp.link.Link` in the ESME
role) that submits within a window and hands receipts and mobile-originated messages to
the relay. A request that timed out counts against its message only if the upstream
answered requests sent after it (it passed over that one); a link lost abruptly, or
found dead by its session, blames its oldest unanswered request, the others going first
in line again.

A suspect (a message blamed for a send left unanswered, see :mod:`sms_smpp.relay`) is
sent again on a probe: a short-lived bind of its own to the same upstream, carrying
that message alone and closed once it is answered or timed out, so that a message that
makes the upstream stop answering stalls only the probe, never the link carrying the
other traffic. An upstream that refuses the probe's bind (one bind per account) gets
its suspects alone on the main link instead, drained first and followed by an
enquire_link fence. :class:`UpstreamConnector` keeps one upstream bound: connect, bind, and after
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
from .pdu import Bind, Cmd, Pdu
from .queue import Message
from .relay import Relay
from .session import Role, State

log = logging.getLogger(__name__)

_BIND_CMD = {"transceiver": Cmd.BIND_TRANSCEIVER, "transmitter": Cmd.BIND_TRANSMITTER}
_TLV_HEAD = struct.Struct(">HH")
_FENCE = "fence"  # context of the enquire_link sent right behind a suspect


def _abrupt(reason: str) -> bool:
    """Whether a link that closed for ``reason`` may have been brought down by a message."""
    return reason in ("connection lost", "enquire_link not answered") or reason.startswith(
        "protocol error"
    )


class UpstreamLink(Link):
    """One bind to an upstream SMSC."""

    def __init__(
        self,
        config: Upstream,
        relay: Relay,
        loop: asyncio.AbstractEventLoop,
        *,
        connector: UpstreamConnector | None = None,
        probe: bool = False,
    ) -> None:
        super().__init__(
            Role.ESME,
            loop,
            enquire_link_interval=config.enquire_link_interval,
            response_timeout=config.response_timeout,
        )
        self.config = config
        self.name = config.name
        self.relay = relay
        self.connector = connector
        self.probe = probe  # a probe bind: one suspect, not a traffic link
        self.settled = loop.create_future()  # a probe's suspect was answered or timed out
        self.window = config.window
        #: the largest submit_sm body (without ansim's id TLV) this upstream takes
        self.max_body = (
            None
            if config.max_pdu_size is None
            else config.max_pdu_size - 16 - (0 if config.message_id_tlv is None else 4 + 17)
        )
        self.bound = loop.create_future()
        self._up = False
        self._id_tag = config.message_id_tlv
        #: "" in normal use; "draining" (taking nothing new) or "probing" (a suspect and
        #: its fence in flight) while the relay sends a suspect alone
        self.isolating = ""
        self._alone: Message | None = None  # the suspect last sent alone on this link

    def on_connected(self) -> None:
        c = self.config
        self.session.send_request(
            Bind(
                _BIND_CMD[c.bind],
                system_id=c.system_id,
                password=c.password,
                system_type=c.system_type,
            ),
            self.loop.time(),
        )

    def has_window(self) -> bool:
        return self.session.outstanding < self.window and self.session.bound and not self.isolating

    def submit(self, msg: Message, now: float) -> None:
        body = msg.body
        if self._id_tag is not None:
            mid = msg.id.encode() + b"\0"
            body = body + _TLV_HEAD.pack(self._id_tag, len(mid)) + mid
        self.session.send_body(Cmd.SUBMIT_SM, body, now, msg)

    def submit_alone(self, msg: Message, now: float) -> None:
        """Send a suspect on this (drained) link with an enquire_link right behind it: the
        link takes nothing else until that enquire_link is answered."""
        self.submit(msg, now)
        self.session.send_request(Pdu(Cmd.ENQUIRE_LINK), now, _FENCE)
        self.isolating = "probing"
        self._alone = msg

    def handle_events(self, events: list[ev.Event]) -> None:
        m.PDUS_IN_UPSTREAM.inc(len(events))
        relay = self.relay
        unanswered: list[Message] = []
        for event in events:
            if type(event) is ev.ResponseReceived:
                if event.context is _FENCE:
                    self.isolating = ""  # the peer read past the suspect: back to normal
                    relay.schedule_pump()
                    continue
                relay.on_upstream_response(self, event.pdu, event.context)
                if self.probe:
                    self._settle()
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
                        # a suspect sent alone has no later request to compare with
                        alone = self.probe or event.context is self._alone
                        relay.on_upstream_timeout(
                            self, event.context, counts=event.ignored or alone
                        )
                        if self.probe:
                            self._settle()
            elif type(event) is ev.Bound:
                if not self.bound.done():
                    self.bound.set_result(True)
                if self.probe:
                    continue
                log.info("bound to upstream %s", self.name)
                self._up = True
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
                if self.probe:
                    for msg in unanswered:
                        relay.probe_lost(self, msg)
                    unanswered = []
                    self._settle()
                elif self._up:
                    self._up = False
                    log.warning("upstream %s: %s", self.name, event.reason)
                    relay.upstream_down(self, unanswered, blame=_abrupt(event.reason))
                unanswered = []
        if unanswered:
            if self.probe:
                for msg in unanswered:
                    relay.probe_lost(self, msg)
            else:
                relay.upstream_down(self, unanswered)

    def _settle(self) -> None:
        if not self.settled.done():
            self.settled.set_result(None)


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
        #: the upstream refused or could not take a probe bind: suspects go on the main link
        self.probe_refused = False
        self._probe: asyncio.Task[None] | None = None
        self._probe_link: UpstreamLink | None = None

    def start(self) -> None:
        self._task = self.loop.create_task(self._run(), name=f"upstream-{self.config.name}")

    async def _run(self) -> None:
        c = self.config
        delay = c.reconnect_min
        while not self._stopping:
            link = UpstreamLink(c, self.relay, self.loop, connector=self)
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(_returning(link), c.host, c.port), timeout=5.0
                )
            except (TimeoutError, OSError) as exc:
                log.info("upstream %s unreachable: %s", c.name, exc)
            else:
                self.link = link
                ok = await link.bound
                if ok:
                    delay = c.reconnect_min
                    self.probe_refused = False  # worth a try on each new bind
                await link.closed
                self.link = None
            if self._stopping:
                break
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(c.reconnect_max, delay * 2)

    @property
    def probing(self) -> bool:
        return self._probe is not None and not self._probe.done()

    def probe(self, msg: Message) -> None:
        """Send the suspect ``msg`` alone on a bind of its own (see module docstring)."""
        self._probe = self.loop.create_task(self._run_probe(msg), name=f"probe-{self.config.name}")

    async def _run_probe(self, msg: Message) -> None:
        c = self.config
        link = UpstreamLink(c, self.relay, self.loop, connector=self, probe=True)
        self._probe_link = link
        sent = False
        try:
            try:
                await asyncio.wait_for(
                    self.loop.create_connection(_returning(link), c.host, c.port), timeout=5.0
                )
                ok = await asyncio.wait_for(asyncio.shield(link.bound), c.response_timeout + 1.0)
            except (TimeoutError, OSError):
                ok = False
            if not ok or not link.session.bound:
                log.info("upstream %s: no probe bind; suspects go on the main link", c.name)
                self.probe_refused = True
                return
            link.submit(msg, self.loop.time())
            sent = True
            link.flush()
            await link.settled
            if link.session.bound:
                link.session.unbind(self.loop.time())
                link.flush()
                try:
                    await asyncio.wait_for(asyncio.shield(link.closed), c.response_timeout)
                except TimeoutError:
                    pass
        finally:
            self._probe_link = None
            link.close()
            if not sent:
                self.relay.suspect_back(msg)
            self.relay.schedule_pump()

    async def stop(self, timeout: float) -> None:
        """Let in-flight submits be answered (within ``timeout``), unbind, stop reconnecting."""
        self._stopping = True
        if self._probe is not None and not self._probe.done():
            self._probe.cancel()
            try:
                await self._probe
            except asyncio.CancelledError:
                pass
        link = self.link
        deadline = self.loop.time() + timeout
        if link is not None and link.session.bound:
            while link.session.outstanding and self.loop.time() < deadline:
                await asyncio.sleep(0.01)
            if link.session.bound:
                link.session.unbind(self.loop.time())
                link.flush()
            try:
                await asyncio.wait_for(
                    asyncio.shield(link.closed), max(0.05, deadline - self.loop.time())
                )
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
