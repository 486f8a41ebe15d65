"""A call leaves no garbage cycles: once its transactions have ended it is freed at once.

``ansim serve`` freezes what it allocates out of cyclic garbage collection every second
(``b2bua.serve.age_out_gc``), so a reference cycle left by a call would never be freed.
These tests drive the real endpoint and call engine in-process, on a simulated clock,
through several call flows, let every transaction end, release the ended calls as the
engine's housekeeping does, and then ask the collector what only it could free: nothing
may be left, and no call object may remain alive.
"""

from __future__ import annotations

import gc
import heapq
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from b2bua.calls import Call, CallEngine
from b2bua.endpoint import SipEndpoint
from b2bua.sip.parser import parse_datagram
from b2bua.trunks import TrunkConfig, TrunkTable
from translate.bindings import Binding
from translate.numbers import NumberPlan
from translate.store import Store

CARRIER = ("udp", "127.0.0.1", 5070)
CALLEE = ("udp", "127.0.0.1", 5080)
X, A, C = "+8250700000001", "+821000000001", "+821100000001"
# Where the objects a call creates come from (configuration and set-up objects aside).
PER_CALL_MODULES = frozenset(
    {
        "b2bua.calls",
        "b2bua.call",
        "b2bua.bridge",
        "b2bua.indialog",
        "b2bua.sip.message",
        "b2bua.sip.uri",
        "b2bua.sip.via",
        "b2bua.sip.dialog",
        "b2bua.sip.sdp",
        "b2bua.sip.transaction",
        "translate.bindings",
    }
)


