"""Carrier side: ESMEs and carrier SMSCs bind to ansim here.

:class:`EsmeLink` is one carrier connection (a :class:`~sms_smpp.link.Link` in the SMSC
role); :class:`SmppServer` listens for them. Binds are decided by
:class:`~sms_smpp.auth.BindGuard`; submit_sm/data_sm go to the relay; receivers get
deliver_sm from the relay within their window.

Every bind attempt counts against the remote address's bind limit, whatever becomes of
it: accepted, refused for its credentials or limits, undecodable (an over-long
system_id is answered ESME_RINVSYSID), or sent on a session already bound. Refusals are
logged through a rate limit, so a flood of them writes a few lines a second.
"""

from __future__ import annotations

import asyncio
import logging
import time

from . import events as ev
from . import metrics as m
from .auth import BindGuard
from .config import ServerConfig
from .link import Link
from .pdu import BIND_COMMANDS, Cmd, Status
from .queue import Message
from .ratelog import RateLimitedLog
from .relay import Relay
from .session import Role, State

log = logging.getLogger(__name__)

_RECEIVING = (State.BOUND_RX, State.BOUND_TRX)


class EsmeLink(Link):
    """One carrier bind."""

    def __init__(self, server: SmppServer) -> None:
        cfg = server.config
        super().__init__(
            Role.SMSC,
            server.loop,
            enquire_link_interval=cfg.enquire_link_interval,
            response_timeout=cfg.response_timeout,
            bind_timeout=cfg.bind_timeout,
        )
        self.server = server
        self.relay = server.relay
        self.system_id = ""
        self.window = cfg.window
        self.receives = False
        self._counted = False

    def on_connected(self) -> None:
        self.server.links.add(self)

    def has_window(self) -> bool:
        return self.session.outstanding < self.window and self.session.state in _RECEIVING

    def deliver(self, msg: Message, now: float) -> None:
        self.session.send_body(Cmd.DELIVER_SM, msg.body, now, msg)

    def handle_events(self, events: list[ev.Event]) -> None:
        m.PDUS_IN_ESME.inc(len(events))
        relay = self.relay
        unanswered: list[Message] = []
        for event in events:
            if type(event) is ev.RequestReceived:
                pdu = event.pdu
                if pdu.command_id in (Cmd.SUBMIT_SM, Cmd.DATA_SM):
                    relay.on_submit(self, pdu)
                else:
                    self.session.respond(pdu, 0)
            elif type(event) is ev.ResponseReceived:
                relay.on_esme_response(self, event.pdu, event.context)
            elif type(event) is ev.RequestTimedOut:
                if isinstance(event.context, Message):
                    if self.session.state is State.CLOSED:
                        unanswered.append(event.context)
                    else:
                        relay.on_esme_timeout(self, event.context)
            elif type(event) is ev.BindRequested:
                self._bind(event)
            elif type(event) is ev.BindInvalid:
                self._bind_invalid(event)
            elif type(event) is ev.ProtocolError:
                m.PROTOCOL_ERRORS.labels("carrier").inc()
                if event.command_id in BIND_COMMANDS:  # answered ESME_RALYBND by the session
                    self.server.guard.count_attempt(self.peer, time.monotonic())
                    self._refused("", "bind on a bound session")
            elif type(event) is ev.Closed:
                self._closed(unanswered)
                unanswered = []
        if unanswered:
            relay.esme_down(self, unanswered)

    def _refused(self, system_id: str, reason: str) -> None:
        m.BIND_ATTEMPTS.labels("refused").inc()
        self.server.refused_log.warning(
            "bind refused from %s for system_id %r: %s", self.peer, system_id[:16], reason
        )

    def _bind_invalid(self, event: ev.BindInvalid) -> None:
        status, reason = self.server.guard.check_invalid(event.status, self.peer, time.monotonic())
        m.PROTOCOL_ERRORS.labels("carrier").inc()
        self._refused("", f"{reason} ({event.detail})")
        self.handle_events(self.session.refuse_bind(event.command_id, event.sequence, status))

    def _bind(self, event: ev.BindRequested) -> None:
        bind = event.pdu
        guard = self.server.guard
        status, account, reason = guard.check(bind, self.peer, time.monotonic())
        if status or account is None or not self.server.accepting:
            self._refused(bind.system_id, reason or "stopping")
            self.handle_events(self.session.reject_bind(bind, status or Status.RBINDFAIL))
            return
        m.BIND_ATTEMPTS.labels("accepted").inc()
        self.session.accept_bind(bind, self.server.config.system_id)
        self.system_id = account.system_id
        self.receives = self.session.state in _RECEIVING
        guard.bound(self.system_id)
        self._counted = True
        m.BINDS.labels("carrier").inc()
        self.relay.esme_up(self)

    def _closed(self, unanswered: list[Message]) -> None:
        if self._counted:
            self._counted = False
            self.server.guard.unbound(self.system_id)
            m.BINDS.labels("carrier").dec()
            self.relay.esme_down(self, unanswered)
        self.server.links.discard(self)


class SmppServer:
    """Listens for carrier binds."""

    def __init__(self, config: ServerConfig, relay: Relay, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.relay = relay
        self.loop = loop
        self.guard = BindGuard(config.accounts, config.bind_burst, config.bind_rate)
        self.links: set[EsmeLink] = set()
        self.accepting = True
        self.refused_log = RateLimitedLog(log, "bind_refused")
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await self.loop.create_server(
            lambda: EsmeLink(self), self.config.host, self.config.port, reuse_address=True
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def stop_accepting(self) -> None:
        """Stop accepting connections and binds. Bound carriers are still read: their
        submits are answered ESME_RTHROTTLED by the relay, enquire_link at once."""
        self.accepting = False
        if self._server is not None:
            self._server.close()

    async def close(self, timeout: float) -> None:
        """Unbind every carrier and wait (at most ``timeout``) for them to go.

        Links still open then are closed with a FIN first, so that answers already
        written are read by the carrier, and aborted only if that does not finish either.
        """
        now = self.loop.time()
        for link in list(self.links):
            link.session.unbind(now)
            link.flush()
        waiting = [link.closed for link in self.links]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout * 0.8)
        for link in list(self.links):
            link.close()
        waiting = [link.closed for link in self.links]
        if waiting:
            await asyncio.wait(waiting, timeout=timeout * 0.2)
        for link in list(self.links):
            if link.transport is not None:
                link.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
