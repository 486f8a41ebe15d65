"""A 50,000-binding map copied into ``config/numbers/`` of a running ``ansim serve`` never
goes live half-way, and a copy the writer gives up on is refused with a logged reason.

The map file is rewritten in place, the way ``cp`` or a slow network copy does it
(truncated to nothing, then written chunk by chunk), with pauses between chunks longer
than one watcher poll and longer than the settle time: what holds the reload back is
that the writer still has the file open. Three copies are then given up on: mid-line
in the last entry's number (one binding short, well inside the drop guard: the number
cut short is what refuses it), at an entry boundary half-way (valid YAML: the drop
guard refuses it), and mid-line half-way.

All along, a thread of the test process reads the store the engine writes (LMDB has
many readers) and checks every one of the 50,000 virtual numbers in one snapshot, over
and over: each snapshot must answer all of them from the old map or all of them from
the whole new one.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from engine_process import EngineProcess

from translate.bindings import Route
from translate.store import Store

COUNT = 50_000
CHUNKS = 6
PAUSE = 1.6  # seconds between chunks: longer than a watcher poll (1 s) and the settle time
CALLER = "+821099990000"


def virtual(i: int) -> str:
    return f"+825071{i:07d}"


def map_text(lead: int) -> str:
    """Every binding i: X = 0507-1mmm-nnnn -> A = 010-<lead>mmm-nnnn."""
    out = ["version: 1\nax:\n"]
    for i in range(COUNT):
        mid, end = divmod(i, 10_000)
        out.append(
            f"  - id: b{i:05d}\n    x: 0507-1{mid:03d}-{end:04d}\n    a: 010-{lead}{mid:03d}-{end:04d}\n"
        )
    return "".join(out)


def callee(lead: int, i: int) -> str:
    mid, end = divmod(i, 10_000)
    return f"+8210{lead}{mid:03d}{end:04d}"


class Observer(threading.Thread):
    """Checks the whole map in one snapshot per round; records what each round saw."""

    def __init__(self, store_path: Path, leads: tuple[int, ...]) -> None:
        super().__init__(daemon=True)
        self.store_path = store_path
        self.leads = leads
        self.seen: list[int] = []  # the lead of each round, in order
        self.digests: list[str] = []  # the digest of the last load, each round
        self.bad: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with Store(self.store_path, readonly=True, snapshot_max_age=120) as store:
            while not self.stop.is_set():
                store.release()  # the next lookup takes a new snapshot, kept for the round
                loaded = store.loaded("yaml")
                self.digests.append("" if loaded is None else loaded["digest"])
                first = store.lookup(virtual(0), CALLER, time.time())
                lead = next(
                    (
                        x
                        for x in self.leads
                        if isinstance(first, Route) and first.callee == callee(x, 0)
                    ),
                    None,
                )
                if lead is None:
                    self.bad.append(f"round {len(self.seen)}: binding 0 is {first}")
                    continue
                for i in range(1, COUNT):
                    got = store.lookup(virtual(i), CALLER, time.time())
                    if not isinstance(got, Route) or got.callee != callee(lead, i):
                        self.bad.append(
                            f"round {len(self.seen)}: binding 0 from map {lead}, binding {i}: {got}"
                        )
                        break
                self.seen.append(lead)


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def messages(engine: EngineProcess) -> list[str]:
    return [
        json.loads(line)["msg"]
        for line in engine.log_path.read_text().splitlines()
        if line.startswith("{")
    ]


def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, engine: EngineProcess
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}\n{engine.log_text()}")
        time.sleep(0.1)


def count(engine: EngineProcess, prefix: str) -> int:
    return sum(1 for m in messages(engine) if m.startswith(prefix))


def slow_copy(path: Path, text: str, *, stop_at: int | None = None) -> None:
    """Write ``text`` over ``path`` in CHUNKS pieces with pauses, the file open all along;
    with ``stop_at``, give up after that many characters and close the file."""
    end = len(text) if stop_at is None else stop_at
    step = -(-len(text) // CHUNKS)
    with open(path, "w") as out:
        for at in range(0, end, step):
            out.write(text[at : min(at + step, end)])
            out.flush()
            time.sleep(PAUSE)


def test_a_map_copied_slowly_or_cut_short_is_never_partly_live(tmp_path: Path) -> None:
    old, new = map_text(2), map_text(3)
    with EngineProcess(
        tmp_path,
        files={"numbers/main.yaml": old},
        config={"numbers": {"watch": True, "settle": 1.0, "writer_wait": 600}},
        start_timeout=120,
    ) as engine:
        store = engine.var / "numbers.lmdb"
        path = engine.config_dir / "numbers" / "main.yaml"
        observer = Observer(store, (2, 3))
        observer.start()
        try:
            wait_for(lambda: len(observer.seen) >= 1, 60, "a first round", engine)
            loads = count(engine, "number maps loaded")

            # 1. The whole new map, slowly, over the old one: live only once complete.
            slow_copy(path, new)
            assert count(engine, "number maps loaded") == loads  # nothing while it was open
            assert any(m.startswith("number maps: waiting for ") for m in messages(engine))
            wait_for(
                lambda: count(engine, "number maps loaded") == loads + 1, 120, "the new map", engine
            )
            wait_for(lambda: observer.seen[-1:] == [3], 60, "a round on the new map", engine)
            assert observer.digests[-1] == digest(new)

            # 2-4. Copies of the old map given up on: each refused with its reason, the
            # new map stays. Entry i starts on line 3 + 3 i; its x on the next, a after.
            last = COUNT - 1
            boundary = old.index(f"  - id: b{COUNT // 2:05d}\n")
            cases = [
                # The last entry's number, two digits short: one binding differs.
                (old.rindex("\n") - 2, f"{path}:{3 + 3 * last + 2}:8: bad-number: ax[{last}].a"),
                # Half-way, between two entries: valid YAML, half the bindings gone.
                (boundary, "map refused: it would remove 25000 of the 50000 live YAML bindings"),
                # Half-way, inside a number.
                (
                    boundary + len(f"  - id: b{COUNT // 2:05d}\n    x: 0507-102"),
                    f"{path}:{3 + 3 * (COUNT // 2) + 1}:8: bad-number: ax[{COUNT // 2}].x",
                ),
            ]
            for stop_at, reason in cases:
                refused = count(engine, "number map reload refused")
                slow_copy(path, old, stop_at=stop_at)
                wait_for(
                    lambda refused=refused: (
                        count(engine, "number map reload refused") == refused + 1
                    ),
                    120,
                    f"the copy cut at {stop_at} refused",
                    engine,
                )
                log = messages(engine)
                assert any(reason in m for m in log), (reason, log[-5:])
                assert count(engine, "number maps loaded") == loads + 1
            seen = len(observer.seen)
            wait_for(
                lambda: len(observer.seen) >= seen + 1, 60, "a round after the refusals", engine
            )
            assert observer.seen[-1] == 3
        finally:
            observer.stop.set()
            observer.join(60)
    assert not observer.bad, observer.bad[:5]
    assert observer.seen[0] == 2 and observer.seen[-1] == 3
    # Old, then new, never back: the map went live once, whole.
    flips = sum(1 for a, b in zip(observer.seen, observer.seen[1:], strict=False) if a != b)
    assert flips == 1, observer.seen
    assert len(observer.seen) >= 10, len(observer.seen)
    # The last load was always the old map or the whole new one, never part of a file.
    assert set(observer.digests) == {digest(old), digest(new)}
