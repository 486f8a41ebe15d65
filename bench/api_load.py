"""Open-loop control-API load: axb binds and unbinds at a fixed rate each, over real HTTP.

Run as a process of its own beside a calls benchmark (``cps.py --api-load N``): it sends
``POST /v1/bindings`` (``{"kind": "axb", "pool": ..., "a", "b", "expires_in"}``, every
request a new pair, so each allocates from the pool) at ``--rate`` per second, and from
the moment ``--live`` bindings exist ``DELETE /v1/bindings/{id}`` of the oldest one it
made, at ``--rate`` per second too, so the pool's load stays level. Requests go out on
their schedule whatever the answers do (an open loop, unlike ``api_bench.py``'s closed
one): when every keep-alive connection is busy a request waits for one, and its latency
is counted from the time it was due, so a server falling behind shows in the figures
instead of slowing the offered load.

It prints one JSON line: per operation, the requests due within the measured window
(from ``--measure-from`` seconds after the start to the end) that were answered, their
rate and p50/p99/max latency, the answers that came in within the window per second, the statuses over the whole run, and the errors
(any answer but 201/204, or a lost connection) over the whole run.

    .venv/bin/python bench/api_load.py --port 8080 --token ak_... --rate 1000 --seconds 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import deque
from typing import Any

BIND, UNBIND = "bind", "unbind"
OK = {BIND: 201, UNBIND: 204}


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection carrying one request at a time (framing as in
    ``api_bench.py``: uvicorn's lowercase ``content-length``)."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.current: tuple[str, float] | None = None  # (operation, time it was due)
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.ready.set_result(None)

    def send(self, op: str, due: float, request: bytes) -> None:
        self.current = (op, due)
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
            body = bytes(buffer[head + 4 : end])
            del buffer[:end]
            current, self.current = self.current, None
            if current is not None:
                self.load.answered(self, current[0], current[1], status, body)

    def connection_lost(self, exc: Exception | None) -> None:
        current, self.current = self.current, None
        self.transport = None
        self.load.lost(self, current)


class Load:
    """The schedule, the connections and the figures of one run."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.head = (
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {args.token}\r\n"
            "Content-Type: application/json\r\n"
        ).encode()
        self.idle: list[_Connection] = []
        self.waiting: deque[tuple[str, float, bytes]] = deque()
        self.made: deque[str] = deque()  # ids of live bindings this run made, oldest first
        self.counter = args.first
        self.start = 0.0
        self.latencies: dict[str, list[float]] = {BIND: [], UNBIND: []}
        self.statuses: dict[str, dict[str, int]] = {BIND: {}, UNBIND: {}}
        self.errors: dict[str, int] = {BIND: 0, UNBIND: 0}
        self.sent: dict[str, int] = {BIND: 0, UNBIND: 0}
        self.in_window: dict[str, int] = {BIND: 0, UNBIND: 0}  # answers that came in it
        self.starved = 0  # unbinds due while no binding of ours was live
        self.most_waiting = 0
        self.lost_connections = 0
        self.closing = False
        self.unbinding_from: float | None = None  # seconds after the start

    def bind_request(self) -> bytes:
        n = self.counter
        self.counter += 1
        body = b'{"kind":"axb","pool":"%s","a":"%s%08d","b":"%s%08d","expires_in":3600}' % (
            self.args.pool.encode(),
            self.args.a_prefix.encode(),
            n,
            self.args.b_prefix.encode(),
            n,
        )
        return (
            b"POST /v1/bindings HTTP/1.1\r\n"
            + self.head
            + b"Content-Length: %d\r\n\r\n" % len(body)
            + body
        )

    def unbind_request(self, binding_id: str) -> bytes:
        return b"DELETE /v1/bindings/%s HTTP/1.1\r\n%s\r\n" % (binding_id.encode(), self.head)

    def submit(self, op: str, due: float, request: bytes) -> None:
        self.sent[op] += 1
        if self.idle:
            self.idle.pop().send(op, due, request)
        else:
            self.waiting.append((op, due, request))
            self.most_waiting = max(self.most_waiting, len(self.waiting))

    def _next(self, conn: _Connection) -> None:
        if self.waiting and conn.transport is not None:
            conn.send(*self.waiting.popleft())
        elif conn.transport is not None:
            self.idle.append(conn)

    def answered(self, conn: _Connection, op: str, due: float, status: int, body: bytes) -> None:
        now = time.perf_counter()
        key = str(status)
        self.statuses[op][key] = self.statuses[op].get(key, 0) + 1
        if status != OK[op]:
            self.errors[op] += 1
        elif op == BIND:
            at = body.find(b'"id":')
            if at >= 0:
                first = body.find(b'"', at + 5)
                self.made.append(body[first + 1 : body.find(b'"', first + 1)].decode())
        if due - self.start >= self.args.measure_from:
            self.latencies[op].append(now - due)
        if self.args.measure_from <= now - self.start < self.args.seconds:
            self.in_window[op] += 1
        self._next(conn)

    def lost(self, conn: _Connection, current: tuple[str, float] | None) -> None:
        if self.closing:
            return
        self.lost_connections += 1
        if conn in self.idle:
            self.idle.remove(conn)
        if current is not None:
            self.errors[current[0]] += 1

    async def run(self) -> None:
        args = self.args
        loop = asyncio.get_running_loop()
        conns = []
        for _ in range(args.connections):
            _, conn = await loop.create_connection(
                lambda: _Connection(self), "127.0.0.1", args.port
            )
            await conn.ready
            conns.append(conn)
        self.idle = list(conns)
        interval = 1.0 / args.rate
        self.start = time.perf_counter()
        end = self.start + args.seconds
        next_bind = self.start
        unbind_from: float | None = None
        next_unbind = 0.0
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            while next_bind <= now:
                self.submit(BIND, next_bind, self.bind_request())
                next_bind += interval
            if unbind_from is None and len(self.made) >= args.live:
                unbind_from = next_unbind = now
            if unbind_from is not None:
                while next_unbind <= now:
                    if self.made:
                        self.submit(UNBIND, next_unbind, self.unbind_request(self.made.popleft()))
                    else:
                        self.starved += 1
                    next_unbind += interval
            due = min(next_bind, next_unbind if unbind_from is not None else next_bind)
            await asyncio.sleep(max(0.0, min(due - time.perf_counter(), 0.005)))
        if unbind_from is not None:
            self.unbinding_from = unbind_from - self.start
        # the answers to what was sent before the end
        deadline = time.perf_counter() + 10.0
        while len(self.idle) < sum(c.transport is not None for c in conns):
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.01)
        self.closing = True
        for conn in conns:
            if conn.transport is not None:
                conn.transport.close()

    def report(self) -> dict[str, Any]:
        window = self.args.seconds - self.args.measure_from
        out: dict[str, Any] = {
            "rate": self.args.rate,
            "seconds": self.args.seconds,
            "measured_seconds": window,
            "connections": self.args.connections,
            "unbinding_from_s": round(self.unbinding_from, 2)
            if self.unbinding_from is not None
            else None,
            "starved_unbinds": self.starved,
            "most_waiting": self.most_waiting,
            "lost_connections": self.lost_connections,
            "live_left": len(self.made),
        }
        for op in (BIND, UNBIND):
            lat = sorted(self.latencies[op])
            ok = len(lat)

            def pct(q: float, lat: list[float] = lat) -> float | None:
                return round(lat[min(int(q * len(lat)), len(lat) - 1)] * 1e3, 3) if lat else None

            out[op] = {
                "sent": self.sent[op],
                "answered_in_window": ok,
                "per_second": round(ok / window, 1) if window > 0 else None,
                "answered_per_second": round(self.in_window[op] / window, 1)
                if window > 0
                else None,
                "p50_ms": pct(0.5),
                "p99_ms": pct(0.99),
                "max_ms": pct(1.0),
                "statuses": self.statuses[op],
                "errors": self.errors[op],
            }
        return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token", required=True, help="a key with bindings:write")
    parser.add_argument("--pool", default="load")
    parser.add_argument("--rate", type=float, default=1000.0, help="binds/s, and unbinds/s")
    parser.add_argument("--seconds", type=float, default=50.0, help="length of the run")
    parser.add_argument("--measure-from", type=float, default=0.0, help="start of the window")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--live", type=int, default=2000, help="bindings made before unbinding")
    parser.add_argument("--a-prefix", default="+8216", help="A parties: this + 8 digits")
    parser.add_argument("--b-prefix", default="+8217", help="B parties: this + 8 digits")
    parser.add_argument("--first", type=int, default=0, help="number of the first pair")
    args = parser.parse_args()
    load = Load(args)
    import uvloop

    uvloop.run(load.run())
    print(json.dumps(load.report()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
