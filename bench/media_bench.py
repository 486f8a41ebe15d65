"""RTP relay throughput and added latency: one ansim relay process against rtpengine.

    flock /tmp/ansim-heavy.lock .venv/bin/python bench/media_bench.py [--calls 250,500,750,1000]

The load is G.711 at 20 ms: every call has two streams (A to B and B to A), each 50
packets/s of 172 bytes (a 12-byte RTP header and 160 bytes of payload), so C calls are
``2 C`` streams and ``100 C`` packets/s *forwarded* (received by the relay and sent on).
What a relay process handles is twice that: ``200 C`` packets/s, ``100 C`` in and
``100 C`` out. The issue's target, 100,000 packets/s handled by one relay process, is
500 calls (50,000 packets/s in and 50,000 out); its latency target is an added p99 of
at most 1 ms at half that load (250 calls).

Each step runs three systems in turn with the same generator:

``direct``
    the generator's party sockets send straight to each other: no relay. This is what
    the generator and receiver themselves sustain (and the latency baseline: Python
    sender, loopback, Python receiver).
``ansim``
    through one ``python -m media.relay`` process (uvloop), every call two legs
    bridged over the control socket.
``ansim-rec``
    the same, with every call recorded (encrypted to a 2048-bit RSA key, written to
    a temporary folder).
``ansim-srtp``
    the same relay with both legs of every call on SRTP (AES_CM_128_HMAC_SHA1_80): the
    relay decrypts each packet with the sending party's key and encrypts it with the
    receiving leg's own. The generator encrypts what it sends and decrypts what it
    receives (pylibsrtp), which costs it CPU too: it saturates at fewer calls.
``rtpengine``
    through the Debian rtpengine daemon in userspace mode (``--table=-1``, all its
    threads), every call set up with an ng offer and answer.

The system under test runs on CPU 1, the generator on CPU 0 (``--no-pin`` leaves the
scheduler free). The generator is one sender process, with all streams of one side
on one socket, each stream's packets spread evenly over the 20 ms (phase
``i/streams``), sent in the batch that is due each time the sender wakes (it sleeps
rather than spins: the receiver shares its CPU); one receiver process reads both
sides' sockets. Each packet carries
its stream id (as SSRC), sequence number and send time (``time.perf_counter_ns``,
one clock for both processes). A step sends for ``--warmup`` + ``--seconds`` and then
drains for half a second: *lost* is sent minus received over the whole step;
latency (send to receive) is over the measured seconds; *added* is the system's
percentile minus the direct path's at the same step. CPU is the system's
utime+stime over the measured seconds, in % of one core.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import json
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from media.client import RelayClient  # noqa: E402
from media.rtpengine import RtpengineClient  # noqa: E402

PACKET = 172
PTIME_NS = 20_000_000
HIST_US = 200_000  # latencies at or above 200 ms share the last bucket
_HDR = struct.Struct(">BBHII")  # RTP fixed header
_T = struct.Struct(">QI")  # send time (ns), stream sequence: at the start of the payload
A_IP, B_IP = "127.0.0.2", "127.0.0.3"


def pin(cpu: int | None) -> None:
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})


def big_buffers(sock: socket.socket) -> None:
    for opt in (getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF):
        if opt is None:
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 32 << 20)
            return
        except OSError:
            continue


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- generator -------------------------------------------------------------------------


# SRTP keys of the ansim-srtp system: what each side sends with, and what the relay
# sends it with (the same for every call: one libsrtp session a side, one stream a SSRC).
SRTP_SUITE = "AES_CM_128_HMAC_SHA1_80"
SRTP_KEYS = {side: (os.urandom(30), os.urandom(30)) for side in (0, 1)}


def srtp_session(key: bytes, inbound: bool) -> Any:
    from pylibsrtp import Policy, Session

    ssrc = Policy.SSRC_ANY_INBOUND if inbound else Policy.SSRC_ANY_OUTBOUND
    return Session(Policy(key, ssrc, srtp_profile=Policy.SRTP_PROFILE_AES128_CM_SHA1_80))


def sender(
    sock_a: socket.socket,
    sock_b: socket.socket,
    targets: list[tuple[int, tuple[str, int]]],
    start_ns: int,
    stop_ns: int,
    result: Any,
    cpu: int | None,
    srtp: bool = False,
) -> None:
    """Send each stream's packets every 20 ms, spread over the period, until ``stop_ns``."""
    pin(cpu)
    protect = None
    if srtp:
        tx = {side: srtp_session(SRTP_KEYS[side][0], False).protect for side in (0, 1)}
        protect = [tx[side] for side, _ in targets]
    n = len(targets)
    buf = bytearray(PACKET)
    view = memoryview(buf)
    seqs = [0] * n
    socks = [sock_a if side == 0 else sock_b for side, _ in targets]
    addrs = [addr for _, addr in targets]
    sendtos = [s.sendto for s in socks]
    offsets = [PTIME_NS * i // n for i in range(n)]
    sent = 0
    late_max = 0
    now_ns = time.perf_counter_ns
    sleep = time.sleep
    period = start_ns
    pack_hdr, pack_t = _HDR.pack_into, _T.pack_into
    i = 0
    while period < stop_ns:
        t = now_ns()
        if period + offsets[i] <= t:
            late_max = max(late_max, t - period - offsets[i])
        # Send every stream that is due (a batch after each sleep), then sleep until the
        # next one is: the receiver shares this CPU, so the sender never spins.
        while i < n and period + offsets[i] <= t:
            seq = seqs[i]
            pack_hdr(buf, 0, 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, i)
            pack_t(buf, 12, now_ns(), seq)
            try:
                if protect is not None:
                    sendtos[i](protect[i](bytes(view)), addrs[i])
                else:
                    sendtos[i](view, addrs[i])
                sent += 1
            except OSError:
                pass
            seqs[i] = seq + 1
            i += 1
        if i == n:
            i = 0
            period += PTIME_NS
            continue
        wait = period + offsets[i] - now_ns()
        if wait > 0:
            sleep(wait / 1e9)
    result.put({"sent": sent, "late_max_us": late_max // 1000})


def receiver(
    socks: list[socket.socket],
    streams: int,
    measure_from_ns: int,
    stop_ns: int,
    result: Any,
    cpu: int | None,
    srtp: bool = False,
) -> None:
    """Read both sides until no packet for 0.5 s after ``stop_ns``; latency histogram in µs."""
    pin(cpu)
    for s in socks:
        s.setblocking(False)
    ep = select.epoll()
    fds: dict[int, Any] = {}
    for side, s in enumerate(socks):
        ep.register(s.fileno(), select.EPOLLIN)
        fds[s.fileno()] = s.recv_into
        if srtp:
            fds[s.fileno()] = _decrypting(s, srtp_session(SRTP_KEYS[side][1], True).unprotect)
    buf = bytearray(2048)
    hist = array.array("q", bytes(8 * (HIST_US + 1)))
    received = 0
    measured = 0
    per_stream = array.array("q", bytes(8 * streams))
    now_ns = time.perf_counter_ns
    unpack_t = _T.unpack_from
    last = now_ns()
    while True:
        events = ep.poll(0.1)
        t = now_ns()
        if not events:
            if t > stop_ns + 500_000_000 and t - last > 500_000_000:
                break
            continue
        for fd, _ in events:
            recv_into = fds[fd]
            while True:
                try:
                    n = recv_into(buf)
                except BlockingIOError:
                    break
                t = now_ns()
                if n < 24:
                    continue
                received += 1
                stream = (buf[8] << 24) | (buf[9] << 16) | (buf[10] << 8) | buf[11]
                if stream < streams:
                    per_stream[stream] += 1
                sent_ns, _ = unpack_t(buf, 12)
                if sent_ns >= measure_from_ns:
                    measured += 1
                    hist[min((t - sent_ns) // 1000, HIST_US)] += 1
        last = t
    result.put(
        {
            "received": received,
            "measured": measured,
            "hist": hist.tobytes(),
            "streams_seen": sum(1 for c in per_stream if c),
        }
    )


def _decrypting(sock: socket.socket, unprotect: Any) -> Any:
    """A ``recv_into`` that leaves the decrypted packet in the buffer (0: dropped)."""
    recv = sock.recv

    def recv_into(buf: bytearray) -> int:
        data = recv(2048)
        try:
            plain = unprotect(data)
        except Exception:
            return 0
        buf[: len(plain)] = plain
        return len(plain)

    return recv_into


def percentile(hist: array.array[int], total: int, q: float) -> float:
    if total == 0:
        return float("nan")
    rank = q * total
    seen = 0
    for us, count in enumerate(hist):
        seen += count
        if seen >= rank:
            return float(us)
    return float(HIST_US)


def run_load(
    sock_a: socket.socket,
    sock_b: socket.socket,
    targets: list[tuple[int, tuple[str, int]]],
    warmup: float,
    seconds: float,
    pid: int | None,
    pin_cpu: bool,
    srtp: bool = False,
) -> dict[str, Any]:
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    q_send, q_recv = ctx.Queue(), ctx.Queue()
    start = time.perf_counter_ns() + 300_000_000
    measure_from = start + int(warmup * 1e9)
    stop = measure_from + int(seconds * 1e9)
    gen_cpu = 0 if pin_cpu else None
    rx = ctx.Process(
        target=receiver,
        args=([sock_a, sock_b], len(targets), measure_from, stop, q_recv, gen_cpu, srtp),
    )
    tx = ctx.Process(
        target=sender, args=(sock_a, sock_b, targets, start, stop, q_send, gen_cpu, srtp)
    )
    rx.start()
    tx.start()
    cpu0 = None
    if pid is not None:
        time.sleep(max(0.0, (measure_from - time.perf_counter_ns()) / 1e9))
        cpu0 = cpu_seconds(pid)
        time.sleep(max(0.0, (stop - time.perf_counter_ns()) / 1e9))
        cpu1 = cpu_seconds(pid)
    sent = q_send.get(timeout=warmup + seconds + 60)
    got = q_recv.get(timeout=60)
    tx.join(10)
    rx.join(10)
    hist = array.array("q")
    hist.frombytes(got["hist"])
    out = {
        "streams": len(targets),
        "sent": sent["sent"],
        "received": got["received"],
        "lost": sent["sent"] - got["received"],
        "streams_seen": got["streams_seen"],
        "sender_late_max_us": sent["late_max_us"],
        "p50_us": percentile(hist, got["measured"], 0.50),
        "p99_us": percentile(hist, got["measured"], 0.99),
        "max_us": max((us for us, c in enumerate(hist) if c), default=0),
    }
    if cpu0 is not None:
        out["cpu_pct"] = round(100 * (cpu1 - cpu0) / seconds, 1)
    return out


# -- systems under test ----------------------------------------------------------------


def party_sockets() -> tuple[socket.socket, socket.socket]:
    a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    a.bind((A_IP, 0))
    b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    b.bind((B_IP, 0))
    for s in (a, b):
        big_buffers(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
    return a, b


def direct_targets(
    calls: int, a: socket.socket, b: socket.socket
) -> list[tuple[int, tuple[str, int]]]:
    """Stream 2k goes A to B, 2k+1 B to A, straight between the parties."""
    out: list[tuple[int, tuple[str, int]]] = []
    for _ in range(calls):
        out.append((0, b.getsockname()))
        out.append((1, a.getsockname()))
    return out


async def relay_targets(
    control: str,
    calls: int,
    a: socket.socket,
    b: socket.socket,
    record: bool = False,
    srtp: bool = False,
) -> list[tuple[int, tuple[str, int]]]:
    client = await RelayClient.connect(control)
    out: list[tuple[int, tuple[str, int]]] = []
    keys: dict[int, dict[str, Any]] = {}
    if srtp:  # leg a decrypts what side 0 sends, and encrypts what side 0 receives
        keys = {
            side: {
                "srtp": {"suite": SRTP_SUITE, "rx": SRTP_KEYS[side][0], "tx": SRTP_KEYS[side][1]}
            }
            for side in (0, 1)
        }
    try:
        for c in range(calls):
            la = await client.leg(
                f"c{c}", "a", remote=a.getsockname(), peer="b", events=101, **keys.get(0, {})
            )
            lb = await client.leg(
                f"c{c}", "b", remote=b.getsockname(), peer="a", events=101, **keys.get(1, {})
            )
            out.append((0, (la.address, la.port)))
            out.append((1, (lb.address, lb.port)))
            if record:
                await client.record(f"c{c}")
    finally:
        client.close()
    return out


def sdp(ip: str, port: int, session: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
        "a=sendrecv\r\n"
    )


def sdp_port(text: str) -> int:
    for line in text.splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise ValueError("no audio port in rtpengine's SDP")


async def rtpengine_targets(
    ng_port: int, calls: int, a: socket.socket, b: socket.socket
) -> list[tuple[int, tuple[str, int]]]:
    ng = await RtpengineClient("127.0.0.1", ng_port).open()
    out: list[tuple[int, tuple[str, int]]] = []
    try:
        a_ip, a_port = a.getsockname()
        b_ip, b_port = b.getsockname()
        for c in range(calls):
            offered = await ng.offer(f"c{c}", "ta", sdp(a_ip, a_port, c), options={"ICE": "remove"})
            answered = await ng.answer(
                f"c{c}", "ta", "tb", sdp(b_ip, b_port, c), options={"ICE": "remove"}
            )
            out.append((0, ("127.0.0.1", sdp_port(answered["sdp"]))))  # A sends to what A was told
            out.append((1, ("127.0.0.1", sdp_port(offered["sdp"]))))
    finally:
        ng.close()
    return out


def start_relay(
    folder: Path, pin_cpu: bool, ports: str, record: bool
) -> tuple[subprocess.Popen[bytes], str]:
    control = str(folder / "relay.sock")
    cmd = [
        sys.executable,
        "-m",
        "media.relay",
        "--control",
        control,
        "--ports",
        ports,
        "--media-timeout",
        "3600",
    ]
    if record:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pub = folder / "pub.pem"
        pub.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        shutil.rmtree(folder / "recordings", ignore_errors=True)
        cmd += ["--recordings", str(folder / "recordings"), "--recording-key", str(pub)]
    if pin_cpu:
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=(folder / "relay.log").open("wb")
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(control):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("relay did not start: " + (folder / "relay.log").read_text())
        time.sleep(0.02)
    return proc, control


def start_rtpengine(folder: Path, pin_cpu: bool, ports: str) -> tuple[subprocess.Popen[bytes], int]:
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    ng_port = probe.getsockname()[1]
    probe.close()
    low, high = ports.split("-")
    cmd = [
        "rtpengine",
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        "--table=-1",
        "--interface=127.0.0.1",
        f"--listen-ng=127.0.0.1:{ng_port}",
        f"--port-min={low}",
        f"--port-max={high}",
        "--log-level=3",
        "--timeout=3600",
        f"--pidfile={folder / 'rtpe.pid'}",
    ]
    if pin_cpu:
        cmd = ["taskset", "-c", "1", *cmd]
    proc = subprocess.Popen(
        cmd, cwd=folder, stdout=subprocess.DEVNULL, stderr=(folder / "rtpe.log").open("wb")
    )
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.2)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("rtpengine did not start: " + (folder / "rtpe.log").read_text())
        s.sendto(b"p d7:command4:pinge", ("127.0.0.1", ng_port))
        try:
            if b"pong" in s.recv(100):
                break
        except (TimeoutError, ConnectionRefusedError):
            continue
    s.close()
    return proc, ng_port


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--calls", default="250,500,750,1000", help="steps: concurrent calls (%(default)s)"
    )
    parser.add_argument(
        "--seconds", type=float, default=5.0, help="measured seconds a step (%(default)s)"
    )
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds before measuring (%(default)s)"
    )
    parser.add_argument(
        "--systems",
        default="direct,ansim,ansim-rec,rtpengine",
        help="(%(default)s; also ansim-srtp)",
    )
    parser.add_argument(
        "--ports", default="40000-49999", help="media port range of the systems (%(default)s)"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin the system and the generator to CPUs"
    )
    parser.add_argument("--out", help="write the results as JSON here too")
    args = parser.parse_args()
    pin_cpu = not args.no_pin and (os.cpu_count() or 1) >= 2
    systems = args.systems.split(",")
    if "rtpengine" in systems and shutil.which("rtpengine") is None:
        print("rtpengine not installed: skipped", file=sys.stderr)
        systems.remove("rtpengine")
    steps = [int(c) for c in args.calls.split(",")]
    results: list[dict[str, Any]] = []
    print(
        f"G.711 20 ms: 172-byte packets, 50/s a stream, 2 streams a call; "
        f"{args.warmup:g} s warm-up + {args.seconds:g} s measured a step; pinned: {pin_cpu}"
    )
    print(
        "forwarded = packets/s received and sent on by the system (100 x calls); "
        "handled = in + out (200 x calls)"
    )
    header = (
        f"{'system':<10} {'calls':>6} {'forwarded/s':>12} {'handled/s':>10} {'sent':>9} {'lost':>7} "
        f"{'p50 us':>7} {'p99 us':>7} {'max us':>7} {'+p50':>6} {'+p99':>6} {'cpu %':>6}"
    )
    print(header)
    with tempfile.TemporaryDirectory(prefix="ansim-media-bench-") as tmp:
        folder = Path(tmp)
        for calls in steps:
            baseline: dict[str, Any] | None = None
            for system in systems:
                a, b = party_sockets()
                proc = None
                pid = None
                try:
                    if system == "direct":
                        targets = direct_targets(calls, a, b)
                    elif system in ("ansim", "ansim-rec", "ansim-srtp"):
                        record = system == "ansim-rec"
                        proc, control = start_relay(folder, pin_cpu, args.ports, record)
                        pid = proc.pid
                        targets = asyncio.run(
                            relay_targets(control, calls, a, b, record, system == "ansim-srtp")
                        )
                    else:
                        proc, ng_port = start_rtpengine(folder, pin_cpu, args.ports)
                        pid = proc.pid
                        targets = asyncio.run(rtpengine_targets(ng_port, calls, a, b))
                    r = run_load(
                        a,
                        b,
                        targets,
                        args.warmup,
                        args.seconds,
                        pid,
                        pin_cpu,
                        system == "ansim-srtp",
                    )
                finally:
                    if proc is not None:
                        stop(proc)
                    a.close()
                    b.close()
                total_s = args.warmup + args.seconds
                r.update(
                    {
                        "system": system,
                        "calls": calls,
                        "forwarded_per_s": round(r["sent"] / total_s),
                        "handled_per_s": round(2 * r["sent"] / total_s),
                    }
                )
                if system == "direct":
                    baseline = r
                    r["handled_per_s"] = None  # nothing in between: the generator's own rate
                if baseline is not None and system != "direct":
                    r["added_p50_us"] = r["p50_us"] - baseline["p50_us"]
                    r["added_p99_us"] = r["p99_us"] - baseline["p99_us"]
                results.append(r)
                print(
                    f"{system:<10} {calls:>6} {r['forwarded_per_s']:>12,} "
                    f"{(r['handled_per_s'] or 0):>10,} {r['sent']:>9,} {r['lost']:>7,} "
                    f"{r['p50_us']:>7.0f} {r['p99_us']:>7.0f} {r['max_us']:>7,} "
                    f"{r.get('added_p50_us', float('nan')):>6.0f} {r.get('added_p99_us', float('nan')):>6.0f} "
                    f"{r.get('cpu_pct', float('nan')):>6}",
                    flush=True,
                )
                if r["sender_late_max_us"] > 5_000:
                    print(
                        f"  note: the sender fell {r['sender_late_max_us']:,} us behind its schedule: the "
                        "generator's CPU is saturated, so this step's latency is the generator's",
                        flush=True,
                    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
