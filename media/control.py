"""The engine-to-relay command protocol: message shapes and their codecs; sans-IO.

Transport: one msgpack map per datagram over a Unix datagram socket (the relay's
``control`` path; the engine's socket is auto-bound, and the relay answers and sends
events to the address a call's last command came from). Datagrams on a local Unix
socket are neither lost nor reordered, but a relay can be restarting or busy, so
requests carry ids, are retried with the same id, and every operation is idempotent;
the relay also replays its cached reply to a request id it has already answered (so
``dtmf``, which is not idempotent by nature, is never done twice).

Requests ``{"id": n, "op": OP, ...}``:

``ping``
    → ``{"calls", "legs", "ports_free", "version"}``.
``leg`` ``call``, ``leg``, and any of ``remote`` ([ip, port] or null), ``rtcp``
    ([ip, port], default port + 1), ``mux`` (rtcp-mux), ``direction``
    (sendrecv|sendonly|recvonly|inactive, as the party's SDP says), ``events`` (the
    telephone-event payload type the party negotiated, or null), ``peer`` (the leg its
    packets are forwarded to), ``cname`` (the RTCP CNAME this party is shown; the relay
    picks an opaque one when none is given), ``latch`` (address|strict|any),
    ``source_ip`` (the party's signalling address, also accepted for latching),
    ``channel`` (0 or 1: the recording track of this party's audio), ``srtp`` (null:
    plain RTP; ``{"suite", "rx", "tx"}``: SRTP, the party's key and ansim's key toward
    it as raw bytes, see :mod:`media.srtp`), and the call's ``media_timeout``,
    ``hold_timeout``, ``stats_interval`` (seconds).
    Creates the leg (a port pair) or updates it. → ``{"address", "port",
    "rtcp_port", "cname"}``.
``delete`` ``call`` [, ``leg``] → ``{"legs": {leg: stats}}``; a recording of the call
    is closed first. Deleting what does not exist succeeds with no legs.
``query`` ``call`` → ``{"legs": {leg: stats}, "recording": id or null}``.
``record`` ``call``, ``on`` [, ``id``, ``meta``] → ``{"recording", "path"}``: starts (or with
    ``on`` false, stops) the encrypted recording of the call's channels.
``dtmf`` ``call``, ``leg``, ``digits`` [, ``duration_ms``, ``pause_ms``, ``volume``]
    → ``{"queued"}``: sends RFC 4733 digits toward the party of ``leg`` (which must
    have negotiated telephone-event).

Replies ``{"id": n, "ok": true, ...}`` or ``{"id": n, "ok": false, "error": text}``.
Events ``{"ev": "timeout"|"dtmf"|"stats"|"recording", ...}``: see :mod:`media.events`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgpack

from media.events import DtmfDigit, Event, MediaTimeout, RecordingClosed, StatsReport

__all__ = [
    "OPS",
    "PROTOCOL_VERSION",
    "ControlError",
    "RelayControl",
    "Reply",
    "Request",
    "decode_request",
    "encode_event",
    "encode_reply",
]

PROTOCOL_VERSION = 1
OPS = ("ping", "leg", "delete", "query", "record", "dtmf")
MAX_DATAGRAM = 65000
_EVENT_NAMES: dict[type, str] = {
    MediaTimeout: "timeout",
    DtmfDigit: "dtmf",
    StatsReport: "stats",
    RecordingClosed: "recording",
}
_EVENT_TYPES = {name: cls for cls, name in _EVENT_NAMES.items()}


class ControlError(ValueError):
    """A datagram that is not a valid message of this protocol."""


class Request(NamedTuple):
    request_id: int
    op: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Reply:
    """The relay's answer to request ``request_id``."""

    request_id: int
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def _unpack(data: bytes) -> dict[str, Any]:
    try:
        message = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise ControlError(f"not msgpack: {exc}") from None
    if not isinstance(message, dict):
        raise ControlError("a message must be a map")
    return message


