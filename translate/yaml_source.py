"""YAML configuration loading that remembers where every value came from.

All of ansim's YAML (engine config, trunks, number maps) goes through here so that an
operator's mistake is reported as ``file:line:column: reason``. The document is composed
with PyYAML's C loader and constructed by hand so that each value keeps its source
position, duplicate mapping keys are refused (PyYAML would silently keep the last one),
and pydantic validation errors can be mapped back onto the file.

Typical use::

    config = load_model("config/ansim.yaml", EngineConfig)   # raises ConfigError

Lines and columns are 1-based everywhere. Every reason starts with the name of the rule
broken (``yaml-syntax``, ``duplicate-key``, ``bad-key``, ``unknown-field``,
``missing-field``, ``invalid-value``, ``unreadable``), then says where and why.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pydantic
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

__all__ = [
    "ConfigError",
    "Positions",
    "SourceError",
    "format_loc",
    "load_model",
    "load_yaml",
    "validation_errors",
]

Loc = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
#: Stands for a scalar that could not be constructed (its error is recorded).
_INVALID: Any = object()
#: Deepest nesting a configuration file may have (a number map needs 4 levels).
MAX_DEPTH = 64
#: Values built per character of text, at most: more comes only from aliases.
_NODES_PER_CHAR = 4
ModelT = TypeVar("ModelT", bound=pydantic.BaseModel)


@dataclass(frozen=True, slots=True)
class SourceError:
    """One problem in a source file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.reason}"

    def shown(self) -> str:
        """``str(self)`` with the file relative to the current directory when it is inside
        it (for the command line; logs keep the full path)."""
        try:
            file = str(Path(self.file).relative_to(Path.cwd()))
        except ValueError:
            file = self.file
        return f"{file}:{self.line}:{self.column}: {self.reason}"


class ConfigError(Exception):
    """A configuration source was refused; ``errors`` lists every problem found, in order."""

    def __init__(self, errors: Iterable[SourceError]) -> None:
        self.errors: list[SourceError] = sorted(
            errors, key=lambda e: (e.file, e.line, e.column, e.reason)
        )
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


class Positions:
    """Source positions of the values of one YAML document, addressed by key path.

    A key path is the tuple of mapping keys and sequence indexes leading to a value,
    the same shape as a pydantic error ``loc``.
    """

    __slots__ = ("_keys", "_texts", "_values", "file", "invalid", "value_errors")

    def __init__(self, file: str) -> None:
        self.file = file
        self._values: dict[Loc, tuple[int, int]] = {(): (1, 1)}
        self._keys: dict[Loc, tuple[int, int]] = {}
        self._texts: dict[Loc, str] = {}
        #: Values the YAML loader could not build (``2099-02-30``), and their errors,
        #: when loaded with ``keep_going``; validation errors at these places are not
        #: reported again.
        self.invalid: set[Loc] = set()
        self.value_errors: list[SourceError] = []

    def at(self, loc: Sequence[str | int]) -> tuple[int, int]:
        """(line, column) of the value at ``loc``, or of its nearest existing parent.

        Path elements that match nothing (pydantic inserts union tags and validator names
        into ``loc``) are skipped, so ``("bindings", 3, "axb", "a")`` still finds
        ``bindings[3].a``.
        """
        return self._values[self.resolve(loc)]

    def key_at(self, loc: Sequence[str | int]) -> tuple[int, int]:
        """(line, column) of the mapping key naming ``loc``; the value position otherwise."""
        found = self.resolve(loc)
        if len(found) == len(loc) and found in self._keys:
            return self._keys[found]
        return self._values[found]

    def source_text(self, loc: Sequence[str | int]) -> str | None:
        """The text as written of a scalar that YAML resolved to a number, else None.

        ``x: 0212345678`` loads as the octal int 2306703; the text gives the digits back.
        """
        return self._texts.get(tuple(loc))

    def resolve(self, loc: Sequence[str | int]) -> Loc:
        """The longest existing key path reachable from ``loc`` (skipping unknown steps)."""
        current: Loc = ()
        for step in loc:
            candidate = (*current, step)
            if candidate in self._values:
                current = candidate
        return current

    def __contains__(self, loc: object) -> bool:
        return loc in self._values

    def _record(self, loc: Loc, node: Node, key: Node | None) -> None:
        self._values[loc] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if key is not None:
            self._keys[loc] = (key.start_mark.line + 1, key.start_mark.column + 1)


