"""The sans-IO SMPP session: one object per connection, bytes and time in, bytes and events out.

Follows the aioquic/h11 shape. The I/O layer calls :meth:`Session.receive_data` with
what arrived, :meth:`Session.data_to_send` to learn what to write, and
:meth:`Session.get_timer` / :meth:`Session.handle_timer` for keep-alive and response
timeouts. The session never reads a clock or touches a socket.

A table of states and the requests each state allows decides what is accepted:
anything else is answered ``ESME_RINVBNDSTS``. Malformed frames get ``generic_nack`` or
the request's own response with an error status; a frame whose length cannot be
trusted ends the session, since the stream cannot be resynchronised.

A request left unanswered past the response timeout is not reported at once: an
enquire_link is sent, and the timeouts wait for its verdict. A peer that answers it is
alive: the requests that timed out are reported (``RequestTimedOut``, ``ignored`` when
the peer answered requests sent after them). A peer that does not answer it within the
response timeout is gone: the session closes and hands every outstanding request back,
oldest first, as unanswered (the ``RequestTimedOut`` events of a closing session). So a
dead link is noticed one response timeout after its first unanswered request's own,
not an enquire_link interval later, and the layer above can tell a request the peer
passed over from one caught on a link that died.
"""

from __future__ import annotations

import enum
from typing import Any

from . import events as ev
from .pdu import (
    BIND_COMMANDS,
    HEADER_LEN,
    RESP_BIT,
    Bind,
    BindResp,
    Cmd,
    Pdu,
    PduError,
    Status,
    decode,
    encode,
    encode_frame,
    encode_message_resp,
    frame_length,
)


class Role(enum.Enum):
    """Which end of the link this session is."""

    SMSC = "smsc"  # peers bind to us (ansim's server side)
    ESME = "esme"  # we bind to the peer (ansim's client side)


class State(enum.Enum):
    """Session states (SMPP 3.4 section 2.2)."""

    OPEN = "open"
    BINDING = "binding"
    BOUND_TX = "bound_tx"
    BOUND_RX = "bound_rx"
    BOUND_TRX = "bound_trx"
    UNBINDING = "unbinding"
    CLOSED = "closed"


BOUND_STATES = frozenset({State.BOUND_TX, State.BOUND_RX, State.BOUND_TRX})

_BIND_STATE = {
    Cmd.BIND_TRANSMITTER: State.BOUND_TX,
    Cmd.BIND_RECEIVER: State.BOUND_RX,
    Cmd.BIND_TRANSCEIVER: State.BOUND_TRX,
}

_ALWAYS = frozenset({Cmd.ENQUIRE_LINK, Cmd.UNBIND, Cmd.GENERIC_NACK})

# Requests a peer may send us, by our role and state.
_ALLOWED: dict[tuple[Role, State], frozenset[int]] = {
    (Role.SMSC, State.OPEN): frozenset({*BIND_COMMANDS, Cmd.ENQUIRE_LINK, Cmd.GENERIC_NACK}),
    (Role.SMSC, State.BOUND_TX): _ALWAYS | {Cmd.SUBMIT_SM, Cmd.DATA_SM},
    (Role.SMSC, State.BOUND_RX): _ALWAYS,
    (Role.SMSC, State.BOUND_TRX): _ALWAYS | {Cmd.SUBMIT_SM, Cmd.DATA_SM},
    (Role.ESME, State.OPEN): frozenset({Cmd.OUTBIND, Cmd.ENQUIRE_LINK, Cmd.GENERIC_NACK}),
    (Role.ESME, State.BINDING): frozenset({Cmd.ENQUIRE_LINK, Cmd.GENERIC_NACK}),
    (Role.ESME, State.BOUND_TX): _ALWAYS | {Cmd.ALERT_NOTIFICATION},
    (Role.ESME, State.BOUND_RX): _ALWAYS | {Cmd.DELIVER_SM, Cmd.DATA_SM, Cmd.ALERT_NOTIFICATION},
    (Role.ESME, State.BOUND_TRX): _ALWAYS | {Cmd.DELIVER_SM, Cmd.DATA_SM, Cmd.ALERT_NOTIFICATION},
    # Requests crossing our unbind are still answered (the relay says ESME_RTHROTTLED).
    (Role.SMSC, State.UNBINDING): frozenset({Cmd.GENERIC_NACK, Cmd.SUBMIT_SM, Cmd.DATA_SM}),
    (Role.ESME, State.UNBINDING): frozenset({Cmd.GENERIC_NACK}),
}

