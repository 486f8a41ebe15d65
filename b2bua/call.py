"""A call and its legs: the state the engine and a call's controller share (sans-IO).

A *leg* is one dialog ansim takes part in, with what it needs to send in it: the UAS
leg toward whoever called (``Call.a``), UAC legs toward whoever ansim calls
(``Call.b``). A *call* is its legs, the controller that decides what it does
(``b2bua.controller``), its media (``media``: None while media passes end to end) and
the fields of its call detail record. Nothing here sends or reads a clock; the engine
(``b2bua.calls``) and the controllers act on these objects.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from .sip.bodies import Numbers
from .sip.dialog import Dialog
from .sip.message import Request
from .sip.routing import Peer
from .sip.sdp import SdpBuilder
from .sip.transaction import ClientTransaction, ServerTransaction
from .trunks import Trunk

if TYPE_CHECKING:
    from .controller import Controller


class CallState(IntEnum):
    ROUTING = 1  # the UAS leg is being routed, or a UAC leg tried, with nothing back yet
    EARLY = 2  # a UAC leg answered provisionally
    ANSWERED = 3  # the UAS leg was sent a 2xx, not yet ACKed
    CONFIRMED = 4
    ENDED = 5


class Ids:
    """Unique tokens for tags, branches and Call-IDs: a random per-process prefix and a counter."""

    __slots__ = ("_n", "_prefix")

    def __init__(self) -> None:
        self._prefix = os.urandom(5).hex().encode()
        self._n = 0

    def next(self) -> bytes:
        self._n += 1
        return self._prefix + b"%x" % self._n


class Leg:
    """One side of a call: its dialog, where to send, the SDP it is sent (its builder),
    the numbers it may see, and the media attached to it."""

    __slots__ = (
        "ack_cseq",
        "call",
        "dialog",
        "events_pt",
        "flow",
        "held",
        "hop",
        "is_a",
        "last_ack",
        "media",
        "name",
        "numbers",
        "out_pending",
        "peer",
        "sdp",
        "stale_answers",
        "transport",
    )

    def __init__(
        self,
        call: Call,
        is_a: bool,
        dialog: Dialog,
        peer: Peer,
        sdp: SdpBuilder,
        numbers: Numbers,
    ) -> None:
        self.call = call
        self.is_a = is_a  # the UAS leg, toward whoever called
        self.name = "a" if is_a else "b"  # the leg's name toward the media engine
        self.dialog = dialog
        self.peer = peer
        self.transport = peer[0]
        self.sdp = sdp  # builds the SDP this leg is sent
        self.numbers = numbers  # calling and called number as this leg sees them
        self.ack_cseq: int | None = None  # INVITE on this leg whose 2xx awaits our ACK
        self.out_pending = False  # an INVITE/UPDATE we sent on this leg awaits its final response
        self.hop: Peer | None = None  # where in-dialog requests go; None: work it out again
        # The TCP connection the party's messages came over: in-dialog requests toward
        # the party go over it while it is open (see CallEngine.hop).
        self.flow: Peer | None = None
        self.held = False  # whether this leg holds ``flow`` open (Transports.hold)
        self.last_ack: Request | None = None  # the last ACK we sent on this leg
        # The telephone-event payload type the party's SDP offered or accepted (None: none
        # seen), so digits can be sent toward it in the form it negotiated.
        self.events_pt: int | None = None
        self.media: Any = None  # the leg's anchored media (b2bua.anchor), None end to end
        self.stale_answers = 0  # stale-nonce challenges answered on this leg (outbound_auth)


class Call:
    """One call: its legs, its controller, its media and its CDR fields."""

    __slots__ = (
        "a",
        "a_invite",
        "a_txn",
        "answer_at",
        "b",
        "b_txn",
        "call_type",
        "callee",
        "caller",
        "cancelled",
        "cause",
        "cause_status",
        "controller",
        "end_at",
        "ended_by",
        "in_trunk",
        "invite_at",
        "limit_timer",
        "media",
        "reason",
        "retrans_interval",
        "ring_at",
        "route",
        "source",
        "state",
        "status",
        "timer",
        "trunk",
        "trunks",
        "virtual",
    )

    def __init__(
        self,
        a_invite: Request,
        a_txn: ServerTransaction,
        source: Peer,
        now: float,
        controller: Controller,
    ) -> None:
        self.a_invite = a_invite
        self.a_txn = a_txn
        self.controller = controller
        self.call_type = "bridge"
        self.a: Leg | None = None
        self.b: Leg | None = None
        self.b_txn: ClientTransaction | None = None
        self.state = CallState.ROUTING
        self.virtual: str | None = None
        self.caller: str | None = None
        self.callee: str | None = None
        self.route: Any = None
        self.trunk: Trunk | None = None
        self.trunks: list[Trunk] = []
        self.invite_at = now
        self.ring_at: float | None = None
        self.answer_at: float | None = None
        self.end_at: float | None = None
        self.status = 0
        self.ended_by: str | None = None
        self.reason: str | None = None
        self.source = source  # where the caller's INVITE came from
        self.in_trunk: str | None = None
        # Release cause: Q.850 from a Reason header of the message that ended the call,
        # else mapped from cause_status (the status that ended it, when not ``status``).
        self.cause: int | None = None
        self.cause_status = 0
        self.cancelled = False
        self.timer: Any = None
        self.limit_timer: Any = None
        self.retrans_interval = 0.0
        self.media: Any = None  # the call's media session (b2bua.anchor), None end to end

    def other(self, leg: Leg) -> Leg | None:
        return self.b if leg is self.a else self.a


class Pending:
    """A request ansim sent on ``to_leg`` for one received on ``from_leg`` (or, with no
    ``server_txn``, one ansim sent of its own accord), awaiting the far response."""

    __slots__ = ("call", "from_leg", "server_txn", "to_leg")

    def __init__(
        self, call: Call, from_leg: Leg, to_leg: Leg, server_txn: ServerTransaction | None
    ) -> None:
        self.call = call
        self.from_leg = from_leg
        self.to_leg = to_leg
        self.server_txn = server_txn


# Upper bounds (seconds) of the call setup time histogram's buckets.
SETUP_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class CallStats:
    """Counters read by the metrics collector at scrape time (plain numbers, so that
    counting costs the hot path nothing and nothing grows when no one scrapes)."""

    __slots__ = ("calls", "challenges", "dtmf", "lookups", "setup_buckets", "setup_sum")

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}  # outcome -> count
        self.lookups: dict[str, int] = {}  # route / refusal reason -> count
        self.dtmf: dict[str, int] = {}  # digits a controller was handed, by how ("rtp", "info")
        # Challenges of ansim's requests by a trunk: "answered", or "failed" (no credentials,
        # none usable, or the answer refused), by method.
        self.challenges: dict[tuple[str, str], int] = {}
        # Setup times per bucket of SETUP_BUCKETS (not cumulative), the last one above them all.
        self.setup_buckets = [0] * (len(SETUP_BUCKETS) + 1)
        self.setup_sum = 0.0

    def observe_setup(self, seconds: float) -> None:
        self.setup_buckets[bisect_left(SETUP_BUCKETS, seconds)] += 1
        self.setup_sum += seconds

    def count(self, outcome: str) -> None:
        calls = self.calls
        calls[outcome] = calls.get(outcome, 0) + 1