def load_yaml(path: str | os.PathLike[str]) -> tuple[Any, Positions]:
    """Parse one YAML document; return its data and the positions of every value.

    An empty file gives ``None``. Syntax errors, several documents in one file,
    unhashable or duplicate keys raise ConfigError with the offending position.
    """
    file = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            text = stream.read()
    except OSError as exc:
        raise ConfigError([SourceError(file, 1, 1, f"unreadable: {exc.strerror}")]) from exc
    return load_yaml_text(text, file)


def load_yaml_text(
    text: str | bytes, file: str = "<string>", *, keep_going: bool = False
) -> tuple[Any, Positions]:
    """Like ``load_yaml`` for text already in memory; ``file`` names it in errors.

    With ``keep_going``, values the YAML loader cannot build (impossible dates, bad
    tagged values) do not raise: they are left as a placeholder no model accepts, their
    errors in ``positions.value_errors``, so that the caller reports them with every
    other error of the file (``validation_errors`` skips those places)."""
    positions = Positions(file)
    loader = yaml.CSafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_marked_error(file, exc)]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([SourceError(file, 1, 1, f"yaml-syntax: {exc}")]) from None
        if root is None:
            return None, positions
        builder = _Builder(loader, positions, budget=_NODES_PER_CHAR * len(text) + 1000)
        data = builder.build(root, (), None)
        if builder.errors or (builder.value_errors and not keep_going):
            raise ConfigError([*builder.errors, *builder.value_errors])
        positions.value_errors = builder.value_errors
        return data, positions
    finally:
        loader.dispose()


def load_model(path: str | os.PathLike[str], model: type[ModelT]) -> ModelT:
    """Load a YAML file and validate it as ``model``; ConfigError lists every problem.

    An empty file (or one of comments only) is an empty mapping: every default."""
    data, positions = load_yaml(path)
    if data is None:
        data = {}
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(validation_errors(exc, positions)) from None


def validation_errors(
    exc: pydantic.ValidationError, positions: Positions, base: Loc = ()
) -> list[SourceError]:
    """Map every pydantic error onto the source; ``base`` prefixes locs of a sub-document."""
    out: list[SourceError] = []
    # Each member of a union (datetime | date) fails on its own at one place: one error
    # is kept there, the last (pydantic's date member names the bad field of a date-time).
    invalid_at: dict[tuple[int, int], int] = {}
    for err in exc.errors(include_url=False):
        loc: Loc = (*base, *err["loc"])
        found = positions.resolve(loc)
        if found in positions.invalid:
            continue  # said already, by the YAML loader
        kind = err["type"]
        if kind == "extra_forbidden":
            line, column = positions.key_at(loc)
            rule, reason = "unknown-field", f"{loc[-1]!r} is not a known field"
            where = found[:-1]
        elif kind == "missing":
            line, column = positions.at(loc)
            rule, reason = "missing-field", f"{loc[-1]!r} is required"
            where = found
        else:
            line, column = positions.at(loc)
            rule, reason = "invalid-value", _readable(err)
            where = found
        prefix = format_loc(where)
        text = f"{rule}: {prefix}: {reason}" if prefix else f"{rule}: {reason}"
        error = SourceError(positions.file, line, column, text)
        if rule == "invalid-value":
            index = invalid_at.setdefault((line, column), len(out))
            if index < len(out):
                out[index] = error
                continue
        out.append(error)
    return out


def format_loc(loc: Sequence[str | int]) -> str:
    """``("bindings", 3, "a")`` -> ``"bindings[3].a"``."""
    parts: list[str] = []
    for step in loc:
        if isinstance(step, int):
            parts.append(f"[{step}]")
        else:
            parts.append(f".{step}" if parts else str(step))
    return "".join(parts)


def _readable(err: Any) -> str:
    if err["type"] == "value_error":
        ctx = err.get("ctx") or {}
        if "error" in ctx:
            return str(ctx["error"])
    msg: str = err["msg"]
    return msg[:1].lower() + msg[1:]


def _marked_error(file: str, exc: yaml.MarkedYAMLError) -> SourceError:
    mark = exc.problem_mark or exc.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    reason = " ".join(part for part in (exc.context, exc.problem) if part) or "invalid YAML"
    return SourceError(file, line, column, f"yaml-syntax: {reason}")


