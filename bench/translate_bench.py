"""Translation store benchmark: build a store of many bindings, then time lookups.

Builds ``--count`` bindings (30 % ax, 50 % axb with ten pairs per virtual number,
20 % axn; some with expiry and limits) through ``Store.put_many``, then
measures ``Store.lookup`` over a random mix of callers (axb parties, ax callers, axn
owners and others) spread over the whole store: latency p50/p99 per lookup, decoding of
the result included (timer overhead of about 0.05 us included too), and lookups per
second (median and best of three runs) in one process and in two processes at once.
The bindings go in as 40 imports of 250,000 (ax, then axb, then axn): the axn numbers
fall between the others and leave part of the routes table half full, so the store is
measured as built, then repacked (``Store.repack``, as ``ansim numbers repack`` does) and
measured again; ``--no-repack`` stops after the first measurement.

    flock /tmp/ansim-bench.lock .venv/bin/python bench/translate_bench.py --count 10000000

Targets: p50 <= 3 us, p99 <= 10 us, >= 400,000 lookups/s per process.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import shutil
import sys
import time
from array import array
from collections.abc import Iterator
from pathlib import Path

from translate.bindings import Binding, Hours, Route
from translate.store import Store

NOW = time.time()
FAR = NOW + 365 * 86400.0
PAIRS_PER_X = 10
CHUNK = 250_000
MAP_SIZE = 64 << 30


def split(count: int) -> tuple[int, int, int]:
    """(ax, axb, axn) counts for ``count`` bindings."""
    n_ax = count * 3 // 10
    n_axn = count * 2 // 10
    return n_ax, count - n_ax - n_axn, n_axn


def ax_binding(i: int) -> Binding:
    return Binding(
        id=f"ax{i}",
        kind="ax",
        virtual=f"+82501{i:08d}",
        a=f"+8210{i:08d}",
        present="caller" if i % 5 == 0 else "virtual",
        max_seconds=3600 if i % 7 == 0 else None,
        hours=Hours(0, 1440, "Asia/Seoul") if i % 100 == 0 else None,
    )


def axb_binding(j: int) -> Binding:
    return Binding(
        id=f"axb{j}",
        kind="axb",
        virtual=f"+82503{j // PAIRS_PER_X:08d}",
        a=f"+8216{2 * j:08d}",
        b=f"+8216{2 * j + 1:08d}",
        expires=FAR if j % 4 == 0 else None,
    )


def axn_binding(k: int) -> Binding:
    return Binding(
        id=f"axn{k}",
        kind="axn",
        virtual=f"+82502{k:08d}",
        a=f"+8217{k:08d}",
        b=f"+8218{k:08d}",
        calls_per_hour=1_000_000 if k % 10 == 0 else None,
    )


def all_bindings(count: int) -> Iterator[Binding]:
    n_ax, n_axb, n_axn = split(count)
    yield from (ax_binding(i) for i in range(n_ax))
    yield from (axb_binding(j) for j in range(n_axb))
    yield from (axn_binding(k) for k in range(n_axn))


def build(path: Path, count: int) -> float:
    if path.exists():
        shutil.rmtree(path)
    started = time.perf_counter()
    done = 0
    with Store(path, map_size=MAP_SIZE, sync=False) as store:
        batch: list[Binding] = []
        for binding in all_bindings(count):
            batch.append(binding)
            if len(batch) == CHUNK:
                store.put_many(batch, now=NOW)
                done += len(batch)
                batch.clear()
                elapsed = time.perf_counter() - started
                print(f"\r  built {done:,} ({done / elapsed:,.0f}/s)", end="", file=sys.stderr)
        store.put_many(batch, now=NOW)
        store.flush()
    print(file=sys.stderr)
    return time.perf_counter() - started


def sample(count: int, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` random (X, caller) pairs spread over the whole store, all answered by a Route."""
    rng = random.Random(seed)
    n_ax, n_axb, n_axn = split(count)
    out: list[tuple[str, str]] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.5:
            b = axb_binding(rng.randrange(n_axb))
            assert b.b is not None
            out.append((b.virtual, b.a if rng.random() < 0.5 else b.b))
        elif r < 0.8:
            out.append(
                (ax_binding(rng.randrange(n_ax)).virtual, f"+8219{rng.randrange(10**8):08d}")
            )
        else:
            b = axn_binding(rng.randrange(n_axn))
            caller = b.a if rng.random() < 0.5 else f"+8219{rng.randrange(10**8):08d}"
            out.append((b.virtual, caller))
    # Fresh copies, allocated one after the other: the strings above lie scattered among
    # the freed Binding objects, and reading them would add cache misses that a lookup in
    # the engine, whose numbers were parsed a moment before, does not have.
    return [(x.encode().decode(), caller.encode().decode()) for x, caller in out]


def timed_lookups(store: Store, keys: list[tuple[str, str]]) -> array[int]:
    """Nanoseconds per lookup."""
    durations = array("q", bytes(8 * len(keys)))
    clock = time.perf_counter_ns
    lookup = store.lookup
    now = NOW
    for n, (x, caller) in enumerate(keys):
        t0 = clock()
        result = lookup(x, caller, now)
        durations[n] = clock() - t0
        if type(result) is not Route:
            raise SystemExit(f"unexpected {result} for {x} from {caller}")
    return durations


