"""Media attached to the legs of a call: anchored by ansim's relay or by rtpengine.

A call's media mode (``media.settings.resolve_mode``: the binding's, else the trunk's,
else ``media.mode``; a recorded call is never passthrough) decides who carries its RTP:

``passthrough``
    nobody: the parties' addresses cross in the rebuilt SDP and RTP flows end to end;
    nothing here is involved.
``relay``
    a relay process of ansim's own (``media.relay``), one per call chosen by a hash of
    the call's media id. Each leg gets a port pair at the INVITE; the SDP each party is
    sent names the relay's address and that leg's port (``SdpBuilder.anchor``), and an
    ``a=ssrc ... cname:`` with the CNAME the relay writes into the RTCP it forwards to
    that party. Every SDP a party sends (offer, answer, re-INVITE, hold, resume) updates
    its leg (remote address, RTCP, direction, telephone-event, codecs), and the message
    carrying it goes on once the relay has answered. SDES keys (``a=crypto``) are
    terminated per leg (``b2bua.sdes``): each party is sent ansim's own lines, and the
    relay gets the party's key and ansim's for the leg.
``rtpengine``
    an rtpengine daemon over its ng protocol (``media.rtpengine``): the party's SDP goes
    to rtpengine as an offer or an answer, and the address and port rtpengine gives
    the other side are written into what that side is sent, the same way. rtpengine is
    asked to generate RTCP of its own, and each party is told to send its RTCP to a
    socket that drops it (``media.rtpengine.rtcp_sink``; rtcp-mux is not negotiated), so the
    parties' SDES never cross.

Signalling never waits on packets: commands are asynchronous (``RelayClient``,
``RtpengineClient``), a call's continuation runs when the answer comes, and the loop
handles other calls meanwhile. Events the relay sends (``MediaTimeout``, ``DtmfDigit``)
reach the call's controller. Recording: the relay writes both directions into one
encrypted file (``media.recording``); in rtpengine mode through a media subscription
tap into a relay (``media.rtpengine_tap``), never rtpengine's own plaintext recording.

Only the first audio section is anchored; other sections (video, T.38) are written as
rejected streams toward the other party. ``RelayPool`` starts and supervises the relay
processes for ``ansim serve``: one that dies is started again, and the calls it carried
are ended cleanly (BYE, CDR reason ``media_failure``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from media.client import LegInfo, RelayClient
from media.events import DtmfDigit, Event, MediaTimeout, RecordingClosed
from media.rtpengine import RtpengineClient
from media.rtpengine_tap import RecordingTap, start_recording_tap, stop_recording_tap
from media.settings import MediaSettings, relay_argv, resolve_mode

from .call import Call, CallState, Leg
from .children import Supervisor, dies_with_parent
from .sdes import LegSdes, SdesError, crypto_lines, mirror, receive
from .sip.bodies import SDP, outgoing_body, parse_content_type, split_multipart
from .sip.message import Request, SipMessage
from .sip.sdp import (
    MediaTarget,
    SdpBuilder,
    SdpError,
    SessionDescription,
    anchored_section,
    parse_sdp,
)
from .sip.sdp_attributes import Attribute, Flag, Rtcp, Rtpmap
from .sip.sdp_fields import Address, address_type
from .trunks import Trunk

if TYPE_CHECKING:
    from .calls import CallEngine

log = logging.getLogger("ansim.media")

DIRECTIONS = (b"sendrecv", b"sendonly", b"recvonly", b"inactive")
# Static payload types (RFC 3551) a party may offer without an rtpmap.
STATIC_CODECS = {
    0: "PCMU/8000",
    3: "GSM/8000",
    4: "G723/8000",
    8: "PCMA/8000",
    9: "G722/8000",
    13: "CN/8000",
    18: "G729/8000",
}
# Where a leg's party sends before its real target is known (never written toward a
# party: the message is rebuilt once the media engine has answered).
_NOWHERE = MediaTarget((b"IP4", b"0.0.0.0"), 9)
_START_TIMEOUT = 10.0


class MediaUnavailable(Exception):
    """The call's media cannot be anchored (no relay configured, no rtpengine)."""


