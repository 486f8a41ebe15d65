"""The recordings folder: ids, paths, listing, retention and the decryption audit log.

Recordings are ``<id>.rec`` files directly in the folder (readable by the engine's user
only: the folder is made 0700 and each file 0600). An id made by the relay starts with
the UTC time it was made (``20261201T093000Z-3f9a1c0d5e7b``), so listings sort by time.
Retention goes by the creation time in each file's clear header, not the file's mtime
(a copy or a touch does not make a recording younger).

Every decryption appends one JSON line to the audit log before any plaintext is
written (who: the login and uid of the process; when; which recording and call; why:
the reason the operator had to give; the key's fingerprint), and a second line with
the outcome. A decryption whose audit line cannot be written does not happen.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from media.recording import RecordingError, read_header

__all__ = [
    "RecordingEntry",
    "audit",
    "iter_recordings",
    "new_recording_id",
    "purge_recordings",
    "recording_path",
    "valid_recording_id",
]

SUFFIX = ".rec"
_ID = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


def valid_recording_id(recording_id: str) -> bool:
    return bool(_ID.match(recording_id))


def new_recording_id(now: float) -> str:
    stamp = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{os.urandom(6).hex()}"


def recording_path(directory: Path | str, recording_id: str) -> Path:
    if not valid_recording_id(recording_id):
        raise ValueError(f"not a recording id: {recording_id!r}")
    return Path(directory) / f"{recording_id}{SUFFIX}"


@dataclass(frozen=True, slots=True)
class RecordingEntry:
    """A recording file as the folder shows it, without decrypting anything."""

    recording_id: str
    path: Path
    created: float | None  # None: the header is unreadable
    size: int
    error: str = ""


def iter_recordings(directory: Path | str) -> Iterator[RecordingEntry]:
    """Every ``*.rec`` file of the folder, oldest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return
    entries = []
    for path in folder.iterdir():
        if path.suffix != SUFFIX or not path.is_file() or path.is_symlink():
            continue
        size = path.stat().st_size
        try:
            with path.open("rb") as fp:
                header = read_header(fp)
            entries.append(RecordingEntry(header.recording_id, path, header.created, size))
        except (OSError, RecordingError) as exc:
            entries.append(RecordingEntry(path.stem, path, None, size, str(exc)))
    entries.sort(key=lambda e: (e.created if e.created is not None else 0.0, e.recording_id))
    yield from entries


def purge_recordings(directory: Path | str, max_age_s: float, now: float) -> list[RecordingEntry]:
    """Delete the recordings created more than ``max_age_s`` before ``now``; return them.

    A file whose header cannot be read is judged by its mtime instead (a file cut before
    its header was written would otherwise stay for ever).
    """
    removed = []
    for entry in iter_recordings(directory):
        created = entry.created
        if created is None:
            try:
                created = entry.path.stat().st_mtime
            except OSError:
                continue
        if now - created > max_age_s:
            try:
                entry.path.unlink()
            except FileNotFoundError:
                continue
            removed.append(entry)
    return removed


def audit(log_path: Path | str, record: dict[str, Any], now: float) -> None:
    """Append one audit line (JSON) and make it durable; raise OSError if it cannot be."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):
        who = "?"
    line = {
        "time": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds"),
        "user": who,
        "uid": os.getuid(),
    }
    line.update(record)
    data = (json.dumps(line, ensure_ascii=False, sort_keys=False) + "\n").encode()
    path = Path(log_path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
