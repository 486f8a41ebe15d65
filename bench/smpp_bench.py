"""SMPP relay throughput: messages/s relayed end to end through one ansim worker.

    flock /tmp/ansim-heavy.lock .venv/bin/python bench/smpp_bench.py [--messages 50000]

Starts, on loopback: an upstream SMSC sink, ansim's relay (`python -m sms_smpp.cli smpp
run`, one process on uvloop, store-and-forward queue with fsync), and a carrier ESME
that keeps a window of submit_sm outstanding (100 by default). Both peers run in this
process on one uvloop loop and use ansim's own sans-IO session (they only frame and
answer PDUs). Each message carries its send time; the sink measures submit-to-upstream
latency, the ESME submit-to-submit_sm_resp latency (the message is on disk by then).
Prints one JSON line; --out writes it to a file too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sms_smpp import events as ev  # noqa: E402
from sms_smpp.pdu import Bind, Cmd, ShortMessage, encode_short_message_body  # noqa: E402
from sms_smpp.session import Role, Session  # noqa: E402
from translate.bindings import Binding  # noqa: E402
from translate.store import Store  # noqa: E402

VIRTUAL, REAL, SENDER = "+82501234567", "+821011112222", "+821099998888"
_T = struct.Struct(">d")


class Sink(asyncio.Protocol):
    """Upstream SMSC: accepts the bind, answers every submit_sm, measures latency."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.loop = bench.loop
        self.session = Session(Role.SMSC, self.loop.time(), enquire_link_interval=0)
        self.transport: Any = None
        self.n = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        bench = self.bench
        session = self.session
        for event in session.receive_data(data, self.loop.time()):
            if type(event) is ev.RequestReceived:
                pdu = event.pdu
                if pdu.command_id == Cmd.SUBMIT_SM:
                    assert isinstance(pdu, ShortMessage)
                    self.n += 1
                    session.respond_to(Cmd.SUBMIT_SM, pdu.sequence, 0, f"u{self.n}")
                    bench.arrived(now, _T.unpack_from(pdu.short_message, 5)[0])
                else:
                    session.respond(pdu)
            elif type(event) is ev.BindRequested:
                session.accept_bind(event.pdu, "sink")
        self.transport.write(session.data_to_send())


