"""The asyncio side of one SMPP connection: a thin Protocol around a sans-IO Session.

It feeds received bytes and the loop's clock into the session, writes what the session
wants written, keeps one timer armed at ``session.get_timer()``, and hands events to
``handle_events`` (implemented by the server and client sides).
"""

from __future__ import annotations

import asyncio

from . import events as ev
from .session import Role, Session, State


class Link(asyncio.Protocol):
    """Base of carrier-side and upstream-side connections."""

    def __init__(
        self,
        role: Role,
        loop: asyncio.AbstractEventLoop,
        *,
        enquire_link_interval: float,
        response_timeout: float,
        bind_timeout: float = 10.0,
    ) -> None:
        self.loop = loop
        self.session = Session(
            role,
            loop.time(),
            enquire_link_interval=enquire_link_interval,
            response_timeout=response_timeout,
            bind_timeout=bind_timeout,
        )
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = loop.create_future()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- asyncio.Protocol ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.on_connected()
        self.flush()

    def data_received(self, data: bytes) -> None:
        events = self.session.receive_data(data, self.loop.time())
        if events:
            self.handle_events(events)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        events = self.session.abort("connection lost")
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if events:
            self.handle_events(events)
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)

    # -- driving the session ---------------------------------------------------------

    def flush(self) -> None:
        """Write what the session queued; close once the session is over; re-arm the timer."""
        transport = self.transport
        if transport is None:
            return
        data = self.session.data_to_send()
        if data:
            transport.write(data)
        if self.session.state is State.CLOSED:
            transport.close()
            return
        at = self.session.get_timer()
        if at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self.loop.call_at(at, self._on_timer) if at is not None else None
            self._timer_at = at

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        events = self.session.handle_timer(self.loop.time())
        if events:
            self.handle_events(events)
        self.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # -- for subclasses ----------------------------------------------------------------

    def on_connected(self) -> None:
        """Called once the transport is up."""

    def handle_events(self, events: list[ev.Event]) -> None:
        raise NotImplementedError
