"""A client of the rtpengine media proxy over its ng control protocol (UDP, bencode).

:class:`NgControl` is the protocol without sockets: each request is a datagram
``<cookie> <bencoded dict>``; the reply carries the same cookie. A request not answered
within ``retry_s`` is sent again with the same cookie (rtpengine answers a repeated
cookie from its cache instead of doing the command twice), doubling the wait, up to
``attempts`` times, then fails with ``timeout``. :class:`RtpengineClient` is the thin
asyncio layer, with one method per command ansim uses:

``offer``/``answer``/``delete``/``query``/``ping``
    the call's media through rtpengine (mode ``rtpengine``): the engine hands the SDP
    it received and writes what comes back into the message it sends on.
``subscribe_request``/``subscribe_answer``/``unsubscribe``
    a copy of the call's media, one stream per party (rtpengine's media subscriptions,
    in 10.5): how :mod:`media.rtpengine_tap` records a call without rtpengine's own
    recording daemon, which would write plaintext files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from media import bencode

__all__ = [
    "PRIVACY_OPTIONS",
    "NgControl",
    "NgReply",
    "RtpengineClient",
    "RtpengineError",
    "RtpengineTimeout",
]

# Merged into every offer and answer unless ``privacy=False``. rtpengine passes RTCP
# through unchanged by default, SDES and all (a softphone's CNAME with its user's real
# number reaches the other party: tests/test_media_rtpengine.py shows it); with
# ``generate RTCP`` it consumes the parties' RTCP and sends its own reports, with a
# CNAME of its own. ICE candidates would carry the parties' addresses.
PRIVACY_OPTIONS: dict[str, Any] = {"generate RTCP": "on", "ICE": "remove", "replace": ["origin"]}


class RtpengineError(Exception):
    """rtpengine answered ``error``; the message is its ``error-reason``."""


class RtpengineTimeout(RtpengineError):
    """rtpengine did not answer."""


@dataclass(frozen=True, slots=True)
class NgReply:
    cookie: str
    result: dict[str, Any]


@dataclass(slots=True)
class _Pending:
    data: bytes
    deadline: float
    attempts: int


class NgControl:
    """The ng protocol's requests, replies and retries; no sockets, no clock reads."""

    def __init__(self, retry_s: float = 0.5, attempts: int = 4) -> None:
        self._prefix = os.urandom(4).hex()
        self._counter = 0
        self._pending: dict[str, _Pending] = {}
        self.retry_s = retry_s
        self.attempts = attempts

    def request(self, command: str, now: float, fields: dict[str, Any]) -> tuple[str, bytes]:
        self._counter += 1
        cookie = f"{self._prefix}_{self._counter}"
        body = dict(fields)
        body["command"] = command
        data = cookie.encode() + b" " + bencode.encode(body)
        self._pending[cookie] = _Pending(data, now + self.retry_s, 1)
        return cookie, data

    def receive(self, data: bytes) -> NgReply | None:
        """The reply a datagram holds; None for one nobody waits for (a late repeat)."""
        space = data.find(b" ")
        if space <= 0:
            raise bencode.BencodeError("no cookie")
        cookie = data[:space].decode("ascii", "replace")
        if self._pending.pop(cookie, None) is None:
            return None
        result = bencode.decode(data[space + 1 :])
        if not isinstance(result, dict):
            raise bencode.BencodeError("reply is not a dictionary")
        return NgReply(cookie, result)

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def handle_timeout(self, now: float) -> tuple[list[bytes], list[str]]:
        """Datagrams to send again, and the cookies of requests that ran out of attempts."""
        resend: list[bytes] = []
        failed: list[str] = []
        for cookie, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            if pending.attempts >= self.attempts:
                del self._pending[cookie]
                failed.append(cookie)
                continue
            pending.attempts += 1
            pending.deadline = now + self.retry_s * (2 ** (pending.attempts - 1))
            resend.append(pending.data)
        return resend, failed

    def cancel(self, cookie: str) -> None:
        self._pending.pop(cookie, None)


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, client: RtpengineClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._on_datagram(data)


