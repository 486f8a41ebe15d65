"""Events a :class:`~sms_smpp.session.Session` reports to the layer driving it.

Small slotted dataclasses, in the aioquic style: the I/O layer feeds bytes and time into
the session and acts on the events that come out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .pdu import Bind, BindResp, Pdu


@dataclass(slots=True)
class Event:
    """Base class of session events."""


@dataclass(slots=True)
class BindRequested(Event):
    """A peer asked to bind (server side); answer with accept_bind or reject_bind."""

    pdu: Bind


@dataclass(slots=True)
class BindInvalid(Event):
    """A peer sent a bind that cannot be decoded (server side); ``status`` says why.

    Answer with :meth:`Session.refuse_bind`: it is a bind attempt like any other, to be
    counted by whoever limits them.
    """

    command_id: int
    sequence: int
    status: int
    detail: str


@dataclass(slots=True)
class Bound(Event):
    """Our bind was accepted (client side)."""

    pdu: BindResp


@dataclass(slots=True)
class BindRefused(Event):
    """Our bind was refused (client side); the session closes."""

    status: int


@dataclass(slots=True)
class RequestReceived(Event):
    """A request the application must answer: submit_sm, deliver_sm, data_sm, ...

    Answer with :meth:`Session.respond` (any order; windows allow many outstanding).
    """

    pdu: Pdu


@dataclass(slots=True)
class ResponseReceived(Event):
    """The answer to one of our requests, with the context given when it was sent."""

    pdu: Pdu
    context: Any


@dataclass(slots=True)
class RequestTimedOut(Event):
    """No answer to one of our requests within the response timeout.

    Reported once the peer proved alive since (it answered an enquire_link sent later):
    ``ignored`` says it also answered a request sent after this one, so it passed over
    this one while taking the others. A session that closes hands its outstanding
    requests back the same way, unanswered.
    """

    sequence: int
    command_id: int
    context: Any
    ignored: bool = False


@dataclass(slots=True)
class ProtocolError(Event):
    """The peer sent something invalid; the session answered it as SMPP requires.

    ``command_id`` is that of the offending PDU when its header could be read.
    """

    status: int
    detail: str
    command_id: int = 0


@dataclass(slots=True)
class Closed(Event):
    """The session is over (unbind, fatal error, dead link); close the transport."""

    reason: str
