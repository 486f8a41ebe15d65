"""SIP transactions (RFC 3261 §17, with RFC 6026's Accepted states), sans-IO.

``TransactionLayer`` owns every transaction of one engine. Feed it parsed messages
with ``receive(msg, source, now)`` and start client transactions with
``send_request``; answer server transactions with ``respond``. It never sends: bytes
to send accumulate in ``outbox`` as (data, destination) pairs, and it never reads a
clock: ``get_timer()`` says when it next needs ``handle_timer(now)``. Destinations
and sources are opaque to this module; the transport says whether one is reliable.

Each transaction has at most one pending deadline; an entry whose deadline no longer
matches its transaction's is skipped (lazy deletion). Most timers are one of a few fixed
delays (T1, T4, 64*T1), and entries armed with the same delay fall due in the order they
were armed, so each of those delays has a first-in-first-out queue: arming and firing
cost the same whatever the number of transactions. Other deadlines go to a heap.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from .errors import SipParseError
from .message import START_NAME, Request, Response, SipMessage
from .responses import make_response


@dataclass(frozen=True, slots=True)
class TimerConfig:
    """RFC 3261 timer base values in seconds."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


class State(IntEnum):
    CALLING = 1
    TRYING = 2
    PROCEEDING = 3
    ACCEPTED = 4
    COMPLETED = 5
    CONFIRMED = 6
    TERMINATED = 7


class Transaction:
    """State shared by client and server transactions."""

    __slots__ = (
        "_interval",
        "deadline",
        "dest",
        "end",
        "key",
        "last",
        "reliable",
        "request",
        "state",
        "user",
    )

    def __init__(self, request: Request, dest: Any, reliable: bool, key: tuple) -> None:
        self.request = request
        self.dest = dest
        self.reliable = reliable
        self.key = key
        self.state = State.TRYING
        self.deadline: float | None = None  # the one pending timer
        self.end = 0.0  # when timer B/F/H/L/M/J ends the transaction
        self._interval = 0.0  # current retransmission interval (A/E/G)
        self.last: bytes | None = None  # last message sent, for retransmission
        self.user: Any = None  # slot for the transaction user (the call leg)

    @property
    def method(self) -> bytes:
        return self.request.method


class ClientTransaction(Transaction):
    """An INVITE (ICT) or non-INVITE (NICT) client transaction."""

    __slots__ = ("ack",)

    def __init__(self, request: Request, dest: Any, reliable: bool, key: tuple) -> None:
        super().__init__(request, dest, reliable, key)
        self.ack: bytes | None = None


class ServerTransaction(Transaction):
    """An INVITE (IST) or non-INVITE (NIST) server transaction."""

    __slots__ = ("response", "to_tag")

    def __init__(self, request: Request, dest: Any, reliable: bool, key: tuple) -> None:
        super().__init__(request, dest, reliable, key)
        self.response: Response | None = None
        self.to_tag: bytes | None = None


def _deadline(entry: tuple[float, Transaction]) -> float:
    return entry[0]


def _server_key(req: Request) -> tuple:
    via = req.via
    method = req.method
    if method == b"ACK":
        method = b"INVITE"
    if via.rfc3261_branch:
        return (via.branch, via.host, via.port, method)
    # RFC 2543 fallback (§17.2.3): no usable branch. The To tag is left out so that the
    # ACK (which carries the tag of our final response) matches its INVITE.
    return (b"2543", req.uri, req.call_id, req.from_tag, req.cseq[0], via.raw, method)


def _own_branch(request: Request) -> bytes | None:
    """The branch of a request this engine built: its first line after the start line is
    the Via it wrote, ``...;branch=z9hG4bK...[;...]``, so a find does what a parse would."""
    line = request.lines[1] if len(request.lines) > 1 and request.names[1] == b"via" else b""
    i = line.find(b";branch=")
    if i < 0 or line.find(b",") >= 0:
        return request.via.branch
    j = line.find(b";", i + 8)
    return line[i + 8 : j] if j >= 0 else line[i + 8 :].rstrip()


def ack_for(invite: Request, response: Response) -> Request:
    """The ACK a client transaction sends for a non-2xx final response (§17.1.1.3)."""
    # One Via, equal to the top Via of the INVITE (which may share its line with others).
    lines = [b"ACK " + invite.uri + b" SIP/2.0", b"Via: " + invite.via.raw]
    names = [START_NAME, b"via"]
    src = invite.lines
    for i, name in enumerate(invite.names):
        if name in (b"from", b"call-id", b"route", b"max-forwards"):
            lines.append(src[i])
            names.append(name)
    rl = response.lines
    to_line = rl[response.names.index(b"to")]
    lines.append(to_line)
    names.append(b"to")
    lines.append(b"CSeq: %d ACK" % invite.cseq[0])
    names.append(b"cseq")
    return Request(b"ACK", invite.uri, lines, names)


