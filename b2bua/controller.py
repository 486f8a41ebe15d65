"""What a call's controller is: the events it is handed, and the default answers (sans-IO).

The engine (``b2bua.calls``) owns the SIP side that is the same whatever a call does:
it matches messages to calls and legs, answers what RFC 3261 makes the UAS core answer
(100 to an INVITE, 200 to BYE and CANCEL, 481 outside a dialog, 2xx retransmission
until the ACK), keeps the dialog table, ends calls and writes their records. Everything
that decides what a call *does* is its controller's: whom to call and when, what to
answer the caller, what crosses between legs, what a digit or media stopping means.

A controller is handed events with the time, and acts through the engine's actions
(``CallEngine.reject``, ``answer``, ``place``, ``send_bye``, ``hangup``, ``set_timer``,
the media actions of ``b2bua.anchor``...), which only queue messages and commands;
nothing blocks, nothing reads a clock. State that belongs to one call lives on the
``Call`` (or, for a controller that needs more, on an object of its own hung there), so
one controller instance serves every call of its kind.

``b2bua.bridge.Bridge`` is the controller of calls through the translation table. The
shape leaves room for others: an IVR dial-out controller answers the UAS leg itself
(``answer``), plays and collects on its media (``on_dtmf``), then places a UAC leg and
bridges the two; a click-to-call controller places a UAC leg with no UAS leg at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .call import Call, CallState, Leg, Pending
from .sip.message import Request, Response
from .sip.transaction import ClientTransaction, ServerTransaction

if TYPE_CHECKING:
    from .calls import CallEngine


class Controller:
    """The events of a call, with defaults that suit a call whose legs are not bridged."""

    def __init__(self, engine: CallEngine) -> None:
        self.engine = engine

    def start(self, call: Call, now: float) -> None:
        """A new INVITE on the UAS leg (``call.a_invite``), from a known trunk, answered
        100 already. The controller routes it, answers it or rejects it."""
        self.engine.reject(call, 404, b"Not Found", "unknown", now)

    def on_invite_response(
        self, call: Call, resp: Response, txn: ClientTransaction, now: float
    ) -> None:
        """A response to the INVITE of a UAC leg the controller placed (``call.b_txn``)."""

    def on_invite_failure(
        self, call: Call, txn: ClientTransaction, status: int, now: float
    ) -> None:
        """The INVITE of a UAC leg timed out (408) or could not be sent (503)."""

    def on_request(
        self, call: Call, leg: Leg, req: Request, txn: ServerTransaction, now: float
    ) -> None:
        """An in-dialog request on ``leg`` other than ACK and BYE."""
        self.engine.reply(txn, 481, now)

    def on_response(
        self, pending: Pending, resp: Response, txn: ClientTransaction, now: float
    ) -> None:
        """A response to an in-dialog request the controller sent."""

    def on_request_failure(
        self, pending: Pending, txn: ClientTransaction, status: int, now: float
    ) -> None:
        """An in-dialog request the controller sent timed out or could not be sent."""

    def on_ack(self, call: Call, leg: Leg, ack: Request, now: float) -> None:
        """An ACK for a 2xx on ``leg`` (the engine has confirmed the UAS leg already)."""

    def on_bye(self, call: Call, leg: Leg, bye: Request, now: float) -> None:
        """A BYE on ``leg`` (answered 200 already): by default every other leg is hung up."""
        self.engine.hangup(call, now, leg)

    def on_cancel(self, call: Call, cancel: Request, now: float) -> None:
        """The caller cancelled the INVITE before it was answered (200 sent to the CANCEL)."""
        self.engine.reject(call, 487, b"Request Terminated", "cancelled", now)

    def on_dtmf(
        self, call: Call, leg: Leg, digit: bytes, duration_ms: int, via: str, now: float
    ) -> bool:
        """A digit keyed by ``leg``'s party: ``via`` "rtp" (RFC 4733 events the media
        relay saw) or "info" (a SIP INFO). True when the controller has dealt with it
        (an INFO is then answered 200 and not relayed)."""
        return False

    def on_media_timeout(self, call: Call, now: float) -> None:
        """No RTP either way for the media timeout: the call is ended on every leg."""
        call.ended_by = "engine"
        call.reason = "media_timeout"
        self.engine.hangup(call, now)

    def on_media_lost(self, call: Call, now: float) -> None:
        """The process that anchored the call's media is gone: the call is ended cleanly
        (BYE on both legs once answered; before that 503 to the caller, the callee
        cancelled)."""
        call.ended_by = "engine"
        engine = self.engine
        if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
            call.reason = "media_failure"
            engine.hangup(call, now)
        else:
            engine.cancel_uac(call, now)
            engine.reject(call, 503, b"Service Unavailable", "media_failure", now)