# Requests we may send, by our role and state.
_MAY_SEND: dict[tuple[Role, State], frozenset[int]] = {
    (Role.SMSC, State.BOUND_TX): frozenset({Cmd.ENQUIRE_LINK, Cmd.UNBIND}),
    (Role.SMSC, State.BOUND_RX): frozenset(
        {Cmd.ENQUIRE_LINK, Cmd.UNBIND, Cmd.DELIVER_SM, Cmd.DATA_SM}
    ),
    (Role.SMSC, State.BOUND_TRX): frozenset(
        {Cmd.ENQUIRE_LINK, Cmd.UNBIND, Cmd.DELIVER_SM, Cmd.DATA_SM}
    ),
    (Role.ESME, State.BOUND_TX): frozenset(
        {Cmd.ENQUIRE_LINK, Cmd.UNBIND, Cmd.SUBMIT_SM, Cmd.DATA_SM}
    ),
    (Role.ESME, State.BOUND_RX): frozenset({Cmd.ENQUIRE_LINK, Cmd.UNBIND}),
    (Role.ESME, State.BOUND_TRX): frozenset(
        {Cmd.ENQUIRE_LINK, Cmd.UNBIND, Cmd.SUBMIT_SM, Cmd.DATA_SM}
    ),
}


class SessionError(Exception):
    """The application asked for something the session state does not allow."""


