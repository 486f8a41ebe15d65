"""Control API benchmark: axb binds per second with pool allocation, over real HTTP.

A store holding one tenant's pool of ``--numbers`` virtual numbers (10,000) and
``--bindings`` live axb bindings on them (1,000,000, spread evenly) is built once, directly
through translate (``Store.put_many``), and kept in ``bench/out/api-cache/``; each run
copies it, starts ``ansim api`` on the copy (a real uvicorn process, uvloop and httptools),
and drives ``POST /v1/bindings`` with ``{"kind": "axb", "pool": ..., "a", "b",
"expires_in"}``, every request a new pair, so every request allocates: the parties' held
numbers are read, the pool's load index walked, the binding written with its owner and
pool bookkeeping, an audit record appended, all committed (fsync included) before the
answer.

The client is a lean HTTP/1.1 client on uvloop (``--connections`` keep-alive connections,
each sending its next request when the answer to the last one is in: a closed loop, so
offered load follows the server). Latency is from writing a request to reading its whole
answer. With two or more CPUs (``--pin``, the default) the API process runs on CPU 0 and
the client on the others, so the two do not share a core. ``--profile FILE`` records the
API process with py-spy meanwhile (the bench extra); a profiled run's figures are not
figures.

    flock /tmp/ansim-heavy.lock .venv/bin/python bench/api_bench.py

Target: >= 5,000 binds/s with p99 <= 20 ms on the 2-core reference machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
CACHE = OUT / "api-cache"
RUN = OUT / "api-run"
TENANT = "bench"
POOL = "trips"
CACHE_FORMAT = 1


def _numbers(count: int) -> list[str]:
    return [f"+8250700{n:06d}" for n in range(count)]


def build_cache(numbers: int, bindings: int) -> dict[str, Any]:
    """The cached store (built when missing or made with other sizes); its description."""
    from api.control import ControlTables
    from translate.bindings import Binding
    from translate.pools import Pool
    from translate.store import Store

    marker = CACHE / "cache.json"
    wanted = {"format": CACHE_FORMAT, "numbers": numbers, "bindings": bindings}
    if marker.exists():
        info: dict[str, Any] = json.loads(marker.read_text())
        if {k: info.get(k) for k in wanted} == wanted and time.time() < info["expires"] - 86400:
            return info
    shutil.rmtree(CACHE, ignore_errors=True)
    CACHE.mkdir(parents=True)
    started = time.monotonic()
    now = time.time()
    expires = now + 30 * 86400
    pool_numbers = _numbers(numbers)
    with Store(CACHE / "numbers.lmdb", map_size=64 << 30) as store:
        control = ControlTables(store)
        with store.transaction(now) as t:
            control.put_tenant(t.txn, control.ensure_tenant(t.txn, TENANT, now))
            tenant = control.tenant(t.txn, TENANT)
            assert tenant is not None
            _, token = control.create_key(
                t.txn, TENANT, frozenset({"bindings:write", "metrics:read"}), "bench", now
            )
            store.pools.create(t.txn, Pool(TENANT, POOL, 1_000_000, 60, now))
            for x in pool_numbers:
                store.pools.add_number(t.txn, TENANT, POOL, x, None)
        chunk = 100_000
        for start in range(0, bindings, chunk):
            batch = (
                Binding(
                    f"seed-{i:07d}",
                    "axb",
                    pool_numbers[i % numbers],
                    f"+8210{2 * i:08d}",
                    f"+8210{2 * i + 1:08d}",
                    expires=expires,
                    tenant=TENANT,
                )
                for i in range(start, min(start + chunk, bindings))
            )
            store.put_many(batch, now=now, source="api")
            done = min(start + chunk, bindings)
            print(
                f"\rbuilding the store: {done:,} of {bindings:,} bindings", end="", file=sys.stderr
            )
        print(file=sys.stderr)
        size = store.stats(now).size_bytes
    info = dict(
        wanted, token=str(token), expires=expires, built_s=time.monotonic() - started, bytes=size
    )
    marker.write_text(json.dumps(info))
    return info


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_api(
    port: int, pin: bool, workers: int = 1, commit_interval: float | None = None
) -> list[subprocess.Popen[bytes]]:
    """``workers`` ``ansim api`` processes sharing ``port`` (SO_REUSEPORT), as
    ``ansim serve`` starts them for ``api.workers``; pinned to CPU 0 with ``pin``."""
    config = RUN / "config"
    config.mkdir(parents=True, exist_ok=True)
    (config / "ansim.yaml").write_text(
        f"numbers:\n  store: {RUN / 'numbers.lmdb'}\napi:\n  listen: 127.0.0.1:{port}\n"
        + ("" if commit_interval is None else f"  commit_interval: {commit_interval}\n")
    )
    command = [sys.executable, "-m", "b2bua.cli", "api", "--config", str(config)]
    preexec = (lambda: os.sched_setaffinity(0, {0})) if pin else None
    procs = [
        subprocess.Popen(
            command,
            cwd=RUN,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=preexec,
        )
        for _ in range(workers)
    ]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if b" 200 " in s.recv(1024):
                    time.sleep(2.0 if workers > 1 else 0.0)  # the others bind meanwhile
                    return procs
        except OSError:
            time.sleep(0.1)
    for proc in procs:
        proc.kill()
    raise SystemExit("ansim api did not start")


class _Connection(asyncio.Protocol):
    """One keep-alive connection sending a request as soon as the last one is answered."""

    def __init__(self, bench: _Client) -> None:
        self.bench = bench
        self.buffer = bytearray()
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.send()

    def send(self) -> None:
        request = self.bench.next_request()
        if request is None:
            assert self.transport is not None
            self.transport.close()
            if not self.done.done():
                self.done.set_result(None)
            return
        self.sent_at = time.perf_counter()
        assert self.transport is not None
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while True:
            head = buffer.find(b"\r\n\r\n")
            if head < 0:
                return
            at = buffer.find(b"content-length:", 0, head)
            length = int(buffer[at + 15 : buffer.find(b"\r\n", at)]) if at >= 0 else 0
            end = head + 4 + length
            if len(buffer) < end:
                return
            status = int(buffer[9:12])
            del buffer[:end]
            self.bench.answered(status, time.perf_counter() - self.sent_at)
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


class _Client:
    def __init__(self, port: int, token: str, stop_at: float, measure_from: float) -> None:
        self.port = port
        self.head = (
            "POST /v1/bindings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nContent-Type: application/json\r\n"
        ).encode()
        self.stop_at = stop_at
        self.measure_from = measure_from
        self.counter = 0
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.measured_started: float | None = None

    def next_request(self) -> bytes | None:
        if time.perf_counter() >= self.stop_at:
            return None
        n = self.counter
        self.counter += 1
        body = (
            b'{"kind":"axb","pool":"' + POOL.encode() + b'","a":"+8211%08d","b":"+8212%08d",'
            b'"expires_in":3600}' % (n, n)
        )
        return self.head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    def answered(self, status: int, latency: float) -> None:
        if time.perf_counter() < self.measure_from:
            return
        self.latencies.append(latency)
        self.statuses[status] = self.statuses.get(status, 0) + 1

    async def run(self, connections: int) -> None:
        loop = asyncio.get_running_loop()
        peers = []
        for _ in range(connections):
            _, peer = await loop.create_connection(
                lambda: _Connection(self), "127.0.0.1", self.port
            )
            peers.append(peer)
        await asyncio.gather(*(p.done for p in peers))


def _cpu_seconds(pid: int, task: int | None = None) -> float:
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _threads(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds of each thread of the API processes ("main", or the thread's id)."""
    out: dict[str, float] = {}
    for proc in procs:
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            name = "main" if int(task.name) == proc.pid else f"thread {task.name}"
            out[name] = out.get(name, 0.0) + _cpu_seconds(proc.pid, int(task.name))
    return out


