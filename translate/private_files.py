"""Files and folders readable by the engine's user only, for everything that holds real
numbers (the translation store, CDRs, the SMS queue).

New files are created 0600 and new folders 0700, whatever the umask allows beyond that
(a umask only takes bits away). Existing ones that others may read are tightened to
those modes, with a warning saying so, or, where this user cannot change them, left
with a warning: a store that others can read is a leak to fix, not a reason to stop.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["DIR_MODE", "FILE_MODE", "private_dir", "private_file", "tighten"]

log = logging.getLogger(__name__)

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Make sure the folder ``path`` exists and only its owner can enter it.

    Every folder created on the way is 0700; folders that exist already above ``path``
    are left as they are (``/var/lib`` is not ansim's); ``path`` itself is tightened.
    """
    folder = Path(path)
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for created in reversed(missing):
        try:
            os.mkdir(created, DIR_MODE)
        except FileExistsError:  # made meanwhile by another process
            pass
    tighten(folder, DIR_MODE)
    return folder


def private_file(path: str | os.PathLike[str]) -> Path:
    """Make sure the file ``path`` exists (empty when new) and only its owner can read it."""
    file = Path(path)
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        tighten(file, FILE_MODE)
    else:
        os.close(fd)
    return file


def tighten(path: str | os.PathLike[str], mode: int) -> bool:
    """Take from ``path`` the permission bits ``mode`` does not have; True when it had some.

    Logs a warning either way it had them: tightened, or (not this user's file) could not
    be tightened. A path that does not exist is left alone.
    """
    try:
        current = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
    extra = current & ~mode
    if not extra:
        return False
    try:
        os.chmod(path, current & mode)
    except OSError as exc:
        log.warning(
            "%s is readable beyond its owner (mode %04o) and cannot be tightened: %s",
            os.fspath(path),
            current,
            exc.strerror,
        )
        return True
    log.warning(
        "%s was readable beyond its owner (mode %04o): tightened to %04o",
        os.fspath(path),
        current,
        current & mode,
    )
    return True
