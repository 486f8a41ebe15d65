"""In-process call engine benchmark: the Python work of one basic call, without sockets.

Drives the real SipEndpoint and CallEngine with the datagrams of a basic call (INVITE,
180, 200, ACK, BYE, 200) as a carrier and a callee trunk would send them, against a
store of --bindings ax bindings, and prints µs of CPU per call for the whole signalling
path (parse, validate, transactions, lookup, rewrite, serialize), sockets excluded.
With --cdr the calls' records are written as `ansim serve` writes them (to the
journal as each call ends, and by the SQLite writer thread beside), and the CPU
counted is the process's, the writer thread's included. Use it to measure a hot-path
change before and after; bench/cps.py measures the engine end to end with SIPp.

    .venv/bin/python bench/engine_bench.py [--calls 20000] [--profile] [--cdr [--fsync]]
        [--limits off|lists|counted]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import heapq
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from b2bua.calls import CallEngine
from b2bua.cdr import CdrWriter
from b2bua.endpoint import SipEndpoint
from b2bua.flood import FloodGuard, FloodLimits
from b2bua.overload import OverloadDetector
from b2bua.serve import age_out_gc, tune_gc
from b2bua.sip.parser import parse_datagram
from b2bua.trunks import TrunkConfig, TrunkTable
from translate.abuse_store import AbuseStore
from translate.bindings import Binding
from translate.limits import Caps, Limits, LimitSettings, MarketingRule
from translate.numbers import NumberPlan
from translate.store import Store

CARRIER = ("udp", "127.0.0.1", 5070)
CALLEE = ("udp", "127.0.0.1", 5080)


class Handle:
    __slots__ = ("args", "cancelled", "fn", "when")

    def __init__(self, when: float, fn: Any, args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args: tuple[Any, ...] | None = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = self.args = None  # as asyncio's and uvloop's handles drop them

    def __lt__(self, other: Handle) -> bool:
        return self.when < other.when


class FakeLoop:
    """Time and timers for the endpoint and the engine: the clock moves when told, and
    the timers due by then run, as the event loop would run them."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.heap: list[Handle] = []

    def time(self) -> float:
        return self.t

    def call_at(self, when: float, fn: Any, *args: Any) -> Handle:
        h = Handle(when, fn, args)
        heapq.heappush(self.heap, h)
        return h

    def call_later(self, delay: float, fn: Any, *args: Any) -> Handle:
        return self.call_at(self.t + delay, fn, *args)

    def advance(self, dt: float) -> None:
        self.t += dt
        heap = self.heap
        while heap and heap[0].when <= self.t:
            h = heapq.heappop(heap)
            if h.args is not None:  # not cancelled
                h.fn(*h.args)


INVITE = (
    "INVITE sip:{x}@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-1\r\n"
    "From: <sip:{c}@127.0.0.1:5070>;tag={n}SIPpTag001\r\n"
    "To: <sip:{x}@127.0.0.1:5060>\r\n"
    "Call-ID: {n}-call@127.0.0.1\r\n"
    "CSeq: 1 INVITE\r\n"
    "Contact: <sip:{c}@127.0.0.1:5070>\r\n"
    "Max-Forwards: 70\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 129\r\n\r\n"
    "v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    "t=0 0\r\nm=audio 6004 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)
