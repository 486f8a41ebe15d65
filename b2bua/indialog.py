"""In-dialog requests between two bridged legs, and their responses (sans-IO).

A request received on one leg (re-INVITE, UPDATE, PRACK, INFO, OPTIONS) is sent on the
other as a new transaction of that leg's dialog, built fresh: its own Via, CSeq,
Contact, Allow, the option tags ansim implements end to end, the body rebuilt for the
receiving leg (``sip.bodies``). The far response comes back the same way; the far
end's reason phrase is never relayed. A re-INVITE or UPDATE while ansim's own offer is
outstanding on the receiving leg is answered 491 (glare). An INFO carrying a digit is
the controller's event as well (``Controller.on_dtmf``). When the call's media is
anchored, an SDP is handed to the media engine first and the message goes on once it
has answered (``b2bua.anchor``).

Any controller that bridges two legs (the translation bridge, later click-to-call and
the IVR once it connects its caller) uses these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .call import Leg, Pending
from .outgoing import add_body_headers, copy_headers, reason
from .sip.bodies import ANSWER, DTMF, DTMF_RELAY, EARLY, INFO, OFFER, OTHER, outgoing_body
from .sip.extensions import IN_DIALOG_OPTIONS, required
from .sip.message import Request, Response
from .sip.responses import make_response
from .sip.transaction import ClientTransaction, ServerTransaction, State
from .sip.validate import ACCEPT_HEADER, ALLOW_HEADER

if TYPE_CHECKING:
    from .calls import CallEngine

_OFFER_METHODS = (b"INVITE", b"UPDATE", b"PRACK")


def relay_request(
    engine: CallEngine, leg: Leg, req: Request, txn: ServerTransaction, now: float
) -> None:
    """Send ``req`` (received on ``leg``) on to the other leg of the call."""
    call = leg.call
    other = call.other(leg)
    method = req.method
    if other is None:
        engine.layer.reply(txn, 481, now)
        return
    target_refresh = method == b"INVITE" or method == b"UPDATE"
    if target_refresh and leg.out_pending:  # glare: our own offer is outstanding on this leg
        engine.layer.reply(txn, 491, now)
        return
    policy = engine.trunks.body_policy
    kind = OFFER if method in _OFFER_METHODS else INFO if method == b"INFO" else OTHER
    media = call.media
    if media is not None and kind == OFFER:
        engine.media.prepare_builder(call, other.name, other.sdp)
    body = outgoing_body(req, kind, other.sdp, policy, other.numbers)
    if body.status:  # 488 for an unusable SDP, 415/400 for an INFO body not relayed
        headers = [(b"accept", policy.accept_info)] if body.status == 415 else None
        engine.layer.reply(txn, body.status, now, headers=headers)
        return
    if kind == INFO and body.body:
        digit = info_digit(body.content_type, body.body)
        if digit is not None and call.controller.on_dtmf(
            call, leg, digit[0], digit[1], "info", now
        ):
            engine.layer.reply(txn, 200, now)  # the digit went on in another form
            return
    if target_refresh:
        other.out_pending = True
        if method == b"INVITE":
            # §17.2.1: the far leg may take longer than 200 ms; stop the sender's retransmissions.
            engine.layer.reply(txn, 100, now)
    d = other.dialog
    if method == b"PRACK":
        out = d.request(method, engine.via(other.transport))
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
        contact = engine.contact(other.transport) if target_refresh else None
        out = d.request(method, engine.via(other.transport), contact=contact)
    lines, names = out.lines, out.names
    if target_refresh or method == b"OPTIONS":
        lines.append(b"Allow: " + ALLOW_HEADER)
        names.append(b"allow")
    if method == b"OPTIONS":
        lines.append(b"Accept: " + ACCEPT_HEADER)
        names.append(b"accept")
    copy_headers(req, lines, names, IN_DIALOG_OPTIONS, engine.trunks.pass_headers)
    require = required(req, IN_DIALOG_OPTIONS)
    if require is not None:
        lines.append(b"Require: " + require)
        names.append(b"require")
    out.body = body.body
    add_body_headers(out, body.content_type, body.disposition)
    txn.user = call
    pending = Pending(call, leg, other, txn)
    if media is not None and kind == OFFER and req.body:
        engine.media.update(
            call, leg, req, now, lambda t: _send(engine, other, out, pending, t), out, other, OFFER
        )
        return
    _send(engine, other, out, pending, now)


def info_digit(content_type: bytes | None, body: bytes) -> tuple[bytes, int] | None:
    """(digit, duration in ms) of an INFO body as ``sip.bodies`` rebuilt it, or None."""
    if content_type == DTMF:
        return (body.strip(), 100) if body.strip() else None
    if content_type != DTMF_RELAY:
        return None
    signal = b""
    duration = 100
    for line in body.split(b"\r\n"):
        key, _, value = line.partition(b"=")
        if key == b"Signal":
            signal = value
        elif key == b"Duration" and value.isdigit():
            duration = int(value)
    return (signal, duration) if signal else None


def _send(engine: CallEngine, leg: Leg, out: Request, pending: Pending, now: float) -> None:
    ctxn = engine.layer.send_request(out, engine.hop(leg), now)
    ctxn.user = pending


def relay_response(
    engine: CallEngine, relay: Pending, resp: Response, txn: ClientTransaction, now: float
) -> None:
    """Send the response ``resp`` to a relayed request back to the leg it came from."""
    status = resp.status
    if status == 100:
        return
    server = relay.server_txn
    method = txn.method
    if status >= 200 and method in (b"INVITE", b"UPDATE"):
        relay.to_leg.out_pending = False
    if method == b"INVITE" and 200 <= status < 300:
        if engine.acked(relay.to_leg, resp):  # the 2xx again: our ACK was lost
            engine.resend_ack(relay.to_leg, resp.cseq[0], now)
            return
        relay.to_leg.ack_cseq = resp.cseq[0]
        engine.learn_target(relay.to_leg, resp)
    if server is None:  # a request of ansim's own (a digit as INFO): nothing to answer
        return
    from_leg = relay.from_leg
    call = relay.call
    kind = OTHER
    if method in _OFFER_METHODS and status < 300:
        kind = EARLY if status < 200 else ANSWER
    media = call.media
    if media is not None and kind != OTHER:
        engine.media.prepare_builder(call, from_leg.name, from_leg.sdp)
    body = outgoing_body(resp, kind, from_leg.sdp, engine.trunks.body_policy, from_leg.numbers)
    if body.status:  # a 2xx without an SDP the sender can be given
        if method == b"INVITE":
            engine.send_ack(relay.to_leg, None, now)
        engine.layer.reply(server, body.status, now, to_tag=from_leg.dialog.local_tag)
        return
    # The far end's reason phrase is free text (it may name its number): never relayed.
    out = make_response(server.request, status, reason(status), to_tag=from_leg.dialog.local_tag)
    lines, names = out.lines, out.names
    if 200 <= status < 300:
        if method == b"INVITE" or method == b"UPDATE":
            lines.append(b"Contact: " + engine.contact(from_leg.transport))
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
    copy_headers(resp, lines, names, IN_DIALOG_OPTIONS, engine.trunks.pass_headers)
    require = required(resp, IN_DIALOG_OPTIONS, server.request)
    if require is not None:
        lines.append(b"Require: " + require)
        names.append(b"require")
    out.body = body.body
    add_body_headers(out, body.content_type, body.disposition)
    if media is not None and kind != OTHER and resp.body:
        engine.media.update(
            call,
            relay.to_leg,
            resp,
            now,
            lambda t: engine.layer.respond(server, out, t),
            out,
            from_leg,
            kind,
        )
        return
    engine.layer.respond(server, out, now)


def relay_failure(
    engine: CallEngine, relay: Pending, txn: ClientTransaction, status: int, now: float
) -> None:
    """A relayed request timed out or could not be sent: its sender is answered 408."""
    if txn.method in (b"INVITE", b"UPDATE"):
        relay.to_leg.out_pending = False
    server = relay.server_txn
    if server is not None and server.state in (State.TRYING, State.PROCEEDING):
        engine.layer.reply(server, 408, now, to_tag=relay.from_leg.dialog.local_tag)
