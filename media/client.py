"""The engine's asyncio client of a relay process: a thin layer over :class:`RelayControl`.

::

    client = await RelayClient.connect("/run/ansim/relay.sock", on_event=handle)
    a = await client.leg("call-1", "a", remote=("203.0.113.5", 4000), peer="b", events=101)
    b = await client.leg("call-1", "b", peer="a")          # ports for the B-leg offer
    await client.leg("call-1", "b", remote=("198.51.100.7", 5004), events=101)  # its answer
    await client.record("call-1")                          # starts the encrypted recording
    await client.send_dtmf("call-1", "b", "12#")
    stats = await client.delete("call-1")

Events (:mod:`media.events`) are handed to ``on_event`` as they arrive; it runs on the
event loop and must not block. A command the relay refuses raises :class:`RelayError`;
one it does not answer after the retries raises :class:`RelayTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from media.control import ControlError, RelayControl, Reply
from media.events import Event

__all__ = ["LegInfo", "RelayClient", "RelayError", "RelayTimeout"]

log = logging.getLogger("ansim.media.client")


class RelayError(Exception):
    """The relay refused a command; the message is its reason."""


class RelayTimeout(RelayError):
    """The relay did not answer (not running, or overloaded)."""


@dataclass(frozen=True, slots=True)
class LegInfo:
    """Where a leg's party must send its media: what the engine writes into c=/m=/a=rtcp."""

    address: str
    port: int
    rtcp_port: int
    cname: str


class RelayClient:
    """Commands to one relay process over its Unix datagram control socket."""

    def __init__(
        self,
        path: str,
        on_event: Callable[[Event], None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        retry_s: float = 0.25,
        attempts: int = 4,
    ) -> None:
        self.path = path
        self.loop = loop or asyncio.get_running_loop()
        self.on_event = on_event
        self._proto = RelayControl(retry_s, attempts)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind("")  # Linux auto-bind: an abstract address the relay answers to
        self._sock.setblocking(False)
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.loop.add_reader(self._sock.fileno(), self._on_readable)

    @classmethod
    async def connect(
        cls, path: str, on_event: Callable[[Event], None] | None = None, **kwargs: Any
    ) -> RelayClient:
        """A client whose relay answered a ping."""
        client = cls(path, on_event, **kwargs)
        try:
            await client.ping()
        except BaseException:
            client.close()
            raise
        return client

    def close(self) -> None:
        if self._sock.fileno() >= 0:
            self.loop.remove_reader(self._sock.fileno())
            self._sock.close()
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RelayError("client closed"))
        self._waiting.clear()

    # -- commands ------------------------------------------------------------------------

    async def ping(self) -> dict[str, Any]:
        return await self._call("ping")

    async def leg(
        self,
        call: str,
        leg: str,
        *,
        remote: tuple[str, int] | Any | None = ...,
        rtcp: tuple[str, int] | Any | None = ...,
        **fields: Any,
    ) -> LegInfo:
        """Create or update a leg; fields as in :mod:`media.control` (``leg`` op)."""
        if remote is not ...:
            fields["remote"] = list(remote) if remote is not None else None
        if rtcp is not ...:
            fields["rtcp"] = list(rtcp) if rtcp is not None else None
        result = await self._call("leg", call=call, leg=leg, **fields)
        return LegInfo(result["address"], result["port"], result["rtcp_port"], result["cname"])

    async def delete(self, call: str, leg: str | None = None) -> dict[str, Any]:
        fields: dict[str, Any] = {"call": call}
        if leg is not None:
            fields["leg"] = leg
        result = await self._call("delete", **fields)
        return dict(result.get("legs") or {})

    async def query(self, call: str) -> dict[str, Any]:
        return await self._call("query", call=call)

    async def record(
        self,
        call: str,
        on: bool = True,
        recording_id: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        fields: dict[str, Any] = {"call": call, "on": on}
        if recording_id is not None:
            fields["id"] = recording_id
        if meta:
            fields["meta"] = meta
        return await self._call("record", **fields)

    async def send_dtmf(
        self, call: str, leg: str, digits: str, duration_ms: int = 100, pause_ms: int = 100
    ) -> int:
        result = await self._call(
            "dtmf", call=call, leg=leg, digits=digits, duration_ms=duration_ms, pause_ms=pause_ms
        )
        return int(result["queued"])

    # -- plumbing ------------------------------------------------------------------------

    async def _call(self, op: str, **fields: Any) -> dict[str, Any]:
        request_id, data = self._proto.request(op, self.loop.time(), **fields)
        fut: asyncio.Future[Reply] = self.loop.create_future()
        self._waiting[request_id] = fut
        self._send(data)
        self._arm()
        try:
            reply = await fut
        finally:
            self._waiting.pop(request_id, None)
            self._proto.cancel(request_id)
        if not reply.ok:
            if reply.error == "timeout":
                raise RelayTimeout(f"relay at {self.path} did not answer {op}")
            raise RelayError(reply.error)
        return reply.result

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendto(data, self.path)
        except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):
            pass  # retried on the timer: the relay may be (re)starting
        except OSError as exc:
            log.warning("relay control: %s", exc)

    def _arm(self) -> None:
        deadline = self._proto.next_deadline()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if deadline is not None:
            self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        resend, failed = self._proto.handle_timeout(self.loop.time())
        for data in resend:
            self._send(data)
        for reply in failed:
            self._deliver(reply)
        self._arm()

    def _deliver(self, reply: Reply) -> None:
        fut = self._waiting.get(reply.request_id)
        if fut is not None and not fut.done():
            fut.set_result(reply)

    def _on_readable(self) -> None:
        for _ in range(64):
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            try:
                message = self._proto.receive(data)
            except ControlError as exc:
                log.warning("relay control: bad datagram from relay: %s", exc)
                continue
            if message is None:
                continue
            if isinstance(message, Reply):
                self._deliver(message)
                self._arm()
            elif self.on_event is not None:
                with contextlib.suppress(Exception):
                    self.on_event(message)
