"""Number maps reload inside ``ansim serve``: on SIGHUP and when a map file changes; a
bad map is logged and the old one stays; and the engine keeps handling SIP while a
reload waits for the store's write lock, which another process holds.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import ROOT
from engine_process import EngineProcess

from translate.bindings import Refusal, Route
from translate.store import Store

X1, X2 = "+8250700001001", "+8250700001002"
CALLER = "+821099990000"

MAP_X1 = """
version: 1
ax:
  - {id: first, x: 0507-0000-1001, a: 010-0000-1001}
"""
MAP_X2 = """
version: 1
ax:
  - {id: second, x: 0507-0000-1002, a: 010-0000-1002}
"""
BAD_MAP = """
version: 1
ax:
  - {id: broken, x: 0507-0000-1003, a: 010-00}
"""

# Holds the store's write lock for argv[2] seconds, saying "locked" once it has it.
HOLD_LOCK = """
import sys, time
from translate.store import Store
with Store(sys.argv[1]) as store, store._write():
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.05)


def messages(engine: EngineProcess) -> list[str]:
    lines = engine.log_path.read_text().splitlines()
    return [json.loads(line)["msg"] for line in lines if line.strip()]


def decide(engine: EngineProcess, virtual: str) -> Route | Refusal:
    """The store's decision, read from this process (the engine holds the writer)."""
    with Store(engine.var / "numbers.lmdb", readonly=True, snapshot_max_age=0) as store:
        return store.lookup(virtual, CALLER, time.time())


def bound(engine: EngineProcess, virtual: str) -> bool:
    return isinstance(decide(engine, virtual), Route)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[EngineProcess]:
    with EngineProcess(tmp_path, files={"numbers/map.yaml": MAP_X1}) as proc:
        yield proc


def test_sighup_reloads_and_a_bad_map_leaves_the_old_one(engine: EngineProcess) -> None:
    assert bound(engine, X1) and not bound(engine, X2)
    (engine.config_dir / "numbers" / "map.yaml").write_text(MAP_X2)
    assert engine.proc is not None
    engine.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: bound(engine, X2), 10, "the new map after SIGHUP")
    assert decide(engine, X1) == Refusal("unknown", None)

    (engine.config_dir / "numbers" / "map.yaml").write_text(BAD_MAP)
    engine.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: "number map reload refused; the running map stays" in messages(engine),
        10,
        "the refused reload in the log",
    )
    log = engine.log_text()
    assert "map.yaml:4" in log, log  # the error names the file and line
    assert bound(engine, X2) and not bound(engine, "+8250700001003")
    assert engine.options() is not None


def test_a_changed_map_file_is_reloaded(tmp_path: Path) -> None:
    with EngineProcess(
        tmp_path, config={"numbers": {"watch": True}}, files={"numbers/map.yaml": MAP_X1}
    ) as engine:
        assert bound(engine, X1)
        (engine.config_dir / "numbers" / "other.yaml").write_text(MAP_X2)
        wait_for(lambda: bound(engine, X2), 10, "the added map file")
        assert bound(engine, X1)


@pytest.mark.parametrize("then", ["release", "stop"])
def test_sip_goes_on_while_a_reload_waits_for_the_store(engine: EngineProcess, then: str) -> None:
    # Another process holds the write lock (as `ansim numbers load` of a big map or
    # `ansim numbers repack` does); the reload asked for meanwhile waits for it on the
    # engine's store thread, not on its event loop.
    hold = 3.0 if then == "release" else 30.0
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(engine.var / "numbers.lmdb"), str(hold)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
        (engine.config_dir / "numbers" / "map.yaml").write_text(MAP_X2)
        assert engine.proc is not None
        engine.proc.send_signal(signal.SIGHUP)
        for _ in range(10):  # 2 s of OPTIONS, each answered within a second
            started = time.monotonic()
            assert engine.options(timeout=1.0) is not None, engine.log_text()
            time.sleep(max(0.0, 0.2 - (time.monotonic() - started)))
        assert not bound(engine, X2)  # the reload still waits
        if then == "release":
            assert holder.wait(10) == 0
            wait_for(lambda: bound(engine, X2), 10, "the reload once the lock is free")
        else:
            # Stopping does not wait for the lock: the engine exits in time, the
            # reload is dropped, and the store keeps the old map.
            assert engine.stop() == 0
            assert "leaving the store reload unfinished: it still waits" in messages(engine)
            holder.kill()
            holder.wait(10)
            assert bound(engine, X1) and not bound(engine, X2)
    finally:
        holder.kill()
        holder.wait(10)
