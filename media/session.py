"""The relay's session table: calls, legs, latching, forwarding targets, timeouts; sans-IO.

A *call* groups the legs of one engine call; a *leg* is one party's media: the port
pair the relay gave it, the address its SDP announced, the address it was latched to,
and the leg its packets are forwarded to (``peer``). The IO layer (:mod:`media.relay`)
owns the sockets and reads the few attributes the packet path needs straight off the
:class:`Leg`; everything that decides something lives here and takes the time as an
argument.

Symmetric RTP and latching
    Until a leg is latched, the relay sends toward the address of its SDP and accepts
    a packet according to ``latch``: ``address`` (the default) accepts the first packet
    from the SDP's IP address or from ``source_ip`` (the address its signalling came
    from), from any port; ``strict`` wants the SDP's IP and port; ``any`` takes the
    first packet from anywhere (a party behind NAT that writes a private address in
    its SDP). The first accepted packet latches the leg: from then on only that
    source address is accepted (the IO layer connects the socket, so the kernel drops
    the rest) and packets toward the party go to it. RTP and RTCP latch separately;
    with rtcp-mux both use the RTP port.

Re-latching after a re-INVITE
    An update that changes a leg's SDP address (IP or port) unlatches it: packets
    toward the party go to the new SDP address at once, and the leg latches again on
    the first packet the mode accepts, except that the old latched address is refused
    for ``RELATCH_GRACE_S`` (late packets of the old stream cannot take the latch back)
    unless the new SDP address is that very address (a resume after an RFC 2543 hold).
    An update that keeps the address (a hold or resume by direction attribute, a codec
    change) keeps the latch. ``0.0.0.0`` as the address (RFC 2543 hold) stops sending
    toward the party until an update gives an address again.

SRTP
    ``srtp`` (:func:`media.srtp.parse_keys`) gives the leg its suite, the party's key
    and ansim's key toward it; null makes it plain RTP again. A key that changed starts
    its context afresh (a re-key after a re-INVITE); one that did not keeps its replay
    window. Each leg is SRTP or plain on its own (one party may use SRTP and the other
    not).

Direction and hold
    ``direction`` is the leg's SDP direction attribute as the party wrote it: a party
    that is ``sendonly`` or ``inactive`` is sent nothing; one that is ``recvonly`` or
    ``inactive`` is not expected to send.

Media timeout
    ``media_timeout`` seconds without an RTP packet from any leg, while at least one
    leg is expected to send, report :class:`~media.events.MediaTimeout` once;
    ``hold_timeout`` (None: never) applies instead while no leg is expected to send.
    Every update restarts the count. RTCP does not count as media.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from media.dtmf import DtmfDetector
from media.events import DtmfDigit, Event, MediaTimeout, StatsReport
from media.srtp import SrtpLeg, parse_keys

__all__ = [
    "DIRECTIONS",
    "LATCH_MODES",
    "RELATCH_GRACE_S",
    "Call",
    "Leg",
    "SessionError",
    "SessionTable",
]

Address = tuple[str, int]
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
LATCH_MODES = ("address", "strict", "any")
RELATCH_GRACE_S = 2.0
_NO_ADDRESS = ("0.0.0.0", "::")

# Latch verdicts of Leg.accept.
KEEP, LATCH, DROP = 0, 1, 2


class SessionError(ValueError):
    """A command that cannot be applied; the message is returned to the engine."""


def _address(value: Any, what: str) -> Address | None:
    if value is None:
        return None
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], int)
        or not 0 <= value[1] <= 65535
    ):
        raise SessionError(f"{what} must be [ip, port]")
    return (value[0], value[1])


@dataclass(eq=False, slots=True)
class Leg:
    """One party's media on the relay (see the module docstring)."""

    call: Call
    leg_id: str
    port: int
    cname: bytes
    remote: Address | None = None
    remote_rtcp: Address | None = None
    mux: bool = False
    sends: bool = True
    receives: bool = True
    event_pt: int | None = None
    latch_mode: str = "address"
    source_ip: str | None = None
    channel: int | None = None
    codecs: dict[int, str] | None = None
    peer_id: str | None = None
    peer: Leg | None = None
    latched: Address | None = None
    latched_rtcp: Address | None = None
    refused: Address | None = None
    refused_rtcp: Address | None = None
    refused_until: float = 0.0
    # Bumped whenever the IO layer must rebuild this leg's receive path (latch changed).
    generation: int = 0
    detector: DtmfDetector | None = None
    # SRTP: the leg's crypto contexts (media.srtp), None while its party uses plain RTP.
    srtp: SrtpLeg | None = None
    rx_packets: int = 0
    rx_bytes: int = 0
    tx_packets: int = 0
    rtcp_rx: int = 0
    rtcp_tx: int = 0
    dropped: int = 0
    dtmf_sent: int = 0
    # Set by the IO layer and read by its packet path: the callable that sends a packet
    # toward this party (None: nowhere), the same for RTCP, the recorder's callable for
    # packets received from this party, and the IO layer's own per-leg state.
    tx: Any = None
    rtcp_tx_fn: Any = None
    rec: Any = None
    io: Any = None

    def rtp_target(self) -> Address | None:
        """Where packets toward this party go now, or None (nowhere)."""
        if not self.receives:
            return None
        if self.latched is not None:
            return self.latched
        remote = self.remote
        if remote is None or remote[0] in _NO_ADDRESS or remote[1] == 0:
            return None
        return remote

    def rtcp_target(self) -> Address | None:
        """Where RTCP toward this party goes now (its RTP target with rtcp-mux)."""
        if self.mux:
            return self.rtp_target()
        if self.latched_rtcp is not None:
            return self.latched_rtcp
        remote = self.remote_rtcp
        if remote is None and self.remote is not None and self.remote[1]:
            remote = (self.remote[0], self.remote[1] + 1)
        if remote is None or remote[0] in _NO_ADDRESS or remote[1] == 0:
            return None
        return remote

    def _expected(self, rtcp: bool) -> Address | None:
        if rtcp and not self.mux:
            if self.remote_rtcp is not None:
                return self.remote_rtcp
            if self.remote is not None and self.remote[1]:
                return (self.remote[0], self.remote[1] + 1)
            return None
        return self.remote

    def accept(self, source: Address, rtcp: bool, now: float) -> int:
        """KEEP (latched already), LATCH (latch to it now) or DROP a packet from ``source``."""
        latched = self.latched_rtcp if rtcp and not self.mux else self.latched
        if latched is not None:
            return KEEP if source == latched else DROP
        refused = self.refused_rtcp if rtcp and not self.mux else self.refused
        if refused is not None and source == refused and now < self.refused_until:
            return DROP
        mode = self.latch_mode
        if mode == "any":
            return LATCH
        expected = self._expected(rtcp)
        if mode == "strict":
            return LATCH if expected is not None and source == expected else DROP
        if (expected is not None and source[0] == expected[0]) or source[0] == self.source_ip:
            return LATCH
        return DROP

    def latch(self, source: Address, rtcp: bool) -> None:
        if rtcp and not self.mux:
            self.latched_rtcp = source
        else:
            self.latched = source
        self.generation += 1

    def stats(self) -> dict[str, Any]:
        return {
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "rtcp_rx": self.rtcp_rx,
            "rtcp_tx": self.rtcp_tx,
            "dropped": self.dropped,
            "dtmf_sent": self.dtmf_sent,
            "srtp": self.srtp.keys.suite if self.srtp is not None else None,
            "srtp_auth_failures": self.srtp.auth_failures if self.srtp is not None else 0,
            "srtp_replays": self.srtp.replays if self.srtp is not None else 0,
            "latched": list(self.latched) if self.latched else None,
        }


