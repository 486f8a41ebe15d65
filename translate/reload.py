"""Loading operator maps into the store, and noticing when they change.

The engine calls ``reload_maps`` at start, on SIGHUP, and when ``MapWatcher.changed()``
(polled about once a second) says a map file changed. A map with any error changes
nothing: the errors are logged and returned, and the running map stays. A valid map
replaces every YAML-sourced binding in one write transaction; API bindings stay.

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

from translate.compiler import compile_maps
from translate.numbers import NumberPlan
from translate.store import ConflictError, Store
from translate.yaml_source import ConfigError, SourceError

__all__ = ["MapWatcher", "ReloadResult", "reload_maps"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ReloadResult:
    """The outcome of one reload: ``ok`` with counts, or the errors that refused it."""

    ok: bool
    errors: list[SourceError] = field(default_factory=list)
    files: int = 0
    bindings: int = 0
    added: int = 0
    removed: int = 0
    changed: int = 0
    unchanged: int = 0
    seconds: float = 0.0

    def summary(self) -> str:
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
) -> ReloadResult:
    """Compile every map under ``maps_dir`` and, when valid, make it the YAML map.

    Never raises for a bad map: the result carries the errors (each already logged).
    ``progress(phase, done, total)`` follows the phases "parsing", "checking", "writing".
    """
    started = time.monotonic()
    when = time.time() if now is None else now
    try:
        compiled = compile_maps([maps_dir], plan, now=when, progress=progress)
    except ConfigError as exc:
        return _refused(exc.errors, started)
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
        )
    except ConflictError as exc:
        errors = [compiled.error_at(c.binding_id, f"{c.rule}: {c.message}") for c in exc.conflicts]
        return _refused(errors, started)
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
    log.info("number maps loaded: %s", result.summary())
    return result


def _refused(errors: list[SourceError], started: float) -> ReloadResult:
    result = ReloadResult(ok=False, errors=errors, seconds=time.monotonic() - started)
    log.error("number maps: %s", result.summary())
    for error in errors:
        log.error("  %s", error)
    return result


class MapWatcher:
    """Tells whether the map files in a directory changed since it last looked.

    Cheap enough to poll once a second from an event loop: one directory scan and a
    stat per map file, no threads, no asyncio. Files added, removed, rewritten or
    touched all count; other files in the directory do not.
    """

    __slots__ = ("_dir", "_seen")

    def __init__(self, maps_dir: str | os.PathLike[str]) -> None:
        self._dir = Path(maps_dir)
        self._seen = self._snapshot()

    def changed(self) -> bool:
        """True once per change (the snapshot is taken again when it reports one)."""
        now = self._snapshot()
        if now == self._seen:
            return False
        self._seen = now
        return True

    def _snapshot(self) -> frozenset[tuple[str, int, int, int]]:
        try:
            entries = list(os.scandir(self._dir))
        except OSError:
            return frozenset()
        out = set()
        for entry in entries:
            if not entry.name.endswith((".yaml", ".yml")):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            out.add((entry.name, st.st_mtime_ns, st.st_size, st.st_ino))
        return frozenset(out)
