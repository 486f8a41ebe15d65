"""The engine side of webhook events: what the call engine says about a call's life.

The call engine tells ``CallEvents`` three moments of a call: placed (routed through a
binding, the callee being called), the callee's first ring, and the answer. The end of
a call is its record (``CdrWriter.add``), from which the record writer makes
``call.completed``, so the engine says nothing more for it.

``EventJournal`` is what ``ansim serve`` hands the engine. Each event is appended to the
CDR journal (``CdrWriter.event``: a copy into mapped memory, no system call, no lock, so
the event loop never waits on a disk or on the API) and written by the CDR writer's
thread into the ``events`` table of the CDR file, the webhook outbox, with the owner of
its binding looked up there, off the loop; events of bindings without a tenant are
dropped at that point. The API process reads the outbox and delivers. ``NO_EVENTS``, the
engine's default, publishes nothing.

Events carry what a tenant's receiver needs to follow its own call: the caller's Call-ID
(the record's ``a_call_id``, to tie the events of one call and its record together), the
virtual number and the parties (the tenant's own, or the caller it is told of in the
record too), the binding kind and direction, and when it happened (epoch seconds).
"""

from __future__ import annotations

from typing import Protocol

from translate.bindings import Route

from .cdr import CdrWriter

__all__ = ["NO_EVENTS", "CallEvents", "EventJournal", "NoEvents"]


class CallEvents(Protocol):
    """What the call engine calls at the moments of a call (all on the event loop; an
    implementation must return at once)."""

    def call_started(
        self, call_id: bytes, route: Route, virtual: str, caller: str, at: float
    ) -> None:
        """The call to ``virtual`` from ``caller`` is routed by ``route``: the callee is
        being called."""

    def call_ringing(self, call_id: bytes, binding_id: str, at: float) -> None:
        """The callee's first provisional response (18x)."""

    def call_answered(self, call_id: bytes, binding_id: str, at: float) -> None:
        """The callee answered (2xx)."""


class NoEvents:
    """Publishes nothing."""

    def call_started(
        self, call_id: bytes, route: Route, virtual: str, caller: str, at: float
    ) -> None:
        return None

    def call_ringing(self, call_id: bytes, binding_id: str, at: float) -> None:
        return None

    def call_answered(self, call_id: bytes, binding_id: str, at: float) -> None:
        return None


NO_EVENTS = NoEvents()


class EventJournal:
    """Call events into the CDR journal and outbox (see the module docstring)."""

    def __init__(self, cdr: CdrWriter) -> None:
        self.cdr = cdr

    def call_started(
        self, call_id: bytes, route: Route, virtual: str, caller: str, at: float
    ) -> None:
        data = {
            "virtual": virtual,
            "caller": caller,
            "callee": route.callee,
            "presented": route.present,
            "kind": route.kind,
            "direction": route.direction or None,
        }
        self.cdr.event("call.started", call_id.decode(errors="replace"), route.binding_id, at, data)

    def call_ringing(self, call_id: bytes, binding_id: str, at: float) -> None:
        self.cdr.event("call.ringing", call_id.decode(errors="replace"), binding_id, at, {})

    def call_answered(self, call_id: bytes, binding_id: str, at: float) -> None:
        self.cdr.event("call.answered", call_id.decode(errors="replace"), binding_id, at, {})
