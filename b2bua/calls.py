"""The call engine: the transaction user that bridges an A-leg and a B-leg.

A carrier's INVITE for virtual number X arrives on the A-leg; the engine answers 100,
asks the translation store whom to call, and places the B-leg INVITE to the real
callee over the route's trunks, presenting the number the binding says. Everything the
far leg sees is built fresh here (DESIGN.md, "What the far leg may see"): Call-ID,
tags, Via, Contact, From/To/P-Asserted-Identity, Allow, Supported, Require and the
session timer headers (``sip.extensions``), and the body (``sip.bodies``: SDP rebuilt
by the receiving leg's ``SdpBuilder``). Other headers of the other leg pass only
through the configured allow-list.

In-dialog requests (BYE, re-INVITE, UPDATE, PRACK, INFO, OPTIONS) are relayed to the
other leg as new transactions and their responses relayed back. ACKs for 2xx are
relayed end to end. The engine keeps no per-message logs; it counts.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from enum import IntEnum
from typing import Any

from translate.bindings import Refusal, Route
from translate.numbers import NumberPlan, mask
from translate.refusals import REFUSALS as REFUSAL_ANSWERS
from translate.store import Store

from .cdr import CallRecord, CdrWriter
from .endpoint import SipEndpoint
from .sip.bodies import ACK, ANSWER, EARLY, INFO, OFFER, OTHER, Numbers, outgoing_body
from .sip.dialog import Dialog, without_tag
from .sip.errors import SipParseError
from .sip.extensions import (
    IN_DIALOG_OPTIONS,
    min_se,
    required,
    rseq,
    session_expires,
    supported,
    unsupported,
)
from .sip.message import START_NAME, Request, Response
from .sip.reason import RECOVERY_ON_TIMER_EXPIRY, q850_cause, q850_for_status
from .sip.responses import REASONS, make_response
from .sip.routing import Peer
from .sip.sdp import SdpBuilder
from .sip.transaction import (
    ClientTransaction,
    Event,
    RequestReceived,
    ResponseReceived,
    ServerTransaction,
    State,
    StrayResponse,
    TransactionTimeout,
    TransportError,
)
from .sip.uri import parse_name_addr, parse_uri
from .sip.validate import ACCEPT_HEADER, ALLOW_HEADER, IMPLEMENTED_OPTIONS
from .trunks import Trunk, TrunkTable

log = logging.getLogger(__name__)

# Refusal reason -> (status, phrase), as translate.refusals decides for every side.
REFUSALS: dict[str, tuple[int, bytes]] = {
    reason: (row.sip_status, row.sip_phrase.encode()) for reason, row in REFUSAL_ANSWERS.items()
}
# B-leg final status -> what the caller is told. Statuses that would reveal that the
# real number is unknown or redirect to it are folded into 480.
MAPPED_STATUS: dict[int, int] = {
    404: 480,
    410: 480,
    484: 480,
    485: 480,
    604: 480,
    401: 503,
    407: 503,
}
_OFFER_METHODS = (b"INVITE", b"UPDATE", b"PRACK")


class CallState(IntEnum):
    ROUTING = 1
    EARLY = 2
    ANSWERED = 3
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
    """One side of a call: its dialog, where to send, the SDP it is sent (its builder)
    and the numbers it may see."""

    __slots__ = (
        "ack_cseq",
        "call",
        "dialog",
        "flow",
        "held",
        "hop",
        "is_a",
        "last_ack",
        "numbers",
        "out_pending",
        "peer",
        "sdp",
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
        self.is_a = is_a
        self.dialog = dialog
        self.peer = peer
        self.transport = peer[0]
        self.sdp = sdp  # builds the SDP this leg is sent
        self.numbers = numbers  # calling and called number as this leg sees them
        self.ack_cseq: int | None = None  # INVITE on this leg whose 2xx awaits our ACK
        self.out_pending = False  # an INVITE/UPDATE we sent on this leg awaits its final response
        self.hop: Peer | None = None  # where in-dialog requests go; None: work it out again
        # The TCP connection the party's messages came over: in-dialog requests toward
        # the party go over it while it is open (see CallEngine._hop).
        self.flow: Peer | None = None
        self.held = False  # whether this leg holds ``flow`` open (Transports.hold)
        self.last_ack: Request | None = None  # the last ACK we sent on this leg


class Call:
    """One bridged call and its CDR fields."""

    __slots__ = (
        "a",
        "a_invite",
        "a_txn",
        "answer_at",
        "b",
        "b_txn",
        "callee",
        "caller",
        "cancelled",
        "cause",
        "cause_status",
        "end_at",
        "ended_by",
        "in_trunk",
        "invite_at",
        "limit_timer",
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
        self, a_invite: Request, a_txn: ServerTransaction, source: Peer, now: float
    ) -> None:
        self.a_invite = a_invite
        self.a_txn = a_txn
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

    def other(self, leg: Leg) -> Leg | None:
        return self.b if leg is self.a else self.a


class Relay:
    """A request relayed from one leg to the other, awaiting the far response."""

    __slots__ = ("call", "from_leg", "server_txn", "to_leg")

    def __init__(
        self, call: Call, from_leg: Leg, to_leg: Leg, server_txn: ServerTransaction
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

    __slots__ = ("calls", "lookups", "setup_buckets", "setup_sum")

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}  # outcome -> count
        self.lookups: dict[str, int] = {}  # route / refusal reason -> count
        # Setup times per bucket of SETUP_BUCKETS (not cumulative), the last one above them all.
        self.setup_buckets = [0] * (len(SETUP_BUCKETS) + 1)
        self.setup_sum = 0.0

    def observe_setup(self, seconds: float) -> None:
        self.setup_buckets[bisect_left(SETUP_BUCKETS, seconds)] += 1
        self.setup_sum += seconds


Scheduler = Callable[[float, Callable[..., None]], Any]


def _epoch_offset() -> float:
    return time.time() - time.monotonic()


class CallEngine:
    """Handles the endpoint's events: the B2BUA proper."""

    def __init__(
        self,
        endpoint: SipEndpoint,
        store: Store | None,
        trunks: TrunkTable,
        *,
        plan: NumberPlan,
        advertise: dict[str, tuple[str, int]],
        cdr: CdrWriter | None = None,
        call_later: Callable[..., Any],
        max_call_seconds: int | None = None,
    ) -> None:
        self.ep = endpoint
        self.layer = endpoint.layer
        self.store = store
        self.trunks = trunks
        self.plan = plan
        self.advertise = {k: (h.encode(), p) for k, (h, p) in advertise.items()}
        self.cdr = cdr
        self.call_later = call_later
        self.max_call_seconds = max_call_seconds
        self.ids = Ids()
        self.dialogs: dict[tuple[bytes, bytes], Leg] = {}
        self.calls: set[Call] = set()
        # Ended calls awaiting the end of their last transaction: (when, call), in order.
        self._ended: deque[tuple[float, Call]] = deque()
        self.stats = CallStats()
        self._epoch = _epoch_offset()
        self._session = int.from_bytes(os.urandom(3), "big")
        timers = endpoint.layer.timers
        self.t1 = timers.t1
        self.t2 = timers.t2
        # Longest a transaction of an ended call can live on (timer H then I, or J, L, M:
        # 64*T1, plus T4), with a margin.
        self.linger = 64 * timers.t1 + timers.t4 + 2.0

    # -- helpers ---------------------------------------------------------------------------
    def _wall(self, now: float) -> float:
        return now + self._epoch

    def _host(self, transport: str) -> tuple[bytes, int]:
        return self.advertise.get(transport) or next(iter(self.advertise.values()))

    def _via(self, transport: str) -> bytes:
        host, port = self._host(transport)
        return b"SIP/2.0/%s %s:%d;branch=z9hG4bK%s;rport" % (
            transport.upper().encode(),
            host,
            port,
            self.ids.next(),
        )

    def _contact(self, transport: str) -> bytes:
        host, port = self._host(transport)
        if transport == "udp":
            return b"<sip:ansim@%s:%d>" % (host, port)
        return b"<sip:ansim@%s:%d;transport=%s>" % (host, port, transport.encode())

    def _sdp_builder(self, transport: str) -> SdpBuilder:
        """A builder of the SDP a leg on ``transport`` is sent: a session id of its own,
        ansim's advertised address in o=."""
        self._session += 1
        return SdpBuilder(self._session, self._host(transport)[0])

    def _hop(self, leg: Leg) -> Peer:
        """Where requests in ``leg``'s dialog are sent: over the connection the party's
        messages came on while it is open (a caller behind NAT, or with no listening
        socket, is reached no other way), else to the route set or the remote target
        (cached until the route changes)."""
        flow = leg.flow
        if flow is not None:
            if self.ep.transports.is_open(flow):
                return flow
            self._set_flow(leg, None)
        hop = leg.hop
        if hop is None:
            hop = leg.hop = self._dest(leg.dialog.next_hop_uri(), leg.peer)
        return hop

    def _set_flow(self, leg: Leg, flow: Peer | None) -> None:
        """``flow`` (a connection-oriented peer, or None) is where ``leg``'s party is now
        reached; the connection is held open while the call lasts."""
        transports = self.ep.transports
        if leg.held:
            assert leg.flow is not None
            transports.release(leg.flow)
            leg.held = False
        leg.flow = flow
        if flow is not None and leg.call.state != CallState.ENDED:
            transports.hold(flow)
            leg.held = True

    def _release_flow(self, leg: Leg) -> None:
        """The call ended: ``leg`` no longer holds its connection open (it is still used
        while open, for a late request)."""
        if leg.held:
            assert leg.flow is not None
            self.ep.transports.release(leg.flow)
            leg.held = False

    @staticmethod
    def _dest(uri_raw: bytes, fallback: Peer) -> Peer:
        """Where to send a request for ``uri_raw``: its host if an IP literal, else ``fallback``."""
        try:
            uri = parse_uri(uri_raw)
        except SipParseError:
            return fallback
        host = uri.host.decode(errors="replace").strip("[]")
        if not _is_ip(host):
            return fallback
        transport = (uri.params.get(b"transport") or fallback[0].encode()).decode().lower()
        if uri.scheme == b"sips" or transport not in ("udp", "tcp", "tls"):
            transport = "tls" if uri.scheme == b"sips" else fallback[0]
        return (transport, host, uri.port or 5060)

    def _count(self, outcome: str) -> None:
        calls = self.stats.calls
        calls[outcome] = calls.get(outcome, 0) + 1

    # -- events ----------------------------------------------------------------------------
    def handle_event(self, event: Event, now: float) -> None:
        if isinstance(event, RequestReceived):
            self._on_request(event, now)
        elif isinstance(event, ResponseReceived):
            self._on_response(event.response, event.txn, now)
        elif isinstance(event, TransactionTimeout):
            self._on_failure(event.txn, now, 408)
        elif isinstance(event, TransportError):
            self._on_failure(event.txn, now, 503)
        elif isinstance(event, StrayResponse):
            self._on_stray(event.response, event.source, now)

    def _on_request(self, ev: RequestReceived, now: float) -> None:
        req = ev.request
        txn = ev.txn
        method = req.method
        to_tag = req.to_tag
        if txn is None:  # ACK for a 2xx
            leg = self.dialogs.get((req.call_id, to_tag or b""))
            if leg is not None:
                source = ev.source
                if source[0] != "udp" and source != leg.flow:
                    self._set_flow(leg, source)
                self._on_ack(leg, req, now)
            return
        if to_tag is None:
            if method == b"INVITE":
                self._new_call(req, txn, ev.source, now)
            elif method == b"CANCEL":
                self._on_cancel(req, txn, now)
            else:
                self.layer.reply(
                    txn, 481 if method in (b"BYE", b"PRACK", b"UPDATE", b"INFO") else 403, now
                )
            return
        leg = self.dialogs.get((req.call_id, to_tag))
        if leg is None:
            self.layer.reply(txn, 481, now)
            return
        source = ev.source
        if source[0] != "udp" and source != leg.flow:
            self._set_flow(leg, source)
        if method == b"BYE":
            self._on_bye(leg, req, txn, now)
        else:
            self._relay(leg, req, txn, now)

    # -- a new call --------------------------------------------------------------------------
    def _new_call(self, req: Request, txn: ServerTransaction, source: Peer, now: float) -> None:
        layer = self.layer
        trunk_in = self.trunks.trunk_for_source(source[1])
        if trunk_in is None:
            self._count("rejected_source")
            if self.trunks.config.unknown_source == "reject":
                layer.reply(txn, 403, now, to_tag=self.ids.next())
            return
        call = Call(req, txn, source, now)
        call.in_trunk = trunk_in.name
        txn.user = call
        layer.reply(txn, 100, now)
        plan = self.trunks.plan_of(trunk_in)
        try:
            ruri = req.ruri
            user = ruri.user_unescaped if ruri.user is not None else req.to.uri.user_unescaped
        except SipParseError:
            user = None
        virtual = (
            self.trunks.normalise(user.decode(errors="replace"), trunk_in, plan) if user else None
        )
        caller_src = req.get(b"p-asserted-identity") or req.get(b"from") or b""
        try:
            caller_user = parse_name_addr(caller_src.split(b",", 1)[0]).uri.user_unescaped
        except SipParseError:
            caller_user = None
        caller = (
            self.trunks.normalise(caller_user.decode(errors="replace"), trunk_in, plan)
            if caller_user
            else None
        ) or ""
        call.virtual = virtual
        call.caller = caller
        a_tag = self.ids.next()
        txn.to_tag = a_tag
        if virtual is None:
            status, phrase = REFUSALS["bad_number"]
            self._refuse(call, status, phrase, "bad_number", now)
            return
        result = (
            self.store.lookup(virtual, caller, self._wall(now)) if self.store is not None else None
        )
        lookups = self.stats.lookups
        if result is None or isinstance(result, Refusal):
            reason = "unknown" if result is None else result.reason
            lookups[reason] = lookups.get(reason, 0) + 1
            status, phrase = REFUSALS.get(reason, (404, b"Not Found"))
            if result is not None:
                call.route = result
            self._refuse(call, status, phrase, reason, now)
            return
        lookups["route"] = lookups.get("route", 0) + 1
        call.route = result
        call.callee = result.callee
        call.trunks = self.trunks.trunks_for(result.callee)
        if not call.trunks:
            self._refuse(call, 503, b"Service Unavailable", "no_route", now)
            return
        # The A-leg dialog exists (early) from now on, keyed by our tag.
        contact = req.get(b"contact") or b""
        try:
            a_target = (
                parse_name_addr(contact.split(b",", 1)[0]).uri_raw if contact else req.from_.uri_raw
            )
        except SipParseError:
            a_target = req.from_.uri_raw
        a_dialog = Dialog(
            req.call_id,
            without_tag(req.get(b"to") or b""),
            a_tag,
            without_tag(req.get(b"from") or b""),
            req.from_tag,
            a_target,
            req.get_all(b"record-route")
            and [v for line in req.get_all(b"record-route") for v in _split(line)],
            remote_cseq=req.cseq[0],
        )
        call.a = Leg(
            call, True, a_dialog, source, self._sdp_builder(source[0]), Numbers(caller, virtual)
        )
        if source[0] != "udp":
            self._set_flow(call.a, source)
        self.dialogs[(a_dialog.call_id, a_tag)] = call.a
        self.calls.add(call)
        self._try_next_trunk(call, now)

    def _refuse(self, call: Call, status: int, phrase: bytes, reason: str, now: float) -> None:
        self.layer.reply(call.a_txn, status, now, reason=phrase)
        call.status = status
        call.reason = reason
        call.ended_by = "engine"
        self._finish(call, now, f"refused_{reason}")

    def _try_next_trunk(self, call: Call, now: float) -> None:
        if call.b is not None:  # forget the failed B-leg
            self._release_flow(call.b)
            self.dialogs.pop((call.b.dialog.call_id, call.b.dialog.local_tag), None)
            call.b = None
            if call.a is not None:
                call.a.sdp.origin.new_sender()
        if not call.trunks or call.cancelled:
            if call.cancelled:
                return
            self._fail_a(call, 503, b"Service Unavailable", "trunks_failed", now)
            return
        trunk = call.trunks.pop(0)
        call.trunk = trunk
        req = self._b_invite(call, trunk)
        if req is None:  # the caller's SDP could not be rebuilt
            self._fail_a(call, 488, b"Not Acceptable Here", "bad_sdp", now)
            return
        call.b_txn = self.ep.send_request(req, trunk.peer(), call)
        call.state = CallState.ROUTING
        self._set_timer(call, trunk.invite_timeout, self._on_invite_timeout)

    def _b_invite(self, call: Call, trunk: Trunk) -> Request | None:
        """The B-leg INVITE toward ``trunk``; None when the caller's SDP cannot be rebuilt."""
        a_req = call.a_invite
        peer = trunk.peer()
        transport = peer[0]
        host, _ = self._host(transport)
        assert call.route is not None and call.callee is not None
        callee = trunk.write_number(call.callee).encode()
        present = trunk.write_number(call.route.present).encode()
        thost = peer[1].encode()
        ruri = b"sip:%s@%s:%d" % (callee, thost, peer[2])
        if transport != "udp":
            ruri += b";transport=" + transport.encode()
        call_id = self.ids.next() + b"@ansim"
        tag = self.ids.next()
        mf = a_req.get(b"max-forwards")
        max_forwards = max(int(mf) - 1, 0) if mf is not None and mf.isdigit() else 69
        local_uri = b"<sip:%s@%s>" % (present, host)
        remote_uri = b"<sip:%s@%s>" % (callee, thost)
        lines = [
            b"INVITE " + ruri + b" SIP/2.0",
            b"Via: " + self._via(transport),
            b"Max-Forwards: %d" % max_forwards,
            b"From: " + local_uri + b";tag=" + tag,
            b"To: " + remote_uri,
            b"Call-ID: " + call_id,
            b"CSeq: 1 INVITE",
            b"Contact: " + self._contact(transport),
            b"P-Asserted-Identity: " + local_uri,
        ]
        names = [
            START_NAME,
            b"via",
            b"max-forwards",
            b"from",
            b"to",
            b"call-id",
            b"cseq",
            b"contact",
            b"p-asserted-identity",
        ]
        sdp = self._sdp_builder(transport)
        numbers = Numbers(call.route.present, call.callee)
        body = outgoing_body(a_req, OFFER, sdp, self.trunks.body_policy, numbers)
        if body.status:
            return None
        lines.append(b"Allow: " + ALLOW_HEADER)
        names.append(b"allow")
        self._copy_headers(a_req, lines, names, IMPLEMENTED_OPTIONS)
        require = required(a_req)
        if require is not None:
            lines.append(b"Require: " + require)
            names.append(b"require")
        b_leg_dialog = Dialog(call_id, local_uri, tag, remote_uri, None, ruri, local_cseq=1)
        leg = Leg(call, False, b_leg_dialog, peer, sdp, numbers)
        call.b = leg
        self.dialogs[(call_id, tag)] = leg
        out = Request(b"INVITE", ruri, lines, names, body.body)
        _add_body_headers(out, body.content_type, body.disposition)
        return out

    def _copy_headers(
        self,
        src: Request | Response,
        lines: list[bytes],
        names: list[bytes],
        options: tuple[bytes, ...],
    ) -> None:
        """The headers built from ``src`` for the other leg: the configured allow-list as
        received; Supported (of ``options``), Session-Expires, Min-SE and Unsupported
        rebuilt from their parsed values."""
        allow = self.trunks.pass_headers
        if allow:
            src_lines = src.lines
            for i, name in enumerate(src.names):
                if name in allow:
                    lines.append(src_lines[i])
                    names.append(name)
        src_names = src.names
        if b"supported" in src_names:
            value = supported(src, options)
            if value is not None:
                lines.append(b"Supported: " + value)
                names.append(b"supported")
        if b"session-expires" in src_names:
            value = session_expires(src)
            if value is not None:
                lines.append(b"Session-Expires: " + value)
                names.append(b"session-expires")
        if b"min-se" in src_names:
            value = min_se(src)
            if value is not None:
                lines.append(b"Min-SE: " + value)
                names.append(b"min-se")
        if b"unsupported" in src_names:
            value = unsupported(src)
            if value is not None:
                lines.append(b"Unsupported: " + value)
                names.append(b"unsupported")

    def _set_timer(self, call: Call, delay: float, fn: Callable[[Call], None]) -> None:
        if call.timer is not None:
            call.timer.cancel()
        call.timer = self.call_later(delay, fn, call)

    def _clear_timer(self, call: Call) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    def _on_invite_timeout(self, call: Call) -> None:
        call.timer = None
        txn = call.b_txn
        if txn is None or call.state != CallState.ROUTING or txn.state != State.CALLING:
            return
        # No answer at all from this trunk: forget its transaction, try the next one.
        self.layer.abandon(txn)
        call.cause = None
        call.cause_status = 408
        now = self.ep.now()
        self._try_next_trunk(call, now)
        self.ep.flush()

    def _on_no_answer(self, call: Call) -> None:
        call.timer = None
        if call.state not in (CallState.ROUTING, CallState.EARLY):
            return
        now = self.ep.now()
        self._cancel_b(call, now)
        self._fail_a(call, 480, b"Temporarily Unavailable", "no_answer", now)
        self.ep.flush()

    # -- responses ---------------------------------------------------------------------------
    def _on_response(self, resp: Response, txn: ClientTransaction, now: float) -> None:
        user = txn.user
        if isinstance(user, Call):
            if txn.method == b"INVITE":
                self._on_b_invite_response(user, resp, txn, now)
            return
        if isinstance(user, Relay):
            self._on_relay_response(user, resp, txn, now)

    def _on_b_invite_response(
        self, call: Call, resp: Response, txn: ClientTransaction, now: float
    ) -> None:
        status = resp.status
        leg = call.b
        if txn is not call.b_txn or leg is None:
            if 200 <= status < 300:
                self._ack_and_bye(resp, txn.dest, now)
            return
        if status < 200:
            if status == 100:
                return
            if call.state == CallState.ROUTING:
                call.state = CallState.EARLY
                trunk = call.trunk
                self._set_timer(
                    call, trunk.no_answer_timeout if trunk else 90.0, self._on_no_answer
                )
            if call.cancelled:
                self._send_cancel(call, now)
                return
            self._learn_remote(leg, resp)
            if txn.dest[0] != "udp" and txn.dest != leg.flow:
                self._set_flow(leg, txn.dest)
            if call.ring_at is None:
                call.ring_at = now
            self._relay_provisional(call, resp, now)
            return
        if status < 300:
            if self._acked(leg, resp):
                # A retransmission of a 2xx we ACKed: our ACK was lost, send it again (§13.2.2.4).
                self._resend_ack(leg, resp.cseq[0], now)
                return
            if not call.cancelled and call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                return  # a retransmission before the caller's ACK: that ACK will answer it
            self._learn_remote(leg, resp)
            if txn.dest[0] != "udp" and txn.dest != leg.flow:
                self._set_flow(leg, txn.dest)
            leg.ack_cseq = resp.cseq[0]
            if call.cancelled or call.state == CallState.ENDED:
                self._send_ack(leg, None, now)
                self._send_bye(leg, now)
                return
            answer = self._a_response(call, resp, 200, b"OK")
            if answer is None:  # no SDP the caller could be given: the callee is hung up
                self._send_ack(leg, None, now)
                self._send_bye(leg, now)
                call.ended_by = "engine"
                self._fail_a(call, 502, b"Bad Gateway", "bad_sdp_answer", now)
                return
            self._clear_timer(call)
            call.state = CallState.ANSWERED
            call.answer_at = now
            call.cause = None  # of a trunk that failed before this one answered
            call.cause_status = 0
            self.stats.observe_setup(now - call.invite_at)
            self._answer_a(call, answer, now)
            return
        # final failure
        self._clear_timer(call)
        if call.cancelled:
            return
        call.cause = q850_cause(resp.get_all(b"reason"))  # RFC 6432
        call.cause_status = status
        if status == 408 or (status >= 500 and status != 600 and status != 603):
            self._try_next_trunk(call, now)
            return
        mapped = MAPPED_STATUS.get(status, status)
        if 300 <= mapped < 400:
            mapped = 480
        headers = None
        if mapped == 422:  # RFC 4028 §6: the caller retries with at least this interval
            value = min_se(resp)
            headers = [(b"min-se", value)] if value is not None else None
        elif mapped == 420:
            value = unsupported(resp)
            headers = [(b"unsupported", value)] if value is not None else None
        self._fail_a(call, mapped, _reason(mapped), f"b_{status}", now, headers)

    def _learn_remote(self, leg: Leg, resp: Response) -> None:
        d = leg.dialog
        leg.hop = None
        tag = resp.to_tag
        if tag:
            d.remote_tag = tag
        contact = resp.get(b"contact")
        if contact:
            try:
                d.remote_target = parse_name_addr(_split(contact)[0]).uri_raw
            except SipParseError:
                pass
        rr = resp.get_all(b"record-route")
        if rr:
            d.route_set = [v for line in reversed(rr) for v in reversed(_split(line))]

    def _a_response(
        self, call: Call, resp: Response, status: int, reason: bytes
    ) -> Response | None:
        """A response to the caller's INVITE built from the callee's, with nothing of the
        callee; None for a 2xx whose SDP cannot be rebuilt."""
        a = call.a
        assert a is not None
        body = outgoing_body(
            resp, EARLY if status < 200 else ANSWER, a.sdp, self.trunks.body_policy, a.numbers
        )
        if body.status:
            return None
        invite = call.a_invite
        out = make_response(invite, status, reason, to_tag=a.dialog.local_tag)
        lines, names = out.lines, out.names
        for i, name in enumerate(invite.names):
            if name == b"record-route":  # §12.1.1: the caller's side of the route set, echoed
                lines.append(invite.lines[i])
                names.append(name)
        lines.append(b"Contact: " + self._contact(a.transport))
        lines.append(b"Allow: " + ALLOW_HEADER)
        names += [b"contact", b"allow"]
        self._copy_headers(resp, lines, names, IMPLEMENTED_OPTIONS)
        require = required(resp, IMPLEMENTED_OPTIONS, invite)
        if require is not None:
            lines.append(b"Require: " + require)
            names.append(b"require")
            if status < 200 and require.find(b"100rel") >= 0:
                value = rseq(resp)
                if value is not None:
                    lines.append(b"RSeq: " + value)
                    names.append(b"rseq")
        out.body = body.body
        _add_body_headers(out, body.content_type, body.disposition)
        return out

    def _relay_provisional(self, call: Call, resp: Response, now: float) -> None:
        out = self._a_response(call, resp, resp.status, _reason(resp.status))
        if out is not None:
            self.layer.respond(call.a_txn, out, now)

    def _answer_a(self, call: Call, out: Response, now: float) -> None:
        self.layer.respond(call.a_txn, out, now)
        call.retrans_interval = self.t1
        self._set_timer(call, self.t1, self._retransmit_2xx)
        limit = call.route.max_seconds if call.route is not None else None
        if self.max_call_seconds is not None:
            limit = min(limit, self.max_call_seconds) if limit else self.max_call_seconds
        if limit:
            call.limit_timer = self.call_later(limit, self._on_limit, call)

    def _retransmit_2xx(self, call: Call) -> None:
        """RFC 3261 §13.3.1.4: the UAS core resends 2xx until the ACK, for 64*T1."""
        call.timer = None
        if call.state != CallState.ANSWERED:
            return
        now = self.ep.now()
        if now - (call.answer_at or now) >= 64 * self.t1:
            # No ACK: the call is torn down on both legs.
            call.ended_by = "engine"
            call.reason = "no_ack"
            call.cause = RECOVERY_ON_TIMER_EXPIRY
            self._hangup_both(call, now)
            self.ep.flush()
            return
        txn = call.a_txn
        if txn.response is not None:
            self.layer.respond(txn, txn.response, now)
        call.retrans_interval = min(call.retrans_interval * 2, self.t2)
        self._set_timer(call, call.retrans_interval, self._retransmit_2xx)
        self.ep.flush()

    def _fail_a(
        self,
        call: Call,
        status: int,
        phrase: bytes,
        reason: str,
        now: float,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        self._clear_timer(call)
        if not reason.startswith("b_") and reason != "trunks_failed":
            # ansim's own decision: the cause follows from the status the caller gets
            call.cause = None
            call.cause_status = 0
        if call.a_txn.state in (State.PROCEEDING, State.TRYING):
            self.layer.reply(call.a_txn, status, now, reason=phrase, headers=headers)
        call.status = status
        call.reason = reason
        if call.ended_by is None:
            call.ended_by = "callee" if reason.startswith("b_") else "engine"
        self._finish(call, now, "failed" if status >= 500 else "rejected")

    # -- ACK, CANCEL, BYE --------------------------------------------------------------------
    def _on_ack(self, leg: Leg, ack: Request, now: float) -> None:
        call = leg.call
        other = call.other(leg)
        if leg.is_a and call.state == CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            self._clear_timer(call)
            # The 2xx is not sent again once ACKed: its copies need not outlive the ACK.
            call.a_txn.response = None
            call.a_txn.last = None
            call.a_invite.forget_parsed()
        if other is not None and other.ack_cseq is not None:
            self._send_ack(other, ack, now)

    def _send_ack(self, leg: Leg, src: Request | None, now: float) -> None:
        cseq = leg.ack_cseq
        assert cseq is not None
        d = leg.dialog
        ack = d.request(b"ACK", self._via(leg.transport), cseq=cseq)
        if src is not None and src.body:
            body = outgoing_body(src, ACK, leg.sdp, self.trunks.body_policy, leg.numbers)
            ack.body = body.body
            _add_body_headers(ack, body.content_type, body.disposition)
        leg.ack_cseq = None
        leg.last_ack = ack
        self.layer.send_request(ack, self._hop(leg), now)

    @staticmethod
    def _acked(leg: Leg, resp: Response) -> bool:
        """Whether ``resp`` (a 2xx to an INVITE on ``leg``) was ACKed already."""
        last = leg.last_ack
        return leg.ack_cseq is None and last is not None and last.cseq[0] == resp.cseq[0]

    def _resend_ack(self, leg: Leg, cseq: int, now: float) -> None:
        """ACK the 2xx of INVITE ``cseq`` on ``leg`` again (§13.2.2.4: an ACK for every 2xx).
        The ACK is rebuilt with a fresh branch, keeping the body of the one it repeats."""
        d = leg.dialog
        ack = d.request(b"ACK", self._via(leg.transport), cseq=cseq)
        last = leg.last_ack
        if last is not None and last.body and last.cseq[0] == cseq:
            ack.body = last.body  # built by _send_ack already
            _add_body_headers(ack, last.get(b"content-type"), last.get(b"content-disposition"))
        leg.last_ack = ack
        self.layer.send_request(ack, self._hop(leg), now)

    def _on_cancel(self, cancel: Request, txn: ServerTransaction, now: float) -> None:
        invite_txn = self.layer.find_invite(cancel)
        if invite_txn is None or not isinstance(invite_txn.user, Call):
            self.layer.reply(txn, 481, now)
            return
        self.layer.reply(txn, 200, now)
        call = invite_txn.user
        if call.state in (CallState.ROUTING, CallState.EARLY) and not call.cancelled:
            self._caller_gave_up(call, cancel, now)

    def _caller_gave_up(self, call: Call, req: Request, now: float) -> None:
        """The caller cancelled (or hung up, ``req`` the CANCEL or BYE) before the answer:
        487, and the callee is cancelled."""
        call.cancelled = True
        call.ended_by = "caller"
        call.cause = q850_cause(req.get_all(b"reason"))
        call.cause_status = 0
        self._clear_timer(call)
        self.layer.reply(call.a_txn, 487, now)
        call.status = 487
        call.reason = "cancelled"
        self._cancel_b(call, now)
        self._finish(call, now, "cancelled")

    def _cancel_b(self, call: Call, now: float) -> None:
        call.cancelled = True
        txn = call.b_txn
        if txn is None:
            return
        if txn.state == State.PROCEEDING:
            self._send_cancel(call, now)
        elif txn.state == State.CALLING:
            pass  # §9.1: CANCEL only after a provisional response; sent when one arrives

    def _send_cancel(self, call: Call, now: float) -> None:
        txn = call.b_txn
        if txn is None or txn.ack == b"cancel-sent":
            return
        invite = txn.request
        lines = [b"CANCEL " + invite.uri + b" SIP/2.0"]
        names = [START_NAME]
        for i, name in enumerate(invite.names):
            if name in (b"via", b"from", b"to", b"call-id", b"max-forwards", b"route"):
                lines.append(invite.lines[i])
                names.append(name)
        lines.append(b"CSeq: %d CANCEL" % invite.cseq[0])
        names.append(b"cseq")
        cancel = Request(b"CANCEL", invite.uri, lines, names)
        txn.ack = b"cancel-sent"  # marks the INVITE as cancelled until its final response
        self.layer.send_request(cancel, txn.dest, now)
        # §9.1: if no final response comes 64*T1 after the CANCEL, the INVITE is given up.
        self.call_later(64 * self.t1, self.layer.abandon, txn)

    def _on_bye(self, leg: Leg, bye: Request, txn: ServerTransaction, now: float) -> None:
        call = leg.call
        self.layer.reply(txn, 200, now)
        if call.state == CallState.ENDED:
            return
        if leg.is_a and call.state in (CallState.ROUTING, CallState.EARLY):
            self._caller_gave_up(call, bye, now)  # BYE in the early dialog: a CANCEL for the callee
            return
        call.ended_by = "caller" if leg.is_a else "callee"
        call.cause = q850_cause(bye.get_all(b"reason"))
        call.cause_status = 0
        other = call.other(leg)
        self._unregister(leg)
        if other is not None:
            if not leg.is_a and call.state in (CallState.ROUTING, CallState.EARLY):
                self._fail_a(call, 480, b"Temporarily Unavailable", "b_bye_early", now)
                return
            if other.ack_cseq is not None:
                self._send_ack(other, None, now)
            self._send_bye(other, now)
        call.status = call.status or 200
        self._finish(call, now, "completed")

    def _send_bye(self, leg: Leg, now: float) -> None:
        d = leg.dialog
        bye = d.request(b"BYE", self._via(leg.transport))
        self.layer.send_request(bye, self._hop(leg), now)
        self._unregister(leg)

    def _hangup_both(self, call: Call, now: float) -> None:
        for leg in (call.a, call.b):
            if leg is not None:
                if leg.ack_cseq is not None:
                    self._send_ack(leg, None, now)
                self._send_bye(leg, now)
        call.status = call.status or 200
        self._finish(call, now, "completed")

    def _on_limit(self, call: Call) -> None:
        call.limit_timer = None
        if call.state == CallState.ENDED:
            return
        call.ended_by = "limit"
        call.reason = "max_call_length"
        self._hangup_both(call, self.ep.now())
        self.ep.flush()

    def _ack_and_bye(self, resp: Response, dest: Peer, now: float) -> None:
        """A 2xx for an INVITE we no longer want: ACK it, then BYE it (§15)."""
        try:
            to = resp.to
            frm = resp.from_
            contact = resp.get(b"contact")
            target = parse_name_addr(_split(contact)[0]).uri_raw if contact else to.uri_raw
        except SipParseError:
            return
        d = Dialog(
            resp.call_id, without_tag(frm.raw), frm.tag or b"", without_tag(to.raw), to.tag, target
        )
        rr = resp.get_all(b"record-route")
        if rr:
            d.route_set = [v for line in reversed(rr) for v in reversed(_split(line))]
        transport = dest[0]
        ack = d.request(b"ACK", self._via(transport), cseq=resp.cseq[0])
        hop = self._dest(d.next_hop_uri(), dest)
        self.layer.send_request(ack, hop, now)
        d.local_cseq = resp.cseq[0]
        self.layer.send_request(d.request(b"BYE", self._via(transport)), hop, now)

    def _on_stray(self, resp: Response, source: Peer, now: float) -> None:
        if 200 <= resp.status < 300 and resp.cseq[1] == b"INVITE":
            leg = self.dialogs.get((resp.call_id, resp.from_tag or b""))
            if leg is not None and leg.call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                if leg.ack_cseq is None:  # our ACK was lost: send it again
                    self._resend_ack(leg, resp.cseq[0], now)
                return
            self._ack_and_bye(resp, source, now)

    # -- in-dialog relay ---------------------------------------------------------------------
    def _relay(self, leg: Leg, req: Request, txn: ServerTransaction, now: float) -> None:
        call = leg.call
        other = call.other(leg)
        method = req.method
        if other is None or call.state == CallState.ENDED:
            self.layer.reply(txn, 481, now)
            return
        target_refresh = method == b"INVITE" or method == b"UPDATE"
        if target_refresh and leg.out_pending:  # glare: our own offer is outstanding on this leg
            self.layer.reply(txn, 491, now)
            return
        policy = self.trunks.body_policy
        kind = OFFER if method in _OFFER_METHODS else INFO if method == b"INFO" else OTHER
        body = outgoing_body(req, kind, other.sdp, policy, other.numbers)
        if body.status:  # 488 for an unusable SDP, 415/400 for an INFO body not relayed
            headers = [(b"accept", policy.accept_info)] if body.status == 415 else None
            self.layer.reply(txn, body.status, now, headers=headers)
            return
        if target_refresh:
            other.out_pending = True
            if method == b"INVITE":
                # §17.2.1: the far leg may take longer than 200 ms; stop the sender's retransmissions.
                self.layer.reply(txn, 100, now)
        d = other.dialog
        if method == b"PRACK":
            out = d.request(method, self._via(other.transport))
            rack = req.get(b"rack")
            if rack is not None:
                parts = rack.split()
                if (
                    len(parts) == 3
                    and call.b_txn is not None
                    and parts[0].isdigit()
                    and len(parts[0]) <= 10
                ):
                    out.add(b"rack", b"%d %d INVITE" % (int(parts[0]), call.b_txn.request.cseq[0]))
        else:
            contact = self._contact(other.transport) if target_refresh else None
            out = d.request(method, self._via(other.transport), contact=contact)
        lines, names = out.lines, out.names
        if target_refresh or method == b"OPTIONS":
            lines.append(b"Allow: " + ALLOW_HEADER)
            names.append(b"allow")
        if method == b"OPTIONS":
            lines.append(b"Accept: " + ACCEPT_HEADER)
            names.append(b"accept")
        self._copy_headers(req, lines, names, IN_DIALOG_OPTIONS)
        require = required(req, IN_DIALOG_OPTIONS)
        if require is not None:
            lines.append(b"Require: " + require)
            names.append(b"require")
        out.body = body.body
        _add_body_headers(out, body.content_type, body.disposition)
        ctxn = self.layer.send_request(out, self._hop(other), now)
        ctxn.user = Relay(call, leg, other, txn)
        txn.user = call

    def _on_relay_response(
        self, relay: Relay, resp: Response, txn: ClientTransaction, now: float
    ) -> None:
        status = resp.status
        if status == 100:
            return
        server = relay.server_txn
        method = txn.method
        if status >= 200 and method in (b"INVITE", b"UPDATE"):
            relay.to_leg.out_pending = False
        if method == b"INVITE" and 200 <= status < 300:
            if self._acked(relay.to_leg, resp):  # the 2xx again: our ACK was lost
                self._resend_ack(relay.to_leg, resp.cseq[0], now)
                return
            relay.to_leg.ack_cseq = resp.cseq[0]
            self._learn_target(relay.to_leg, resp)
        from_leg = relay.from_leg
        kind = OTHER
        if method in _OFFER_METHODS and status < 300:
            kind = EARLY if status < 200 else ANSWER
        body = outgoing_body(resp, kind, from_leg.sdp, self.trunks.body_policy, from_leg.numbers)
        if body.status:  # a 2xx without an SDP the sender can be given
            if method == b"INVITE":
                self._send_ack(relay.to_leg, None, now)
            self.layer.reply(server, body.status, now, to_tag=from_leg.dialog.local_tag)
            return
        # The far end's reason phrase is free text (it may name its number): never relayed.
        out = make_response(
            server.request, status, _reason(status), to_tag=from_leg.dialog.local_tag
        )
        lines, names = out.lines, out.names
        if 200 <= status < 300:
            if method == b"INVITE" or method == b"UPDATE":
                lines.append(b"Contact: " + self._contact(from_leg.transport))
                names.append(b"contact")
            if method in (b"INVITE", b"UPDATE", b"OPTIONS"):
                lines.append(b"Allow: " + ALLOW_HEADER)
                names.append(b"allow")
            if method == b"OPTIONS":
                lines.append(b"Accept: " + ACCEPT_HEADER)
                names.append(b"accept")
        elif status == 405:
            lines.append(b"Allow: " + ALLOW_HEADER)
            names.append(b"allow")
        self._copy_headers(resp, lines, names, IN_DIALOG_OPTIONS)
        require = required(resp, IN_DIALOG_OPTIONS, server.request)
        if require is not None:
            lines.append(b"Require: " + require)
            names.append(b"require")
        out.body = body.body
        _add_body_headers(out, body.content_type, body.disposition)
        self.layer.respond(server, out, now)

    @staticmethod
    def _learn_target(leg: Leg, resp: Response) -> None:
        leg.hop = None
        contact = resp.get(b"contact")
        if contact:
            try:
                leg.dialog.remote_target = parse_name_addr(_split(contact)[0]).uri_raw
            except SipParseError:
                pass

    def _on_failure(
        self, txn: ClientTransaction | ServerTransaction, now: float, status: int
    ) -> None:
        """``txn`` timed out (``status`` 408) or could not be sent (503, RFC 3261 §8.1.3.1)."""
        user = txn.user
        if isinstance(txn, ClientTransaction):
            if isinstance(user, Call) and txn is user.b_txn and txn.method == b"INVITE":
                self._clear_timer(user)
                user.cause = None
                user.cause_status = status
                if user.state == CallState.ROUTING and not user.cancelled:
                    self._try_next_trunk(user, now)
                elif user.state == CallState.EARLY and not user.cancelled:
                    self._fail_a(user, 408, b"Request Timeout", "b_timeout", now)
            elif isinstance(user, Relay):
                if txn.method in (b"INVITE", b"UPDATE"):
                    user.to_leg.out_pending = False
                if user.server_txn.state in (State.TRYING, State.PROCEEDING):
                    self.layer.reply(
                        user.server_txn, 408, now, to_tag=user.from_leg.dialog.local_tag
                    )

    # -- end of call ---------------------------------------------------------------------------
    def _unregister(self, leg: Leg) -> None:
        self.dialogs.pop((leg.dialog.call_id, leg.dialog.local_tag), None)

    def _finish(self, call: Call, now: float, outcome: str) -> None:
        if call.state == CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.end_at = now
        self._clear_timer(call)
        if call.limit_timer is not None:
            call.limit_timer.cancel()
            call.limit_timer = None
        for leg in (call.a, call.b):
            if leg is not None:
                self._unregister(leg)
                self._release_flow(leg)
        self.calls.discard(call)
        ended = self._ended
        ended.append((now + self.linger, call))
        if ended[0][0] <= now:  # under load about one per ended call: no burst of frees
            self.release_ended(now)
        self._count(outcome)
        if self.cdr is not None:
            self.cdr.add(self._record(call, now))
        if call.reason is not None and outcome.startswith("refused"):
            return
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "call ended",
                extra={
                    "call_id": call.a_invite.call_id.decode(errors="replace"),
                    "virtual": call.virtual,
                    "caller": mask(call.caller or ""),
                    "status": call.status,
                    "outcome": outcome,
                },
            )

    def _record(self, call: Call, now: float) -> CallRecord:
        """The CDR of ``call``, ended at ``now``."""
        wall = self._wall
        route = call.route
        routed = isinstance(route, Route)
        invite_at = call.invite_at
        ring_at = call.ring_at
        answer_at = call.answer_at
        source = call.source
        cause = call.cause
        if cause is None:
            cause = q850_for_status(call.cause_status or call.status)
        return CallRecord(
            a_call_id=call.a_invite.call_id.decode(errors="replace"),
            b_call_id=call.b.dialog.call_id.decode() if call.b is not None else None,
            call_type="bridge",
            binding_kind=route.kind if routed else None,
            direction=(route.direction or None) if routed else None,
            virtual=call.virtual,
            caller=call.caller,
            callee=call.callee,
            presented=route.present if routed else None,
            binding_id=route.binding_id if route is not None else None,
            in_trunk=call.in_trunk,
            src_transport=source[0],
            src_ip=source[1],
            src_port=source[2],
            trunk=call.trunk.name if call.trunk is not None else None,
            invite_at=wall(invite_at),
            ring_at=wall(ring_at) if ring_at is not None else None,
            answer_at=wall(answer_at) if answer_at is not None else None,
            end_at=wall(now),
            ring_ms=round((ring_at - invite_at) * 1000) if ring_at is not None else None,
            setup_ms=round((answer_at - invite_at) * 1000) if answer_at is not None else None,
            duration_ms=round((now - answer_at) * 1000) if answer_at is not None else None,
            status=call.status,
            q850_cause=cause,
            ended_by=call.ended_by,
            reason=call.reason,
        )

    def release_ended(self, now: float) -> int:
        """Unlink calls that ended more than ``linger`` seconds ago; returns how many.

        A call, its legs and its transactions refer to each other. Once its last
        transaction has ended nothing else can reach it, and cutting those links lets
        reference counting free it at once, so the cyclic garbage collector never has to
        find it: the engine freezes what it has allocated out of collection every second
        (see ``b2bua.serve``), and relies on this to leave no garbage cycles behind.
        """
        ended = self._ended
        n = 0
        while ended and ended[0][0] <= now:
            call = ended.popleft()[1]
            call.a_txn.user = None
            if call.b_txn is not None:
                call.b_txn.user = None
                call.b_txn = None
            call.a = call.b = None
            call.timer = call.limit_timer = None
            n += 1
        return n

    def shutdown(self, now: float) -> None:
        """Hang up every call (engine stopping)."""
        for call in list(self.calls):
            if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                call.ended_by = "engine"
                call.reason = "shutdown"
                self._hangup_both(call, now)
            else:
                self._cancel_b(call, now)
                self._fail_a(call, 503, b"Service Unavailable", "shutdown", now)
        self.ep.flush()


