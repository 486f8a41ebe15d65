"""Files and folders that hold real numbers: readable by the engine's user only.

The queue and the SMS records carry senders' and recipients' real numbers, so they are
created with mode 0600 and the folders ansim creates for them with 0700. A file found
with group or other permissions is tightened to 0600 when opened; folders that already
exist are left as they are (``var/`` may be shared with other tools).
"""

from __future__ import annotations

import logging
import os
import stat

log = logging.getLogger(__name__)

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: str | os.PathLike[str]) -> None:
    """Create ``path`` and any missing parent with mode 0700."""
    path = os.fspath(path)
    if not path or os.path.isdir(path):
        return
    parent = os.path.dirname(os.path.abspath(path))
    if parent != path:
        private_dir(parent)
    try:
        os.mkdir(path, DIR_MODE)
    except FileExistsError:
        pass


def private_file(path: str | os.PathLike[str]) -> None:
    """Create ``path`` empty with mode 0600 if missing; tighten it to 0600 if it is wider.

    An existing file is never opened: closing a descriptor of a file drops every POSIX
    (fcntl) lock this process holds on it, SQLite's among them. The SMS records may share
    the call records' file, whose -shm the CDR writer has mapped and locked; with its
    locks gone, the next process to open the file takes itself for the first, empties
    the -shm, and the writer's next access to the mapping kills the engine (SIGBUS).
    """
    path = os.fspath(path)
    if os.path.dirname(path):
        private_dir(os.path.dirname(path))
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE)
    except FileExistsError:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if mode & 0o077:
            os.chmod(path, FILE_MODE)
            log.info("%s had mode 0%o: now 0%o", path, mode, FILE_MODE)
        return
    os.close(fd)
