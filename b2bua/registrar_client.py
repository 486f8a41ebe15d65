"""The engine's registrations at carriers' registrars: one ``Registration`` (sans-IO,
``b2bua.registration``) per trunk with ``registration``, its REGISTER transactions and
one timer each.

Requests go through the endpoint's transaction layer like any other, with the
``TrunkRegistration`` as the transaction's user, so the call engine hands their
responses and failures here. Every change of a binding's state is logged (one line:
trunk, state, the state before, the last status, the expiry granted) and its state is
in the metrics (``ansim_registration_state``, ``ansim_registration_expires_seconds``).
When the engine stops, bindings in force are removed (REGISTER with Expires: 0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .registration import Registration, RegState
from .sip.message import Response
from .sip.routing import Peer
from .trunks import Trunk

if TYPE_CHECKING:
    from .calls import CallEngine

log = logging.getLogger("b2bua.registration")

__all__ = ["RegistrarClient", "TrunkRegistration"]


class TrunkRegistration:
    """One trunk's registration: its state machine, where it is sent, its timer."""

    __slots__ = ("client", "dest", "machine", "shown", "timer", "trunk")

    def __init__(
        self, client: RegistrarClient, trunk: Trunk, machine: Registration, dest: Peer
    ) -> None:
        self.client = client
        self.trunk = trunk
        self.machine = machine
        self.dest = dest
        self.timer: Any = None
        self.shown = machine.state  # the state last logged


class RegistrarClient:
    """Every registration of one engine."""

    def __init__(self, engine: CallEngine, call_later: Callable[..., Any]) -> None:
        self.engine = engine
        self.call_later = call_later
        self.items: list[TrunkRegistration] = []
        for trunk in engine.trunks.config.trunks:
            if trunk.registration is not None:
                self.items.append(self._item(trunk))

    def _item(self, trunk: Trunk) -> TrunkRegistration:
        reg = trunk.registration
        creds = trunk.credentials
        assert reg is not None and creds is not None
        address = reg.registrar or trunk.address
        assert address is not None
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        transport = trunk.transport
        dest: Peer = (transport, host, int(port))
        shown = f"[{host}]" if ":" in host else host
        registrar_uri = f"sip:{shown}:{port}"
        if transport != "udp":
            registrar_uri += f";transport={transport}"
        aor = reg.aor or f"sip:{creds.username}@{shown}"
        user = aor.split(":", 1)[1].split("@", 1)[0] if "@" in aor else creds.username
        ids = self.engine.ids
        machine = Registration(
            aor=aor.encode(),
            registrar_uri=registrar_uri.encode(),
            contact=self._contact(user, transport),
            expires=reg.expires,
            credentials=creds,
            call_id=ids.next() + b"@ansim",
            from_tag=ids.next(),
            retry_min=reg.retry_min,
            retry_max=reg.retry_max,
        )
        return TrunkRegistration(self, trunk, machine, dest)

    def _contact(self, user: str, transport: str) -> bytes:
        host, port = self.engine.host(transport)
        if b":" in host and not host.startswith(b"["):
            host = b"[" + host + b"]"
        contact = b"sip:%s@%s:%d" % (user.encode(), host, port)
        if transport != "udp":
            contact += b";transport=" + transport.encode()
        return contact

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, now: float) -> None:
        for item in self.items:
            item.machine.start(now)
            self._send_if_due(item, now)
        self.engine.ep.flush()

    def stop(self, now: float) -> None:
        """Remove the bindings in force (the engine stops)."""
        for item in self.items:
            if item.timer is not None:
                item.timer.cancel()
                item.timer = None
            if item.machine.stop(now):
                self._send(item, now)
            self._changed(item)

    # -- transactions ------------------------------------------------------------------------
    def _send(self, item: TrunkRegistration, now: float) -> None:
        req = item.machine.request(self.engine.via(item.dest[0]), now)
        self.engine.ep.send_request(req, item.dest, item)

    def _send_if_due(self, item: TrunkRegistration, now: float) -> None:
        if item.machine.due(now):
            self._send(item, now)
        self._changed(item)
        self._arm(item, now)

    def on_response(self, item: TrunkRegistration, resp: Response, now: float) -> None:
        out = item.machine.on_response(resp, self.engine.via(item.dest[0]), now)
        if resp.status == 401 or resp.status == 407:
            key = ("REGISTER", "answered" if out is not None else "failed")
            challenges = self.engine.stats.challenges
            challenges[key] = challenges.get(key, 0) + 1
        if out is not None:
            self.engine.ep.send_request(out, item.dest, item)
        self._changed(item)
        self._arm(item, now)

    def on_failure(self, item: TrunkRegistration, status: int, now: float) -> None:
        item.machine.on_failure(now, status)
        self._changed(item)
        self._arm(item, now)

    # -- timers and what operators see -------------------------------------------------------
    def _arm(self, item: TrunkRegistration, now: float) -> None:
        if item.timer is not None:
            item.timer.cancel()
            item.timer = None
        at = item.machine.next_at
        if at is not None:
            item.timer = self.call_later(max(at - now, 0.0), self._fire, item)

    def _fire(self, item: TrunkRegistration) -> None:
        item.timer = None
        self._send_if_due(item, self.engine.ep.now())
        self.engine.ep.flush()

    def _changed(self, item: TrunkRegistration) -> None:
        """One log line when a binding's state changes (a refresh that keeps it registered,
        or another failed attempt, is not a change)."""
        m = item.machine
        state = m.state
        before = item.shown
        if state == before or state == RegState.REGISTERING:
            return
        item.shown = state
        extra = {
            "trunk": item.trunk.name,
            "state": state.value,
            "previous": before.value,
            "status": m.last_status,
            "expires": m.granted if state == RegState.REGISTERED else None,
        }
        if state == RegState.FAILED:
            log.warning("registration failed", extra={**extra, "failures": m.failures})
        else:
            log.info("registration %s", state.value, extra=extra)

    def snapshot(self, now: float) -> list[tuple[str, RegState, float | None, int]]:
        """(trunk, state, seconds until the binding expires or None, consecutive failures)
        of each registration, for the metrics collector."""
        out = []
        for item in self.items:
            m = item.machine
            left = None if m.expires_at is None else max(m.expires_at - now, 0.0)
            out.append((item.trunk.name, m.state, left, m.failures))
        return out
