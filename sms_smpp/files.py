"""Files and folders that hold real numbers: readable by the engine's user only.

The queue and the SMS records carry senders' and recipients' real numbers, so they are
created with mode 0600 and the folders ansim creates for them with 0700. A file found
with group or other permissions is tightened to 0600 when opened; folders that already
exist are left as they are (``var/`` may be shared with other tools).
"""

from __future__ import annotations

import os

from translate.private_files import DIR_MODE, FILE_MODE
from translate.private_files import private_file as _private_file

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file"]


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
    """Create ``path`` empty with mode 0600 if missing (its folder 0700 if missing);
    tighten it to 0600 if it is wider (``translate.private_files.private_file``, which
    never opens an existing file: closing a descriptor of a file drops every POSIX lock
    this process holds on it, and the SMS records may share the call records' file,
    whose SQLite locks the CDR writer holds)."""
    path = os.fspath(path)
    if os.path.dirname(path):
        private_dir(os.path.dirname(path))
    _private_file(path)