def _split(value: bytes) -> list[bytes]:
    from .sip.headers import split_values

    return split_values(value)


_CLASS_REASONS = {
    1: b"Session Progress",
    2: b"OK",
    3: b"Redirected",
    4: b"Request Failed",
    5: b"Server Error",
    6: b"Global Failure",
}


def _reason(status: int) -> bytes:
    """ansim's own reason phrase for ``status``."""
    return REASONS.get(status) or _CLASS_REASONS.get(status // 100, b"Unknown")


def _add_body_headers(
    msg: Request | Response, content_type: bytes | None, disposition: bytes | None
) -> None:
    """Content-Type and Content-Disposition of the body ``msg`` carries (Content-Length is
    written when the message is serialized)."""
    if content_type is not None:
        msg.lines.append(b"Content-Type: " + content_type)
        msg.names.append(b"content-type")
    if disposition is not None:
        msg.lines.append(b"Content-Disposition: " + disposition)
        msg.names.append(b"content-disposition")


_IP_LITERAL: dict[str, bool] = {}


def _is_ip(host: str) -> bool:
    """Whether ``host`` is an IP address literal (answers cached; the cache is bounded)."""
    known = _IP_LITERAL.get(host)
    if known is None:
        try:
            ipaddress.ip_address(host)
            known = True
        except ValueError:
            known = False
        if len(_IP_LITERAL) < 65536:
            _IP_LITERAL[host] = known
    return known


__all__ = ["ALLOW_HEADER", "CallEngine", "CallState"]