class TransactionLayer:
    """All transactions of one engine: matching, state machines, timers."""

    def __init__(
        self, timers: TimerConfig | None = None, *, is_reliable: Callable[[Any], bool] | None = None
    ) -> None:
        self.timers = timers or TimerConfig()
        self._reliable = is_reliable or (lambda dest: False)
        self.server: dict[tuple, ServerTransaction] = {}
        self.client: dict[tuple, ClientTransaction] = {}
        self.outbox: list[tuple[bytes, Any]] = []
        self._heap: list[tuple[float, int, Transaction]] = []
        self._seq = itertools.count()
        t = self.timers
        self._fifos: dict[float, deque[tuple[float, Transaction]]] = {
            d: deque() for d in (t.t1, t.t4, 64 * t.t1, 32.0)
        }
        self._fifo_list = list(self._fifos.values())
        self.retransmissions = 0

    # -- timers ----------------------------------------------------------------------------
    def _arm(self, txn: Transaction, now: float, delay: float) -> None:
        """Set ``txn``'s one timer to ``now + delay``."""
        at = now + delay
        txn.deadline = at
        fifo = self._fifos.get(delay)
        if fifo is not None and (not fifo or fifo[-1][0] <= at):
            fifo.append((at, txn))
        else:
            heapq.heappush(self._heap, (at, next(self._seq), txn))

    def _arm_at(self, txn: Transaction, at: float) -> None:
        """Set ``txn``'s one timer to the time ``at``."""
        txn.deadline = at
        heapq.heappush(self._heap, (at, next(self._seq), txn))

    def _retransmit_in(self, txn: Transaction, now: float) -> None:
        """Arm the next retransmission (timer A, E or G), or the end if that comes first."""
        if now + txn._interval < txn.end:
            self._arm(txn, now, txn._interval)
        else:
            self._arm_at(txn, txn.end)

    def get_timer(self) -> float | None:
        """The time of the next timer, or None when nothing is pending."""
        best: float | None = None
        heap = self._heap
        while heap:
            at, _, txn = heap[0]
            if txn.deadline == at:
                best = at
                break
            heapq.heappop(heap)
        for fifo in self._fifo_list:
            while fifo:
                at, txn = fifo[0]
                if txn.deadline == at:
                    if best is None or at < best:
                        best = at
                    break
                fifo.popleft()
        return best

    def handle_timer(self, now: float) -> list[Event]:
        """Fire every timer due at ``now``, earliest first."""
        due: list[tuple[float, Transaction]] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            at, _, txn = heapq.heappop(heap)
            due.append((at, txn))
        for fifo in self._fifo_list:
            while fifo and fifo[0][0] <= now:
                due.append(fifo.popleft())
        if len(due) > 1:
            due.sort(key=_deadline)
        events: list[Event] = []
        for at, txn in due:
            if txn.deadline != at:
                continue
            txn.deadline = None
            if isinstance(txn, ClientTransaction):
                self._client_timer(txn, now, events)
            else:
                self._server_timer(txn, now, events)  # type: ignore[arg-type]
        return events

    # -- client side -----------------------------------------------------------------------
    def send_request(
        self, request: Request, dest: Any, now: float, user: Any = None
    ) -> ClientTransaction:
        """Start a client transaction for ``request`` (its top Via must carry a fresh branch)."""
        key = (_own_branch(request), request.method)
        reliable = self._reliable(dest)
        txn = ClientTransaction(request, dest, reliable, key)
        txn.user = user
        if request.method == b"ACK":
            # ACK for a 2xx is sent once by the TU and has no transaction (§17.1.1.3, §13.2.2.4).
            self.outbox.append((request.serialize(), dest))
            txn.state = State.TERMINATED
            return txn
        txn.state = State.CALLING if request.method == b"INVITE" else State.TRYING
        data = request.serialize()
        txn.last = data
        self.client[key] = txn
        self.outbox.append((data, dest))
        t1 = self.timers.t1
        txn.end = now + 64 * t1
        if reliable:
            self._arm(txn, now, 64 * t1)
        else:
            txn._interval = t1
            self._arm(txn, now, t1)
        return txn

    def _client_timer(self, txn: ClientTransaction, now: float, events: list[Event]) -> None:
        state = txn.state
        if state in (State.CALLING, State.TRYING, State.PROCEEDING):
            if now >= txn.end:
                if state == State.PROCEEDING and txn.method == b"INVITE":
                    return  # timer B does not run once a provisional response arrived
                self._terminate_client(txn)
                events.append(TransactionTimeout(txn))
                return
            if txn.reliable or txn.last is None:
                self._arm_at(txn, txn.end)
                return
            if state == State.PROCEEDING and txn.method == b"INVITE":
                return
            self.outbox.append((txn.last, txn.dest))
            self.retransmissions += 1
            if state == State.CALLING:
                txn._interval *= 2
            elif state == State.PROCEEDING:
                txn._interval = self.timers.t2
            else:
                txn._interval = min(txn._interval * 2, self.timers.t2)
            self._retransmit_in(txn, now)
        else:  # Completed (timer D/K) or Accepted (timer M)
            self._terminate_client(txn)

    def abandon(self, txn: ClientTransaction) -> None:
        """Forget a client transaction without an event: a trunk that never answered its
        INVITE, or a cancelled INVITE whose final response never came (§9.1: 64*T1)."""
        if txn.state != State.TERMINATED:
            self._terminate_client(txn)

    def _terminate_client(self, txn: ClientTransaction) -> None:
        txn.state = State.TERMINATED
        txn.deadline = None
        self.client.pop(txn.key, None)

    def _receive_response(
        self, resp: Response, source: Any, now: float, events: list[Event]
    ) -> None:
        via = resp.via
        key = (via.branch, resp.cseq[1])
        txn = self.client.get(key)
        if txn is None:
            events.append(StrayResponse(resp, source))
            return
        status = resp.status
        state = txn.state
        if txn.method == b"INVITE":
            txn.last = None  # any response ends the INVITE's retransmissions (timer A)
            if status < 200:
                if state in (State.CALLING, State.PROCEEDING):
                    txn.state = State.PROCEEDING
                    txn.deadline = None
                    events.append(ResponseReceived(resp, txn))
            elif status < 300:
                if state in (State.CALLING, State.PROCEEDING):
                    txn.state = State.ACCEPTED
                    self._arm(txn, now, 64 * self.timers.t1)
                    events.append(ResponseReceived(resp, txn))
                elif state == State.ACCEPTED:
                    events.append(ResponseReceived(resp, txn))
            else:
                if state in (State.CALLING, State.PROCEEDING):
                    txn.state = State.COMPLETED
                    txn.ack = ack_for(txn.request, resp).serialize()
                    self.outbox.append((txn.ack, txn.dest))
                    self._arm(txn, now, 0.0 if txn.reliable else 32.0)
                    events.append(ResponseReceived(resp, txn))
                elif state == State.COMPLETED and txn.ack is not None:
                    self.outbox.append((txn.ack, txn.dest))
        else:
            if state not in (State.TRYING, State.PROCEEDING):
                return
            if status < 200:
                txn.state = State.PROCEEDING
            else:
                txn.state = State.COMPLETED
                txn.last = None  # nothing is sent again in Completed; timer K only absorbs
                self._arm(txn, now, 0.0 if txn.reliable else self.timers.t4)
            events.append(ResponseReceived(resp, txn))

    # -- server side -----------------------------------------------------------------------
    def _receive_request(self, req: Request, source: Any, now: float, events: list[Event]) -> None:
        key = _server_key(req)
        txn = self.server.get(key)
        method = req.method
        if txn is not None:
            if method == b"ACK":
                if txn.state == State.COMPLETED:
                    txn.state = State.CONFIRMED
                    self._arm(txn, now, 0.0 if txn.reliable else self.timers.t4)
                elif txn.state == State.ACCEPTED:
                    events.append(RequestReceived(req, source, None))  # RFC 6026 §7.1
                return
            # A retransmission: resend the last response in Proceeding (provisional) and
            # Completed (final); absorb it in Trying, Accepted (RFC 6026) and Confirmed.
            state = txn.state
            if txn.last is not None and (state == State.PROCEEDING or state == State.COMPLETED):
                self.outbox.append((txn.last, txn.dest))
                self.retransmissions += 1
            return
        if method == b"ACK":
            events.append(RequestReceived(req, source, None))
            return
        txn = ServerTransaction(req, source, self._reliable(source), key)
        txn.state = State.PROCEEDING if method == b"INVITE" else State.TRYING
        self.server[key] = txn
        events.append(RequestReceived(req, source, txn))

    def respond(self, txn: ServerTransaction, resp: Response, now: float) -> None:
        """Send ``resp`` on server transaction ``txn`` and advance its state."""
        state = txn.state
        if state in (State.COMPLETED, State.CONFIRMED, State.TERMINATED):
            return
        if state == State.ACCEPTED:
            # 2xx retransmissions by the UAS core in Accepted (RFC 6026 §8.5); nothing
            # else may follow a 2xx.
            if 200 <= resp.status < 300:
                self.outbox.append((resp.serialize(), txn.dest))
            return
        data = resp.serialize()
        txn.last = data
        txn.response = resp
        self.outbox.append((data, txn.dest))
        status = resp.status
        t1 = self.timers.t1
        if txn.method == b"INVITE":
            if status < 200:
                return
            if status < 300:
                txn.state = State.ACCEPTED
                self._arm(txn, now, 64 * t1)
            else:
                txn.state = State.COMPLETED
                txn.end = now + 64 * t1
                if txn.reliable:
                    self._arm(txn, now, 64 * t1)
                else:
                    txn._interval = t1
                    self._arm(txn, now, t1)
        else:
            if status < 200:
                txn.state = State.PROCEEDING
                return
            txn.state = State.COMPLETED
            self._arm(txn, now, 0.0 if txn.reliable else 64 * t1)

    def reply(
        self,
        txn: ServerTransaction,
        status: int,
        now: float,
        *,
        reason: bytes | None = None,
        to_tag: bytes | None = None,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> Response:
        """Build a response to the transaction's request and send it."""
        resp = make_response(
            txn.request, status, reason, to_tag=to_tag or txn.to_tag, headers=headers
        )
        self.respond(txn, resp, now)
        return resp

    def _server_timer(self, txn: ServerTransaction, now: float, events: list[Event]) -> None:
        if txn.state == State.COMPLETED and txn.method == b"INVITE":
            if now >= txn.end:  # timer H: no ACK came
                self._terminate_server(txn)
                events.append(TransactionTimeout(txn))
                return
            if txn.last is not None:
                self.outbox.append((txn.last, txn.dest))
                self.retransmissions += 1
            txn._interval = min(txn._interval * 2, self.timers.t2)
            self._retransmit_in(txn, now)
            return
        # timer I, J or L
        self._terminate_server(txn)

    def _terminate_server(self, txn: ServerTransaction) -> None:
        txn.state = State.TERMINATED
        txn.deadline = None
        self.server.pop(txn.key, None)

    def has_server(self, req: Request) -> bool:
        """Whether ``req`` matches a live server transaction (a retransmission)."""
        return _server_key(req) in self.server

    @staticmethod
    def server_key(req: Request) -> tuple:
        """The key that matches ``req`` to its server transaction (§17.2.3)."""
        return _server_key(req)

    def find_invite(self, cancel: Request) -> ServerTransaction | None:
        """The INVITE server transaction a CANCEL refers to (§9.2)."""
        key = _server_key(cancel)
        return self.server.get((*key[:-1], b"INVITE"))

    # -- input -----------------------------------------------------------------------------
    def receive(self, msg: SipMessage, source: Any, now: float) -> list[Event]:
        """Hand a validated message to its transaction; returns events for the TU."""
        events: list[Event] = []
        if isinstance(msg, Request):
            self._receive_request(msg, source, now, events)
        else:
            assert isinstance(msg, Response)
            self._receive_response(msg, source, now, events)
        return events

    def transport_error(self, txn: ClientTransaction | ServerTransaction) -> list[Event]:
        """Sending for ``txn`` failed (ICMP unreachable, connection refused, ...)."""
        if isinstance(txn, ClientTransaction):
            self._terminate_client(txn)
        else:
            self._terminate_server(txn)
        return [TransportError(txn)]

    def take_outbox(self) -> list[tuple[bytes, Any]]:
        out = self.outbox
        self.outbox = []
        return out


# -- events: what the layer hands to the transaction user (the call engine) --------------
# Defined after the transaction classes they refer to, so that compiled builds can
# create their field types when the module initialises.


@dataclass(slots=True)
class RequestReceived:
    """A new request (not a retransmission); ``txn`` is None for an ACK to a 2xx."""

    request: Request
    source: Any
    txn: ServerTransaction | None


@dataclass(slots=True)
class ResponseReceived:
    """A response for a client transaction (or a 2xx retransmission in Accepted)."""

    response: Response
    txn: ClientTransaction


@dataclass(slots=True)
class StrayResponse:
    """A response that matches no transaction (a late 2xx retransmission, say)."""

    response: Response
    source: Any


@dataclass(slots=True)
class TransactionTimeout:
    """Timer B/F fired for a client transaction, or timer H (no ACK) for a server one."""

    txn: ClientTransaction | ServerTransaction


@dataclass(slots=True)
class TransportError:
    """Sending for this transaction failed."""

    txn: ClientTransaction | ServerTransaction


Event = RequestReceived | ResponseReceived | StrayResponse | TransactionTimeout | TransportError


__all__ = [
    "ClientTransaction",
    "Event",
    "RequestReceived",
    "ResponseReceived",
    "ServerTransaction",
    "SipParseError",
    "State",
    "StrayResponse",
    "TimerConfig",
    "TransactionLayer",
    "TransactionTimeout",
    "TransportError",
    "ack_for",
]