class Esme(asyncio.Protocol):
    """Carrier ESME: keeps `window` submit_sm outstanding until `total` are sent."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.loop = bench.loop
        self.session = Session(
            Role.ESME, self.loop.time(), enquire_link_interval=0, response_timeout=60
        )
        self.transport: Any = None
        self.bound = self.loop.create_future()
        template = ShortMessage(
            Cmd.SUBMIT_SM,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=SENDER[1:],
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=VIRTUAL[1:],
            data_coding=4,
            short_message=b"bench" + bytes(8),
        )
        self.prefix = encode_short_message_body(template)[:-8]
        self.sent = 0
        self.total = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.session.send_request(
            Bind(Cmd.BIND_TRANSMITTER, system_id="bench", password="bench"), self.loop.time()
        )
        transport.write(self.session.data_to_send())

    def fill(self) -> None:
        session = self.session
        window = self.bench.window
        prefix = self.prefix
        now = self.loop.time()
        while session.outstanding < window and self.sent < self.total:
            t = time.monotonic()
            session.send_body(Cmd.SUBMIT_SM, prefix + _T.pack(t), now, t)
            self.sent += 1
        data = session.data_to_send()
        if data:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        for event in self.session.receive_data(data, self.loop.time()):
            if type(event) is ev.ResponseReceived:
                self.bench.answered(now, event.context, event.pdu.status)
            elif type(event) is ev.Bound:
                self.bound.set_result(True)
            elif type(event) is ev.BindRefused:
                self.bound.set_result(False)
        self.fill()


class Bench:
    def __init__(self, loop: asyncio.AbstractEventLoop, window: int) -> None:
        self.loop = loop
        self.window = window
        self.reset(0)

    def reset(self, expected: int) -> None:
        self.expected = expected
        self.e2e: list[float] = []
        self.accept: list[float] = []
        self.errors = 0
        self.first_sent = time.monotonic()
        self.last_arrival = 0.0
        self.done = self.loop.create_future()

    def arrived(self, now: float, sent: float) -> None:
        self.e2e.append(now - sent)
        self.last_arrival = now
        if len(self.e2e) >= self.expected and not self.done.done():
            self.done.set_result(None)

    def answered(self, now: float, sent: float, status: int) -> None:
        self.accept.append(now - sent)
        if status:
            self.errors += 1


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def build(workdir: Path, sink_port: int, fsync: bool, window: int) -> Path:
    with Store(workdir / "translate") as store:
        store.put(Binding("bench", "ax", VIRTUAL, REAL), now=time.time(), source="api")
    cfg = {
        "enabled": True,
        "server": {
            "host": "127.0.0.1",
            "port": 0,
            "window": window,
            "accounts": [{"system_id": "bench", "password": "bench"}],
        },
        "upstreams": [
            {
                "name": "sink",
                "host": "127.0.0.1",
                "port": sink_port,
                "system_id": "ansim",
                "password": "x",
                "window": window,
            }
        ],
        "queue": {"path": str(workdir / "queue"), "fsync": fsync},
        "records": str(workdir / "cdr.sqlite"),
        "translate_store": str(workdir / "translate"),
    }
    path = workdir / "smpp.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(args: argparse.Namespace) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    bench = Bench(loop, args.window)
    sink_server = await loop.create_server(lambda: Sink(bench), "127.0.0.1", 0)
    sink_port = sink_server.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="smpp-bench-") as tmp:
        cfg = build(Path(tmp), sink_port, args.fsync, args.window)
        profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
        proc = subprocess.Popen(
            [
                sys.executable,
                *profile,
                "-m",
                "sms_smpp.cli",
                "smpp",
                "run",
                "--config",
                str(cfg.parent),
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            stdout=subprocess.PIPE,
        )
        try:
            assert proc.stdout is not None
            line = await loop.run_in_executor(None, proc.stdout.readline)
            if not line.startswith(b"ansim smpp: listening"):
                raise RuntimeError(f"ansim did not start: {line!r}")
            port = int(line.decode().rsplit(":", 1)[1])
            esme = Esme(bench)
            await loop.create_connection(lambda: esme, "127.0.0.1", port)
            if not await asyncio.wait_for(esme.bound, 10):
                raise RuntimeError("bind refused")
            for count in (args.warmup, args.messages):
                bench.reset(count)
                cpu0 = cpu_seconds(proc.pid)
                own0 = own_cpu_seconds()
                esme.total += count
                esme.fill()
                await asyncio.wait_for(bench.done, args.timeout)
                cpu = cpu_seconds(proc.pid) - cpu0
                own = own_cpu_seconds() - own0
            elapsed = bench.last_arrival - bench.first_sent
            result = {
                "messages": args.messages,
                "window": args.window,
                "fsync": args.fsync,
                "seconds": round(elapsed, 3),
                "msg_per_s": round(args.messages / elapsed),
                "e2e_ms_p50": round(pct(bench.e2e, 0.50), 3),
                "e2e_ms_p99": round(pct(bench.e2e, 0.99), 3),
                "accept_ms_p50": round(pct(bench.accept, 0.50), 3),
                "accept_ms_p99": round(pct(bench.accept, 0.99), 3),
                "errors": bench.errors,
                "ansim_cpu_s_per_1k_msgs": round(cpu / args.messages * 1000, 4),
                "peers_cpu_s_per_1k_msgs": round(own / args.messages * 1000, 4),
                "mean_e2e_ms": round(statistics.fmean(bench.e2e) * 1000, 3),
                "peer_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            }
        finally:
            proc.terminate()
            proc.wait(15)
            sink_server.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--warmup", type=int, default=5_000)
    parser.add_argument("--window", type=int, default=100)
    parser.add_argument("--no-fsync", dest="fsync", action="store_false")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the ansim process")
    args = parser.parse_args()
    result = uvloop.run(run(args))
    text = json.dumps(result)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
