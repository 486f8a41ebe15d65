"""The SIP endpoint: glue between the transports and the sans-IO core.

It drops what flood protection refuses (``b2bua.flood``, before parsing), parses what
the transports deliver, refuses bad requests statelessly, answers out-of-dialog OPTIONS
itself (carrier keep-alives), refuses new INVITEs with a stateless 503 while the overload
detector sheds load (``b2bua.overload``), feeds the rest to the transaction layer, hands
the resulting events to the transaction user (the call engine), flushes the transaction
layer's outbox to the transports and keeps one loop timer armed at the transaction
layer's next deadline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

from .conn_limits import ConnectionLimits
from .flood import FloodGuard
from .overload import OverloadDetector
from .sip.errors import SipParseError
from .sip.message import Request, Response, SipMessage
from .sip.parser import parse_datagram
from .sip.responses import make_response
from .sip.routing import Peer, response_destination, stamp_received
from .sip.transaction import (
    ClientTransaction,
    Event,
    ServerTransaction,
    StrayResponse,
    TimerConfig,
    TransactionLayer,
)
from .sip.validate import (
    ACCEPT_HEADER,
    ALLOW_HEADER,
    SUPPORTED_HEADER,
    check_request,
    check_response,
)
from .transport import TlsProvider, Transports

log = logging.getLogger(__name__)

REFUSED_MAX = 500_000  # INVITEs remembered as refused per period
REFUSED_PERIOD = 32.0  # seconds (64*T1)


class SipStats:
    """Counters of the endpoint, read by the metrics collector at scrape time (plain ints
    so that counting costs nothing on the hot path)."""

    __slots__ = (
        "options_answered",
        "overload_rejected",
        "parse_errors",
        "rejected",
        "requests",
        "responses",
        "responses_dropped",
        "stateless_acks",
    )

    def __init__(self) -> None:
        self.overload_rejected = 0
        self.stateless_acks = 0
        self.requests = 0
        self.responses = 0
        self.parse_errors = 0
        self.responses_dropped = 0
        self.options_answered = 0
        self.rejected: dict[int, int] = {}


class TransactionUser(Protocol):
    """What the endpoint hands events to (the call engine)."""

    def handle_event(self, event: Event, now: float) -> None: ...


class SipEndpoint:
    """One engine's SIP endpoint."""

    def __init__(
        self,
        *,
        timers: TimerConfig | None = None,
        symmetric_response: bool = True,
        user_agent: bytes = b"ansim",
        max_message: int = 65536,
        tcp_idle_timeout: float = 120.0,
        message_timeout: float = 10.0,
        flood: FloodGuard | None = None,
        overload: OverloadDetector | None = None,
        retry_after: int = 2,
        rfc7339: bool = True,
        connection_limits: ConnectionLimits | None = None,
        tls: TlsProvider | None = None,
    ) -> None:
        self.layer = TransactionLayer(timers, is_reliable=_reliable)
        self.symmetric = symmetric_response
        self.user_agent = user_agent
        self.stats = SipStats()
        self.user: TransactionUser | None = None
        self.flood = flood
        self.overload = overload
        self._retry_after = [(b"retry-after", b"%d" % retry_after)] if retry_after else []
        self._oc = rfc7339 and overload is not None
        # Server-transaction keys of INVITEs refused with 503 in this period and the last.
        self._refused: set[tuple] = set()
        self._refused_before: set[tuple] = set()
        self._refused_until = 0.0
        self._epoch = time.time() - time.monotonic()
        if connection_limits is not None and flood is not None:
            connection_limits.is_trusted = flood.is_trusted
        self.transports = Transports(
            self.on_datagram,
            self.on_stream,
            self.on_send_error,
            max_message=max_message,
            idle_timeout=tcp_idle_timeout,
            message_timeout=message_timeout,
            limits=connection_limits,
            is_banned=self._is_banned if flood is not None else None,
            tls=tls,
        )
        if overload is not None:
            self.transports.on_turn = self._on_turn
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._closing = False
        # sent-by values this endpoint writes in its Via headers (RFC 3261 §18.1.2)
        self.sent_by: set[tuple[bytes, int]] = set()
        self._sent_by_any_host: set[int] = set()

    # -- lifecycle -------------------------------------------------------------------------
    async def listen(self, transport: str, host: str, port: int) -> Peer:
        self._loop = asyncio.get_running_loop()
        if transport == "udp":
            bound = await self.transports.listen_udp(host, port)
        elif transport == "tls":
            bound = await self.transports.listen_tls(host, port)
        else:
            bound = await self.transports.listen_tcp(host, port)
        self.add_sent_by(bound[1], bound[2])
        return bound

    def add_sent_by(self, host: str, port: int) -> None:
        """Declare a host:port written as sent-by in this endpoint's Via headers (the
        listen addresses are declared by ``listen``; add advertised ones). A response
        matching no transaction whose top Via names none of them is not ours and is
        dropped (RFC 3261 §18.1.2)."""
        host = host.strip("[]")
        if host in ("0.0.0.0", "::", ""):
            self._sent_by_any_host.add(port)
        else:
            self.sent_by.add((host.encode(), port))

    def _sent_by_us(self, msg: SipMessage) -> bool:
        via = msg.via
        port = via.port or 5060
        return (via.host.strip(b"[]"), port) in self.sent_by or port in self._sent_by_any_host

    def now(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    def pending(self) -> int:
        """Transactions still alive."""
        return len(self.layer.server) + len(self.layer.client)

    async def drain(self, timeout: float) -> None:
        """Let in-flight transactions finish (or time out), for at most ``timeout`` s."""
        self._closing = True
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while loop.time() < end and any(
            t.state.name in ("CALLING", "TRYING", "PROCEEDING") for t in self._live()
        ):
            await asyncio.sleep(0.05)

    def _live(self) -> list[ClientTransaction | ServerTransaction]:
        return [*self.layer.server.values(), *self.layer.client.values()]

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        await self.transports.close()

    # -- input -----------------------------------------------------------------------------
    def _on_turn(self, delay: float, drained: bool) -> None:
        assert self.overload is not None and self._loop is not None
        self.overload.observe(delay, self._loop.time(), drained)

    def _is_banned(self, host: str) -> bool:
        assert self.flood is not None and self._loop is not None
        return self.flood.is_banned(host, self._loop.time())

    def on_datagram(self, data: bytes, peer: Peer) -> None:
        flood = self.flood
        if flood is not None and flood.check(data, peer[1], self.now()):
            return
        if len(data) <= 4 and not data.strip():
            return  # CRLF keep-alive
        try:
            msg = parse_datagram(data)
        except SipParseError as exc:
            self._parse_failed(exc, peer)
            return
        self._handle(msg, peer)

    def on_stream(self, item: SipMessage | SipParseError, peer: Peer) -> None:
        flood = self.flood
        if flood is not None and not flood.is_trusted(peer[1]):
            msg = item.message if isinstance(item, SipParseError) else item
            head = b"\r\n".join(msg.lines) if msg is not None else b""
            verdict = flood.check_message(head, peer[1], self.now())
            if verdict:
                if flood.is_banned(peer[1], self.now()):
                    self.transports.close_peer(peer)
                return
        if isinstance(item, SipParseError):
            self._parse_failed(item, peer)
        else:
            self._handle(item, peer)

    def _parse_failed(self, exc: SipParseError, peer: Peer) -> None:
        self.stats.parse_errors += 1
        msg = exc.message
        if isinstance(msg, Request) and msg.has(b"via"):
            self._reject(msg, peer, exc.status, exc.reason.encode())
        self._flush()

    def _reject(
        self,
        req: Request,
        peer: Peer,
        status: int,
        reason: bytes,
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        rejected = self.stats.rejected
        rejected[status] = rejected.get(status, 0) + 1
        if req.method == b"ACK":
            return
        try:
            dest = response_destination(req.via, peer, symmetric=self.symmetric)
        except SipParseError:
            dest = peer
        resp = make_response(req, status, reason, to_tag=_stateless_tag(req), headers=headers)
        self.layer.outbox.append((resp.serialize(), dest))

    def _handle(self, msg: SipMessage, peer: Peer) -> None:
        now = self.now()
        if isinstance(msg, Request):
            self.stats.requests += 1
            if self.user is None:
                # Listening, but no call engine attached yet (start-up): a request taken
                # into a transaction now would never be answered; dropped, its client's
                # retransmission finds the engine ready.
                return
            method = msg.method
            if method == b"INVITE" or method == b"ACK":
                try:
                    tag = msg.to_tag
                except SipParseError:  # a malformed To: check_request answers it
                    tag = b""
                if method == b"INVITE":
                    if tag is None and self.overload is not None and self._shed(msg, peer, now):
                        return
                elif tag is not None and len(tag) == 10 and tag.startswith(b"sl"):
                    # the ACK of a stateless final response: nothing to match it to
                    self.stats.stateless_acks += 1
                    return
            rej = check_request(msg)
            if rej is not None:
                self._reject(msg, peer, rej.status, rej.phrase, rej.headers)
                self._flush()
                return
            via = msg.via
            stamped = (
                stamp_received(msg.get(b"via") or b"", via, peer)
                if via.host != peer[1].encode() or via.has_rport
                else None
            )
            if stamped is not None:
                i = msg.names.index(b"via")
                line = msg.lines[i]
                msg.lines[i] = line[: line.find(b":") + 1] + b" " + stamped
            if self._oc and b"oc" in via.params:
                self._stamp_oc(msg, now)
            dest = response_destination(via, peer, symmetric=self.symmetric)
            if msg.method == b"OPTIONS" and msg.to_tag is None:
                self._answer_options(msg, dest)
                self._flush()
                return
            if self._closing and msg.method == b"INVITE" and msg.to_tag is None:
                self._reject(msg, peer, 503, b"Service Unavailable", [(b"retry-after", b"5")])
                self._flush()
                return
            events = self.layer.receive(msg, dest, now)
        else:
            assert isinstance(msg, Response)
            self.stats.responses += 1
            if check_response(msg) is not None:
                self.stats.responses_dropped += 1
                return
            events = self.layer.receive(msg, peer, now)
            if events and isinstance(events[0], StrayResponse) and not self._sent_by_us(msg):
                self.stats.responses_dropped += 1
                return
        user = self.user
        if user is not None:
            for ev in events:
                user.handle_event(ev, now)
        self._flush()

    def _shed(self, req: Request, peer: Peer, now: float) -> bool:
        """Refuse the new INVITE ``req`` with a stateless 503 when the overload detector
        says so (True), keeping no call state. A retransmission of an INVITE refused
        before is refused again, whatever the detector says now (its client has its
        503 already, or will), and one of an admitted INVITE goes to its transaction.
        Refused INVITEs are remembered for two periods of 32 s (64*T1, as long as a
        client retransmits one)."""
        ov = self.overload
        assert ov is not None
        if now >= self._refused_until:
            self._refused_before = self._refused
            self._refused = set()
            self._refused_until = now + REFUSED_PERIOD
        refused = self._refused
        before = self._refused_before
        if not ov.shedding and not refused and not before:
            return False
        try:
            key = self.layer.server_key(req)
        except SipParseError:
            return False
        if key in refused or key in before:
            pass
        elif not ov.shedding or self._closing or key in self.layer.server or ov.admit():
            return False
        elif len(refused) < REFUSED_MAX:
            refused.add(key)
        self.stats.overload_rejected += 1
        if self._oc and b"oc" in req.via.params:
            self._stamp_oc(req, now)  # the 503 is where the client most needs to hear it
        self._reject(req, peer, 503, b"Service Unavailable", self._retry_after)
        self._flush()
        return True

    def _stamp_oc(self, req: Request, now: float) -> None:
        """RFC 7339: the client put ``oc`` in its Via, so every response to it (built from
        the request's Via lines) says by how much to cut, while the detector sheds load
        and for a validity period after (``oc=0`` then ends it)."""
        ov = self.overload
        assert ov is not None
        if not ov.oc_active(now):
            return
        algos = req.via.params.get(b"oc-algo")
        if algos is not None and b"loss" not in algos.lower():
            return
        i = req.names.index(b"via")
        line = req.lines[i]
        colon = line.find(b":") + 1
        value = line[colon:].lstrip()
        comma = value.find(b",")
        top, rest = (value, b"") if comma < 0 else (value[:comma], value[comma:])
        parts = [
            p
            for p in top.rstrip().split(b";")
            if p.partition(b"=")[0].strip().lower()
            not in (b"oc", b"oc-algo", b"oc-validity", b"oc-seq")
        ]
        req.lines[i] = line[:colon] + b" " + b";".join(parts) + ov.oc_params(self._epoch) + rest

    def _answer_options(self, req: Request, dest: Peer) -> None:
        self.stats.options_answered += 1
        resp = make_response(
            req,
            200,
            b"OK",
            to_tag=_stateless_tag(req),
            headers=[
                (b"allow", ALLOW_HEADER),
                (b"accept", ACCEPT_HEADER),
                (b"supported", SUPPORTED_HEADER),
                (b"server", self.user_agent),
            ],
        )
        self.layer.outbox.append((resp.serialize(), dest))

    def on_send_error(self, peer: Peer) -> None:
        now = self.now()
        events: list[Event] = []
        for txn in self._live():
            if txn.dest == peer and txn.state.name in ("CALLING", "TRYING", "PROCEEDING"):
                events.extend(self.layer.transport_error(txn))
        user = self.user
        if user is not None:
            for ev in events:
                user.handle_event(ev, now)
        self._flush()

    # -- output ----------------------------------------------------------------------------
    def send_request(self, req: Request, dest: Peer, user: Any = None) -> ClientTransaction:
        txn = self.layer.send_request(req, dest, self.now(), user)
        return txn

    def respond(self, txn: ServerTransaction, resp: Response) -> None:
        self.layer.respond(txn, resp, self.now())

    def send_raw(self, data: bytes, dest: Peer) -> None:
        self.layer.outbox.append((data, dest))

    def flush(self) -> None:
        self._flush()

    def _flush(self) -> None:
        layer = self.layer
        if layer.outbox:
            send = self.transports.send
            for data, dest in layer.take_outbox():
                send(data, dest)
        at = layer.get_timer()
        if at is not None and (self._timer_at is None or at < self._timer_at):
            if self._timer is not None:
                self._timer.cancel()
            assert self._loop is not None
            self._timer_at = at
            self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        now = self.now()
        events = self.layer.handle_timer(now)
        user = self.user
        if user is not None:
            for ev in events:
                user.handle_event(ev, now)
        self._flush()


def _reliable(dest: Any) -> bool:
    return bool(dest[0] != "udp")


def _stateless_tag(req: Request) -> bytes:
    """A To tag for a stateless reply that is the same for every retransmission of ``req``."""
    import zlib

    key = (req.get(b"call-id") or b"") + (req.get(b"cseq") or b"")
    return b"sl%08x" % zlib.crc32(key)