class _Builder:
    """Constructs Python values from composed nodes, recording positions on the way."""

    def __init__(self, loader: yaml.CSafeLoader, positions: Positions, budget: int) -> None:
        self.loader = loader
        self.positions = positions
        self.errors: list[SourceError] = []
        self.value_errors: list[SourceError] = []
        # Aliases let a short text name a huge or endless value (`&a [*a]`, or nine
        # aliases of nine aliases of ...): nesting and the values built are bounded.
        self.budget = budget

    def build(self, node: Node, loc: Loc, key: Node | None) -> Any:
        if len(loc) > MAX_DEPTH:
            self._error(node, f"yaml-syntax: nested more than {MAX_DEPTH} levels deep")
            return _INVALID
        self.budget -= 1
        if self.budget < 0:
            if self.budget == -1:
                self._error(node, "yaml-syntax: aliases expand to far more values than written")
            return _INVALID
        self.positions._record(loc, node, key)
        if isinstance(node, MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, SequenceNode):
            return [self.build(item, (*loc, i), None) for i, item in enumerate(node.value)]
        assert isinstance(node, ScalarNode)
        value = self._scalar(node, loc)
        if isinstance(value, int | float) and not isinstance(value, bool):
            self.positions._texts[loc] = node.value
        return value

    def _mapping(self, node: MappingNode, loc: Loc) -> dict[Any, Any]:
        own = sum(1 for key_node, _ in node.value if key_node.tag != _MERGE_TAG)
        try:
            self.loader.flatten_mapping(node)  # resolves `<<` merge keys, placing them first
        except yaml.MarkedYAMLError as exc:
            self.errors.append(_marked_error(self.positions.file, exc))
            return {}
        merged = len(node.value) - own
        result: dict[Any, Any] = {}
        first_seen: dict[Any, Node] = {}
        for index, (key_node, value_node) in enumerate(node.value):
            if not isinstance(key_node, ScalarNode):
                self._error(key_node, "bad-key: mapping keys must be plain scalars")
                continue
            key = self._scalar(key_node, loc, is_key=True)
            if key is _INVALID:
                continue
            try:
                hash(key)
            except TypeError:
                self._error(key_node, f"bad-key: unhashable mapping key {key!r}")
                continue
            if index < merged:
                # Merged-in keys may be overridden by later merges and by the mapping itself.
                result[key] = self.build(value_node, (*loc, key), key_node)
                continue
            if key in first_seen:
                earlier = first_seen[key].start_mark
                self._error(
                    key_node,
                    f"duplicate-key: {key!r} is already defined at line {earlier.line + 1},"
                    f" column {earlier.column + 1}",
                )
                continue
            first_seen[key] = key_node
            result[key] = self.build(value_node, (*loc, key), key_node)
        return result

    def _scalar(self, node: ScalarNode, loc: Loc, *, is_key: bool = False) -> Any:
        """The value of a scalar, or ``_INVALID`` with the error recorded.

        The YAML loader itself resolves some plain scalars: ``2099-02-30`` is read as a
        date and fails inside PyYAML with a ValueError that carries no position; an
        explicit tag (``!!int x``, ``!!timestamp x``) fails likewise. Every such failure
        becomes an error at the scalar.
        """
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.errors.append(_marked_error(self.positions.file, exc))
        except Exception as exc:  # PyYAML's constructors raise anything
            if node.tag == _TIMESTAMP_TAG:
                what = "a valid date or time"
            else:
                what = f"a valid {node.tag.rpartition(':')[2] or 'value'}"
            where = format_loc(loc)
            reason = f"invalid-value: {where + ': ' if where else ''}{node.value!r} is not {what}"
            if isinstance(exc, ValueError) and str(exc):
                reason += f": {exc}"
            if is_key:  # the mapping it names cannot be built: that is fatal
                self._error(node, reason)
                return _INVALID
            mark = node.start_mark
            line, column = mark.line + 1, mark.column + 1
            self.value_errors.append(SourceError(self.positions.file, line, column, reason))
            self.positions.invalid.add(loc)
        return _INVALID

    def _error(self, node: Node, reason: str) -> None:
        mark = node.start_mark
        self.errors.append(SourceError(self.positions.file, mark.line + 1, mark.column + 1, reason))