class MediaNotAcceptable(MediaUnavailable):
    """The caller's media cannot be carried as offered (SRTP without a usable suite)."""


def session_of(msg: SipMessage) -> SessionDescription | None:
    """The SDP a message carries (alone or as the first SDP part of a multipart), parsed;
    None when it has none that parses."""
    body = msg.body
    if not body:
        return None
    ctype = parse_content_type(msg.get(b"content-type"))
    if ctype is None:
        return None
    content: bytes | None = None
    if ctype.mime == SDP:
        content = body
    elif ctype.mime.startswith(b"multipart/"):
        boundary = ctype.params.get(b"boundary")
        parts = split_multipart(body, boundary) if boundary else None
        for headers, part in parts or ():
            inner = parse_content_type(headers.get(b"content-type"))
            if inner is not None and inner.mime == SDP:
                content = part
                break
    if content is None:
        return None
    try:
        return parse_sdp(content)
    except SdpError:
        return None


def leg_fields(desc: SessionDescription) -> tuple[dict[str, Any], int | None]:
    """The relay's ``leg`` fields for a party's SDP (its first audio section), and the
    telephone-event payload type it offered or accepted."""
    index = anchored_section(desc)
    if index < 0:
        return {"remote": None}, None
    media = desc.media[index]
    connection = media.connection or desc.connection
    address = connection[1].decode() if connection is not None else "0.0.0.0"
    fields: dict[str, Any] = {"remote": [address, media.port]}
    direction = b"sendrecv"
    for attr in desc.attributes:
        if isinstance(attr, Flag) and attr.name in DIRECTIONS:
            direction = attr.name
    codecs: dict[int, str] = {}
    events: int | None = None
    mux = False
    rtcp: list[Any] | None = None
    for attr in media.attributes:
        if isinstance(attr, Flag):
            if attr.name in DIRECTIONS:
                direction = attr.name
            elif attr.name == b"rtcp-mux":
                mux = True
        elif isinstance(attr, Rtpmap):
            codecs[attr.pt] = f"{attr.encoding.decode()}/{attr.clock}"
            if attr.encoding.lower() == b"telephone-event" and (
                events is None or attr.clock == 8000
            ):
                events = attr.pt
        elif isinstance(attr, Rtcp):
            host = attr.address[1].decode() if attr.address is not None else address
            rtcp = [host, attr.port]
    for fmt in media.formats:
        pt = int(fmt) if fmt.isdigit() else -1
        if pt in STATIC_CODECS and pt not in codecs:
            codecs[pt] = STATIC_CODECS[pt]
    fields.update(direction=direction.decode(), codecs=codecs, events=events, mux=mux)
    if rtcp is not None:
        fields["rtcp"] = rtcp
    return fields, events


def target_of(desc: SessionDescription) -> MediaTarget | None:
    """Where rtpengine's SDP says to send: its first audio section's address and port."""
    index = anchored_section(desc)
    if index < 0:
        return None
    media = desc.media[index]
    connection = media.connection or desc.connection
    if connection is None:
        return None
    rtcp_port: int | None = None
    for attr in media.attributes:
        if isinstance(attr, Rtcp):
            rtcp_port = attr.port
    return MediaTarget(connection, media.port, rtcp_port)


class CallMedia:
    """What the media engine gave one call: its id there, each leg's target and CNAME."""

    __slots__ = (
        "closed",
        "ended",
        "engine_srtp",
        "id",
        "mode",
        "mux",
        "offerer",
        "record",
        "recording",
        "relay",
        "relay_index",
        "sdes",
        "tap",
        "targets",
    )

    def __init__(self, media_id: str, mode: str, record: bool) -> None:
        self.id = media_id
        self.mode = mode
        self.record = record
        self.relay: RelayClient | None = None
        self.relay_index = -1
        self.targets: dict[str, tuple[MediaTarget, bytes | None]] = {}
        # Whether each party's last SDP had rtcp-mux: a leg muxes only when both did.
        self.mux: dict[str, bool] = {"a": False, "b": False}
        self.offerer = "a"  # whose offer rtpengine holds (the from-tag of its answer)
        # Relay mode: each leg's SDES keys and what ansim writes toward it (b2bua.sdes).
        self.sdes: dict[str, LegSdes] = {"a": LegSdes(), "b": LegSdes()}
        # rtpengine mode: the profile and a=crypto lines rtpengine wrote for each leg.
        self.engine_srtp: dict[str, tuple[bytes | None, list[Attribute]]] = {}
        self.recording: str | None = None
        self.tap: RecordingTap | None = None
        self.ended = False  # the call ended: no continuation runs
        self.closed = False  # the media engine has been told


