"""UDP and TCP transports on asyncio (uvloop in production): the thin I/O layer.

Received bytes are handed to the endpoint as they are (UDP) or framed into messages
(TCP, with the sans-IO ``StreamParser``); the endpoint hands back (bytes, peer) to
send. A peer is ``(transport, host, port)``. TCP connections are reused in both
directions, keyed by the remote address, and closed after an idle period unless held
(``hold``: a dialog's requests toward its party go over the connection it came in on,
which may be the only way to reach a party behind NAT or without a listening socket).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any, cast

from .sip.errors import SipParseError
from .sip.message import SipMessage
from .sip.parser import MAX_MESSAGE, StreamParser
from .sip.routing import Peer

log = logging.getLogger(__name__)

DatagramHandler = Callable[[bytes, Peer], None]
StreamHandler = Callable[[SipMessage | SipParseError, Peer], None]
SendErrorHandler = Callable[[Peer], None]


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, owner: Transports) -> None:
        self.owner = owner
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.owner.on_datagram(data, ("udp", addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self.owner.udp_errors += 1


class _Tcp(asyncio.Protocol):
    def __init__(self, owner: Transports, peer: Peer | None = None) -> None:
        self.owner = owner
        self.peer = peer
        self.parser = StreamParser(owner.max_message)
        self.transport: asyncio.Transport | None = None
        self.last = time.monotonic()
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        if self.peer is None:
            addr = transport.get_extra_info("peername")
            self.peer = ("tcp", addr[0], addr[1])
        self.owner.connections[self.peer] = self
        for data in self.pending:
            self.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last = time.monotonic()
        assert self.peer is not None
        try:
            items = self.parser.feed(data)
        except SipParseError as exc:
            self.owner.stream_errors += 1
            log.info(
                "closing TCP connection: %s",
                exc.reason,
                extra={"peer": f"{self.peer[1]}:{self.peer[2]}"},
            )
            if self.transport is not None:
                self.transport.close()
            return
        if self.parser.pings:
            self.parser.pings = 0
            if self.transport is not None:
                self.transport.write(b"\r\n")  # RFC 5626 pong
        handler = self.owner.on_stream
        for item in items:
            handler(item, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.owner.connections.get(self.peer) is self:
            del self.owner.connections[self.peer]

    def write(self, data: bytes) -> None:
        self.last = time.monotonic()
        if self.transport is None:
            self.pending.append(data)
        else:
            self.transport.write(data)


class Transports:
    """The engine's sockets: UDP listeners, TCP listeners and TCP connections."""

    def __init__(
        self,
        on_datagram: DatagramHandler,
        on_stream: StreamHandler,
        on_send_error: SendErrorHandler,
        *,
        max_message: int = MAX_MESSAGE,
        idle_timeout: float = 120.0,
    ) -> None:
        self.on_datagram = on_datagram
        self.on_stream = on_stream
        self.on_send_error = on_send_error
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        self.udp: list[_Udp] = []
        self.servers: list[asyncio.AbstractServer] = []
        self.connections: dict[Peer, _Tcp] = {}
        # Connections kept open however idle they are: peer -> holders (see ``hold``).
        self.holds: dict[Peer, int] = {}
        self.udp_errors = 0
        self.stream_errors = 0
        self._sweeper: asyncio.Task[None] | None = None
        self.bound: list[Peer] = []

    async def listen_udp(self, host: str, port: int) -> Peer:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 * 1024 * 1024)
        sock.bind((host, port))
        sock.setblocking(False)
        _, proto = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=sock)
        self.udp.append(proto)
        peer: Peer = ("udp", host, sock.getsockname()[1])
        self.bound.append(peer)
        return peer

    def attach_udp(self, transport: asyncio.DatagramTransport) -> None:
        """Send UDP through ``transport`` (an in-process stand-in, for benchmarks)."""
        proto = _Udp(self)
        proto.connection_made(transport)
        self.udp.append(proto)

    async def listen_tcp(self, host: str, port: int) -> Peer:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Tcp(self), host, port, reuse_address=True, backlog=1024
        )
        self.servers.append(server)
        # uvloop's Server.sockets is a list, asyncio's (and the stubs') a tuple
        bound = cast(Any, server).sockets[0].getsockname()
        peer: Peer = ("tcp", host, bound[1])
        self.bound.append(peer)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        return peer

    def send(self, data: bytes, peer: Peer) -> None:
        if peer[0] == "udp":
            if len(data) > self.max_message or not self.udp:
                self.on_send_error(peer)
                return
            transport = self.udp[0].transport
            if transport is not None:
                transport.sendto(data, (peer[1], peer[2]))
            return
        conn = self.connections.get(peer)
        if conn is None:
            conn = _Tcp(self, peer)
            self.connections[peer] = conn
            asyncio.get_running_loop().create_task(self._connect(conn, peer))
        conn.write(data)

    def is_open(self, peer: Peer) -> bool:
        """Whether a TCP connection to or from ``peer`` is open (or being opened)."""
        return peer in self.connections

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

    async def _connect(self, conn: _Tcp, peer: Peer) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.create_connection(lambda: conn, peer[1], peer[2]), 5.0)
        except (TimeoutError, OSError):
            if self.connections.get(peer) is conn:
                del self.connections[peer]
            self.on_send_error(peer)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.idle_timeout / 2))
            limit = time.monotonic() - self.idle_timeout
            holds = self.holds
            for peer, conn in list(self.connections.items()):
                if conn.last < limit and conn.transport is not None and peer not in holds:
                    conn.transport.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for server in self.servers:
            server.close()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.close()
        for proto in self.udp:
            if proto.transport is not None:
                proto.transport.close()
        for server in self.servers:
            await server.wait_closed()
