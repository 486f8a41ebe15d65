"""The bridge controller: a call to a virtual number, through the translation table, to
the real party (sans-IO).

The caller's INVITE for virtual number X (the UAS leg) is decided by
``translate.limits`` with the caller's number (the translation store's lookup, then the
blocklists, the marketing rule and the caps); a refusal is answered at once (one
table, ``translate.refusals``). A route places a UAC leg to the real callee over the route's
trunks in turn (408, 5xx or no answer within the trunk's ``invite_timeout``: the next
one), presenting the number the binding says; its responses are rebuilt for the caller
(``a_response``), statuses that would reveal something of the callee folded into 480
or 503. Once answered, the two legs are bridged: ACK, BYE and in-dialog requests cross
(``b2bua.indialog``), digits keyed on one leg reach the other in the form it
negotiated. Media anchoring, when the call's mode asks for it, is attached to both legs
before the UAC leg's INVITE goes out (``b2bua.anchor``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from translate.bindings import Refusal, Route
from translate.limits import CALL
from translate.refusals import REFUSALS as REFUSAL_ANSWERS

from .call import Call, CallState, Leg, Pending
from .controller import Controller
from .indialog import relay_failure, relay_request, relay_response
from .outgoing import add_body_headers, copy_headers, reason
from .sip.bodies import ANSWER, DTMF_RELAY, EARLY, OFFER, Numbers, outgoing_body
from .sip.dialog import Dialog
from .sip.errors import SipParseError
from .sip.extensions import min_se, required, rseq, unsupported
from .sip.message import START_NAME, Request, Response
from .sip.reason import q850_cause
from .sip.responses import make_response
from .sip.transaction import ClientTransaction, ServerTransaction, State
from .sip.uri import parse_name_addr
from .sip.validate import ALLOW_HEADER, IMPLEMENTED_OPTIONS
from .trunks import Trunk

if TYPE_CHECKING:
    from .calls import CallEngine

log = logging.getLogger("b2bua.calls")

# Refusal reason -> (status, phrase), as translate.refusals decides for every side.
REFUSALS: dict[str, tuple[int, bytes]] = {
    reason: (row.sip_status, row.sip_phrase.encode()) for reason, row in REFUSAL_ANSWERS.items()
}
# UAC leg final status -> what the caller is told. Statuses that would reveal that the
# real number is unknown or redirect to it are folded into 480.
MAPPED_STATUS: dict[int, int] = {
    404: 480,
    410: 480,
    484: 480,
    485: 480,
    604: 480,
}


class Bridge(Controller):
    """Routes a call through the translation table and bridges its two legs."""

    def __init__(self, engine: CallEngine) -> None:
        super().__init__(engine)
        self.trunks = engine.trunks

    # -- routing ---------------------------------------------------------------------------
    def start(self, call: Call, now: float) -> None:
        engine = self.engine
        req = call.a_invite
        trunks = self.trunks
        trunk_in = trunks.by_name[call.in_trunk or ""]
        plan = trunks.plan_of(trunk_in)
        try:
            ruri = req.ruri
            user = ruri.user_unescaped if ruri.user is not None else req.to.uri.user_unescaped
        except SipParseError:
            user = None
        virtual = trunks.normalise(user.decode(errors="replace"), trunk_in, plan) if user else None
        caller_src = req.get(b"p-asserted-identity") or req.get(b"from") or b""
        try:
            caller_user = parse_name_addr(caller_src.split(b",", 1)[0]).uri.user_unescaped
        except SipParseError:
            caller_user = None
        caller = (
            trunks.normalise(caller_user.decode(errors="replace"), trunk_in, plan)
            if caller_user
            else None
        ) or ""
        call.virtual = virtual
        call.caller = caller
        if virtual is None:
            status, phrase = REFUSALS["bad_number"]
            engine.refuse(call, status, phrase, "bad_number", now)
            return
        store = engine.store
        limits = engine.limits
        result: Route | Refusal | None
        if limits is not None:
            result = limits.decide(virtual, caller, engine.wall(now), CALL)
        else:
            result = store.lookup(virtual, caller, engine.wall(now)) if store is not None else None
        lookups = engine.stats.lookups
        if result is None or isinstance(result, Refusal):
            why = "unknown" if result is None else result.reason
            lookups[why] = lookups.get(why, 0) + 1
            status, phrase = REFUSALS.get(why, (404, b"Not Found"))
            if result is not None:
                call.route = result
            engine.refuse(call, status, phrase, why, now)
            return
        lookups["route"] = lookups.get("route", 0) + 1
        call.route = result
        call.callee = result.callee
        call.trunks = trunks.trunks_for(result.callee)
        if not call.trunks:
            engine.refuse(call, 503, b"Service Unavailable", "no_route", now)
            return
        engine.uas_leg(call, Numbers(caller, virtual))
        if result.tenant and engine.events is not None:
            engine.events.call_started(
                call.a_invite.call_id, result, virtual, caller, engine.wall(now)
            )
        media = engine.media
        if media is not None and media.anchors(call, trunk_in):
            # The legs' media are set up first; the UAC leg is placed once they are.
            media.attach(call, now, self._try_next_trunk)
            return
        self._try_next_trunk(call, now)

    def _try_next_trunk(self, call: Call, now: float) -> None:
        engine = self.engine
        if call.b is not None:  # forget the failed UAC leg
            engine.drop_uac(call)
            if call.a is not None:
                call.a.sdp.origin.new_sender()
            if call.media is not None:
                engine.media.forget_remote(call, "b")
        if call.cancelled or call.state == CallState.ENDED:
            return
        if not call.trunks:
            engine.reject(call, 503, b"Service Unavailable", "trunks_failed", now)
            return
        trunk = call.trunks.pop(0)
        call.trunk = trunk
        out = self._uac_invite(call, trunk)
        if out is None:  # the caller's SDP could not be rebuilt
            engine.reject(call, 488, b"Not Acceptable Here", "bad_sdp", now)
            return
        req, leg = out
        engine.place(call, leg, req, trunk.peer())
        call.state = CallState.ROUTING
        engine.set_timer(call, trunk.invite_timeout, self._on_invite_timeout)

    def _uac_invite(self, call: Call, trunk: Trunk) -> tuple[Request, Leg] | None:
        """The UAC leg's INVITE toward ``trunk`` and the leg; None when the caller's SDP
        cannot be rebuilt."""
        engine = self.engine
        a_req = call.a_invite
        peer = trunk.peer()
        transport = peer[0]
        host, _ = engine.host(transport)
        assert call.route is not None and call.callee is not None
        callee = trunk.write_number(call.callee).encode()
        present = trunk.write_number(call.route.present).encode()
        thost = peer[1].encode()
        ruri = b"sip:%s@%s:%d" % (callee, thost, peer[2])
        if transport != "udp":
            ruri += b";transport=" + transport.encode()
        call_id = engine.ids.next() + b"@ansim"
        tag = engine.ids.next()
        mf = a_req.get(b"max-forwards")
        max_forwards = max(int(mf) - 1, 0) if mf is not None and mf.isdigit() else 69
        local_uri = b"<sip:%s@%s>" % (present, host)
        remote_uri = b"<sip:%s@%s>" % (callee, thost)
        lines = [
            b"INVITE " + ruri + b" SIP/2.0",
            b"Via: " + engine.via(transport),
            b"Max-Forwards: %d" % max_forwards,
            b"From: " + local_uri + b";tag=" + tag,
            b"To: " + remote_uri,
            b"Call-ID: " + call_id,
            b"CSeq: 1 INVITE",
            b"Contact: " + engine.contact(transport),
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
        sdp = engine.sdp_builder(transport)
        if call.media is not None:
            engine.media.prepare_builder(call, "b", sdp)
        numbers = Numbers(call.route.present, call.callee)
        body = outgoing_body(a_req, OFFER, sdp, self.trunks.body_policy, numbers)
        if body.status:
            return None
        lines.append(b"Allow: " + ALLOW_HEADER)
        names.append(b"allow")
        copy_headers(a_req, lines, names, IMPLEMENTED_OPTIONS, self.trunks.pass_headers)
        require = required(a_req)
        if require is not None:
            lines.append(b"Require: " + require)
            names.append(b"require")
        dialog = Dialog(call_id, local_uri, tag, remote_uri, None, ruri, local_cseq=1)
        leg = Leg(call, False, dialog, peer, sdp, numbers)
        out = Request(b"INVITE", ruri, lines, names, body.body)
        add_body_headers(out, body.content_type, body.disposition)
        return out, leg

    def _on_invite_timeout(self, call: Call) -> None:
        call.timer = None
        txn = call.b_txn
        if txn is None or call.state != CallState.ROUTING or txn.state != State.CALLING:
            return
        engine = self.engine
        # No answer at all from this trunk: forget its transaction, try the next one.
        engine.layer.abandon(txn)
        call.cause = None
        call.cause_status = 408
        now = engine.ep.now()
        self._try_next_trunk(call, now)
        engine.ep.flush()

    def _on_no_answer(self, call: Call) -> None:
        call.timer = None
        if call.state not in (CallState.ROUTING, CallState.EARLY):
            return
        engine = self.engine
        now = engine.ep.now()
        engine.cancel_uac(call, now)
        engine.reject(call, 480, b"Temporarily Unavailable", "no_answer", now)
        engine.ep.flush()

    # -- the UAC leg's INVITE --------------------------------------------------------------
    def on_invite_response(
        self, call: Call, resp: Response, txn: ClientTransaction, now: float
    ) -> None:
        engine = self.engine
        status = resp.status
        leg = call.b
        if txn is not call.b_txn or leg is None:
            if 200 <= status < 300:
                engine.ack_and_bye(resp, txn.dest, now)
            return
        if status < 200:
            if status == 100:
                return
            if call.state == CallState.ROUTING:
                call.state = CallState.EARLY
                trunk = call.trunk
                engine.set_timer(
                    call, trunk.no_answer_timeout if trunk else 90.0, self._on_no_answer
                )
            if call.cancelled:
                engine.send_cancel(call, now)
                return
            engine.learn_remote(leg, resp)
            if txn.dest[0] != "udp" and txn.dest != leg.flow:
                engine.set_flow(leg, txn.dest)
            if call.ring_at is None:
                call.ring_at = now
                route = call.route
                if engine.events is not None and isinstance(route, Route) and route.tenant:
                    engine.events.call_ringing(
                        call.a_invite.call_id, route.binding_id, engine.wall(now)
                    )
            out = self.a_response(call, leg, resp, resp.status, reason(resp.status))
            if out is not None:
                self._to_caller(call, leg, resp, out, now, False)
            return
        if status < 300:
            if engine.acked(leg, resp):
                # A retransmission of a 2xx we ACKed: our ACK was lost, send it again (§13.2.2.4).
                engine.resend_ack(leg, resp.cseq[0], now)
                return
            if not call.cancelled and call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                return  # a retransmission before the caller's ACK: that ACK will answer it
            engine.learn_remote(leg, resp)
            if txn.dest[0] != "udp" and txn.dest != leg.flow:
                engine.set_flow(leg, txn.dest)
            leg.ack_cseq = resp.cseq[0]
            if call.cancelled or call.state == CallState.ENDED:
                engine.send_ack(leg, None, now)
                engine.send_bye(leg, now)
                return
            answer = self.a_response(call, leg, resp, 200, b"OK")
            if answer is None:  # no SDP the caller could be given: the callee is hung up
                engine.send_ack(leg, None, now)
                engine.send_bye(leg, now)
                call.ended_by = "engine"
                engine.reject(call, 502, b"Bad Gateway", "bad_sdp_answer", now)
                return
            call.cause = None  # of a trunk that failed before this one answered
            call.cause_status = 0
            self._to_caller(call, leg, resp, answer, now, True)
            return
        # final failure
        engine.clear_timer(call)
        if call.cancelled:
            return
        if (status == 401 or status == 407) and self._authorize(call, leg, resp, txn, now):
            return
        call.cause = q850_cause(resp.get_all(b"reason"))  # RFC 6432
        call.cause_status = status
        if (
            status == 408
            or (status >= 500 and status != 600 and status != 603)
            or status == 401
            or status == 407  # a challenge ansim cannot (or can no longer) answer
        ):
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
        engine.reject(call, mapped, reason(mapped), f"b_{status}", now, headers)

    def _authorize(
        self, call: Call, leg: Leg, resp: Response, txn: ClientTransaction, now: float
    ) -> bool:
        """The trunk challenged the UAC leg's INVITE: the INVITE again with the trunk's
        credentials (same Call-ID and From tag, the next CSeq), True; False when the trunk
        has none or they were refused (the next trunk is tried)."""
        trunk = call.trunk
        if trunk is None:
            return False
        engine = self.engine
        out = engine.authorized(leg, txn.request, resp, trunk.credentials)
        if out is None:
            return False
        d = leg.dialog  # an 18x before the challenge may have named a remote tag and target
        d.remote_tag = None
        d.remote_target = out.uri
        d.route_set = []
        leg.hop = None
        engine.place(call, leg, out, txn.dest)
        call.state = CallState.ROUTING
        engine.set_timer(call, trunk.invite_timeout, self._on_invite_timeout)
        return True

    def _to_caller(
        self, call: Call, leg: Leg, resp: Response, out: Response, now: float, final: bool
    ) -> None:
        """Send the caller ``out`` (built from ``resp``, the UAC leg's 18x or 2xx): at
        once, or, when the call's media is anchored and ``resp`` carried SDP, once the
        media engine has taken the callee's media address."""
        engine = self.engine
        if call.media is not None and resp.body:
            if final:
                engine.answer(call, out, now, send=False)
            engine.media.update(
                call,
                leg,
                resp,
                now,
                lambda t: self._send_to_caller(call, out, final, t),
                out,
                call.a,
                ANSWER if final else EARLY,
            )
        elif final:
            engine.answer(call, out, now)
        else:
            engine.respond(call, out, now)

    def _send_to_caller(self, call: Call, out: Response, final: bool, now: float) -> None:
        if call.state == CallState.ENDED:
            return
        if final:
            if call.state == CallState.ANSWERED:
                self.engine.send_answer(call, out, now)
        elif call.a_txn.state in (State.PROCEEDING, State.TRYING):
            self.engine.respond(call, out, now)

    def a_response(
        self, call: Call, leg: Leg, resp: Response, status: int, phrase: bytes
    ) -> Response | None:
        """A response to the caller's INVITE built from the callee's, with nothing of the
        callee; None for a 2xx whose SDP cannot be rebuilt."""
        a = call.a
        assert a is not None
        if call.media is not None:
            self.engine.media.prepare_builder(call, "a", a.sdp)
        body = outgoing_body(
            resp, EARLY if status < 200 else ANSWER, a.sdp, self.trunks.body_policy, a.numbers
        )
        if body.status:
            return None
        invite = call.a_invite
        out = make_response(invite, status, phrase, to_tag=a.dialog.local_tag)
        lines, names = out.lines, out.names
        for i, name in enumerate(invite.names):
            if name == b"record-route":  # §12.1.1: the caller's side of the route set, echoed
                lines.append(invite.lines[i])
                names.append(name)
        lines.append(b"Contact: " + self.engine.contact(a.transport))
        lines.append(b"Allow: " + ALLOW_HEADER)
        names += [b"contact", b"allow"]
        copy_headers(resp, lines, names, IMPLEMENTED_OPTIONS, self.trunks.pass_headers)
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
        add_body_headers(out, body.content_type, body.disposition)
        return out

    def on_invite_failure(
        self, call: Call, txn: ClientTransaction, status: int, now: float
    ) -> None:
        engine = self.engine
        engine.clear_timer(call)
        call.cause = None
        call.cause_status = status
        if call.state == CallState.ROUTING and not call.cancelled:
            self._try_next_trunk(call, now)
        elif call.state == CallState.EARLY and not call.cancelled:
            engine.reject(call, 408, b"Request Timeout", "b_timeout", now)

    # -- ACK, CANCEL, BYE ------------------------------------------------------------------
    def on_ack(self, call: Call, leg: Leg, ack: Request, now: float) -> None:
        other = call.other(leg)
        if other is None or other.ack_cseq is None:
            return
        engine = self.engine
        if call.media is not None and ack.body:  # the answer to an offer sent in a 2xx

            def send(t: float) -> None:
                if other.ack_cseq is not None:
                    engine.media.prepare_builder(call, other.name, other.sdp)
                    engine.send_ack(other, ack, t)

            engine.media.update(call, leg, ack, now, send)
            return
        engine.send_ack(other, ack, now)

    def on_cancel(self, call: Call, cancel: Request, now: float) -> None:
        self._caller_gave_up(call, cancel, now)

    def _caller_gave_up(self, call: Call, req: Request, now: float) -> None:
        """The caller cancelled (or hung up, ``req`` the CANCEL or BYE) before the answer:
        487, and the callee is cancelled."""
        engine = self.engine
        call.cancelled = True
        call.ended_by = "caller"
        call.cause = q850_cause(req.get_all(b"reason"))
        call.cause_status = 0
        engine.clear_timer(call)
        engine.reply(call.a_txn, 487, now)
        call.status = 487
        call.reason = "cancelled"
        engine.cancel_uac(call, now)
        engine.finish(call, now, "cancelled")

    def on_bye(self, call: Call, leg: Leg, bye: Request, now: float) -> None:
        engine = self.engine
        if leg.is_a and call.state in (CallState.ROUTING, CallState.EARLY):
            self._caller_gave_up(call, bye, now)  # BYE in the early dialog: a CANCEL for the callee
            return
        call.ended_by = "caller" if leg.is_a else "callee"
        call.cause = q850_cause(bye.get_all(b"reason"))
        call.cause_status = 0
        other = call.other(leg)
        engine.unregister(leg)
        if other is not None:
            if not leg.is_a and call.state in (CallState.ROUTING, CallState.EARLY):
                engine.reject(call, 480, b"Temporarily Unavailable", "b_bye_early", now)
                return
            if other.ack_cseq is not None:
                engine.send_ack(other, None, now)
            engine.send_bye(other, now)
        call.status = call.status or 200
        engine.finish(call, now, "completed")

    # -- digits ------------------------------------------------------------------------------
    def on_dtmf(
        self, call: Call, leg: Leg, digit: bytes, duration_ms: int, via: str, now: float
    ) -> bool:
        """A digit keyed on ``leg`` goes to the other leg in the form that leg's party
        negotiated: RFC 4733 events when it offered or accepted telephone-event and the
        media is anchored by ansim's relay, a SIP INFO (``application/dtmf-relay``)
        otherwise."""
        engine = self.engine
        dtmf = engine.stats.dtmf
        dtmf[via] = dtmf.get(via, 0) + 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "dtmf",
                extra={
                    "call_id": call.a_invite.call_id.decode(errors="replace"),
                    "leg": leg.name,
                    "via": via,
                    "duration_ms": duration_ms,
                },
            )
        other = call.other(leg)
        if other is None or call.state not in (CallState.ANSWERED, CallState.CONFIRMED):
            return False
        if via == "rtp":
            if other.events_pt is None:  # the relay did not forward it: an INFO
                body = b"Signal=%s\r\nDuration=%d\r\n" % (digit, duration_ms)
                txn = engine.send_in_dialog(other, b"INFO", body, DTMF_RELAY, now)
                txn.user = Pending(call, leg, other, None)
            return True
        media = engine.media
        return (
            call.media is not None
            and other.events_pt is not None
            and media.send_dtmf(call, other, digit.decode(), duration_ms)
        )

    # -- in-dialog requests ------------------------------------------------------------------
    def on_request(
        self, call: Call, leg: Leg, req: Request, txn: ServerTransaction, now: float
    ) -> None:
        relay_request(self.engine, leg, req, txn, now)

    def on_response(
        self, pending: Pending, resp: Response, txn: ClientTransaction, now: float
    ) -> None:
        relay_response(self.engine, pending, resp, txn, now)

    def on_request_failure(
        self, pending: Pending, txn: ClientTransaction, status: int, now: float
    ) -> None:
        relay_failure(self.engine, pending, txn, status, now)
