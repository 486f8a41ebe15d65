"""Loading operator maps into the store, and noticing when they change and are complete.

The engine calls ``reload_maps`` at start, on SIGHUP (SIGUSR1: forced), and when its
``MapWatcher`` says a changed map is ready. A map with any error changes nothing: the
errors are logged and returned, and the running map stays. A valid map replaces every
YAML-sourced binding in one write transaction; API bindings stay.

A map must also be whole before it goes live. Three guards, from cheapest:

- ``MapWatcher`` waits until the maps folder has been quiet for ``settle`` seconds, so a
  copy in progress (``cp``, ``scp``, an editor saving) is not taken half-way. Files
  whose names are not maps (``translate.compiler.is_map_name``: dotfiles, ``*.tmp``,
  ``*.part``, editor swap files) never start a reload: write there, then rename.
- It then waits while a process this one can see (``/proc``) still has a map file open
  for writing, at most ``writer_wait`` seconds. The scan runs only while a change is
  pending and the folder is quiet, and stops after ``SCAN_BUDGET`` seconds.
- ``DropGuard`` refuses a map that would remove more than a share of the live YAML
  bindings at once (a file cut short at an entry boundary is valid YAML): the reload
  is refused with the counts, until forced (``ansim numbers load --force``, SIGUSR1).

Only one process needs to reload (the store is shared); if several do, the later ones
find nothing changed and write nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from translate.compiler import compile_maps, is_map_name
from translate.numbers import NumberPlan
from translate.store import ConflictError, DropRefused, Store
from translate.yaml_source import ConfigError, SourceError

__all__ = ["SCAN_BUDGET", "DropGuard", "MapWatcher", "ReloadResult", "open_writers", "reload_maps"]

log = logging.getLogger(__name__)

#: Longest one look for processes that hold a map file open for writing may take (s).
SCAN_BUDGET = 0.2


@dataclass(frozen=True, slots=True)
class DropGuard:
    """Refuses a reload that would remove more than ``max_share`` of the live YAML
    bindings, beyond ``allowance`` bindings that may always go."""

    max_share: float = 0.10
    allowance: int = 10

    def __call__(self, live: int, dropped: int) -> str | None:
        if dropped <= max(self.allowance, self.max_share * live):
            return None
        return (
            f"it would remove {dropped} of the {live} live YAML bindings"
            f" ({dropped / live:.0%}), more than a reload may without being forced"
            f" (max_drop {self.max_share:.0%}, drop_allowance {self.allowance})"
        )


@dataclass(slots=True)
class ReloadResult:
    """The outcome of one reload: ``ok`` with counts, or what refused it (``errors`` in
    the files, or ``refusal`` by the drop guard)."""

    ok: bool
    errors: list[SourceError] = field(default_factory=list)
    refusal: str | None = None
    warnings: list[str] = field(default_factory=list)
    files: int = 0
    bindings: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
        if self.refusal is not None:
            return (
                f"map refused: {self.refusal}; the running map stays (if that is meant:"
                " `ansim numbers load --force`, or SIGUSR1 to the engine)"
            )
        if not self.ok:
            return f"map refused: {len(self.errors)} error(s); the running map stays"
        return (
            f"{self.bindings} bindings from {self.files} file(s): {self.added} added,"
            f" {self.changed} changed, {self.removed} removed, {self.unchanged} unchanged"
            f" in {self.seconds:.2f}s"
        )


def reload_maps(
    store: Store,
    maps_dir: str | os.PathLike[str],
    plan: NumberPlan | None = None,
    *,
    now: float | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    guard: Callable[[int, int], str | None] | None = None,
) -> ReloadResult:
    """Compile every map under ``maps_dir`` and, when valid, make it the YAML map.

    Never raises for a bad map: the result carries the errors (each already logged).
    ``guard`` (a DropGuard; None: no limit, a forced reload) may refuse a map that
    removes too many live bindings. ``progress(phase, done, total)`` follows the phases
    "parsing", "checking", "writing".
    """
    started = time.monotonic()
    when = time.time() if now is None else now
    try:
        compiled = compile_maps([maps_dir], plan, now=when, progress=progress)
    except ConfigError as exc:
        return _refused(ReloadResult(False, errors=exc.errors), started)
    total = len(compiled.bindings)
    written = None if progress is None else (lambda n: progress("writing", n, total))
    try:
        outcome = store.replace_source(
            "yaml",
            compiled.bindings,
            now=when,
            progress=written,
            loaded={
                "at": when,
                "files": len(compiled.files),
                "bindings": len(compiled.bindings),
                "digest": compiled.digest,
            },
            guard=guard,
        )
    except ConflictError as exc:
        errors = [compiled.error_at(c.binding_id, f"{c.rule}: {c.message}") for c in exc.conflicts]
        return _refused(ReloadResult(False, errors=errors), started)
    except DropRefused as exc:
        return _refused(ReloadResult(False, refusal=str(exc)), started)
    result = ReloadResult(
        ok=True,
        files=len(compiled.files),
        bindings=len(compiled.bindings),
        added=outcome.added,
        removed=outcome.removed,
        changed=outcome.changed,
        unchanged=outcome.unchanged,
        seconds=time.monotonic() - started,
    )
    result.warnings = [f"{file}: holds no bindings" for file in compiled.empty_files]
    if not compiled.bindings and outcome.removed:
        result.warnings.append(
            f"the number maps hold no bindings: all {outcome.removed} YAML bindings were removed"
        )
    log.info("number maps loaded: %s", result.summary())
    for warning in result.warnings:
        log.warning("number maps: %s", warning)
    return result


def _refused(result: ReloadResult, started: float) -> ReloadResult:
    result.seconds = time.monotonic() - started
    log.error("number maps: %s", result.summary())
    for error in result.errors:
        log.error("  %s", error)
    return result


Snapshot = frozenset[tuple[str, int, int, int]]


class MapWatcher:
    """Says when changed map files are ready to load: changed since the last load, the
    folder quiet for ``settle`` seconds, and no map file open for writing (waited for at
    most ``writer_wait`` seconds).

    ``poll(now)`` is cheap enough for once a second on an event loop: one directory scan
    and a stat per entry; the ``/proc`` scan for writers runs only while a settled
    change waits. Every entry of the folder counts for quiet (a temporary file being
    written too), only map files for a change.
    """

    __slots__ = (
        "_dir",
        "_folder",
        "_loaded",
        "_pending_since",
        "_quiet_since",
        "_told",
        "settle",
        "writer_wait",
    )

    def __init__(
        self,
        maps_dir: str | os.PathLike[str],
        *,
        settle: float = 2.0,
        writer_wait: float = 300.0,
        now: float | None = None,
    ) -> None:
        self._dir = Path(maps_dir)
        self.settle = settle
        self.writer_wait = writer_wait
        start = time.monotonic() if now is None else now
        self._folder = self._snapshot()
        self._loaded = _maps_only(self._folder)
        self._quiet_since = start
        self._pending_since: float | None = None
        self._told: frozenset[tuple[int, str]] = frozenset()

    def poll(self, now: float) -> bool:
        """True once when the changed maps are ready (the caller reloads them then)."""
        folder = self._snapshot()
        if folder != self._folder:
            self._folder = folder
            self._quiet_since = now
        maps = _maps_only(folder)
        if maps == self._loaded:
            self._pending_since = None
            return False
        if self._pending_since is None:
            self._pending_since = now
        if now - self._quiet_since < self.settle:
            return False
        if now - self._pending_since < self.writer_wait:
            writers = open_writers([self._dir / name for name, *_ in maps])
            if writers:
                told = frozenset(writers)
                if told != self._told:
                    self._told = told
                    for pid, path in sorted(writers):
                        log.info(
                            "number maps: waiting for %s, open for writing by pid %d", path, pid
                        )
                return False
        else:
            log.warning(
                "number maps: a map file is still open for writing after %.0f s; loading it as"
                " it is",
                now - self._pending_since,
            )
        self._loaded = maps
        self._pending_since = None
        self._told = frozenset()
        return True

    def _snapshot(self) -> Snapshot:
        try:
            entries = list(os.scandir(self._dir))
        except OSError:
            return frozenset()
        out = set()
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            out.add((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return frozenset(out)


def _maps_only(folder: Snapshot) -> Snapshot:
    return frozenset(item for item in folder if is_map_name(item[0]))


def open_writers(
    paths: list[Path], *, proc: str = "/proc", budget: float = SCAN_BUDGET
) -> list[tuple[int, str]]:
    """(pid, path) for each process this one can see that has one of ``paths`` open for
    writing (read and write included); empty where ``/proc`` is not there. Other users'
    processes are skipped unless this one may read their file descriptors."""
    wanted = {os.path.realpath(p) for p in paths}
    if not wanted:
        return []
    own = os.getpid()
    deadline = time.monotonic() + budget
    found: list[tuple[int, str]] = []
    try:
        pids = [int(name) for name in os.listdir(proc) if name.isdigit()]
    except OSError:
        return []
    for pid in pids:
        if pid == own:
            continue
        if time.monotonic() > deadline:
            log.debug("number maps: stopped looking for writers after %.1f s", budget)
            break
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:  # gone, or not ours to look at
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target not in wanted:
                continue
            try:
                with open(f"{proc}/{pid}/fdinfo/{fd}") as info:
                    flags = next(
                        (int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0
                    )
            except (OSError, ValueError):
                continue
            if flags & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR):
                found.append((pid, target))
    return found