def _metric(port: int, token: str, name: str) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(
            f"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--numbers", type=int, default=10_000, help="pool size")
    parser.add_argument("--bindings", type=int, default=1_000_000, help="live bindings built")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--pin", action=argparse.BooleanOptionalAction, default=os.cpu_count() >= 2)  # type: ignore[operator]
    parser.add_argument("--profile", metavar="FILE", help="py-spy record the API meanwhile")
    parser.add_argument(
        "--commit-interval", type=float, help="api.commit_interval, s (default: the API's)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="API processes on the port (api.workers)"
    )
    args = parser.parse_args()

    info = build_cache(args.numbers, args.bindings)
    print(
        f"store: {args.numbers:,} pool numbers, {args.bindings:,} live axb bindings,"
        f" {info['bytes'] / 1e6:,.0f} MB (built in {info['built_s']:.0f} s, cached in {CACHE})"
    )
    shutil.rmtree(RUN, ignore_errors=True)
    RUN.mkdir(parents=True)
    (RUN / "numbers.lmdb").mkdir()
    shutil.copyfile(CACHE / "numbers.lmdb" / "data.mdb", RUN / "numbers.lmdb" / "data.mdb")
    port = _free_port()
    procs = start_api(port, args.pin and args.workers == 1, args.workers, args.commit_interval)
    api = procs[0]
    spy = None
    try:
        if args.pin and args.workers == 1:
            os.sched_setaffinity(0, set(range(1, os.cpu_count() or 2)))
        if args.profile:
            spy = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--pid",
                    str(api.pid),
                    "--gil",
                    "--format",
                    "raw",
                    "--output",
                    args.profile,
                    "--rate",
                    "500",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        token = info["token"]
        now = time.perf_counter()
        client = _Client(port, token, now + args.warmup + args.seconds, now + args.warmup)
        cpu = [0.0, 0.0, 0.0, 0.0]
        threads_at: dict[str, float] = {}
        threads_end: dict[str, float] = {}
        batches = [0.0, 0.0]
        batch_metric = "ansim_api_write_batch_size_count"

        async def drive() -> None:
            async def mark() -> None:
                await asyncio.sleep(args.warmup)
                cpu[0] = sum(_cpu_seconds(p.pid) for p in procs)
                cpu[2] = sum(_cpu_seconds(p.pid, p.pid) for p in procs)
                threads_at.update(_threads(procs))
                loop = asyncio.get_running_loop()
                batches[0] = await loop.run_in_executor(None, _metric, port, token, batch_metric)

            marker = asyncio.create_task(mark())
            await client.run(args.connections)
            await marker

        import uvloop

        uvloop.run(drive())
        cpu[1] = sum(_cpu_seconds(p.pid) for p in procs)
        cpu[3] = sum(_cpu_seconds(p.pid, p.pid) for p in procs)
        threads_end = _threads(procs)
        batches[1] = _metric(port, token, batch_metric)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        shutil.rmtree(RUN, ignore_errors=True)
    lat = sorted(client.latencies)
    ok = client.statuses.get(201, 0)
    total = len(lat)

    def pct(q: float) -> float:
        return lat[min(int(q * total), total - 1)] * 1e3 if total else float("nan")

    print(
        f"binds: {ok:,} created in {args.seconds:.0f} s = {ok / args.seconds:,.0f} binds/s"
        f" ({args.connections} connections, {args.workers} API process(es),"
        f" pinned: {args.pin and args.workers == 1})"
    )
    print(
        f"latency: p50 {pct(0.5):.2f} ms, p90 {pct(0.9):.2f} ms, p99 {pct(0.99):.2f} ms, max {pct(1.0):.2f} ms"
    )
    print(f"answers: {dict(sorted(client.statuses.items()))}")
    loop_cpu = (cpu[3] - cpu[2]) / max(total, 1) * 1e6
    # The metrics answer is one process's: requests per transaction only with one.
    per_commit = (
        f"; {total / max(batches[1] - batches[0], 1):.1f} requests per write transaction"
        if args.workers == 1
        else ""
    )
    print(
        f"API CPU: {(cpu[1] - cpu[0]) / max(total, 1) * 1e6:.0f} us a request"
        f" ({loop_cpu:.0f} on the event loops' threads, the rest on the store writers')"
        + per_commit
    )
    spent = {
        name: (threads_end.get(name, 0.0) - threads_at.get(name, 0.0)) / max(total, 1) * 1e6
        for name in threads_end
    }
    print(
        "API CPU by thread (us a request): "
        + ", ".join(
            f"{n} {v:.0f}" for n, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v >= 1
        )
    )
    return 0 if ok == total else 1


if __name__ == "__main__":
    sys.exit(main())