class Handle:
    def __init__(self, when: float, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        self.when, self.fn, self.args, self.cancelled = when, fn, args, False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = self.args = None  # type: ignore[assignment]  # as asyncio's handles do

    def __lt__(self, other: Handle) -> bool:
        return self.when < other.when


class Clock:
    """Simulated time and timers, run as the event loop would run them."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.heap: list[Handle] = []

    def time(self) -> float:
        return self.t

    def call_at(self, when: float, fn: Callable[..., None], *args: Any) -> Handle:
        h = Handle(when, fn, args)
        heapq.heappush(self.heap, h)
        return h

    def call_later(self, delay: float, fn: Callable[..., None], *args: Any) -> Handle:
        return self.call_at(self.t + delay, fn, *args)

    def advance(self, dt: float) -> None:
        end = self.t + dt
        while self.heap and self.heap[0].when <= end:
            h = heapq.heappop(self.heap)
            self.t = max(self.t, h.when)
            if not h.cancelled:
                h.fn(*h.args)
        self.t = end


class Wire:
    """Stands in for the UDP socket: keeps what the engine sends."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, tuple[str, str, int]]] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append((data, ("udp", addr[0], addr[1])))

    def take(self, peer: tuple[str, str, int], start: bytes) -> bytes:
        for i, (data, to) in enumerate(self.sent):
            if to == peer and data.startswith(start):
                del self.sent[i]
                return data
        raise AssertionError(f"nothing starting {start!r} sent to {peer}: {self.sent}")


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.store = Store(tmp / "numbers.lmdb", sync=False)
        self.store.put_many([Binding("b1", "ax", X, A)], now=0.0, source="api")
        self.clock = Clock()
        self.ep = SipEndpoint()
        self.ep._loop = self.clock  # type: ignore[assignment]
        self.ep.add_sent_by("127.0.0.1", 5060)
        self.wire = Wire()
        self.ep.transports.attach_udp(self.wire)  # type: ignore[arg-type]
        config = {
            "trunks": [
                {"name": "callee", "accept_from": ["127.0.0.0/8"], "address": "127.0.0.1:5080"}
            ],
            "routes": [{"prefix": "+", "trunks": ["callee"]}],
        }
        self.engine = CallEngine(
            self.ep,
            self.store,
            TrunkTable(TrunkConfig.model_validate(config)),
            plan=NumberPlan(),
            advertise={"udp": ("127.0.0.1", 5060)},
            call_later=self.clock.call_later,
        )
        self.ep.user = self.engine

    def from_carrier(self, data: bytes) -> None:
        self.ep.on_datagram(data, CARRIER)

    def from_callee(self, data: bytes) -> None:
        self.ep.on_datagram(data, CALLEE)


def a_request(
    method: str, n: int, cseq: int, *, branch: str, to_tag: str = "", x: str = X
) -> bytes:
    to = f"<sip:{x}@127.0.0.1:5060>" + (f";tag={to_tag}" if to_tag else "")
    body = ""
    extra = ""
    if method == "INVITE":
        body = "v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6004 RTP/AVP 0\r\n"
        extra = f"Contact: <sip:{C}@127.0.0.1:5070>\r\nContent-Type: application/sdp\r\n"
    ruri = f"sip:{x}@127.0.0.1:5060"
    return (
        f"{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-{branch}\r\n"
        f"From: <sip:{C}@127.0.0.1:5070>;tag=a{n}\r\nTo: {to}\r\nCall-ID: call-{n}@carrier\r\n"
        f"CSeq: {cseq} {'INVITE' if method == 'ACK' and branch == 'i' else method}\r\n"
        f"Max-Forwards: 70\r\n{extra}Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def answer(request: bytes, status: str, tag: str, sdp: bool = False) -> bytes:
    """The callee trunk's response to ``request``: headers echoed, its To tag added."""
    msg = parse_datagram(request)
    out = [f"SIP/2.0 {status}".encode()]
    for name, value in msg.header_items():
        if name in (b"via", b"from", b"call-id", b"cseq"):
            out.append(name.title() + b": " + value)
        elif name == b"to":
            out.append(
                b"To: " + value + (b"" if value.find(b"tag=") >= 0 else b";tag=" + tag.encode())
            )
    body = b"v=0\r\no=b 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0\r\n"
    out.append(b"Contact: <sip:callee@127.0.0.1:5080>")
    if sdp:
        out.append(b"Content-Type: application/sdp")
    out.append(b"Content-Length: %d" % (len(body) if sdp else 0))
    return b"\r\n".join(out) + b"\r\n\r\n" + (body if sdp else b"")


def callee_bye(b_invite: bytes, tag: str, n: int) -> bytes:
    inv = parse_datagram(b_invite)
    frm, to = inv.get(b"to"), inv.get(b"from")
    assert frm is not None and to is not None
    head = f"BYE sip:ansim@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK-b{n}\r\n"
    return (
        head.encode() + b"From: " + frm + b";tag=" + tag.encode() + b"\r\nTo: " + to
        + b"\r\nCall-ID: " + inv.call_id
        + b"\r\nCSeq: 1 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )  # fmt: skip


def tag_of(response: bytes) -> str:
    tag = parse_datagram(response).to_tag
    assert tag is not None
    return tag.decode()


def answered(rig: Rig, n: int) -> tuple[bytes, str]:
    rig.from_carrier(a_request("INVITE", n, 1, branch="i"))
    b_invite = rig.wire.take(CALLEE, b"INVITE")
    rig.from_callee(answer(b_invite, "180 Ringing", f"b{n}"))
    rig.from_callee(answer(b_invite, "200 OK", f"b{n}", sdp=True))
    a_tag = tag_of(rig.wire.take(CARRIER, b"SIP/2.0 200"))
    rig.from_carrier(a_request("ACK", n, 1, branch="ack", to_tag=a_tag))
    rig.wire.take(CALLEE, b"ACK")
    return b_invite, a_tag


def caller_hangs_up(rig: Rig, n: int) -> None:
    _, a_tag = answered(rig, n)
    rig.from_carrier(a_request("BYE", n, 2, branch="bye", to_tag=a_tag))
    rig.from_callee(answer(rig.wire.take(CALLEE, b"BYE"), "200 OK", f"b{n}"))
    rig.wire.take(CARRIER, b"SIP/2.0 200")


def callee_hangs_up(rig: Rig, n: int) -> None:
    b_invite, _ = answered(rig, n)
    rig.from_callee(callee_bye(b_invite, f"b{n}", n))
    bye = rig.wire.take(CARRIER, b"BYE")
    rig.from_carrier(answer(bye, "200 OK", "ignored"))
    rig.wire.take(CALLEE, b"SIP/2.0 200")


def busy(rig: Rig, n: int) -> None:
    rig.from_carrier(a_request("INVITE", n, 1, branch="i"))
    rig.from_callee(answer(rig.wire.take(CALLEE, b"INVITE"), "486 Busy Here", f"b{n}"))
    rig.wire.take(CALLEE, b"ACK")
    a_tag = tag_of(rig.wire.take(CARRIER, b"SIP/2.0 486"))
    rig.from_carrier(a_request("ACK", n, 1, branch="i", to_tag=a_tag))


def cancelled(rig: Rig, n: int) -> None:
    rig.from_carrier(a_request("INVITE", n, 1, branch="i"))
    b_invite = rig.wire.take(CALLEE, b"INVITE")
    rig.from_callee(answer(b_invite, "180 Ringing", f"b{n}"))
    rig.from_carrier(a_request("CANCEL", n, 1, branch="i"))
    rig.wire.take(CARRIER, b"SIP/2.0 200")  # to the CANCEL
    rig.from_callee(answer(rig.wire.take(CALLEE, b"CANCEL"), "200 OK", f"b{n}"))
    rig.from_callee(answer(b_invite, "487 Request Terminated", f"b{n}"))
    rig.wire.take(CALLEE, b"ACK")
    a_tag = tag_of(rig.wire.take(CARRIER, b"SIP/2.0 487"))
    rig.from_carrier(a_request("ACK", n, 1, branch="i", to_tag=a_tag))


def unknown_number(rig: Rig, n: int) -> None:
    rig.from_carrier(a_request("INVITE", n, 1, branch="i", x="+8250799999999"))
    a_tag = tag_of(rig.wire.take(CARRIER, b"SIP/2.0 404"))
    rig.from_carrier(a_request("ACK", n, 1, branch="i", to_tag=a_tag, x="+8250799999999"))


@pytest.fixture
def collector() -> Iterator[None]:
    """Every object the collector frees during the test is kept in gc.garbage."""
    gc.collect()
    gc.garbage.clear()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.parametrize(
    "flow", [caller_hangs_up, callee_hangs_up, busy, cancelled, unknown_number]
)
def test_a_call_leaves_no_garbage_cycle(
    flow: Callable[[Rig, int], None], tmp_path: Path, collector: None
) -> None:
    rig = Rig(tmp_path)
    for n in range(20):
        flow(rig, n)
        rig.clock.advance(0.05)
    assert rig.engine.stats.calls, "no call reached its end"
    assert not rig.engine.calls
    rig.clock.advance(rig.engine.linger + 1)
    assert rig.ep.pending() == 0  # every transaction has ended
    released = rig.engine.release_ended(rig.clock.t)
    assert released == 20
    gc.collect()
    ours = [o for o in gc.garbage if type(o).__module__ in PER_CALL_MODULES]
    assert ours == [], f"{len(ours)} per-call objects were freed only by the cycle collector"
    assert not [o for o in gc.get_objects() if isinstance(o, Call)], "a call is still alive"
    rig.store.close()