class RtpengineClient:
    """Commands to one rtpengine daemon's ng port (UDP)."""

    def __init__(self, host: str, port: int, retry_s: float = 0.5, attempts: int = 4) -> None:
        self.address = (host, port)
        self._ng = NgControl(retry_s, attempts)
        self._waiting: dict[str, asyncio.Future[dict[str, Any] | None]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> RtpengineClient:
        self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        transport, _ = await self._loop.create_datagram_endpoint(
            lambda: _Protocol(self), remote_addr=self.address, family=family
        )
        self._transport = transport
        return self

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        if self._timer is not None:
            self._timer.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RtpengineError("client closed"))

    async def command(self, command: str, **fields: Any) -> dict[str, Any]:
        """Any ng command; ``fields`` are its keys (use ``options`` for keys with spaces)."""
        return await self.send(command, **fields)

    def send(self, command: str, **fields: Any) -> asyncio.Future[dict[str, Any]]:
        """``command`` sent now, before this returns (so that it reaches rtpengine ahead
        of whatever the caller sends next); the future holds the reply."""
        extra = fields.pop("options", None) or {}
        body = {k.replace("_", "-"): v for k, v in fields.items() if v is not None}
        body.update(extra)
        loop = self._loop
        if loop is None or self._transport is None:
            raise RtpengineError("client not open")
        cookie, data = self._ng.request(command, loop.time(), body)
        fut: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self._waiting[cookie] = fut
        self._transport.sendto(data)
        self._arm()
        return asyncio.ensure_future(self._reply(command, cookie, fut))

    async def _reply(
        self, command: str, cookie: str, fut: asyncio.Future[dict[str, Any] | None]
    ) -> dict[str, Any]:
        try:
            result = await fut
        finally:
            self._waiting.pop(cookie, None)
            self._ng.cancel(cookie)
        if result is None:
            raise RtpengineTimeout(
                f"rtpengine at {self.address[0]}:{self.address[1]} did not answer {command}"
            )
        if result.get("result") == "error":
            raise RtpengineError(str(result.get("error-reason", "error")))
        return result

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self._ng.next_deadline()
        if deadline is not None and self._loop is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self._loop is None:
            return
        resend, failed = self._ng.handle_timeout(self._loop.time())
        for data in resend:
            if self._transport is not None:
                self._transport.sendto(data)
        for cookie in failed:
            fut = self._waiting.get(cookie)
            if fut is not None and not fut.done():
                fut.set_result(None)
        self._arm()

    def _on_datagram(self, data: bytes) -> None:
        with contextlib.suppress(bencode.BencodeError):
            reply = self._ng.receive(data)
            if reply is not None:
                fut = self._waiting.get(reply.cookie)
                if fut is not None and not fut.done():
                    fut.set_result(reply.result)
                self._arm()

    # -- the commands ansim uses ---------------------------------------------------------

    async def ping(self) -> bool:
        return (await self.command("ping")).get("result") == "pong"

    async def offer(
        self, call_id: str, from_tag: str, sdp: str, privacy: bool = True, **options: Any
    ) -> dict[str, Any]:
        """rtpengine's SDP for the far side of an offer: the reply's ``sdp``.

        ``PRIVACY_OPTIONS`` are merged into ``options`` unless ``privacy`` is False.
        """
        _private(options, privacy)
        return await self.command("offer", call_id=call_id, from_tag=from_tag, sdp=sdp, **options)

    async def answer(
        self,
        call_id: str,
        from_tag: str,
        to_tag: str,
        sdp: str,
        privacy: bool = True,
        **options: Any,
    ) -> dict[str, Any]:
        _private(options, privacy)
        return await self.command(
            "answer", call_id=call_id, from_tag=from_tag, to_tag=to_tag, sdp=sdp, **options
        )

    async def delete(
        self, call_id: str, from_tag: str | None = None, **options: Any
    ) -> dict[str, Any]:
        return await self.command("delete", call_id=call_id, from_tag=from_tag, **options)

    async def query(self, call_id: str, **options: Any) -> dict[str, Any]:
        return await self.command("query", call_id=call_id, **options)

    async def subscribe_request(
        self, call_id: str, from_tags: Sequence[str], to_tag: str | None = None, **options: Any
    ) -> dict[str, Any]:
        """A subscription to the parties ``from_tags``: the reply holds a sendonly offer
        (``sdp``, one media section per party, in ``from-tags`` order) and its ``to-tag``."""
        return await self.command(
            "subscribe request",
            call_id=call_id,
            from_tags=list(from_tags),
            to_tag=to_tag,
            **options,
        )

    async def subscribe_answer(
        self, call_id: str, to_tag: str, sdp: str, **options: Any
    ) -> dict[str, Any]:
        return await self.command(
            "subscribe answer", call_id=call_id, to_tag=to_tag, sdp=sdp, **options
        )

    async def unsubscribe(self, call_id: str, to_tag: str, **options: Any) -> dict[str, Any]:
        return await self.command("unsubscribe", call_id=call_id, to_tag=to_tag, **options)


def _private(options: dict[str, Any], privacy: bool) -> None:
    if privacy:
        options["options"] = {**PRIVACY_OPTIONS, **(options.get("options") or {})}