@dataclass(eq=False, slots=True)
class Call:
    """The legs of one engine call, its owner (where events go) and its timers."""

    call_id: str
    owner: Any
    created: float
    legs: dict[str, Leg] = field(default_factory=dict)
    media_timeout: float = 60.0
    hold_timeout: float | None = None
    stats_interval: float | None = None
    last_activity: float = 0.0
    seen_rx: int = 0
    timed_out: bool = False
    next_stats: float = 0.0
    recording: Any = None  # the IO layer's recorder, when recording

    def expects_media(self) -> bool:
        return any(
            leg.sends and leg.remote is not None and leg.remote[0] not in _NO_ADDRESS
            for leg in self.legs.values()
        )


_LEG_FIELDS = frozenset(
    (
        "remote",
        "rtcp",
        "mux",
        "direction",
        "events",
        "peer",
        "cname",
        "latch",
        "source_ip",
        "channel",
        "codecs",
        "media_timeout",
        "hold_timeout",
        "stats_interval",
        "srtp",
    )
)


class SessionTable:
    """Every call the relay holds, and the rules that apply commands to them."""

    def __init__(self, media_timeout: float = 60.0, hold_timeout: float | None = None) -> None:
        self.calls: dict[str, Call] = {}
        self.media_timeout = media_timeout
        self.hold_timeout = hold_timeout

    def leg_count(self) -> int:
        return sum(len(c.legs) for c in self.calls.values())

    def find(self, call_id: str, leg_id: str) -> Leg:
        call = self.calls.get(call_id)
        leg = call.legs.get(leg_id) if call else None
        if leg is None:
            raise SessionError(f"no leg {leg_id!r} in call {call_id!r}")
        return leg

    def new_leg(self, call_id: str, leg_id: str, port: int, owner: Any, now: float) -> Leg:
        """Add a leg on the given (already bound) port pair."""
        call = self.calls.get(call_id)
        if call is None:
            call = Call(
                call_id,
                owner,
                now,
                media_timeout=self.media_timeout,
                hold_timeout=self.hold_timeout,
                last_activity=now,
            )
            self.calls[call_id] = call
        if leg_id in call.legs:
            raise SessionError(f"leg {leg_id!r} exists")
        call.owner = owner
        leg = Leg(call, leg_id, port, os.urandom(8).hex().encode())
        call.legs[leg_id] = leg
        # A peer named before this leg existed is linked now.
        for other in call.legs.values():
            if other.peer_id == leg_id:
                other.peer = leg
        return leg

    def update_leg(self, leg: Leg, fields: dict[str, Any], now: float) -> set[Leg]:
        """Apply an upsert's fields to ``leg``; return the legs whose receive path changed."""
        unknown = set(fields) - _LEG_FIELDS
        if unknown:
            raise SessionError(f"unknown leg field(s): {', '.join(sorted(unknown))}")
        call = leg.call
        changed: set[Leg] = set()
        # Validate everything before changing anything: a refused command changes nothing.
        remote = _address(fields["remote"], "remote") if "remote" in fields else leg.remote
        rtcp = _address(fields["rtcp"], "rtcp") if "rtcp" in fields else leg.remote_rtcp
        direction = fields.get("direction")
        if direction is not None and direction not in DIRECTIONS:
            raise SessionError(f"direction must be one of {', '.join(DIRECTIONS)}")
        latch = fields.get("latch", leg.latch_mode)
        if latch not in LATCH_MODES:
            raise SessionError(f"latch must be one of {', '.join(LATCH_MODES)}")
        events = fields.get("events", leg.event_pt)
        if events is not None and (not isinstance(events, int) or not 96 <= events <= 127):
            raise SessionError("events must be a dynamic payload type (96-127) or null")
        peer_id = fields.get("peer", leg.peer_id)
        if peer_id is not None and (not isinstance(peer_id, str) or peer_id == leg.leg_id):
            raise SessionError("peer must name another leg of the call")
        cname = fields.get("cname")
        if cname is not None and (
            not isinstance(cname, str) or not 1 <= len(cname.encode()) <= 255
        ):
            raise SessionError("cname must be 1-255 bytes")
        channel = fields.get("channel", leg.channel)
        if channel is not None and channel not in (0, 1):
            raise SessionError("channel must be 0, 1 or null")
        for key in ("media_timeout", "hold_timeout", "stats_interval"):
            value = fields.get(key)
            if value is not None and (not isinstance(value, (int, float)) or value <= 0):
                raise SessionError(f"{key} must be a positive number of seconds or null")
        mux = fields.get("mux", leg.mux)
        try:
            keys = parse_keys(fields["srtp"]) if "srtp" in fields else None
        except ValueError as exc:
            raise SessionError(str(exc)) from None
        codecs = fields.get("codecs", leg.codecs)
        if codecs is not None and (
            not isinstance(codecs, dict)
            or not all(
                isinstance(k, int) and 0 <= k <= 127 and isinstance(v, str)
                for k, v in codecs.items()
            )
        ):
            raise SessionError("codecs must map payload types (0-127) to 'name/rate'")

        if remote != leg.remote or rtcp != leg.remote_rtcp or bool(mux) != leg.mux:
            if leg.latched is not None and remote != leg.remote:
                leg.refused, leg.latched = leg.latched, None
                leg.refused_until = now + RELATCH_GRACE_S
                changed.add(leg)
            if leg.latched_rtcp is not None:
                leg.refused_rtcp, leg.latched_rtcp = leg.latched_rtcp, None
                leg.refused_until = now + RELATCH_GRACE_S
                changed.add(leg)
            leg.remote, leg.remote_rtcp, leg.mux = remote, rtcp, bool(mux)
            # A party that comes back to the address it was latched to (resume after an
            # RFC 2543 hold) is welcome there at once.
            if leg.refused == remote:
                leg.refused = None
            if leg.refused_rtcp is not None and leg.refused_rtcp == leg._expected(True):
                leg.refused_rtcp = None
        if direction is not None:
            leg.sends = direction in ("sendrecv", "sendonly")
            leg.receives = direction in ("sendrecv", "recvonly")
        if latch != leg.latch_mode:
            leg.latch_mode = latch
        if "source_ip" in fields:
            leg.source_ip = fields["source_ip"]
        if events != leg.event_pt:
            leg.event_pt = events
            leg.detector = DtmfDetector() if events is not None else None
            changed.add(leg)
        if cname is not None:
            leg.cname = cname.encode()
        if "srtp" in fields:
            if keys is None:
                if leg.srtp is not None:
                    leg.srtp = None
                    changed.add(leg)
            elif leg.srtp is None:
                leg.srtp = SrtpLeg(keys)
                changed.add(leg)
            elif leg.srtp.update(keys):
                changed.add(leg)
        if codecs != leg.codecs:
            leg.codecs = dict(codecs) if codecs is not None else None
            changed.add(leg)
        if channel != leg.channel:
            leg.channel = channel
            changed.add(leg)
        if peer_id != leg.peer_id:
            leg.peer_id = peer_id
            changed.add(leg)
        leg.peer = call.legs.get(peer_id) if peer_id is not None else None
        if "media_timeout" in fields and fields["media_timeout"] is not None:
            call.media_timeout = float(fields["media_timeout"])
        if "hold_timeout" in fields:
            value = fields["hold_timeout"]
            call.hold_timeout = float(value) if value is not None else None
        if "stats_interval" in fields:
            value = fields["stats_interval"]
            call.stats_interval = float(value) if value is not None else None
            call.next_stats = now + float(value) if value is not None else 0.0
        call.last_activity = now
        call.timed_out = False
        for changed_leg in changed:
            changed_leg.generation += 1
        return changed

    def remove(self, call_id: str, leg_id: str | None = None) -> list[Leg]:
        """Remove a whole call, or one leg of it; return the legs removed (maybe none)."""
        call = self.calls.get(call_id)
        if call is None:
            return []
        if leg_id is None:
            del self.calls[call_id]
            removed = list(call.legs.values())
        else:
            leg = call.legs.pop(leg_id, None)
            removed = [leg] if leg is not None else []
            for other in call.legs.values():
                if other.peer is leg:
                    other.peer = None
            if not call.legs:
                del self.calls[call_id]
        for leg in removed:
            leg.peer = None
        return removed

    def dtmf(
        self, leg: Leg, ssrc: int, ts: int, payload: memoryview | bytes, now: float
    ) -> list[Event]:
        detector = leg.detector
        if detector is None:
            return []
        return [
            DtmfDigit(leg.call.call_id, leg.leg_id, e.digit, e.duration_ms, e.end)
            for e in detector.feed(ssrc, ts, payload, now * 1000.0)
        ]

    def tick(self, now: float) -> list[tuple[Any, Event]]:
        """Timers due at ``now``: (owner, event) pairs to send."""
        out: list[tuple[Any, Event]] = []
        for call in self.calls.values():
            rx = 0
            for leg in call.legs.values():
                rx += leg.rx_packets
                if leg.detector is not None:
                    for e in leg.detector.tick(now * 1000.0):
                        out.append(
                            (
                                call.owner,
                                DtmfDigit(call.call_id, leg.leg_id, e.digit, e.duration_ms, e.end),
                            )
                        )
            if rx != call.seen_rx:
                call.seen_rx = rx
                call.last_activity = now
                call.timed_out = False
            elif not call.timed_out:
                limit = call.media_timeout if call.expects_media() else call.hold_timeout
                idle = now - call.last_activity
                if limit is not None and idle >= limit:
                    call.timed_out = True
                    out.append((call.owner, MediaTimeout(call.call_id, round(idle, 3))))
            if call.stats_interval is not None and now >= call.next_stats:
                call.next_stats = now + call.stats_interval
                out.append((call.owner, StatsReport(call.call_id, self.stats(call.legs.values()))))
        return out

    @staticmethod
    def stats(legs: Iterable[Leg]) -> dict[str, dict[str, Any]]:
        return {leg.leg_id: leg.stats() for leg in legs}
