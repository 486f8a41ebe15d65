"""UDP, TCP and TLS transports on asyncio (uvloop in production): the thin I/O layer.

Received bytes are handed to the endpoint as they are (UDP) or framed into messages
(TCP and TLS, with the sans-IO ``StreamParser``); the endpoint hands back (bytes, peer)
to send. A peer is ``(transport, host, port)``.

UDP sockets are read by this module itself rather than through a datagram protocol: in
turns of at most ``READ_BATCH`` datagrams, the first of each read with ``recvmsg`` for
the kernel's receive timestamp (``SO_TIMESTAMPNS``) and drop counter (``SO_RXQ_OVFL``).
The timestamp says how long that datagram waited in the socket's queue, which is the
overload detector's signal (``on_turn``, told too whether the turn read the socket
empty); bounded turns let timers and the other sockets run between them.

Stream connections (TCP, and TLS over TCP) are reused in both directions, keyed by the
remote address, and closed after an idle period unless held (``hold``: a dialog's
requests toward its party go over the connection it came in on, which may be the only
way to reach a party behind NAT or without a listening socket). Inbound connections are
capped in total and per source address (``b2bua.conn_limits``), refused at once from a
banned source, and closed when a message that has begun is not complete within
``message_timeout`` (a peer sending a byte a second), when the first message does not
come within that time, or when a TLS handshake does not end within its timeout. TLS
contexts come from ``b2bua.tls`` (a server context chosen per source, so that mutual
TLS can be required of one trunk and not of others, and replaced when the certificate
is renewed: new handshakes use the new one, established connections keep theirs). An
inbound connection's TLS runs on memory BIOs in ``_Stream`` so that the source is
known, and checked, before the handshake costs anything.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import struct
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, cast

from .conn_limits import ConnectionLimits
from .sip.errors import SipParseError
from .sip.message import SipMessage
from .sip.parser import MAX_MESSAGE, StreamParser
from .sip.routing import Peer

log = logging.getLogger(__name__)

DatagramHandler = Callable[[bytes, Peer], None]
StreamHandler = Callable[[SipMessage | SipParseError, Peer], None]
SendErrorHandler = Callable[[Peer], None]
TurnHandler = Callable[[float, bool], None]  # first datagram's queueing delay, drained

READ_BATCH = 64  # datagrams read from one socket in one turn of the loop
SEND_QUEUE = 4096  # datagrams kept while a socket's send buffer is full
# Linux socket options Python does not name (asm-generic values, x86 and arm alike).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
_TIMESPEC = struct.Struct("@qq")
_U32 = struct.Struct("@I")


class TlsProvider(Protocol):
    """What the transports need of the TLS settings (``b2bua.tls.TlsContexts``)."""

    handshake_timeout: float

    def server_context(self, host: str) -> Any: ...

    def client_context(self, peer: Peer) -> tuple[Any, str | None]: ...

    def accepted(self, host: str, peercert: Any) -> bool: ...


class _UdpSender(Protocol):
    def sendto(self, data: bytes, addr: Any) -> None: ...


class _UdpSocket:
    """One UDP socket read and written by the engine itself."""

    def __init__(
        self, owner: Transports, sock: socket.socket, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.owner = owner
        self.sock = sock
        self.loop = loop
        self.fd = sock.fileno()
        self.bufsize = owner.max_message
        self.queue: deque[tuple[bytes, Any]] = deque()
        self.kernel_drops = 0  # the kernel's count of datagrams dropped on a full queue
        self.closed = False
        loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        owner = self.owner
        sock = self.sock
        try:
            data, anc, _flags, addr = sock.recvmsg(self.bufsize, 128)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            owner.udp_errors += 1
            return
        delay = 0.0
        for _level, kind, cdata in anc:
            if kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                sec, nsec = _TIMESPEC.unpack_from(cdata)
                delay = time.time() - (sec + nsec * 1e-9)
            elif kind == SO_RXQ_OVFL and len(cdata) >= 4:
                self.kernel_drops = _U32.unpack_from(cdata)[0]
        owner.datagrams += 1
        owner.turns += 1
        handler = owner.on_datagram
        try:
            handler(data, ("udp", addr[0], addr[1]))
        except Exception:  # a bug must not cost the rest of the turn
            owner.handler_failed()
        recvfrom = sock.recvfrom
        bufsize = self.bufsize
        n = 1
        while n < READ_BATCH and not self.closed:
            try:
                data, addr = recvfrom(bufsize)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                owner.udp_errors += 1
                break
            n += 1
            try:
                handler(data, ("udp", addr[0], addr[1]))
            except Exception:
                owner.handler_failed()
        owner.datagrams += n - 1
        if n == READ_BATCH:
            owner.full_turns += 1
        turn = owner.on_turn
        if turn is not None:
            turn(delay, n < READ_BATCH)

    def sendto(self, data: bytes, addr: Any) -> None:
        if self.queue:
            self._enqueue(data, addr)
            return
        try:
            self.sock.sendto(data, addr)
        except (BlockingIOError, InterruptedError):
            self._enqueue(data, addr)
            self.loop.add_writer(self.fd, self._writable)
        except OSError:
            self.owner.udp_errors += 1

    def _enqueue(self, data: bytes, addr: Any) -> None:
        if len(self.queue) < SEND_QUEUE:
            self.queue.append((data, addr))
        else:
            self.owner.udp_send_dropped += 1

    def _writable(self) -> None:
        queue = self.queue
        sock = self.sock
        while queue:
            data, addr = queue[0]
            try:
                sock.sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.owner.udp_errors += 1
            queue.popleft()
        self.loop.remove_writer(self.fd)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.loop.remove_reader(self.fd)
            if self.queue:
                self.loop.remove_writer(self.fd)
            self.sock.close()


class _AttachedUdp:
    """An in-process stand-in for a UDP socket (benchmarks and tests): sends only."""

    def __init__(self, transport: _UdpSender) -> None:
        self.transport = transport

    def sendto(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(data, addr)

    def close(self) -> None:
        pass


class _Stream(asyncio.Protocol):
    """One TCP or TLS connection, inbound or outbound.

    An inbound TLS connection runs its TLS layer here, on memory BIOs (``ssl.SSLObject``):
    the context is chosen by the source address before the handshake, which has a
    deadline of its own. Outbound TLS connections are made with the loop's TLS
    (``create_connection(ssl=...)``) and arrive here handshaken."""

    def __init__(self, owner: Transports, kind: str, peer: Peer | None = None) -> None:
        self.owner = owner
        self.kind = kind  # "tcp" or "tls"
        self.peer = peer
        self.inbound = peer is None
        self.counted = False  # counted in the connection limits
        self.parser = StreamParser(owner.max_message)
        self.transport: asyncio.Transport | None = None  # None until usable (TLS: handshaken)
        self.raw: asyncio.Transport | None = None
        self.tls: ssl.SSLObject | None = None  # an inbound TLS connection's TLS layer
        self._in: ssl.MemoryBIO | None = None
        self._out: ssl.MemoryBIO | None = None
        self._deadline: asyncio.TimerHandle | None = None
        now = time.monotonic()
        self.opened = now
        self.last = now
        self.msg_started = now if self.inbound else 0.0  # the first message is awaited
        self.messages = 0
        self.pending: list[bytes] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = self.raw = cast(asyncio.Transport, transport)
        if not self.inbound:  # outbound (TLS: handshaken already)
            self._ready()
            return
        owner = self.owner
        addr = transport.get_extra_info("peername")
        host = addr[0]
        self.peer = (self.kind, host, addr[1])
        refusal = owner.admit(host)
        if refusal is not None:
            owner.refused[refusal] = owner.refused.get(refusal, 0) + 1
            self.closed = True
            raw.abort()
            return
        self.counted = True
        owner.connections[self.peer] = self
        if self.kind == "tls":
            tls = owner.tls
            assert tls is not None
            self._in = ssl.MemoryBIO()
            self._out = ssl.MemoryBIO()
            self.tls = tls.server_context(host).wrap_bio(self._in, self._out, server_side=True)
            self._deadline = owner.loop().call_later(tls.handshake_timeout, self._too_slow)
            return
        self._ready()

    def _too_slow(self) -> None:
        self._deadline = None
        if self.transport is None and not self.closed:
            self._tls_failed("handshake_timeout")

    def _tls_failed(self, why: str) -> None:
        owner = self.owner
        owner.tls_failures += 1
        owner.handshake_errors[why] = owner.handshake_errors.get(why, 0) + 1
        self.close()

    def _ready(self) -> None:
        self.transport = self.raw
        assert self.peer is not None
        if not self.inbound:
            self.owner.connections[self.peer] = self
        pending = self.pending
        if pending:
            self.pending = []
            for data in pending:
                self.write(data)

    def _flush_tls(self) -> None:
        out = self._out
        if out is not None and out.pending and self.raw is not None:
            self.raw.write(out.read())

    def _tls_received(self, data: bytes) -> bytes | None:
        """Decrypted bytes of ``data`` (b"" when none yet); None when the connection is
        done with (closed, or the handshake failed)."""
        tls = self.tls
        assert tls is not None and self._in is not None
        self._in.write(data)
        if self.transport is None:
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                self._flush_tls()
                return b""
            except (ssl.SSLError, ValueError) as exc:
                self._flush_tls()  # the alert, if any
                self._tls_failed(getattr(exc, "reason", None) or type(exc).__name__)
                return None
            self._flush_tls()
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            owner = self.owner
            assert owner.tls is not None and self.peer is not None
            if not owner.tls.accepted(self.peer[1], tls.getpeercert()):
                self._tls_failed("peer_name")
                return None
            owner.tls_handshakes += 1
            self._ready()
        chunks = []
        while True:
            try:
                chunk = tls.read(65536)
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLError):
                self._flush_tls()
                self.close()
                return None
            if not chunk:
                break
            chunks.append(chunk)
        self._flush_tls()
        return b"".join(chunks)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        now = time.monotonic()
        self.last = now
        if self.tls is not None:
            plain = self._tls_received(data)
            if not plain:
                return
            data = plain
        assert self.peer is not None
        try:
            items = self.parser.feed(data)
        except SipParseError as exc:
            self.owner.stream_errors += 1
            log.info(
                "closing %s connection: %s",
                self.kind.upper(),
                exc.reason,
                extra={"peer": f"{self.peer[1]}:{self.peer[2]}"},
            )
            self.close()
            return
        parser = self.parser
        if parser.pings:
            self.messages += parser.pings
            parser.pings = 0
            self.msg_started = 0.0
            self.write(b"\r\n")  # RFC 5626 pong
        if items:
            self.messages += len(items)
            self.msg_started = now if parser.buffered else 0.0
        elif parser.buffered and not self.msg_started:
            self.msg_started = now
        handler = self.owner.on_stream
        peer = self.peer
        for item in items:
            if self.closed:
                break
            handler(item, peer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._forget()

    def _forget(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        owner = self.owner
        peer = self.peer
        if peer is not None and owner.connections.get(peer) is self:
            del owner.connections[peer]
        if self.counted:
            self.counted = False
            assert peer is not None
            owner.limits.release(peer[1])

    def write(self, data: bytes) -> None:
        self.last = time.monotonic()
        transport = self.transport
        if transport is None:
            self.pending.append(data)
            return
        tls = self.tls
        if tls is None:
            transport.write(data)
            return
        try:
            tls.write(data)
        except ssl.SSLError:
            self.close()
            return
        self._flush_tls()

    def close(self) -> None:
        """Close at once (nothing more is read or sent)."""
        self.closed = True
        if self.raw is not None:
            self.raw.abort()
        self._forget()


class Transports:
    """The engine's sockets: UDP sockets, TCP and TLS listeners and their connections."""

    def __init__(
        self,
        on_datagram: DatagramHandler,
        on_stream: StreamHandler,
        on_send_error: SendErrorHandler,
        *,
        max_message: int = MAX_MESSAGE,
        idle_timeout: float = 120.0,
        message_timeout: float = 10.0,
        limits: ConnectionLimits | None = None,
        is_banned: Callable[[str], bool] | None = None,
        tls: TlsProvider | None = None,
    ) -> None:
        self.on_datagram = on_datagram
        self.on_stream = on_stream
        self.on_send_error = on_send_error
        self.on_turn: TurnHandler | None = None
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.limits = limits or ConnectionLimits()
        self.is_banned = is_banned
        self.tls = tls
        self.udp: list[_UdpSocket | _AttachedUdp] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: dict[Peer, _Stream] = {}
        # Connections kept open however idle they are: peer -> holders (see ``hold``).
        self.holds: dict[Peer, int] = {}
        self.udp_errors = 0
        self.udp_send_dropped = 0
        self.handler_errors = 0
        self.stream_errors = 0
        self.datagrams = 0
        self.turns = 0
        self.full_turns = 0
        self.refused: dict[str, int] = {}  # reason -> inbound connections refused
        self.closed_by_timeout: dict[str, int] = {}  # "idle", "slow", "silent"
        self.tls_handshakes = 0
        self.tls_client_handshakes = 0
        self.tls_failures = 0
        self.handshake_errors: dict[str, int] = {}
        self._failure_logged: dict[Peer, float] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.bound: list[Peer] = []

    def loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    def handler_failed(self) -> None:
        """A datagram's handling raised: logged (with the traceback) and counted."""
        self.handler_errors += 1
        log.exception("error handling a datagram")

    def admit(self, host: str) -> str | None:
        """None when an inbound connection from ``host`` may open, else why not."""
        banned = self.is_banned
        if banned is not None and banned(host):
            return "banned"
        return self.limits.open(host)

    # -- listening --------------------------------------------------------------------------
    async def listen_udp(self, host: str, port: int) -> Peer:
        loop = self.loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
        for option in (SO_TIMESTAMPNS, SO_RXQ_OVFL):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, 1)
            except OSError:  # not Linux: no queueing delay, the detector sees none
                pass
        sock.bind((host, port))
        sock.setblocking(False)
        self.udp.append(_UdpSocket(self, sock, loop))
        peer: Peer = ("udp", host, sock.getsockname()[1])
        self.bound.append(peer)
        return peer

    def attach_udp(self, transport: _UdpSender) -> None:
        """Send UDP through ``transport`` (an in-process stand-in, for benchmarks)."""
        self.udp.append(_AttachedUdp(transport))

    async def listen_tcp(self, host: str, port: int) -> Peer:
        return await self._listen_stream("tcp", host, port)

    async def listen_tls(self, host: str, port: int) -> Peer:
        if self.tls is None:
            raise OSError("a TLS listener needs sip.tls.certificate and sip.tls.key")
        return await self._listen_stream("tls", host, port)

    async def _listen_stream(self, kind: str, host: str, port: int) -> Peer:
        loop = self.loop()
        server = await loop.create_server(
            lambda: _Stream(self, kind), host, port, reuse_address=True, backlog=1024
        )
        self.servers.append(server)
        # uvloop's Server.sockets is a list, asyncio's (and the stubs') a tuple
        bound = cast(Any, server).sockets[0].getsockname()
        peer: Peer = (kind, host, bound[1])
        self.bound.append(peer)
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        return peer

    # -- sending ----------------------------------------------------------------------------
    def send(self, data: bytes, peer: Peer) -> None:
        if peer[0] == "udp":
            if len(data) > self.max_message or not self.udp:
                self.on_send_error(peer)
                return
            self.udp[0].sendto(data, (peer[1], peer[2]))
            return
        conn = self.connections.get(peer)
        if conn is None:
            if peer[0] == "tls" and self.tls is None:
                self.on_send_error(peer)
                return
            conn = _Stream(self, peer[0], peer)
            self.connections[peer] = conn
            self.loop().create_task(self._connect(conn, peer))
        conn.write(data)

    def is_open(self, peer: Peer) -> bool:
        """Whether a stream connection to or from ``peer`` is open (or being opened)."""
        return peer in self.connections

    def close_peer(self, peer: Peer) -> None:
        """Close the stream connection with ``peer`` now (a banned source)."""
        conn = self.connections.get(peer)
        if conn is not None:
            conn.close()

    def hold(self, peer: Peer) -> None:
        """Keep the connection with ``peer`` from being closed as idle until ``release``
        (one release per hold). Whether it stays open is the peer's and the network's
        matter: a closed connection is forgotten as before."""
        holds = self.holds
        holds[peer] = holds.get(peer, 0) + 1

    def release(self, peer: Peer) -> None:
        holds = self.holds
        n = holds.get(peer, 0)
        if n > 1:
            holds[peer] = n - 1
        else:
            holds.pop(peer, None)

    async def _connect(self, conn: _Stream, peer: Peer) -> None:
        loop = self.loop()
        try:
            if peer[0] == "tls":
                assert self.tls is not None
                context, name = self.tls.client_context(peer)
                await asyncio.wait_for(
                    loop.create_connection(
                        lambda: conn,
                        peer[1],
                        peer[2],
                        ssl=context,
                        server_hostname=name or peer[1],
                        ssl_handshake_timeout=self.tls.handshake_timeout,
                    ),
                    self.tls.handshake_timeout + 5.0,
                )
                self.tls_client_handshakes += 1
            else:
                await asyncio.wait_for(loop.create_connection(lambda: conn, peer[1], peer[2]), 5.0)
        except (TimeoutError, OSError, ValueError) as exc:
            if peer[0] == "tls":
                self.tls_failures += 1
                name = getattr(exc, "reason", None) or type(exc).__name__
                self.handshake_errors[name] = self.handshake_errors.get(name, 0) + 1
                now = time.monotonic()
                if now - self._failure_logged.get(peer, -60.0) >= 60.0:  # a line a minute
                    self._failure_logged[peer] = now
                    log.warning(
                        "TLS connection failed: %s",
                        exc,
                        extra={"peer": f"{peer[1]}:{peer[2]}"},
                    )
            if self.connections.get(peer) is conn:
                del self.connections[peer]
            self.on_send_error(peer)

    # -- timeouts ---------------------------------------------------------------------------
    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.sweep(time.monotonic())

    def sweep(self, now: float) -> None:
        """Close connections past a timeout: idle (and not held), a message begun and not
        complete within ``message_timeout`` (slow senders), or an inbound one that sent
        nothing complete within that time of being opened."""
        idle_limit = now - self.idle_timeout
        msg_limit = now - self.message_timeout
        holds = self.holds
        closed = self.closed_by_timeout
        for peer, conn in list(self.connections.items()):
            why = None
            if conn.msg_started and conn.msg_started < msg_limit:
                why = "slow" if conn.messages or conn.parser.buffered else "silent"
            elif conn.last < idle_limit and peer not in holds and conn.transport is not None:
                why = "idle"
            if why is not None:
                closed[why] = closed.get(why, 0) + 1
                conn.close()

    def connection_count(self, kind: str) -> int:
        return sum(1 for peer in list(self.connections) if peer[0] == kind)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.connections.values()):
            conn.close()
        for udp in self.udp:
            udp.close()
        for server in self.servers:
            await server.wait_closed()