class Session:
    """One SMPP link, either side. See the module docstring for how to drive it."""

    def __init__(
        self,
        role: Role,
        now: float,
        *,
        enquire_link_interval: float = 30.0,
        response_timeout: float = 10.0,
        bind_timeout: float = 10.0,
    ) -> None:
        self.role = role
        self.state = State.OPEN
        self.system_id = ""  # the peer's system_id once bound
        self.enquire_link_interval = enquire_link_interval
        self.response_timeout = response_timeout
        self._buf = bytearray()
        self._out: list[bytes] = []
        self._seq = 0
        # sequence -> (command_id, deadline, context); insertion order is deadline order
        self._pending: dict[int, tuple[int, float, Any]] = {}
        # enquire_link requests outstanding: sequence -> time sent
        self._enquiries: dict[int, float] = {}
        # A request timed out: the timeouts wait for an enquire_link sent after the first
        # of them (at ``_blamed_at``) to be answered before they are reported.
        self._deferring = False
        self._blamed_at = 0.0
        # The peer answered an enquire_link sent at this time: it read what came before.
        self._alive_at = float("-inf")
        # The peer answered a request sent at this time (the latest such).
        self._answered_at = float("-inf")
        self._last_rx = now
        self._bind_deadline: float | None = now + bind_timeout if role is Role.SMSC else None
        self._unbind_deadline: float | None = None
        self.closed_reason = ""

    # -- state -------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        return self.state in BOUND_STATES

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered (the window in use)."""
        return len(self._pending)

    def can_send(self, command_id: int) -> bool:
        return command_id in _MAY_SEND.get((self.role, self.state), ())

    def next_sequence(self) -> int:
        seq = self._seq + 1
        if seq > 0x7FFFFFFF:
            seq = 1
        self._seq = seq
        return seq

    # -- input --------------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> list[ev.Event]:
        """Feed bytes from the transport; returns the events they cause."""
        if self.state is State.CLOSED:
            return []
        self._last_rx = now
        buf = self._buf
        buf += data
        out: list[ev.Event] = []
        pos = 0
        end = len(buf)
        try:
            while end - pos >= HEADER_LEN:
                length = frame_length(buf, pos)
                assert length is not None
                if end - pos < length:
                    break
                frame = bytes(buf[pos : pos + length])
                pos += length
                self._frame(frame, now, out)
                if self.state is State.CLOSED:
                    break
            if end - pos >= 4 and self.state is not State.CLOSED:
                frame_length(buf, pos)  # reject a bad length before waiting for the rest
        except PduError as exc:
            out.append(ev.ProtocolError(exc.status, str(exc)))
            self._send_raw(encode_frame(Cmd.GENERIC_NACK, exc.status, 0, b""))
            self._close(out, f"protocol error: {exc}")
        del buf[:pos]
        return out

    def _frame(self, frame: bytes, now: float, out: list[ev.Event]) -> None:
        try:
            pdu = decode(frame)
        except PduError as exc:
            if exc.fatal:
                raise
            cid = exc.command_id
            if cid in BIND_COMMANDS and self.role is Role.SMSC and self.state is State.OPEN:
                # A bind attempt all the same: the application answers and counts it.
                self.state = State.BINDING
                out.append(ev.BindInvalid(cid, exc.sequence, exc.status, str(exc)))
                return
            out.append(ev.ProtocolError(exc.status, str(exc), cid))
            if cid & RESP_BIT:
                # A broken response still settles its request; report it as failed.
                self._settle_broken_response(exc, out)
            elif exc.status == Status.RINVCMDID:
                self._send_raw(encode_frame(Cmd.GENERIC_NACK, exc.status, exc.sequence, b""))
            else:
                self._send_raw(encode_frame(cid | RESP_BIT, exc.status, exc.sequence, b""))
            return
        cid = pdu.command_id
        if cid & RESP_BIT:
            self._response(pdu, out)
            return
        if cid not in _ALLOWED.get((self.role, self.state), ()):
            status = Status.RALYBND if cid in BIND_COMMANDS else Status.RINVBNDSTS
            out.append(
                ev.ProtocolError(status, f"{pdu.name} not allowed in {self.state.value}", cid)
            )
            self._send_raw(encode_frame(cid | RESP_BIT, status, pdu.sequence, b""))
            return
        if cid == Cmd.ENQUIRE_LINK:
            self._send_raw(encode_frame(Cmd.ENQUIRE_LINK_RESP, 0, pdu.sequence, b""))
        elif cid == Cmd.UNBIND:
            self._send_raw(encode_frame(Cmd.UNBIND_RESP, 0, pdu.sequence, b""))
            self._close(out, "peer unbound")
        elif cid == Cmd.GENERIC_NACK:
            # A nack of one of our requests: settle it as an error response.
            if pdu.sequence in self._pending:
                self._response(pdu, out)
            else:
                out.append(ev.ProtocolError(pdu.status, "generic_nack received", cid))
        elif cid in BIND_COMMANDS:
            assert isinstance(pdu, Bind)
            self.state = State.BINDING
            out.append(ev.BindRequested(pdu))
        else:
            out.append(ev.RequestReceived(pdu))

    def _response(self, pdu: Pdu, out: list[ev.Event]) -> None:
        entry = self._pending.pop(pdu.sequence, None)
        if entry is None:
            out.append(ev.ProtocolError(Status.RINVCMDID, f"unexpected {pdu.name}", pdu.command_id))
            return
        request_cid, deadline, context = entry
        if pdu.command_id != Cmd.GENERIC_NACK and pdu.command_id != request_cid | RESP_BIT:
            out.append(
                ev.ProtocolError(
                    Status.RINVCMDID, f"{pdu.name} answers 0x{request_cid:x}", pdu.command_id
                )
            )
            pdu = Pdu(Cmd.GENERIC_NACK, pdu.sequence, pdu.status or Status.RSYSERR)
        answered = deadline - self.response_timeout
        if answered > self._answered_at and request_cid != Cmd.ENQUIRE_LINK:
            self._answered_at = answered
        if request_cid in BIND_COMMANDS:
            if pdu.status == 0 and isinstance(pdu, BindResp):
                self.state = _BIND_STATE[request_cid]
                self.system_id = pdu.system_id
                out.append(ev.Bound(pdu))
            else:
                out.append(ev.BindRefused(pdu.status or Status.RBINDFAIL))
                self._close(out, f"bind refused: status 0x{pdu.status:x}")
            return
        if request_cid == Cmd.UNBIND:
            self._close(out, "unbound")
            return
        if request_cid == Cmd.ENQUIRE_LINK:
            sent = self._enquiries.pop(pdu.sequence, None)
            if sent is not None and sent > self._alive_at:
                self._alive_at = sent
            if self._deferring and self._alive_at >= self._blamed_at:
                self._deferring = False  # the deferred timeouts are the peer's own
            if context is not None:
                out.append(ev.ResponseReceived(pdu, context))
            return
        out.append(ev.ResponseReceived(pdu, context))

    def _settle_broken_response(self, exc: PduError, out: list[ev.Event]) -> None:
        if exc.sequence in self._pending:
            self._response(Pdu(Cmd.GENERIC_NACK, exc.sequence, exc.status), out)

    # -- output -------------------------------------------------------------------

    def _send_raw(self, frame: bytes) -> None:
        self._out.append(frame)

    def data_to_send(self) -> bytes:
        """Everything queued for the transport since the last call."""
        if not self._out:
            return b""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def send_request(self, pdu: Pdu, now: float, context: Any = None) -> int:
        """Queue a request; assigns and returns its sequence number."""
        cid = pdu.command_id
        if cid in BIND_COMMANDS:
            if self.role is not Role.ESME or self.state is not State.OPEN:
                raise SessionError(f"cannot bind in state {self.state.value}")
            self.state = State.BINDING
        elif not self.can_send(cid):
            raise SessionError(f"cannot send {pdu.name} in state {self.state.value}")
        pdu.sequence = self.next_sequence()
        self._pending[pdu.sequence] = (cid, now + self.response_timeout, context)
        if cid == Cmd.ENQUIRE_LINK:
            self._enquiries[pdu.sequence] = now
        self._send_raw(encode(pdu))
        if cid == Cmd.UNBIND:
            self.state = State.UNBINDING
            self._unbind_deadline = now + self.response_timeout
        return pdu.sequence

    def send_body(self, command_id: int, body: bytes, now: float, context: Any = None) -> int:
        """Fast path of send_request for a pre-encoded body (submit_sm, deliver_sm)."""
        if command_id not in _MAY_SEND.get((self.role, self.state), ()):
            raise SessionError(f"cannot send 0x{command_id:x} in state {self.state.value}")
        seq = self._seq + 1
        if seq > 0x7FFFFFFF:
            seq = 1
        self._seq = seq
        self._pending[seq] = (command_id, now + self.response_timeout, context)
        self._out.append(encode_frame(command_id, 0, seq, body))
        return seq

    def respond(self, request: Pdu, status: int = 0, message_id: str = "") -> None:
        """Answer a RequestReceived: submit_sm/deliver_sm/data_sm get a message_id."""
        self.respond_to(request.command_id, request.sequence, status, message_id)

    def respond_to(
        self, command_id: int, sequence: int, status: int = 0, message_id: str = ""
    ) -> None:
        """Answer the request ``command_id``/``sequence`` (for answers given later)."""
        if self.state is State.CLOSED:
            return
        cid = command_id | RESP_BIT
        if command_id in (Cmd.SUBMIT_SM, Cmd.DATA_SM):
            self._out.append(encode_message_resp(cid, status, sequence, message_id))
        elif command_id == Cmd.DELIVER_SM:
            # deliver_sm_resp carries a NULL message_id
            self._out.append(encode_message_resp(cid, status, sequence, ""))
        else:
            self._out.append(encode_frame(cid, status, sequence, b""))

    def accept_bind(self, request: Bind, system_id: str) -> None:
        """Accept a BindRequested; ``system_id`` is ours, returned to the peer."""
        if self.state is not State.BINDING:
            raise SessionError("no bind in progress")
        self.state = _BIND_STATE[request.command_id]
        self.system_id = request.system_id
        self._bind_deadline = None
        self._send_raw(
            encode(
                BindResp(
                    request.command_id | RESP_BIT, request.sequence, 0, system_id, {0x0210: b"\x34"}
                )
            )
        )

    def reject_bind(self, request: Bind, status: int) -> list[ev.Event]:
        """Refuse a BindRequested; the session closes once the answer is written."""
        return self.refuse_bind(request.command_id, request.sequence, status)

    def refuse_bind(self, command_id: int, sequence: int, status: int) -> list[ev.Event]:
        """Refuse a bind (BindRequested or BindInvalid) by its command and sequence."""
        self._send_raw(encode_frame(command_id | RESP_BIT, status, sequence, b""))
        out: list[ev.Event] = []
        self._close(out, f"bind refused: status 0x{status:x}")
        return out

    def unbind(self, now: float) -> None:
        """Start a graceful unbind; the session closes on the answer or after the timeout."""
        if self.bound:
            self.send_request(Pdu(Cmd.UNBIND), now)
        elif self.state is not State.UNBINDING:
            self._close([], "closed before bind")

    def abort(self, reason: str) -> list[ev.Event]:
        """The transport went away: close and hand back requests left unanswered."""
        out: list[ev.Event] = []
        self._close(out, reason)
        return out

    def _close(self, out: list[ev.Event], reason: str) -> None:
        if self.state is State.CLOSED:
            return
        self.state = State.CLOSED
        self.closed_reason = reason
        for seq, (cid, _deadline, context) in self._pending.items():
            if cid not in (Cmd.ENQUIRE_LINK, Cmd.UNBIND) and cid not in BIND_COMMANDS:
                out.append(ev.RequestTimedOut(seq, cid, context))
        self._pending.clear()
        self._enquiries.clear()
        self._deferring = False
        out.append(ev.Closed(reason))

    # -- timers -------------------------------------------------------------------

    def get_timer(self) -> float | None:
        """When handle_timer should next be called (absolute time), or None."""
        if self.state is State.CLOSED:
            return None
        times = []
        if self._pending:
            if self._deferring and self._enquiries:
                # the expired requests wait for the enquire_link's answer or its timeout
                times.append(min(self._enquiries.values()) + self.response_timeout)
            else:
                times.append(next(iter(self._pending.values()))[1])
        if self._bind_deadline is not None:
            times.append(self._bind_deadline)
        if self._unbind_deadline is not None:
            times.append(self._unbind_deadline)
        if self.bound and self.enquire_link_interval > 0:
            times.append(self._last_rx + self.enquire_link_interval)
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[ev.Event]:
        """Run what is due: response timeouts, keep-alive, bind and unbind deadlines."""
        out: list[ev.Event] = []
        if self.state is State.CLOSED:
            return out
        if self._bind_deadline is not None and now >= self._bind_deadline and not self.bound:
            self._close(out, "no bind in time")
            return out
        if self._unbind_deadline is not None and now >= self._unbind_deadline:
            self._close(out, "unbind not answered")
            return out
        expired = []
        fatal = ""
        timeout = self.response_timeout
        alive_at = self._alive_at
        deferring = self._deferring
        for seq, (cid, deadline, _context) in self._pending.items():
            if deadline > now:
                break
            if cid == Cmd.ENQUIRE_LINK:
                fatal = "enquire_link not answered"
                break
            if cid in BIND_COMMANDS:
                fatal = "bind not answered"
                break
            sent = deadline - timeout
            if sent <= alive_at:
                expired.append(seq)  # the verdict is in: the peer was alive after it
            elif not deferring:
                deferring = True  # wait for an enquire_link's verdict
                self._blamed_at = sent
        answered_at = self._answered_at
        for seq in expired:
            cid, deadline, context = self._pending.pop(seq)
            out.append(ev.RequestTimedOut(seq, cid, context, answered_at > deadline - timeout))
        if fatal:
            self._close(out, fatal)
            return out
        self._deferring = deferring
        if not self.bound:
            return out
        probe = deferring and not any(at >= self._blamed_at for at in self._enquiries.values())
        if probe or (
            self.enquire_link_interval > 0
            and now >= self._last_rx + self.enquire_link_interval
            and not self._enquiries
        ):
            self.send_request(Pdu(Cmd.ENQUIRE_LINK), now)
            self._last_rx = now  # next probe one interval later unless data arrives
        return out


__all__ = ["Role", "Session", "SessionError", "State"]
