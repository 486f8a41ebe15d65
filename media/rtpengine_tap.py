"""Recording a call whose media runs through rtpengine: a media copy into the relay.

rtpengine's own recording (``start recording`` and its recording daemon) writes
plaintext pcap or WAV files, so ansim never uses it. Instead, with rtpengine 10.5's
media subscriptions, rtpengine sends a copy of each party's audio to a relay process,
which encrypts it exactly as it does calls it relays itself:

1. ``subscribe request`` for the call's parties (their From/To tags): rtpengine answers
   with a sendonly offer, one audio section per party, in the order of the tags;
2. the relay opens one receive-only leg per section on a call of its own
   (``<call id>/rec``), channel 0 for the first party and 1 for the second, latched on
   the address rtpengine sends from, with the codecs of the offer;
3. ``subscribe answer`` with a recvonly SDP naming those legs' ports: rtpengine starts
   forwarding; 4. the relay's ``record`` starts the encrypted recording.

:func:`stop_recording_tap` unsubscribes and deletes the relay call, which closes the
recording with its end marker.

Only the little SDP that rtpengine writes for a subscription is read here (``c=``,
``m=``, ``a=rtpmap``, ``a=rtcp``, ``a=mid``); the engine's own SDP handling is not
involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from media.client import RelayClient
from media.rtpengine import RtpengineClient

__all__ = [
    "RecordingTap",
    "TapSection",
    "parse_tap_offer",
    "start_recording_tap",
    "stop_recording_tap",
]


@dataclass
class TapSection:
    """One audio section of rtpengine's subscription offer."""

    address: str
    port: int
    proto: str
    formats: list[int]
    rtpmap: dict[int, str] = field(default_factory=dict)
    rtcp_port: int | None = None
    mid: str | None = None


@dataclass(frozen=True)
class RecordingTap:
    """What :func:`stop_recording_tap` needs to undo a tap."""

    call_id: str
    to_tag: str
    relay_call: str
    recording_id: str
    path: str


def parse_tap_offer(sdp: str) -> list[TapSection]:
    """The audio sections of a subscription offer, in order."""
    session_c: str | None = None
    sections: list[TapSection] = []
    current: TapSection | None = None
    media_c: dict[int, str] = {}
    for raw in sdp.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "c":
            parts = value.split()
            if len(parts) >= 3:
                if current is None:
                    session_c = parts[2].split("/")[0]
                else:
                    media_c[len(sections) - 1] = parts[2].split("/")[0]
        elif kind == "m":
            parts = value.split()
            current = None
            if len(parts) >= 4 and parts[0] == "audio":
                current = TapSection(
                    "", int(parts[1]), parts[2], [int(f) for f in parts[3:] if f.isdigit()]
                )
                sections.append(current)
            else:
                sections.append(TapSection("", 0, "", []))  # keeps the indices of the tags
        elif kind == "a" and current is not None:
            name, _, rest = value.partition(":")
            if name == "rtpmap":
                pt, _, spec = rest.partition(" ")
                if pt.isdigit():
                    current.rtpmap[int(pt)] = spec.strip()
            elif name == "rtcp":
                port = rest.split()[0] if rest else ""
                if port.isdigit():
                    current.rtcp_port = int(port)
            elif name == "mid":
                current.mid = rest.strip()
    for i, section in enumerate(sections):
        section.address = media_c.get(i) or session_c or ""
    return sections


def tap_answer(sections: Sequence[TapSection], address: str, ports: Sequence[int]) -> str:
    """The recvonly answer: every section accepted at the relay's port, codecs unchanged."""
    family = "IP6" if ":" in address else "IP4"
    lines = ["v=0", f"o=- 1 1 IN {family} {address}", "s=-", f"c=IN {family} {address}", "t=0 0"]
    for section, port in zip(sections, ports, strict=True):
        if not section.formats or port == 0:
            lines.append(
                f"m=audio 0 {section.proto or 'RTP/AVP'} {section.formats[0] if section.formats else 0}"
            )
            continue
        lines.append(f"m=audio {port} {section.proto} {' '.join(map(str, section.formats))}")
        lines.extend(
            f"a=rtpmap:{pt} {section.rtpmap[pt]}" for pt in section.formats if pt in section.rtpmap
        )
        if section.mid is not None:
            lines.append(f"a=mid:{section.mid}")
        lines.append(f"a=rtcp:{port + 1}")
        lines.append("a=recvonly")
    return "\r\n".join(lines) + "\r\n"


async def start_recording_tap(
    ng: RtpengineClient,
    relay: RelayClient,
    call_id: str,
    tags: Sequence[str],
    recording_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> RecordingTap:
    """Have rtpengine copy the parties ``tags`` (at most two) to the relay, and record them."""
    if not 1 <= len(tags) <= 2:
        raise ValueError("a recording has one or two parties")
    offer = await ng.subscribe_request(call_id, list(tags))
    to_tag = str(offer["to-tag"])
    sections = parse_tap_offer(str(offer["sdp"]))
    relay_call = f"{call_id}/rec"
    ports: list[int] = []
    address = ""
    try:
        for channel, section in enumerate(sections[:2]):
            if not section.formats or section.port == 0:
                ports.append(0)
                continue
            info = await relay.leg(
                relay_call,
                f"tap{channel}",
                remote=(section.address, section.port),
                rtcp=(section.address, section.rtcp_port) if section.rtcp_port else None,
                direction="sendonly",
                channel=channel,
                codecs=section.rtpmap,
            )
            address = info.address
            ports.append(info.port)
        await ng.subscribe_answer(call_id, to_tag, tap_answer(sections[:2], address, ports))
        result = await relay.record(
            relay_call, recording_id=recording_id, meta={"call": call_id, **(meta or {})}
        )
    except BaseException:
        await _undo(ng, relay, call_id, to_tag, relay_call)
        raise
    return RecordingTap(call_id, to_tag, relay_call, str(result["recording"]), str(result["path"]))


async def _undo(
    ng: RtpengineClient, relay: RelayClient, call_id: str, to_tag: str, relay_call: str
) -> None:
    try:
        await ng.unsubscribe(call_id, to_tag)
    except Exception:
        pass
    try:
        await relay.delete(relay_call)
    except Exception:
        pass


async def stop_recording_tap(
    ng: RtpengineClient, relay: RelayClient, tap: RecordingTap
) -> dict[str, Any]:
    """Stop the copy and close the recording; return the relay legs' counters."""
    try:
        await ng.unsubscribe(tap.call_id, tap.to_tag)
    except Exception:
        pass  # the call may be gone from rtpengine already: the recording still closes
    return await relay.delete(tap.relay_call)
