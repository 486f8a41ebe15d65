"""A call's record survives a crash of the engine: SIGKILL during 500 calls/s.

The carrier's SIPp places calls at 500 calls/s through ansim to the callee trunk's
SIPp and logs one line per call whose BYE got its 200 (the calls it saw complete, by
Call-ID). Eight seconds in, the engine is killed with SIGKILL; the writer thread's
batch in memory is lost with it, but every ended call's record was journaled before
the 200 for its BYE went out. After a restart, which replays the journal, every call
SIPp saw complete has exactly one record (matched by Call-ID), and no record is there
twice: records the thread had committed before the kill are also still in the journal,
and the replay must skip them. A load test: run it under the shared lock.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from call_env import CALLEE, CALLER, VIRTUAL_AX, Ansim, Sipp, trunk, user_part
from conftest import free_port

from b2bua.cdr import journal_segments

RATE = 500
KILL_AFTER = 8.0
CALLS = RATE * 10  # ten seconds' worth: calls are still being placed at the kill


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    with Sipp(tmp_path) as runner:
        yield runner


def records(path: Path) -> list[tuple[str, str]]:
    """(a_call_id, record_id) of every row, read as another process would."""
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT a_call_id, record_id FROM calls").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def test_sigkill_at_500_calls_per_second_loses_no_completed_call(
    sipp: Sipp, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    port = free_port()
    engine = Ansim(
        tmp_path / "ansim",
        trunks=[trunk("callee", port, invite_timeout=4.0)],
        routes=[{"prefix": "+82", "trunks": ["callee"]}],
    )
    engine.start()
    done_log = tmp_path / "done.log"
    try:
        uas = sipp.start(
            "call_uas_answer",
            port=port,
            keys=CALLEE.sipp_keys("callee"),
            calls=CALLS,
            timeout=60,
            trace=False,
            extra=["-d", "0"],
        )
        uac = sipp.start(
            "cdr_uac_logged",
            port=free_port(),
            remote=engine.addr,
            service=user_part(VIRTUAL_AX),
            keys={"caller_e164": CALLER.e164, "caller_nat": CALLER.national},
            calls=CALLS,
            rate=RATE,
            timeout=60,
            trace=False,
            call_id="crash-%u-%p@%s",
            # calls left hanging by the kill fail after 2 s instead of retransmitting
            extra=["-d", "0", "-recv_timeout", "2000", "-trace_logs", "-log_file", str(done_log)],
        )
        time.sleep(KILL_AFTER)
        assert engine.alive(), engine.log_text()
        engine.kill()  # SIGKILL
        uac.wait(60)  # its last calls fail; it exits once all CALLS have ended
        uas.stop()
        committed = records(engine.cdr_path)
        left = journal_segments(engine.cdr_path)
        done = re.findall(r"^done (\S+)$", done_log.read_text(errors="replace"), re.M)
        assert len(done) > RATE * (KILL_AFTER - 2), f"only {len(done)} calls completed"
        assert len(set(done)) == len(done)
        assert left, "no journal left behind by the killed engine"

        engine.start()  # replays the journal before it answers anything
        after = records(engine.cdr_path)
    finally:
        engine.stop()
    by_call = Counter(call_id for call_id, _ in after)
    missing = [c for c in done if by_call[c] == 0]
    assert not missing, f"{len(missing)} completed calls without a record: {missing[:5]}"
    doubled = [c for c, n in by_call.items() if n > 1]
    assert not doubled, f"records written twice: {doubled[:5]}"
    assert len({rid for _, rid in after}) == len(after)
    assert journal_segments(engine.cdr_path) == []  # replayed, then deleted at the clean stop
    lost_without_journal = sum(1 for c in done if c not in {a for a, _ in committed})
    record_property("completed_calls", len(done))
    record_property("records_only_in_the_journal", lost_without_journal)
    print(
        f"\n{len(done)} calls completed before the kill; {len(committed)} records committed"
        f" at the kill, {lost_without_journal} completed calls only in the journal;"
        f" {len(after)} records after the replay"
    )