def decode_request(data: bytes) -> Request:
    """The relay's side: a request datagram to a :class:`Request`."""
    message = _unpack(data)
    request_id = message.pop("id", None)
    op = message.pop("op", None)
    if not isinstance(request_id, int) or isinstance(request_id, bool):
        raise ControlError("request without an integer id")
    if op not in OPS:
        raise ControlError(f"unknown op {op!r}")
    return Request(request_id, op, message)


def encode_reply(request_id: int, result: dict[str, Any] | None = None, error: str = "") -> bytes:
    if error:
        return msgpack.packb({"id": request_id, "ok": False, "error": error}, use_bin_type=True)
    body = {"id": request_id, "ok": True}
    if result:
        if "id" in result or "ok" in result:
            raise ValueError("a reply's fields cannot be named id or ok")
        body.update(result)
    return msgpack.packb(body, use_bin_type=True)


def encode_event(event: Event) -> bytes:
    body: dict[str, Any] = {"ev": _EVENT_NAMES[type(event)]}
    body.update(event._asdict())
    return msgpack.packb(body, use_bin_type=True)


def decode_message(data: bytes) -> Reply | Event:
    """The engine's side: a reply or an event datagram."""
    message = _unpack(data)
    name = message.pop("ev", None)
    if name is not None:
        cls = _EVENT_TYPES.get(name)
        if cls is None:
            raise ControlError(f"unknown event {name!r}")
        try:
            return cls(**message)
        except TypeError as exc:
            raise ControlError(f"bad {name} event: {exc}") from None
    request_id = message.pop("id", None)
    ok = message.pop("ok", None)
    if not isinstance(request_id, int) or not isinstance(ok, bool):
        raise ControlError("neither a reply nor an event")
    error = str(message.pop("error", "")) if not ok else ""
    return Reply(request_id, ok, message, error)


@dataclass(slots=True)
class _Pending:
    data: bytes
    deadline: float
    attempts: int


class RelayControl:
    """The engine's side of the protocol without sockets: requests, retries, replies.

    ``request`` returns the id and datagram to send; ``receive`` turns a datagram into
    the replies and events it holds; ``next_deadline``/``handle_timeout`` drive the
    retries (the same datagram again after ``retry_s``, doubling, ``attempts`` times;
    then a failed :class:`Reply` with error ``timeout``).
    """

    def __init__(self, retry_s: float = 0.25, attempts: int = 4) -> None:
        self._next_id = 1
        self._pending: dict[int, _Pending] = {}
        self.retry_s = retry_s
        self.attempts = attempts

    def request(self, op: str, now: float, **fields: Any) -> tuple[int, bytes]:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}")
        request_id = self._next_id
        self._next_id += 1
        body = {"id": request_id, "op": op}
        body.update({k: v for k, v in fields.items()})
        data = msgpack.packb(body, use_bin_type=True)
        if len(data) > MAX_DATAGRAM:
            raise ValueError("request too large for one datagram")
        self._pending[request_id] = _Pending(data, now + self.retry_s, 1)
        return request_id, data

    def receive(self, data: bytes) -> Reply | Event | None:
        """The reply or event a datagram holds; None for a reply nobody waits for."""
        message = decode_message(data)
        if isinstance(message, Reply) and self._pending.pop(message.request_id, None) is None:
            return None
        return message

    def next_deadline(self) -> float | None:
        return min((p.deadline for p in self._pending.values()), default=None)

    def handle_timeout(self, now: float) -> tuple[list[bytes], list[Reply]]:
        """Datagrams to send again, and requests that ran out of attempts."""
        resend: list[bytes] = []
        failed: list[Reply] = []
        for request_id, pending in list(self._pending.items()):
            if pending.deadline > now:
                continue
            if pending.attempts >= self.attempts:
                del self._pending[request_id]
                failed.append(Reply(request_id, False, {}, "timeout"))
                continue
            pending.attempts += 1
            pending.deadline = now + self.retry_s * (2 ** (pending.attempts - 1))
            resend.append(pending.data)
        return resend, failed

    def cancel(self, request_id: int) -> None:
        self._pending.pop(request_id, None)