class MediaAnchor:
    """The engine's media actions for anchored calls (see the module docstring)."""

    def __init__(
        self,
        settings: MediaSettings,
        relays: RelayPool | None,
        rtpengine: RtpengineClient | None,
        loop: asyncio.AbstractEventLoop,
        rtcp_sink: tuple[str, int] | None = None,
    ) -> None:
        self.settings = settings
        self.relays = relays
        self.rtpengine = rtpengine
        # Where every party of an rtpengine-mode call sends its RTCP (media.rtpengine.rtcp_sink).
        self._sink: tuple[Address, int] | None = None
        if rtcp_sink is not None:
            raw = rtcp_sink[0].encode()
            self._sink = ((address_type(raw), raw), rtcp_sink[1])
        self.loop = loop
        self.engine: CallEngine | None = None
        self.calls: dict[str, Call] = {}  # media id -> call
        self._n = 0
        self._prefix = os.urandom(4).hex()
        self._tasks: set[asyncio.Task[Any]] = set()
        if relays is not None:
            relays.on_event = self.on_event
            relays.on_lost = self.on_relay_lost

    def bind(self, engine: CallEngine) -> None:
        self.engine = engine

    # -- what the controllers call ---------------------------------------------------------
    def anchors(self, call: Call, trunk_in: Trunk) -> bool:
        """Whether ``call``'s media is anchored; if it is, ``call.media`` is set up."""
        route = call.route
        out_trunk = call.trunks[0] if call.trunks else None
        trunk_mode = trunk_in.media or (out_trunk.media if out_trunk is not None else None)
        record = (
            bool(route.record) or trunk_in.record or (out_trunk is not None and out_trunk.record)
        )
        mode = resolve_mode(trunk_mode, route.media or None, record, self.settings.mode)
        if mode == "passthrough":
            return False
        self._n += 1
        media = CallMedia(f"{self._prefix}-{self._n:x}", mode, record)
        call.media = media
        self.calls[media.id] = call
        return True

    def attach(self, call: Call, now: float, then: Callable[[Call, float], None]) -> None:
        """Give both legs their media, then run ``then(call, now)`` (place the UAC leg);
        a call whose media cannot be anchored is answered 503."""
        self._spawn(self._attach(call, then))

    def prepare_builder(self, call: Call, leg_name: str, builder: SdpBuilder) -> None:
        """Have ``builder`` (of the SDP leg ``leg_name``'s party is sent) write the media
        engine's address and port for that leg, and its CNAME."""
        media: CallMedia = call.media
        target = media.targets.get(leg_name)
        if target is None:
            builder.anchor = _NOWHERE
            builder.cname = None
        else:
            builder.anchor, builder.cname = target
        if media.mode == "relay":
            builder.srtp = media.sdes[leg_name].builder_lines()
        else:
            builder.srtp = media.engine_srtp.get(leg_name)

    def update(
        self,
        call: Call,
        leg: Leg,
        msg: SipMessage,
        now: float,
        then: Callable[[float], None],
        out: SipMessage | None = None,
        to_leg: Leg | None = None,
        kind: int = 0,
    ) -> None:
        """``msg`` carries an SDP from ``leg``'s party: tell the media engine, then run
        ``then(now)`` (send on ``out``, built from ``msg`` for ``to_leg`` as a message of
        ``kind``; in rtpengine mode its body is written again first, with the address
        rtpengine gave ``to_leg`` in its answer)."""
        desc = session_of(msg)
        media: CallMedia = call.media
        if desc is None or media.ended:
            then(now)
            return
        rebuild = None
        if out is not None and to_leg is not None:
            if media.mode == "rtpengine":
                rebuild = (to_leg, msg, out, kind)
            elif media.sdes[to_leg.name].proto is None:
                # The far party's profile is not known yet (a late offer): ``out`` is
                # written again once this SDP has given it (sdes.mirror).
                rebuild = (to_leg, msg, out, kind)
        self._spawn(self._update(call, leg, desc, isinstance(msg, Request), then, rebuild))

    def _rebuild(self, call: Call, leg: Leg, src: SipMessage, out: SipMessage, kind: int) -> None:
        engine = self.engine
        assert engine is not None
        self.prepare_builder(call, leg.name, leg.sdp)
        body = outgoing_body(src, kind, leg.sdp, engine.trunks.body_policy, leg.numbers)
        if not body.status:
            out.body = body.body

    def forget_remote(self, call: Call, leg_name: str) -> None:
        """The party of ``leg_name`` is gone (a failed UAC leg): its media goes nowhere
        until the next one answers."""
        media: CallMedia = call.media
        if media.mode == "relay" and not media.ended:
            # The next party is offered keys of its own, not those the last one was.
            other = "b" if leg_name == "a" else "a"
            media.sdes[leg_name] = LegSdes()
            trunk = call.trunks[0] if leg_name == "b" and call.trunks else None  # the next one
            mirror(media.sdes[leg_name], media.sdes[other], trunk.srtp if trunk else None)
        if media.mode == "relay" and media.relay is not None and not media.ended:
            self._spawn(
                self._command(
                    media.relay.leg(media.id, leg_name, remote=None, rtcp=None, srtp=None)
                )
            )

    def send_dtmf(self, call: Call, leg: Leg, digit: str, duration_ms: int) -> bool:
        """Send ``digit`` toward ``leg``'s party as RFC 4733 events (relay mode only)."""
        media: CallMedia = call.media
        if media.mode != "relay" or media.relay is None or media.ended:
            return False
        self._spawn(
            self._command(media.relay.send_dtmf(media.id, leg.name, digit, max(duration_ms, 40)))
        )
        return True

    def release(self, call: Call) -> None:
        """The call ended: its media engine state is deleted (the recording closed)."""
        media: CallMedia = call.media
        if media.ended:
            return
        media.ended = True
        self.calls.pop(media.id, None)
        ng = self.rtpengine
        if media.mode == "rtpengine" and ng is not None and not media.closed:
            # Sent before the messages that end the call, so that rtpengine stops sending
            # toward the parties as they hang up (their own RTCP, BYE included, goes to
            # the sink: media.rtcp_sink).
            self._watch(ng.send("delete", call_id=media.id))
        self._spawn(self._delete(media))

    # -- events from the relay -------------------------------------------------------------
    def on_event(self, event: Event) -> None:
        engine = self.engine
        if engine is None:
            return
        if isinstance(event, RecordingClosed):
            if event.error:
                log.error("recording %s failed: %s", event.recording_id, event.error)
            return
        call = self.calls.get(event.call)
        if call is None or call.state == CallState.ENDED:
            return
        now = self.loop.time()
        if isinstance(event, MediaTimeout):
            if call.state in (CallState.ANSWERED, CallState.CONFIRMED):
                call.controller.on_media_timeout(call, now)
        elif isinstance(event, DtmfDigit) and event.end:
            leg = call.a if event.leg == "a" else call.b
            if leg is not None:
                call.controller.on_dtmf(
                    call, leg, event.digit.encode(), event.duration_ms, "rtp", now
                )
        engine.ep.flush()

    def on_relay_lost(self, index: int) -> None:
        """Relay process ``index`` died: the calls it carried are ended."""
        engine = self.engine
        if engine is None:
            return
        now = self.loop.time()
        for call in list(self.calls.values()):
            media: CallMedia = call.media
            if media.relay_index == index and call.state != CallState.ENDED:
                media.closed = True  # nothing left to delete there
                call.controller.on_media_lost(call, now)
        engine.ep.flush()

    # -- the asynchronous side -------------------------------------------------------------
    def _spawn(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch(self, fut: asyncio.Future[Any]) -> None:
        def done(f: asyncio.Future[Any]) -> None:
            if not f.cancelled() and f.exception() is not None:
                log.warning("media command failed: %s", f.exception())

        fut.add_done_callback(done)

    async def _command(self, coro: Any) -> Any:
        try:
            return await coro
        except Exception as exc:
            log.warning("media command failed: %s", exc)
            return None

    def _relay_for(self, media: CallMedia) -> RelayClient:
        if media.relay is None:
            if self.relays is None or not self.relays.clients:
                raise MediaUnavailable("no relay process is configured or running")
            media.relay_index, media.relay = self.relays.pick(media.id)
        return media.relay

    async def _attach(self, call: Call, then: Callable[[Call, float], None]) -> None:
        media: CallMedia = call.media
        a = call.a
        assert a is not None
        desc = session_of(call.a_invite)
        try:
            if media.mode == "relay":
                await self._attach_relay(call, media, a, desc)
            else:
                await self._attach_rtpengine(call, media, a, desc)
        except Exception as exc:
            log.warning(
                "media for a call could not be anchored: %s",
                exc,
                extra={"call_id": call.a_invite.call_id.decode(errors="replace")},
            )
            if not media.ended and call.state == CallState.ROUTING and not call.cancelled:
                engine = self.engine
                assert engine is not None
                if isinstance(exc, MediaNotAcceptable):
                    engine.reject(
                        call, 488, b"Not Acceptable Here", "srtp_unsupported", self.loop.time()
                    )
                else:
                    engine.reject(
                        call, 503, b"Service Unavailable", "media_unavailable", self.loop.time()
                    )
                engine.ep.flush()
            return
        if media.ended:
            # The call ended while its media was being set up: the delete sent then may
            # have reached the media engine before the legs did.
            media.closed = False
            await self._delete(media)
            return
        if call.cancelled or call.state == CallState.ENDED:
            return
        engine = self.engine
        assert engine is not None
        then(call, self.loop.time())
        engine.ep.flush()

    async def _attach_relay(
        self, call: Call, media: CallMedia, a: Leg, desc: SessionDescription | None
    ) -> None:
        relay = self._relay_for(media)
        fields: dict[str, Any] = {}
        if desc is not None:
            fields, a.events_pt = leg_fields(desc)
            media.mux["a"] = fields.pop("mux", False)
            try:
                trunk = call.trunks[0] if call.trunks else None  # the first one tried
                fields["srtp"] = self._sdes(media, "a", desc, trunk)
            except SdesError as exc:
                raise MediaNotAcceptable(str(exc)) from None
        trunk = call.trunks[0] if call.trunks else None
        source = trunk.peer()[1] if trunk is not None else None
        # Both legs at once: the relay takes the commands in the order they were sent.
        info_a, info_b = await asyncio.gather(
            relay.leg(
                media.id,
                "a",
                peer="b",
                channel=0,
                source_ip=a.peer[1],
                latch=self.settings.latch,
                media_timeout=self.settings.media_timeout,
                **fields,
            ),
            relay.leg(
                media.id, "b", peer="a", channel=1, source_ip=source, latch=self.settings.latch
            ),
        )
        media.targets["a"] = self._target(info_a)
        media.targets["b"] = self._target(info_b)
        if media.record:
            result = await relay.record(media.id, meta=self._meta(call))
            media.recording = str(result.get("recording"))

    @staticmethod
    def _sdes(
        media: CallMedia, leg_name: str, desc: SessionDescription, trunk: Trunk | None
    ) -> dict[str, Any] | None:
        """The relay's ``srtp`` field for the SDP ``leg_name``'s party sent; a leg whose
        party has sent none yet is given this one's profile (``sdes.mirror``), or for
        the callee's leg what its trunk's ``srtp`` says."""
        index = anchored_section(desc)
        state = media.sdes[leg_name]
        if index >= 0:
            receive(state, desc.media[index])
        other_name = "b" if leg_name == "a" else "a"
        other = media.sdes[other_name]
        if other.proto is None:
            policy = trunk.srtp if trunk is not None and other_name == "b" else None
            mirror(other, state, policy)
        return state.relay_field()

    def _target(self, info: LegInfo) -> tuple[MediaTarget, bytes | None]:
        relays = self.relays
        address = info.address
        if relays is not None:
            address = relays.advertised(address)
        raw = address.encode()
        return (
            MediaTarget((address_type(raw), raw), info.port, info.rtcp_port),
            info.cname.encode(),
        )

    async def _attach_rtpengine(
        self, call: Call, media: CallMedia, a: Leg, desc: SessionDescription | None
    ) -> None:
        ng = self.rtpengine
        if ng is None:
            raise MediaUnavailable("no rtpengine is configured")
        if desc is None:
            raise MediaUnavailable("an INVITE without an offer cannot be anchored by rtpengine")
        _, a.events_pt = leg_fields(desc)
        reply = await ng.offer(media.id, "a", _plain(desc))
        given = parse_sdp(str(reply.get("sdp", "")).encode())
        target = self._sunk(target_of(given))
        if target is None:
            raise MediaUnavailable("rtpengine gave no audio address for the offer")
        media.targets["b"] = (target, None)
        media.engine_srtp["b"] = _engine_srtp(given)
        media.offerer = "a"

    async def _update(
        self,
        call: Call,
        leg: Leg,
        desc: SessionDescription,
        offer: bool,
        then: Callable[[float], None],
        rebuild: tuple[Leg, SipMessage, SipMessage, int] | None,
    ) -> None:
        media: CallMedia = call.media
        fields, leg.events_pt = leg_fields(desc)
        try:
            if media.mode == "relay":
                relay = self._relay_for(media)
                other = "b" if leg.name == "a" else "a"
                was = media.mux["a"] and media.mux["b"]
                media.mux[leg.name] = fields.pop("mux", False)
                both = media.mux["a"] and media.mux["b"]
                fields["srtp"] = self._sdes(media, leg.name, desc, call.trunk)
                await relay.leg(media.id, leg.name, mux=both, **fields)
                if both != was:  # rtcp-mux is settled for the other party's leg too
                    await relay.leg(media.id, other, mux=both)
            else:
                await self._update_rtpengine(call, media, leg, desc, offer)
        except Exception as exc:
            log.warning(
                "media update failed: %s",
                exc,
                extra={"call_id": call.a_invite.call_id.decode(errors="replace")},
            )
        if media.ended or call.state == CallState.ENDED:
            return
        engine = self.engine
        assert engine is not None
        if rebuild is not None:
            self._rebuild(call, *rebuild)
        then(self.loop.time())
        engine.ep.flush()

    async def _update_rtpengine(
        self, call: Call, media: CallMedia, leg: Leg, desc: SessionDescription, offer: bool
    ) -> None:
        ng = self.rtpengine
        assert ng is not None
        other = "b" if leg.name == "a" else "a"
        if offer:
            reply = await ng.offer(media.id, leg.name, _plain(desc), to_tag=other)
            media.offerer = leg.name
        else:
            reply = await ng.answer(media.id, media.offerer, leg.name, _plain(desc))
        given = parse_sdp(str(reply.get("sdp", "")).encode())
        target = self._sunk(target_of(given))
        if target is not None:
            media.targets[other] = (target, None)
            media.engine_srtp[other] = _engine_srtp(given)
        if not offer and media.record and media.tap is None and self.relays is not None:
            relay = self._relay_for(media)
            media.tap = await start_recording_tap(
                ng, relay, media.id, ["a", "b"], meta=self._meta(call)
            )
            media.recording = media.tap.recording_id

    def _sunk(self, target: MediaTarget | None) -> MediaTarget | None:
        """rtpengine's ``target`` with the party's RTCP sent to the sink instead."""
        sink = self._sink
        if target is None or sink is None:
            return target
        return target._replace(rtcp_port=sink[1], rtcp_address=sink[0])

    @staticmethod
    def _meta(call: Call) -> dict[str, Any]:
        route = call.route
        return {
            "a_call_id": call.a_invite.call_id.decode(errors="replace"),
            "binding": getattr(route, "binding_id", None),
        }

    async def _delete(self, media: CallMedia) -> None:
        if media.closed:
            return
        media.closed = True
        if media.mode == "relay":
            if media.relay is not None:
                await self._command(media.relay.delete(media.id))
            return
        ng = self.rtpengine
        if media.tap is not None and ng is not None and self.relays is not None:
            relay = self._relay_for(media)
            await self._command(stop_recording_tap(ng, relay, media.tap))

    async def drain(self, timeout: float) -> None:
        """Wait (bounded) for the commands under way, the deletes of ended calls included."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)


def _engine_srtp(desc: SessionDescription) -> tuple[bytes | None, list[Attribute]]:
    """The profile and the SDES lines rtpengine wrote into its SDP for a leg (it keys
    each leg itself): what the party of that leg is sent instead of the other party's."""
    index = anchored_section(desc)
    if index < 0:
        return None, []
    section = desc.media[index]
    lines: list[Attribute] = list(crypto_lines(section))
    return section.proto, lines


def _plain(desc: SessionDescription) -> str:
    """An SDP for rtpengine written from the model (nothing the parser did not keep),
    without rtcp-mux: a party muxing would send its RTCP to rtpengine's RTP port, past
    the sink (no party is offered or answered rtcp-mux in this mode)."""
    return SdpBuilder(1, b"0.0.0.0").build(desc).replace(b"a=rtcp-mux\r\n", b"").decode()


class RelayPool(Supervisor):
    """The relay processes of ``media.relays``: started, supervised, restarted."""

    kind = "media relay"
    logger = log

    def __init__(self, settings: MediaSettings, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self.settings = settings
        self.loop = loop
        self.clients: dict[int, RelayClient] = {}
        self.on_event: Callable[[Event], None] | None = None
        self.on_lost: Callable[[int], None] | None = None
        self._advertise = {
            r.address: r.advertise for r in settings.relays if r.advertise is not None
        }

    def advertised(self, address: str) -> str:
        return self._advertise.get(address, address)

    def pick(self, media_id: str) -> tuple[int, RelayClient]:
        live = sorted(self.clients)
        index = live[zlib.crc32(media_id.encode()) % len(live)]
        return index, self.clients[index]

    async def start(self) -> None:
        await self._start(len(self.settings.relays))

    async def _spawn(self, index: int) -> None:
        relay = self.settings.relays[index]
        control = Path(relay.control)
        control.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with contextlib.suppress(FileNotFoundError):
            control.unlink()
        proc = await asyncio.create_subprocess_exec(
            *relay_argv(self.settings, index),
            stdin=asyncio.subprocess.DEVNULL,
            preexec_fn=dies_with_parent(),
        )
        self.procs[index] = proc
        deadline = self.loop.time() + _START_TIMEOUT
        while not control.exists():
            if proc.returncode is not None or self.loop.time() > deadline:
                raise RuntimeError(f"relay {index} did not start (exit {proc.returncode})")
            await asyncio.sleep(0.02)
        client = await RelayClient.connect(str(control), self._event)
        self.clients[index] = client
        log.info("media relay started", extra={"relay": index, "pid": proc.pid})

    def _event(self, event: Event) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _lost(self, index: int) -> None:
        client = self.clients.pop(index, None)
        if client is not None:
            client.close()
        if self.on_lost is not None:
            self.on_lost(index)

    async def stop(self, timeout: float = 5.0) -> None:
        for client in self.clients.values():
            client.close()
        await self._stop(timeout)


__all__ = ["CallMedia", "MediaAnchor", "RelayPool", "leg_fields", "session_of", "target_of"]