ACK = (
    "ACK sip:{x}@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-2\r\n"
    "From: <sip:{c}@127.0.0.1:5070>;tag={n}SIPpTag001\r\n"
    "To: <sip:{x}@127.0.0.1:5060>;tag={totag}\r\n"
    "Call-ID: {n}-call@127.0.0.1\r\n"
    "CSeq: 1 ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
BYE = (
    "BYE sip:ansim@127.0.0.1:5060 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-{n}-3\r\n"
    "From: <sip:{c}@127.0.0.1:5070>;tag={n}SIPpTag001\r\n"
    "To: <sip:{x}@127.0.0.1:5060>;tag={totag}\r\n"
    "Call-ID: {n}-call@127.0.0.1\r\n"
    "CSeq: 2 BYE\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)
SDP = (
    b"v=0\r\no=- 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
    b"t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


def answer(request: bytes, status: bytes, tag: bytes, body: bytes = b"") -> bytes:
    """What the callee trunk sends back for ``request``: headers echoed, its tag added."""
    msg = parse_datagram(request)
    out = [b"SIP/2.0 " + status]
    for name, value in msg.header_items():
        if name in (b"via", b"from", b"call-id", b"cseq"):
            out.append(name.title() + b": " + value)
        elif name == b"to":
            out.append(b"To: " + value + (b"" if b"tag=" in value else b";tag=" + tag))
    out.append(b"Contact: <sip:callee@127.0.0.1:5080;transport=udp>")
    if body:
        out.append(b"Content-Type: application/sdp")
    out.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(out) + b"\r\n\r\n" + body


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--bindings", type=int, default=100_000)
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    ap.add_argument(
        "--interval", type=float, default=0.0004, help="simulated seconds between calls"
    )
    ap.add_argument(
        "--no-gc", action="store_true", help="run with the cyclic garbage collector off"
    )
    ap.add_argument("--cdr", action="store_true", help="write CDRs (journal and SQLite)")
    ap.add_argument("--fsync", action="store_true", help="with --cdr: fdatasync the journal")
    ap.add_argument(
        "--limits",
        choices=("off", "lists", "counted"),
        default="off",
        help="decide calls through translate.limits: lists (blocklists read, nothing "
        "counted) or counted (caps per binding per hour and day, per virtual number per "
        "hour, the marketing rule: a write transaction in the shared limits store per call)",
    )
    args = ap.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="ansim-engine-bench-") as tmp,
        Store(Path(tmp) / "numbers.lmdb", sync=False) as store,
    ):
        bench(args, store, Path(tmp))


def bench(args: argparse.Namespace, store: Store, tmp: Path) -> None:
    """Drive the engine through ``args.calls`` calls against ``store`` and print the cost."""
    store.put_many(
        (Binding(f"b{i}", "ax", f"+82507{i:08d}", f"+8210{i:08d}") for i in range(args.bindings)),
        now=time.time(),
        source="api",
    )
    loop = FakeLoop()
    # flood protection and overload control on, as `ansim serve` runs them: the carrier
    # and the callee are trusted sources, and nothing is shed
    ep = SipEndpoint(flood=FloodGuard(FloodLimits(), ["127.0.0.0/8"]), overload=OverloadDetector())
    ep._loop = loop  # type: ignore[assignment]
    ep.add_sent_by("127.0.0.1", 5060)
    sent: list[tuple[bytes, Any]] = []

    class Wire:
        """Stands in for the UDP socket: keeps what the engine sends."""

        def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
            sent.append((data, ("udp", addr[0], addr[1])))

    ep.transports.attach_udp(Wire())
    trunks = TrunkTable(
        TrunkConfig.model_validate(
            {
                "trunks": [
                    {"name": "callee", "accept_from": ["127.0.0.0/8"], "address": "127.0.0.1:5080"}
                ],
                "routes": [{"prefix": "+", "trunks": ["callee"]}],
            }
        )
    )
    cdr = CdrWriter(tmp / "cdr.sqlite", fsync=args.fsync) if args.cdr else None
    limits = None
    if args.limits != "off":
        settings = LimitSettings()
        if args.limits == "counted":
            big = Caps(calls_per_hour=10**6, calls_per_day=10**6)
            settings = LimitSettings(
                binding=big,
                virtual=Caps(calls_per_hour=10**6),
                marketing=MarketingRule(distinct=10**6),
            )
        limits = Limits(store, AbuseStore(tmp / "limits.lmdb"), settings)
    engine = CallEngine(
        ep,
        store,
        trunks,
        plan=NumberPlan(),
        advertise={"udp": ("127.0.0.1", 5060)},
        cdr=cdr,
        call_later=loop.call_later,
        limits=limits,
    )
    ep.user = engine

    # Pre-build every datagram the peers send, so that only the engine's work is timed.
    def run(first: int, n: int) -> float:
        cpu = 0.0
        for i in range(first, first + n):
            x, c = f"+82507{i % args.bindings:08d}", f"+8211{i:08d}"
            sent.clear()
            inv = INVITE.format(x=x, c=c, n=i).encode()
            t0 = time.process_time()
            ep.on_datagram(inv, CARRIER)
            cpu += time.process_time() - t0
            b_invite = next(d for d, p in sent if p == CALLEE)
            ringing = answer(b_invite, b"180 Ringing", b"cal%d" % i)
            ok = answer(b_invite, b"200 OK", b"cal%d" % i, SDP)
            sent.clear()
            t0 = time.process_time()
            ep.on_datagram(ringing, CALLEE)
            ep.on_datagram(ok, CALLEE)
            cpu += time.process_time() - t0
            a_ok = next(d for d, p in sent if p == CARRIER and d.startswith(b"SIP/2.0 200"))
            totag = parse_datagram(a_ok).to_tag.decode()  # type: ignore[union-attr]
            ack = ACK.format(x=x, c=c, n=i, totag=totag).encode()
            bye = BYE.format(x=x, c=c, n=i, totag=totag).encode()
            sent.clear()
            t0 = time.process_time()
            ep.on_datagram(ack, CARRIER)
            ep.on_datagram(bye, CARRIER)
            cpu += time.process_time() - t0
            b_bye = next(d for d, p in sent if p == CALLEE and d.startswith(b"BYE"))
            bye_ok = answer(b_bye, b"200 OK", b"cal%d" % i)
            t0 = time.process_time()
            ep.on_datagram(bye_ok, CALLEE)
            cpu += time.process_time() - t0
            t0 = time.process_time()
            loop.advance(args.interval)
            if int(loop.t) != int(loop.t - args.interval):  # once a second, as `ansim serve`
                engine.release_ended(loop.t)
                if cdr is not None:
                    cdr.flush()
                if not args.no_gc:
                    age_out_gc()
            cpu += time.process_time() - t0
        return cpu

    if args.no_gc:
        gc.disable()
    else:
        tune_gc()  # as `ansim serve` does
    warm = min(2000, args.calls)
    run(0, warm)  # warm up
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        cpu = run(warm, args.calls)
        prof.disable()
        pstats.Stats(prof).sort_stats("cumtime").print_stats(45)
    else:
        cpu = run(warm, args.calls)
    done = engine.stats.calls.get("completed", 0) - warm
    if cdr is not None:
        cdr.close()
        print(f"CDRs: {cdr.written} written, {cdr.journal_errors} journal errors")
    if limits is not None:
        print(
            f"limits: {args.limits}, {limits.errors} store errors, {dict(limits.refused)} refused"
        )
    print(
        f"{args.calls} calls ({done} completed), one every {args.interval * 1000:g} ms simulated: "
        f"{cpu / args.calls * 1e6:.1f} us CPU per call, 6 datagrams in, 7 out; "
        f"{ep.pending()} transactions alive at the end"
    )
    # Let every transaction end, release the ended calls, and count what only the cyclic
    # collector could free: the engine's design keeps that at zero (see age_out_gc).
    loop.advance(60.0)
    engine.release_ended(loop.t)
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.unfreeze()
    found = gc.collect()
    kinds = Counter(type(o).__name__ for o in gc.garbage)
    print(
        f"after the last transaction ended: {ep.pending()} transactions, {found} objects in"
        f" garbage cycles ({found / args.calls:.2f} per call)"
        + (f": {dict(kinds.most_common(8))}" if found else "")
    )


if __name__ == "__main__":
    main()
