"""Making a file private never costs this process its locks on it.

Closing any descriptor of a file drops every POSIX (fcntl) lock the process holds on
it. SQLite keeps its WAL locks that way, and the SMS records may share the call records'
file: a helper that opened and closed the -shm to check its mode let another process
empty the -shm under the CDR writer's mapping, and the engine died of SIGBUS. Both
helpers that make files private are checked with a real lock, held here and probed
from another process, and with a real SQLite database in WAL mode.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from sms_smpp import files as sms_files
from translate import private_files

HELPERS: dict[str, Callable[[str], object]] = {
    "sms_smpp.files": sms_files.private_file,
    "translate.private_files": private_files.private_file,
}

PROBE = """
import fcntl, sys
fd = open(sys.argv[1], "r+b")
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
except OSError:
    print("held")
else:
    print("free")
"""


def _probe(path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=30
    )
    return out.stdout.strip()


@pytest.mark.parametrize("helper", sorted(HELPERS))
def test_a_lock_held_on_the_file_survives(tmp_path: Path, helper: str) -> None:
    path = tmp_path / "records.sqlite-shm"
    path.write_bytes(b"\0" * 4096)
    os.chmod(path, 0o644)
    with open(path, "r+b") as held:
        fcntl.lockf(held, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
        assert _probe(path) == "held"
        HELPERS[helper](str(path))
        assert _probe(path) == "held"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _probe(path) == "free"  # the probe can tell


@pytest.mark.parametrize("helper", sorted(HELPERS))
def test_a_new_file_is_made_private(tmp_path: Path, helper: str) -> None:
    path = tmp_path / "new" / "records.sqlite"
    if helper == "translate.private_files":
        path.parent.mkdir()
    HELPERS[helper](str(path))
    assert path.read_bytes() == b"" and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_sms_records_opened_beside_a_wal_writer_leave_its_shared_memory_alone(
    tmp_path: Path,
) -> None:
    # The CDR writer's connection holds the WAL locks; the SMS records are then opened
    # on the same file. A connection from another process must still find those locks:
    # without them it takes itself for the last one when it closes, checkpoints, and
    # deletes the -wal and the -shm the writer has mapped.
    path = tmp_path / "cdr.sqlite"
    writer = sqlite3.connect(str(path), isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("CREATE TABLE calls (n INTEGER)")
    writer.execute("INSERT INTO calls VALUES (1)")
    shm = Path(str(path) + "-shm")
    size = shm.stat().st_size
    assert size > 0
    for suffix in ("", "-wal", "-shm"):
        sms_files.private_file(str(path) + suffix)
    reader = (
        "import sqlite3, sys\n"
        "db = sqlite3.connect(sys.argv[1])\n"
        "print(db.execute('SELECT count(*) FROM calls').fetchone()[0])\n"
        "db.close()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader, str(path)], capture_output=True, text=True, timeout=30
    )
    assert out.stdout.strip() == "1", out.stderr
    assert shm.stat().st_size == size
    writer.execute("INSERT INTO calls VALUES (2)")  # the mapping is still whole
    assert writer.execute("SELECT count(*) FROM calls").fetchone()[0] == 2
    writer.close()