def throughput(store: Store, keys: list[tuple[str, str]], seconds: float) -> float:
    """Lookups per second over about ``seconds``, cycling through ``keys``."""
    lookup = store.lookup
    now = NOW
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while True:
        for x, caller in keys:
            lookup(x, caller, now)
        done += len(keys)
        if time.perf_counter() >= deadline:
            break
    return done / (time.perf_counter() - started)


def percentile(sorted_ns: list[int], p: float) -> float:
    return sorted_ns[min(len(sorted_ns) - 1, int(p * len(sorted_ns)))] / 1000


def measure(
    path: str, count: int, n: int, seconds: float, seed: int, barrier: object = None
) -> dict[str, float]:
    keys = sample(count, n, seed)
    with Store(path, readonly=True, map_size=MAP_SIZE) as store:
        throughput(store, keys, 0.0)  # one pass: maps the pages these lookups touch
        if barrier is not None:
            barrier.wait()  # type: ignore[attr-defined]  # both processes measure together
        durations = sorted(timed_lookups(store, keys))
        rates = sorted(throughput(store, keys, seconds / 3) for _ in range(3))
    return {
        "p50": percentile(durations, 0.50),
        "p99": percentile(durations, 0.99),
        "p999": percentile(durations, 0.999),
        "rate": rates[1],
        "best": rates[2],
    }


def report(label: str, r: dict[str, float]) -> None:
    print(
        f"{label}: p50 {r['p50']:.2f} us, p99 {r['p99']:.2f} us, p99.9 {r['p999']:.2f} us;"
        f" {r['rate']:,.0f} lookups/s (median of 3 runs; best {r['best']:,.0f})"
    )


def workers(
    path: str, count: int, n: int, seconds: float, seeds: tuple[int, ...]
) -> list[dict[str, float]]:
    """Measure in one fresh process per seed, all at once: a worker's heap holds only its
    own keys, not what building and repacking the store left in this one."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(seeds))
    queue = ctx.Queue()
    procs = [
        ctx.Process(target=_worker, args=(path, count, n, seconds, seed, barrier, queue))
        for seed in seeds
    ]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    return results


def _worker(
    path: str, count: int, n: int, seconds: float, seed: int, barrier: object, queue: object
) -> None:
    queue.put(measure(path, count, n, seconds, seed, barrier))  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10_000_000, help="bindings (%(default)s)")
    parser.add_argument("--store", default="var/bench/translate.lmdb", help="(%(default)s)")
    parser.add_argument("--reuse", action="store_true", help="skip the build if the store exists")
    parser.add_argument("--lookups", type=int, default=1_000_000, help="timed lookups")
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    parser.add_argument(
        "--no-repack",
        dest="repack",
        action="store_false",
        help="measure the store as built only, without `ansim numbers repack`",
    )
    args = parser.parse_args()

    path = Path(args.store)
    n_ax, n_axb, n_axn = split(args.count)
    print(f"bindings: {args.count:,} (ax {n_ax:,}, axb {n_axb:,}, axn {n_axn:,})")
    if args.reuse and (path / "data.mdb").exists():
        print("build: reused existing store")
    else:
        seconds = build(path, args.count)
        print(f"build: {seconds:.1f} s ({args.count / seconds:,.0f} bindings/s)")
    with Store(path, readonly=True, map_size=MAP_SIZE) as store:
        stats = store.stats(NOW)
        total = stats.total
    file_size = (path / "data.mdb").stat().st_size
    print(
        f"store: {stats.size_bytes / 1e9:.2f} GB used, data.mdb {file_size / 1e9:.2f} GB"
        f" ({stats.size_bytes / max(total, 1):.0f} bytes/binding)"
    )
    if total != args.count:
        raise SystemExit(f"store holds {total:,} bindings, expected {args.count:,}")
    print(f"routes table: {stats.route_entries:,} entries in {stats.route_pages:,} leaf pages")

    def in_workers(seeds: tuple[int, ...]) -> list[dict[str, float]]:
        return workers(str(path), args.count, args.lookups, args.seconds, seeds)

    if args.repack:
        report("1 process, before repack", in_workers((1,))[0])
        started = time.perf_counter()
        with Store(path, map_size=MAP_SIZE, sync=False) as store:
            before, after = store.repack()
            store.flush()
        print(
            f"repack: {time.perf_counter() - started:.1f} s, routes table"
            f" {before:,} -> {after:,} leaf pages"
        )
    report("1 process", in_workers((1,))[0])
    results = in_workers((2, 3))
    rates = " + ".join(f"{r['rate']:,.0f} (best {r['best']:,.0f})" for r in results)
    print(
        f"2 processes: {rates} = {sum(r['rate'] for r in results):,.0f} lookups/s;"
        + "".join(f" [p50 {r['p50']:.2f} us, p99 {r['p99']:.2f} us]" for r in results)
    )
    print(f"cpus: {os.cpu_count()}")


if __name__ == "__main__":
    main()
