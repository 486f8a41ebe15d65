"""The call engine: the transaction user that holds calls and hands their events to
their controllers (sans-IO around the transaction layer).

The endpoint hands the engine the transaction layer's events. The engine matches each
to a call and a leg (the dialog table, keyed by Call-ID and ansim's tag), answers what
the UAS core must answer whatever the call does (100 to a new INVITE, 200 to BYE and
CANCEL, 481 outside a dialog, its 2xx resent until the ACK, 64*T1 at most), and gives
the rest to the call's controller (``b2bua.controller``): ``Bridge`` for calls through
the translation table. The engine's public methods are the controllers' actions:
answer or reject the UAS leg, place a UAC leg, ACK, BYE, CANCEL, timers, and the end of
a call with its record. Media attached to legs is driven through ``b2bua.anchor``.

Everything a leg is sent is built fresh (DESIGN.md, "What the far leg may see"); the
engine keeps no per-message logs, it counts.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from translate.bindings import Route
from translate.limits import Limits
from translate.numbers import NumberPlan, mask
from translate.store import Store

from .bridge import Bridge
from .call import SETUP_BUCKETS, Call, CallState, CallStats, Ids, Leg, Pending
from .call_events import CallEvents
from .cdr import CallRecord, CdrWriter
from .controller import Controller
from .endpoint import SipEndpoint
from .inbound_auth import AuthVerdict, InboundAuth
from .outbound_auth import MAX_STALE, authorize, challenge_is_stale, credentials_header
from .outgoing import add_body_headers, dest, split
from .registrar_client import RegistrarClient, TrunkRegistration
from .sip.bodies import ACK, outgoing_body
from .sip.dialog import Dialog, without_tag
from .sip.errors import SipParseError
from .sip.message import START_NAME, Request, Response
from .sip.reason import RECOVERY_ON_TIMER_EXPIRY, q850_for_status
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
from .sip.uri import parse_name_addr
from .sip.validate import ALLOW_HEADER
from .trunk_auth import OutboundCredentials
from .trunks import TrunkTable

log = logging.getLogger(__name__)

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
        media: Any = None,
        limits: Limits | None = None,
        events: CallEvents | None = None,
    ) -> None:
        self.ep = endpoint
        # The moments of tenants' calls, for their webhooks (b2bua.call_events); None: none.
        self.events = events
        self.layer = endpoint.layer
        self.store = store
        # Caps, blocklists and the marketing rule around the store's lookup (None: the
        # lookup alone decides).
        self.limits = limits
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
        # Media anchoring (b2bua.anchor.MediaAnchor), None when every call is passthrough.
        self.media = media
        # Digest challenges of trunks with `auth` (None when no trunk has any).
        self.auth = (
            InboundAuth(trunks, os.urandom(32), trunks.config.nonce_lifetime)
            if trunks.by_credentials
            else None
        )
        self.bridge: Controller = Bridge(self)
        # ansim's registrations at trunks' registrars (None when no trunk has any); the
        # entry point starts them once the endpoint listens.
        self.registrations = (
            RegistrarClient(self, call_later)
            if any(t.registration is not None for t in trunks.config.trunks)
            else None
        )

    # -- helpers ---------------------------------------------------------------------------
    def wall(self, now: float) -> float:
        return now + self._epoch

    def host(self, transport: str) -> tuple[bytes, int]:
        return self.advertise.get(transport) or next(iter(self.advertise.values()))

    def via(self, transport: str) -> bytes:
        host, port = self.host(transport)
        return b"SIP/2.0/%s %s:%d;branch=z9hG4bK%s;rport" % (
            transport.upper().encode(),
            host,
            port,
            self.ids.next(),
        )

    def contact(self, transport: str) -> bytes:
        host, port = self.host(transport)
        if transport == "udp":
            return b"<sip:ansim@%s:%d>" % (host, port)
        return b"<sip:ansim@%s:%d;transport=%s>" % (host, port, transport.encode())

    def sdp_builder(self, transport: str) -> SdpBuilder:
        """A builder of the SDP a leg on ``transport`` is sent: a session id of its own,
        ansim's advertised address in o=."""
        self._session += 1
        return SdpBuilder(self._session, self.host(transport)[0])

    def hop(self, leg: Leg) -> Peer:
        """Where requests in ``leg``'s dialog are sent: over the connection the party's
        messages came on while it is open (a caller behind NAT, or with no listening
        socket, is reached no other way), else to the route set or the remote target
        (cached until the route changes)."""
        flow = leg.flow
        if flow is not None:
            if self.ep.transports.is_open(flow):
                return flow
            self.set_flow(leg, None)
        hop = leg.hop
        if hop is None:
            hop = leg.hop = dest(leg.dialog.next_hop_uri(), leg.peer)
        return hop

    def set_flow(self, leg: Leg, flow: Peer | None) -> None:
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

    def register(self, leg: Leg) -> None:
        """In-dialog requests for ``leg``'s dialog reach it from now on."""
        self.dialogs[(leg.dialog.call_id, leg.dialog.local_tag)] = leg

    def unregister(self, leg: Leg) -> None:
        self.dialogs.pop((leg.dialog.call_id, leg.dialog.local_tag), None)

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
                    self.set_flow(leg, source)
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
            self.set_flow(leg, source)
        call = leg.call
        if method == b"BYE":
            self.layer.reply(txn, 200, now)
            if call.state != CallState.ENDED:
                call.controller.on_bye(call, leg, req, now)
        elif call.state == CallState.ENDED:
            self.layer.reply(txn, 481, now)
        else:
            call.controller.on_request(call, leg, req, txn, now)

    def _new_call(self, req: Request, txn: ServerTransaction, source: Peer, now: float) -> None:
        trunk_in = self.trunks.trunk_for_source(source[1])
        auth = self.auth
        if auth is not None and (trunk_in.auth is not None if trunk_in is not None else auth.open):
            verdict = auth.check(req, trunk_in, now)
            if verdict.status:
                self._auth_answer(req, txn, source, verdict, now)
                return
            trunk_in = verdict.trunk
        if trunk_in is None:
            self.stats.count("rejected_source")
            if self.trunks.config.unknown_source == "reject":
                self.layer.reply(txn, 403, now, to_tag=self.ids.next())
            return
        call = Call(req, txn, source, now, self.bridge)
        call.in_trunk = trunk_in.name
        txn.user = call
        self.layer.reply(txn, 100, now)
        txn.to_tag = self.ids.next()
        call.controller.start(call, now)

    def _auth_answer(
        self, req: Request, txn: ServerTransaction, source: Peer, verdict: AuthVerdict, now: float
    ) -> None:
        """A challenge (no call is made of it), or a refusal with its record."""
        if verdict.reason is None:
            self.layer.reply(
                txn, verdict.status, now, to_tag=self.ids.next(), headers=verdict.headers
            )
            return
        call = Call(req, txn, source, now, self.bridge)
        if verdict.trunk is not None:
            call.in_trunk = verdict.trunk.name
        txn.user = call
        txn.to_tag = self.ids.next()
        self.refuse(call, verdict.status, b"Forbidden", verdict.reason, now)

    def uas_leg(self, call: Call, numbers: Any) -> Leg:
        """The UAS leg of ``call``: the caller's early dialog, keyed by ansim's tag, in
        the dialog table from now on."""
        req = call.a_invite
        a_tag = call.a_txn.to_tag
        assert a_tag is not None
        source = call.source
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
            and [v for line in req.get_all(b"record-route") for v in split(line)],
            remote_cseq=req.cseq[0],
        )
        leg = Leg(call, True, a_dialog, source, self.sdp_builder(source[0]), numbers)
        call.a = leg
        if source[0] != "udp":
            self.set_flow(leg, source)
        self.register(leg)
        self.calls.add(call)
        return leg

    # -- actions on the UAS leg --------------------------------------------------------------
    def reply(self, txn: ServerTransaction, status: int, now: float, **kwargs: Any) -> None:
        self.layer.reply(txn, status, now, **kwargs)

    def refuse(self, call: Call, status: int, phrase: bytes, reason: str, now: float) -> None:
        """The call is refused before it was routed (the translation table said no)."""
        self.layer.reply(call.a_txn, status, now, reason=phrase)
        call.status = status
        call.reason = reason
        call.ended_by = "engine"
        self.finish(call, now, f"refused_{reason}")

    def reject(
        self,
        call: Call,
        status: int,
        phrase: bytes,
        reason: str,
        now: float,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        """A final failure response to the UAS leg's INVITE; the call ends."""
        self.clear_timer(call)
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
        self.finish(call, now, "failed" if status >= 500 else "rejected")

    def respond(self, call: Call, out: Response, now: float) -> None:
        """A provisional response to the UAS leg's INVITE."""
        self.layer.respond(call.a_txn, out, now)

    def answer(self, call: Call, out: Response, now: float, send: bool = True) -> None:
        """The UAS leg's INVITE is answered with the 2xx ``out``: sent now (or, with
        ``send`` False, by ``send_answer`` once the call's media is ready) and resent
        until the ACK; the call's length limit starts."""
        self.clear_timer(call)
        call.state = CallState.ANSWERED
        call.answer_at = now
        self.stats.observe_setup(now - call.invite_at)
        route = call.route
        if self.events is not None and isinstance(route, Route) and route.tenant:
            self.events.call_answered(call.a_invite.call_id, route.binding_id, self.wall(now))
        if send:
            self.send_answer(call, out, now)
        limit = call.route.max_seconds if isinstance(call.route, Route) else None
        if self.max_call_seconds is not None:
            limit = min(limit, self.max_call_seconds) if limit else self.max_call_seconds
        if limit:
            call.limit_timer = self.call_later(limit, self._on_limit, call)

    def send_answer(self, call: Call, out: Response, now: float) -> None:
        self.layer.respond(call.a_txn, out, now)
        call.retrans_interval = self.t1
        self.set_timer(call, self.t1, self._retransmit_2xx)

    def _retransmit_2xx(self, call: Call) -> None:
        """RFC 3261 §13.3.1.4: the UAS core resends 2xx until the ACK, for 64*T1."""
        call.timer = None
        if call.state != CallState.ANSWERED:
            return
        now = self.ep.now()
        if now - (call.answer_at or now) >= 64 * self.t1 - 0.001:  # a timer may fire a hair early
            # No ACK: the call is torn down on both legs.
            call.ended_by = "engine"
            call.reason = "no_ack"
            call.cause = RECOVERY_ON_TIMER_EXPIRY
            self.hangup(call, now)
            self.ep.flush()
            return
        txn = call.a_txn
        if txn.response is not None:
            self.layer.respond(txn, txn.response, now)
        call.retrans_interval = min(call.retrans_interval * 2, self.t2)
        # The last wait ends at 64*T1 after the answer, not at the next retransmission.
        left = (call.answer_at or now) + 64 * self.t1 - now
        self.set_timer(call, min(call.retrans_interval, left), self._retransmit_2xx)
        self.ep.flush()

    # -- actions on UAC legs -----------------------------------------------------------------
    def place(self, call: Call, leg: Leg, invite: Request, peer: Peer) -> ClientTransaction:
        """Send the INVITE of the new UAC leg ``leg`` to ``peer``."""
        call.b = leg
        self.register(leg)
        txn = self.ep.send_request(invite, peer, call)
        call.b_txn = txn
        return txn

    def drop_uac(self, call: Call) -> None:
        """Forget the UAC leg (it failed: the next trunk is tried, or the call ends)."""
        leg = call.b
        if leg is not None:
            self._release_flow(leg)
            self.unregister(leg)
            call.b = None

    def cancel_uac(self, call: Call, now: float) -> None:
        call.cancelled = True
        txn = call.b_txn
        if txn is None:
            return
        if txn.state == State.PROCEEDING:
            self.send_cancel(call, now)
        # In CALLING: §9.1, CANCEL only after a provisional response; sent when one arrives.

    def send_cancel(self, call: Call, now: float) -> None:
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

    def learn_remote(self, leg: Leg, resp: Response) -> None:
        """The UAC leg's dialog as a response to its INVITE sets it up: tag, target, routes."""
        d = leg.dialog
        leg.hop = None
        tag = resp.to_tag
        if tag:
            d.remote_tag = tag
        contact = resp.get(b"contact")
        if contact:
            try:
                d.remote_target = parse_name_addr(split(contact)[0]).uri_raw
            except SipParseError:
                pass
        rr = resp.get_all(b"record-route")
        if rr:
            d.route_set = [v for line in reversed(rr) for v in reversed(split(line))]

    @staticmethod
    def learn_target(leg: Leg, resp: Response) -> None:
        leg.hop = None
        contact = resp.get(b"contact")
        if contact:
            try:
                leg.dialog.remote_target = parse_name_addr(split(contact)[0]).uri_raw
            except SipParseError:
                pass

    # -- ACK, BYE ----------------------------------------------------------------------------
    def _on_ack(self, leg: Leg, ack: Request, now: float) -> None:
        call = leg.call
        if leg.is_a and call.state == CallState.ANSWERED:
            call.state = CallState.CONFIRMED
            self.clear_timer(call)
            # The 2xx is not sent again once ACKed: its copies need not outlive the ACK.
            call.a_txn.response = None
            call.a_txn.last = None
            call.a_invite.forget_parsed()
        call.controller.on_ack(call, leg, ack, now)

    def send_ack(self, leg: Leg, src: Request | None, now: float) -> None:
        """ACK the 2xx awaiting it on ``leg``, with the SDP of ``src`` (an ACK from the
        other leg) rebuilt for it when there is one."""
        cseq = leg.ack_cseq
        assert cseq is not None
        d = leg.dialog
        ack = d.request(b"ACK", self.via(leg.transport), cseq=cseq)
        if src is not None and src.body:
            body = outgoing_body(src, ACK, leg.sdp, self.trunks.body_policy, leg.numbers)
            ack.body = body.body
            add_body_headers(ack, body.content_type, body.disposition)
        leg.ack_cseq = None
        leg.last_ack = ack
        self.layer.send_request(ack, self.hop(leg), now)

    @staticmethod
    def acked(leg: Leg, resp: Response) -> bool:
        """Whether ``resp`` (a 2xx to an INVITE on ``leg``) was ACKed already."""
        last = leg.last_ack
        return leg.ack_cseq is None and last is not None and last.cseq[0] == resp.cseq[0]

    def resend_ack(self, leg: Leg, cseq: int, now: float) -> None:
        """ACK the 2xx of INVITE ``cseq`` on ``leg`` again (§13.2.2.4: an ACK for every 2xx).
        The ACK is rebuilt with a fresh branch, keeping the body of the one it repeats."""
        d = leg.dialog
        ack = d.request(b"ACK", self.via(leg.transport), cseq=cseq)
        last = leg.last_ack
        if last is not None and last.body and last.cseq[0] == cseq:
            ack.body = last.body  # built by send_ack already
            add_body_headers(ack, last.get(b"content-type"), last.get(b"content-disposition"))
        leg.last_ack = ack
        self.layer.send_request(ack, self.hop(leg), now)

    def _on_cancel(self, cancel: Request, txn: ServerTransaction, now: float) -> None:
        invite_txn = self.layer.find_invite(cancel)
        if invite_txn is None or not isinstance(invite_txn.user, Call):
            self.layer.reply(txn, 481, now)
            return
        self.layer.reply(txn, 200, now)
        call = invite_txn.user
        if call.state in (CallState.ROUTING, CallState.EARLY) and not call.cancelled:
            call.controller.on_cancel(call, cancel, now)

    def send_bye(self, leg: Leg, now: float) -> None:
        d = leg.dialog
        bye = d.request(b"BYE", self.via(leg.transport))
        txn = self.layer.send_request(bye, self.hop(leg), now)
        if self.credentials_of(leg) is not None:  # its challenge will be answered
            txn.user = Pending(leg.call, leg, leg, None)
        self.unregister(leg)

    # -- challenges of ansim's requests (b2bua.outbound_auth) ---------------------------------
    def credentials_of(self, leg: Leg) -> OutboundCredentials | None:
        """What ansim answers challenges of requests on ``leg`` with: the credentials of
        the trunk the leg's party is reached through (the caller's trunk for the UAS leg)."""
        call = leg.call
        trunk = self.trunks.by_name.get(call.in_trunk or "") if leg.is_a else call.trunk
        return trunk.credentials if trunk is not None else None

    def authorized(
        self, leg: Leg, req: Request, resp: Response, creds: OutboundCredentials | None
    ) -> Request | None:
        """``req`` (sent on ``leg``) again with the answer to ``resp``'s challenge and the
        dialog's next CSeq, or None when it cannot or must not be answered (no
        credentials; they were refused; stale nonces answered ``MAX_STALE`` times)."""
        stale = challenge_is_stale(resp)
        if creds is None or (stale and leg.stale_answers >= MAX_STALE):
            out = None
        else:
            out = authorize(req, resp, creds, self.via(leg.transport), leg.dialog.local_cseq + 1)
        key = (req.method.decode(errors="replace"), "answered" if out is not None else "failed")
        challenges = self.stats.challenges
        challenges[key] = challenges.get(key, 0) + 1
        if out is None:
            return None
        if stale and credentials_header(resp.status) in req.names:
            leg.stale_answers += 1
        leg.dialog.local_cseq += 1
        return out

    def _reauthorize(
        self, pending: Pending, resp: Response, txn: ClientTransaction, now: float
    ) -> bool:
        """A request on a leg challenged by its trunk: sent again with credentials (True),
        or left to fail (False)."""
        leg = pending.to_leg
        out = self.authorized(leg, txn.request, resp, self.credentials_of(leg))
        if out is None:
            return False
        again = self.layer.send_request(out, txn.dest, now)
        again.user = pending
        return True

    def send_in_dialog(
        self, leg: Leg, method: bytes, body: bytes, content_type: bytes, now: float
    ) -> ClientTransaction:
        """A request of ansim's own in ``leg``'s dialog (an INFO carrying a digit)."""
        d = leg.dialog
        out = d.request(method, self.via(leg.transport))
        out.lines.append(b"Allow: " + ALLOW_HEADER)
        out.names.append(b"allow")
        out.body = body
        add_body_headers(out, content_type, None)
        return self.layer.send_request(out, self.hop(leg), now)

    def hangup(self, call: Call, now: float, except_leg: Leg | None = None) -> None:
        """End an answered call: BYE on every leg but ``except_leg`` (ACKing a 2xx that
        awaits our ACK first)."""
        for leg in (call.a, call.b):
            if leg is not None and leg is not except_leg:
                if leg.ack_cseq is not None:
                    self.send_ack(leg, None, now)
                self.send_bye(leg, now)
        call.status = call.status or 200
        self.finish(call, now, "completed")

    def _on_limit(self, call: Call) -> None:
        call.limit_timer = None
        if call.state == CallState.ENDED:
            return
        call.ended_by = "limit"
        call.reason = "max_call_length"
        self.hangup(call, self.ep.now())
        self.ep.flush()

    def ack_and_bye(self, resp: Response, peer: Peer, now: float) -> None:
        """A 2xx for an INVITE we no longer want: ACK it, then BYE it (§15)."""
        try:
            to = resp.to
            frm = resp.from_
            contact = resp.get(b"contact")
            target = parse_name_addr(split(contact)[0]).uri_raw if contact else to.uri_raw
        except SipParseError:
            return
        d = Dialog(
            resp.call_id, without_tag(frm.raw), frm.tag or b"", without_tag(to.raw), to.tag, target
        )
        rr = resp.get_all(b"record-route")
        if rr:
            d.route_set = [v for line in reversed(rr) for v in reversed(split(line))]
        transport = peer[0]
        ack = d.request(b"ACK", self.via(transport), cseq=resp.cseq[0])
        hop = dest(d.next_hop_uri(), peer)
        self.layer.send_request(ack, hop, now)
        d.local_cseq = resp.cseq[0]
        self.layer.send_request(d.request(b"BYE", self.via(transport)), hop, now)

    def _on_stray(self, resp: Response, source: Peer, now: float) -> None:
        if 200 <= resp.status < 300 and resp.cseq[1] == b"INVITE":
            leg = self.dialogs.get((resp.call_id, resp.from_tag or b""))
            if leg is not None and leg.call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                if leg.ack_cseq is None:  # our ACK was lost: send it again
                    self.resend_ack(leg, resp.cseq[0], now)
                return
            self.ack_and_bye(resp, source, now)

    # -- responses and failures of what controllers sent ----------------------------------------
    def _on_response(self, resp: Response, txn: ClientTransaction, now: float) -> None:
        user = txn.user
        if isinstance(user, Call):
            if txn.method == b"INVITE":
                user.controller.on_invite_response(user, resp, txn, now)
            return
        if isinstance(user, Pending):
            status = resp.status
            if (status == 401 or status == 407) and self._reauthorize(user, resp, txn, now):
                return
            user.call.controller.on_response(user, resp, txn, now)
        elif isinstance(user, TrunkRegistration):
            user.client.on_response(user, resp, now)

    def _on_failure(
        self, txn: ClientTransaction | ServerTransaction, now: float, status: int
    ) -> None:
        """``txn`` timed out (``status`` 408) or could not be sent (503, RFC 3261 §8.1.3.1)."""
        if not isinstance(txn, ClientTransaction):
            return
        user = txn.user
        if isinstance(user, Call):
            if txn is user.b_txn and txn.method == b"INVITE":
                user.controller.on_invite_failure(user, txn, status, now)
        elif isinstance(user, Pending):
            user.call.controller.on_request_failure(user, txn, status, now)
        elif isinstance(user, TrunkRegistration):
            user.client.on_failure(user, status, now)

    # -- timers ------------------------------------------------------------------------------
    def set_timer(self, call: Call, delay: float, fn: Callable[[Call], None]) -> None:
        """``fn(call)`` in ``delay`` seconds, replacing the call's timer (one at a time)."""
        if call.timer is not None:
            call.timer.cancel()
        call.timer = self.call_later(delay, fn, call)

    def clear_timer(self, call: Call) -> None:
        if call.timer is not None:
            call.timer.cancel()
            call.timer = None

    # -- end of call ---------------------------------------------------------------------------
    def finish(self, call: Call, now: float, outcome: str) -> None:
        if call.state == CallState.ENDED:
            return
        call.state = CallState.ENDED
        call.end_at = now
        self.clear_timer(call)
        if call.limit_timer is not None:
            call.limit_timer.cancel()
            call.limit_timer = None
        for leg in (call.a, call.b):
            if leg is not None:
                self.unregister(leg)
                self._release_flow(leg)
        if call.media is not None:
            self.media.release(call)
        self.calls.discard(call)
        ended = self._ended
        ended.append((now + self.linger, call))
        if ended[0][0] <= now:  # under load about one per ended call: no burst of frees
            self.release_ended(now)
        self.stats.count(outcome)
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
        wall = self.wall
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
            call_type=call.call_type,
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
            call.media = None
            n += 1
        return n

    def shutdown(self, now: float) -> None:
        """Hang up every call and remove ansim's registrations (engine stopping)."""
        if self.registrations is not None:
            self.registrations.stop(now)
        for call in list(self.calls):
            if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                call.ended_by = "engine"
                call.reason = "shutdown"
                self.hangup(call, now)
            else:
                self.cancel_uac(call, now)
                self.reject(call, 503, b"Service Unavailable", "shutdown", now)
        self.ep.flush()


__all__ = ["ALLOW_HEADER", "SETUP_BUCKETS", "Call", "CallEngine", "CallState"]
