"""Compiles operator number maps (``config/numbers/*.yaml``) into validated bindings.

Everything is checked before anything is written, and every problem in every file is
reported at once as ``file:line:column: rule: where: detail``. The rules:

=====================  ==============================================================
``yaml-syntax``        the file is not valid YAML (or holds several documents)
``duplicate-key``      a key appears twice in one mapping
``unknown-field``      a field the format does not have (typos: ``recrod``)
``missing-field``      a required field is absent (``x``, ``a``; ``b`` for axb/axn)
``invalid-value``      a value of the wrong type or range (``max_seconds: -5``)
``bad-number``         a telephone number that does not normalise to E.164
``bad-plan``           the file's ``plan`` section is not a usable number plan
``bad-id``             an id longer than 100 characters or with control characters
``duplicate-id``       two bindings with one id (ids are global across files)
``duplicate-virtual``  two ``ax``/``axn`` bindings on one X
``party-conflict``     a real number with two routes on one X (in two axb pairs, or
                       an axb pair and the A of an axn)
``same-party``         an axb or axn whose a and b are the same number
``virtual-is-party``   X is also a real party of the same binding
``virtual-as-party``   a real party number is the X of some binding (a call loop)
``expired``            an expiry in the past
``timezone-required``  hours, or an expiry without an offset, and no timezone
``bad-timezone``       a timezone that is not an IANA name
``bad-hours``          hours that are not HH:MM-HH:MM
``bad-media``          a media mode that is not passthrough, relay or rtpengine
``record-passthrough`` ``record: true`` with ``media: passthrough`` (a recorded call's
                       media must reach ansim)
=====================  ==============================================================

Real numbers are masked in messages (the position says where they are) unless
translate.numbers.SHOW_REAL_NUMBERS is set.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pydantic

from translate.bindings import (
    Binding,
    Hours,
    binding_problems,
    time_zone,
)
from translate.mapfile import TEXT_FIELDS, AxbEntry, AxEntry, AxnEntry, Defaults, MapFile
from translate.numbers import NumberError, NumberPlan, mask, normalise
from translate.yaml_source import (
    ConfigError,
    Loc,
    Positions,
    SourceError,
    format_loc,
    load_yaml_text,
    validation_errors,
)

__all__ = [
    "IGNORED_STARTS",
    "MAP_SUFFIXES",
    "CompiledMap",
    "compile_maps",
    "is_map_name",
    "map_files",
]

#: progress(phase, done, total): phase is "parsing" (files) or "checking" (bindings).
Progress = Callable[[str, int, int], None]
Origin = tuple[str, int, int]

_ENTRY_MODELS: dict[str, type[AxEntry | AxbEntry | AxnEntry]] = {
    "ax": AxEntry,
    "axb": AxbEntry,
    "axn": AxnEntry,
}
_MAX_ID = 100


@dataclass(slots=True)
class CompiledMap:
    """Bindings compiled from a set of map files, with where each one was written."""

    bindings: list[Binding] = field(default_factory=list)
    origins: dict[str, Origin] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    digest: str = ""
    #: Files that hold no binding (empty, comments only, or empty lists).
    empty_files: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out = {"ax": 0, "axb": 0, "axn": 0}
        for binding in self.bindings:
            out[binding.kind] += 1
        return out

    def error_at(self, binding_id: str, reason: str) -> SourceError:
        """A SourceError for a problem found later (by the store) with one binding."""
        file, line, column = self.origins.get(binding_id, ("<maps>", 1, 1))
        return SourceError(file, line, column, reason)


#: Map files are ``*.yaml`` and ``*.yml``; a name starting with one of these is not one,
#: so that a file being written under such a name and then renamed into place (the
#: atomic way to change a map) never loads half-written: dotfiles (``.new.yaml``, rsync's
#: ``.map.yaml.Xq3z``, emacs's ``.#map.yaml``) and ``#`` or ``~`` names (editor autosaves).
#: Names ending otherwise (``map.yaml.tmp``, ``.part``, ``.swp``, ``~``) are not maps either.
IGNORED_STARTS = (".", "#", "~")
MAP_SUFFIXES = (".yaml", ".yml")


def is_map_name(name: str) -> bool:
    """Whether a file called ``name`` in a maps folder is a map (see ``IGNORED_STARTS``)."""
    return name.endswith(MAP_SUFFIXES) and not name.startswith(IGNORED_STARTS)


def map_files(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The map files named by ``paths``: files as given, directories' map files
    (``is_map_name``).

    A path that does not exist raises ConfigError (a mistyped directory must not load
    as an empty map and unbind everything).
    """
    out: list[Path] = []
    missing: list[SourceError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = [p for p in path.iterdir() if is_map_name(p.name) and p.is_file()]
            out.extend(sorted(found))
        elif path.is_file():
            out.append(path)
        else:
            missing.append(SourceError(str(path), 1, 1, "unreadable: no such file or directory"))
    if missing:
        raise ConfigError(missing)
    return out


def compile_maps(
    paths: Iterable[str | os.PathLike[str]],
    plan: NumberPlan | None = None,
    *,
    now: float,
    progress: Progress | None = None,
) -> CompiledMap:
    """Compile map files (or directories of them); raise ConfigError listing every error."""
    compiler = _Compiler(plan or NumberPlan(), now)
    files = map_files(paths)
    digest = hashlib.sha256()
    parsed: list[_ParsedFile] = []
    for n, path in enumerate(files, 1):
        # Read once: what is checked is what the digest names, even if the file changes.
        try:
            text = path.read_bytes()
        except OSError as exc:
            compiler.errors.append(SourceError(str(path), 1, 1, f"unreadable: {exc.strerror}"))
            continue
        digest.update(text)
        loaded = compiler.load_file(path, text)
        if loaded is not None:
            parsed.append(loaded)
        if loaded is None or not any(items for _, items in loaded.lists):
            compiler.result.empty_files.append(str(path))
        if progress is not None:
            progress("parsing", n, len(files))
    total = sum(len(items) for p in parsed for _, items in p.lists)
    done = 0
    for p in parsed:
        for kind, items in p.lists:
            for index, item in enumerate(items):
                compiler.compile_entry(p, kind, index, item)
                done += 1
                if progress is not None and (done % 1000 == 0 or done == total):
                    progress("checking", done, total)
    compiler.cross_check()
    if compiler.errors:
        # A bad default is reported once, not once per binding that inherits it.
        raise ConfigError(dict.fromkeys(compiler.errors))
    result = compiler.result
    result.files = [str(p) for p in files]
    result.digest = digest.hexdigest()
    return result


@dataclass(slots=True)
class _ParsedFile:
    positions: Positions
    plan: NumberPlan
    defaults: Defaults
    lists: list[tuple[str, list[Any]]]


@dataclass(slots=True)
class _Entry:
    binding: Binding
    file: str
    positions: Positions
    loc: Loc
    id_given: bool
    # False for an entry with errors of its own, kept so that the rules across entries
    # (duplicates, conflicts) are still checked against it and every error shows at once.
    valid: bool = True


class _Compiler:
    def __init__(self, plan: NumberPlan, now: float) -> None:
        self.plan = plan
        self.now = now
        self.errors: list[SourceError] = []
        self.entries: list[_Entry] = []
        self.result = CompiledMap()

    def error(self, positions: Positions, loc: Loc, rule: str, detail: str) -> None:
        line, column = positions.at(loc)
        where = format_loc(positions.resolve(loc))
        text = f"{rule}: {where}: {detail}" if where else f"{rule}: {detail}"
        self.errors.append(SourceError(positions.file, line, column, text))

    def load_file(self, path: Path, text: bytes) -> _ParsedFile | None:
        """Parse a file's text and check its header; None when nothing in it can be
        compiled."""
        try:
            data, positions = load_yaml_text(text, str(path), keep_going=True)
        except ConfigError as exc:
            self.errors.extend(exc.errors)
            return None
        self.errors.extend(positions.value_errors)
        if data is None:
            return None
        if not isinstance(data, dict):
            self.error(positions, (), "invalid-value", "a map file is a mapping (ax:, axb:, ...)")
            return None
        _restore_text(data, positions)
        shell = {k: ([] if k in _ENTRY_MODELS else v) for k, v in data.items()}
        try:
            header = MapFile.model_validate(shell)
        except pydantic.ValidationError as exc:
            self.errors.extend(validation_errors(exc, positions))
            # Entries can still be checked when plan and defaults, which they inherit, are fine.
            try:
                header = MapFile.model_validate(
                    {k: v for k, v in shell.items() if k in ("plan", "defaults")}
                )
            except pydantic.ValidationError:
                return None
        plan = self._plan(header, positions)
        if plan is None:
            return None
        lists: list[tuple[str, list[Any]]] = []
        for kind in _ENTRY_MODELS:
            items = data.get(kind)
            if items is None:
                continue
            if isinstance(items, list):
                lists.append((kind, items))
            else:
                self.error(positions, (kind,), "invalid-value", f"{kind} must be a list")
        return _ParsedFile(positions, plan, header.defaults or Defaults(), lists)

    def compile_entry(self, parsed: _ParsedFile, kind: str, index: int, item: Any) -> None:
        loc: Loc = (kind, index)
        try:
            entry = _ENTRY_MODELS[kind].model_validate(item)
        except pydantic.ValidationError as exc:
            self.errors.extend(validation_errors(exc, parsed.positions, loc))
            if isinstance(item, dict):
                numbers = {}
                for name in ("x", "a", "b"):
                    value = item.get(name)
                    number = normalise(value, parsed.plan) if isinstance(value, str) else None
                    if isinstance(number, str):
                        numbers[name] = number
                    elif isinstance(number, NumberError):  # reported with the other errors
                        self.error(
                            parsed.positions,
                            (*loc, name),
                            "bad-number",
                            f"not a telephone number: {number}",
                        )
                raw_id = item.get("id")
                given = None if raw_id is None else str(raw_id)
                self._shadow(kind, given, numbers, parsed.positions, loc)
            return
        self._entry(kind, entry, parsed.defaults, parsed.plan, parsed.positions, loc)

    def _shadow(
        self,
        kind: str,
        given_id: str | None,
        numbers: dict[str, str],
        positions: Positions,
        loc: Loc,
    ) -> None:
        """Register an entry that has errors for the cross-entry rules, when its numbers are
        usable."""
        if "x" not in numbers or "a" not in numbers or (kind != "ax") != ("b" in numbers):
            return
        binding = Binding(
            id=given_id if given_id is not None else f"{kind}:{numbers['x']}",
            kind=kind,  # type: ignore[arg-type]
            virtual=numbers["x"],
            a=numbers["a"],
            b=numbers.get("b"),
        )
        if not binding_problems(binding):
            entry = _Entry(binding, positions.file, positions, loc, given_id is not None, False)
            self.entries.append(entry)

    def _plan(self, header: MapFile, positions: Positions) -> NumberPlan | None:
        if header.plan is None:
            return self.plan
        override = {k: str(v) for k, v in header.plan.model_dump(exclude_none=True).items()}
        try:
            return NumberPlan(
                country_code=override.get("country_code", self.plan.country_code),
                trunk_prefix=override.get("trunk_prefix", self.plan.trunk_prefix),
                international_prefix=override.get(
                    "international_prefix", self.plan.international_prefix
                ),
                national_max_digits=self.plan.national_max_digits,
            )
        except ValueError as exc:
            self.error(positions, ("plan",), "bad-plan", str(exc))
            return None

    def _entry(
        self,
        kind: str,
        entry: AxEntry | AxbEntry | AxnEntry,
        defaults: Defaults,
        plan: NumberPlan,
        positions: Positions,
        loc: Loc,
    ) -> None:
        before = len(self.errors)
        numbers: dict[str, str] = {}
        for name in ("x", "a", "b"):
            raw = getattr(entry, name, None)
            if raw is None:
                continue
            number = normalise(str(raw), plan)
            if isinstance(number, NumberError):
                self.error(
                    positions, (*loc, name), "bad-number", f"not a telephone number: {number}"
                )
            else:
                numbers[name] = number
        tz_name, tz_loc = _inherit(entry, defaults, "timezone", loc)
        zone: ZoneInfo | None = None
        if tz_name is not None:
            try:
                zone = time_zone(tz_name)
            except ValueError:
                self.error(positions, tz_loc, "bad-timezone", f"unknown time zone {tz_name!r}")
                tz_name = None
        expires = self._expiry(entry, defaults, zone, positions, loc)
        hours = self._hours(entry, defaults, tz_name, positions, loc)
        record, _ = _inherit(entry, defaults, "record", loc)
        media, _ = _inherit(entry, defaults, "media", loc)
        if len(self.errors) > before:
            given = None if entry.id is None else str(entry.id)
            self._shadow(kind, given, numbers, positions, loc)
            return
        id_given = entry.id is not None
        binding_id = str(entry.id) if entry.id is not None else f"{kind}:{numbers['x']}"
        if len(binding_id) > _MAX_ID or not binding_id.isprintable() or not binding_id.strip():
            self.error(
                positions,
                (*loc, "id"),
                "bad-id",
                f"ids are 1-{_MAX_ID} printable characters",
            )
            return
        present = getattr(entry, "present", None) or (defaults.present if kind == "ax" else None)
        binding = Binding(
            id=binding_id,
            kind=kind,  # type: ignore[arg-type]
            virtual=numbers["x"],
            a=numbers["a"],
            b=numbers.get("b"),
            present=present or "virtual",
            record=bool(record),
            expires=expires,
            max_seconds=_inherit(entry, defaults, "max_seconds", loc)[0],
            calls_per_hour=_inherit(entry, defaults, "calls_per_hour", loc)[0],
            hours=hours,
            media=media,
        )
        for rule, name, message in binding_problems(binding):
            field_name = {"virtual": "x"}.get(name, name)
            self.error(positions, (*loc, field_name), rule, message)
        if len(self.errors) == before:
            self.entries.append(_Entry(binding, positions.file, positions, loc, id_given))

    def _expiry(
        self,
        entry: AxEntry | AxbEntry | AxnEntry,
        defaults: Defaults,
        zone: ZoneInfo | None,
        positions: Positions,
        loc: Loc,
    ) -> float | None:
        value, value_loc = _inherit(entry, defaults, "expires", loc)
        if value is None:
            return None
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            moment = value
        elif zone is None:
            if _inherit(entry, defaults, "timezone", loc)[0] is None:
                self.error(
                    positions,
                    value_loc,
                    "timezone-required",
                    "expires has no UTC offset: add one (+09:00) or set timezone",
                )
            return None
        elif isinstance(value, dt.datetime):
            moment = value.replace(tzinfo=zone)
        else:
            moment = dt.datetime.combine(value, dt.time(), tzinfo=zone)
        expires = moment.timestamp()
        if expires <= self.now:
            self.error(
                positions, value_loc, "expired", f"expires {moment.isoformat()} is in the past"
            )
        return expires

    def _hours(
        self,
        entry: AxEntry | AxbEntry | AxnEntry,
        defaults: Defaults,
        tz_name: str | None,
        positions: Positions,
        loc: Loc,
    ) -> Hours | None:
        text, hours_loc = _inherit(entry, defaults, "hours", loc)
        if text is None:
            return None
        if tz_name is None:
            if _inherit(entry, defaults, "timezone", loc)[0] is None:
                self.error(positions, hours_loc, "timezone-required", "hours need a timezone")
            return None
        try:
            return Hours.parse(text, tz_name)
        except ValueError as exc:
            self.error(positions, hours_loc, "bad-hours", str(exc))
            return None

    def cross_check(self) -> None:
        """Rules across all entries of all files: ids, virtual numbers, parties."""
        ids: dict[str, _Entry] = {}
        heads: dict[str, _Entry] = {}
        parties: dict[tuple[str, str], _Entry] = {}
        virtuals = {e.binding.virtual: e for e in self.entries}
        for e in self.entries:
            b = e.binding
            ok = True
            first = ids.get(b.id)
            if first is not None:
                where = (*e.loc, "id") if e.id_given else e.loc
                self.error(
                    e.positions,
                    where,
                    "duplicate-id",
                    f"id {b.id!r} is already used at {_at(first)}",
                )
                ok = False
            if b.has_head():
                first = heads.get(b.virtual)
                if first is not None:
                    self.error(
                        e.positions,
                        (*e.loc, "x"),
                        "duplicate-virtual",
                        f"{b.virtual} is already bound by {first.binding.kind}"
                        f" {first.binding.id!r} at {_at(first)}",
                    )
                    ok = False
            for name, party in (("a", b.a), ("b", b.b)):
                if party is None:
                    continue
                loop = virtuals.get(party)
                if loop is not None:
                    self.error(
                        e.positions,
                        (*e.loc, name),
                        "virtual-as-party",
                        f"{name} is the virtual number of {loop.binding.kind}"
                        f" {loop.binding.id!r} at {_at(loop)}",
                    )
                    ok = False
                if party not in b.parties():
                    continue
                first = parties.get((b.virtual, party))
                if first is not None:
                    self.error(
                        e.positions,
                        (*e.loc, name),
                        "party-conflict",
                        f"{name} ({mask(party)}) already has a route on {b.virtual} in"
                        f" {first.binding.kind} {first.binding.id!r} at {_at(first)}",
                    )
                    ok = False
            if not ok:
                continue
            ids[b.id] = e
            if b.has_head():
                heads[b.virtual] = e
            for party in b.parties():
                parties[(b.virtual, party)] = e
            if not e.valid:
                continue
            line, column = e.positions.at(e.loc)
            self.result.bindings.append(b)
            self.result.origins[b.id] = (e.file, line, column)


def _inherit(
    entry: AxEntry | AxbEntry | AxnEntry, defaults: Defaults, name: str, loc: Loc
) -> tuple[Any, Loc]:
    """The entry's value for ``name`` or the file default, with where it was written."""
    value = getattr(entry, name)
    if value is not None:
        return value, (*loc, name)
    return getattr(defaults, name), ("defaults", name)


def _at(entry: _Entry) -> str:
    line, column = entry.positions.at(entry.loc)
    return f"{entry.file}:{line}:{column}"


def _restore_text(data: dict[Any, Any], positions: Positions) -> None:
    """Put back the written text of ids, numbers and plan fields YAML read as numbers."""
    targets: list[tuple[dict[Any, Any], Loc]] = []
    plan = data.get("plan")
    if isinstance(plan, dict):
        targets.append((plan, ("plan",)))
    for kind in _ENTRY_MODELS:
        items = data.get(kind)
        if isinstance(items, list):
            targets.extend(
                (item, (kind, i)) for i, item in enumerate(items) if isinstance(item, dict)
            )
    for mapping, loc in targets:
        for name in TEXT_FIELDS:
            value = mapping.get(name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                mapping[name] = positions.source_text((*loc, name)) or str(value)
