"""Fuzzing the number-map loader: whatever a map file holds, the answer is a compiled map or
a list of ``file:line:column: reason`` errors, never a traceback.

Three sources of input: a seeded mutation fuzz of a valid map (truncations at every kind
of place, byte flips, deletions, insertions of YAML punctuation, swapped lines, odd
scalars put in place of values), hypothesis-built maps from YAML-shaped fragments (dates
that do not exist, explicit tags, anchors and aliases, merge keys, unicode, numbers in
every written form), and arbitrary text. Each one is compiled from a file, as
``ansim numbers check`` and the engine do.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from translate.compiler import compile_maps
from translate.yaml_source import ConfigError

NOW = 1893456000.0  # 2030-01-01T00:00:00Z
SEED = 9120
MUTATIONS = 3000

VALID = """\
version: 1
plan: {country_code: "82", trunk_prefix: "0", international_prefix: "00"}
defaults:
  timezone: Asia/Seoul
  max_seconds: 3600
ax:
  - id: teacher
    x: 0507-0000-1001
    a: 010-0000-1001
    hours: 08:00-20:00
  - x: 0507-0000-1002
    a: +82 10 0000 1002
    present: caller
axb:
  - id: trip-1
    x: 0507-0000-2001
    a: 010-0000-2001
    b: 010-0000-2002
    expires: 2099-12-31 23:59
    calls_per_hour: 10
axn:
  - x: 0507-0000-3001
    a: 02-0000-3001
    b: 010-0000-3001
    expires: 2099-06-01T00:00:00+09:00
"""

ODD_SCALARS = [
    "2099-02-30",
    "2099-13-01",
    "2099-01-01T25:00",
    "2099-01-01T23:00:00+25:00",
    "2099-02-29 10:00:00",
    "0000-01-01",
    "9999-12-31T23:59:59-23:59",
    "!!timestamp nonsense",
    "!!int 0x",
    "!!float x",
    "!!bool maybe",
    "!!binary '%%%'",
    "!!str",
    "!!null x",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!python/object:os.system x",
    "&anchor value",
    "*nowhere",
    "<<: *nowhere",
    ".inf",
    "-.nan",
    "0o777",
    "0b101",
    "1_000_000",
    "99999999999999999999999999",
    "1e400",
    "~",
    "null",
    "yes",
    "''",
    '"\\x00\\uffff"',
    '"\\ud800"',
    "Asia",
    "Asia/../Asia/Seoul",
    "a" * 300,
    "25:00-26:00",
    "24:00-00:00",
    "-5",
    "[1, 2]",
    "{x: 1}",
    "\u0660\u0661\u0660",
    "\uff10\uff11\uff10-\uff11\uff12\uff13\uff14",  # full-width digits
    "010-1234-567",
    "+82 (0)10 1234 5678",
    "sip:01012345678@h",
]


def check_file(path: Path) -> None:
    """Compile ``path``: a result, or ConfigError whose every error has a place in a file."""
    try:
        compile_maps([path], now=NOW)
    except ConfigError as exc:
        assert exc.errors
        for error in exc.errors:
            assert error.file == str(path), error
            assert error.line >= 1 and error.column >= 1, error
            assert str(error).startswith(f"{path}:{error.line}:{error.column}: "), error
            assert error.reason.split(":")[0].replace("-", "").isalpha(), error


def mutate(rng: random.Random, text: str) -> str:
    for _ in range(rng.randint(1, 3)):
        kind = rng.randrange(8)
        if not text:
            return text
        at = rng.randrange(len(text) + 1)
        if kind == 0:  # the writer gave up anywhere: mid-line, mid-number, mid-key
            text = text[:at]
        elif kind == 1:  # ... or at a line boundary
            lines = text.splitlines(keepends=True)
            text = "".join(lines[: rng.randrange(len(lines) + 1)])
        elif kind == 2:
            text = text[:at] + text[at + rng.randint(1, 20) :]
        elif kind == 3:
            text = text[:at] + rng.choice(":-[]{},&*!|>'\"#%@`?\t\n  \x00\ufeff") + text[at:]
        elif kind == 4:
            lines = text.splitlines(keepends=True)
            i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
            text = "".join(lines)
        elif kind == 5:  # an odd scalar in place of a value
            lines = text.splitlines(keepends=True)
            i = rng.randrange(len(lines))
            head, sep, _ = lines[i].partition(": ")
            if sep:
                lines[i] = f"{head}: {rng.choice(ODD_SCALARS)}\n"
            text = "".join(lines)
        elif kind == 6:
            pos = min(at, len(text) - 1)
            text = text[:pos] + chr(ord(text[pos]) ^ (1 << rng.randrange(7))) + text[pos + 1 :]
        else:  # a line repeated: duplicate keys and entries
            lines = text.splitlines(keepends=True)
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            text = "".join(lines)
    return text


def test_mutated_maps_never_raise_anything_but_config_errors(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "m.yaml"
    for _ in range(MUTATIONS):
        text = mutate(rng, VALID)
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
        try:
            check_file(path)
        except AssertionError:
            raise
        except Exception as exc:  # the failure to report, with the input that caused it
            pytest.fail(f"{type(exc).__name__}: {exc}\n--- input ---\n{text}")


@pytest.mark.parametrize("value", ODD_SCALARS)
@pytest.mark.parametrize("field", ["x", "a", "expires", "hours", "timezone", "max_seconds", "id"])
def test_every_odd_scalar_in_every_field(tmp_path: Path, field: str, value: str) -> None:
    entry = {"x": "0507-0000-1001", "a": "010-0000-1001", "timezone": "Asia/Seoul"}
    entry[field] = value
    body = "".join(f"    {k}: {v}\n" for k, v in entry.items())
    path = tmp_path / "m.yaml"
    path.write_text(f"ax:\n  - id: one\n{body}")
    check_file(path)


KEYS = st.sampled_from(
    [
        "version", "plan", "defaults", "ax", "axb", "axn", "id", "x", "a", "b", "present",
        "record", "expires", "max_seconds", "calls_per_hour", "hours", "timezone", "note",
        "country_code", "trunk_prefix", "international_prefix", "<<", "recrod", "2099-02-30",
    ]
)  # fmt: skip
SCALARS = st.one_of(
    st.sampled_from(ODD_SCALARS),
    st.sampled_from(["0507-0000-1001", "010-0000-1001", "02-555-0101", "Asia/Seoul", "true"]),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12).map(
        lambda t: '"' + t.replace("\\", "\\\\").replace('"', '\\"') + '"'
    ),
)


@st.composite
def yaml_docs(draw: st.DrawFn, depth: int = 0) -> str:
    indent = "  " * depth
    if depth >= 3 or draw(st.booleans()):
        flow = draw(st.lists(st.tuples(KEYS, SCALARS), max_size=4))
        inner = ", ".join(f"{k}: {v}" for k, v in flow)
        return f"{indent}- {{{inner}}}\n" if depth else f"{{{inner}}}\n"
    out = []
    for key in draw(st.lists(KEYS, min_size=1, max_size=5)):
        anchor = draw(st.sampled_from(["", "", " &a", " *a"]))
        if draw(st.booleans()):
            out.append(f"{indent}{key}:{anchor} {draw(SCALARS)}\n")
        else:
            out.append(f"{indent}{key}:{anchor}\n")
            for _ in range(draw(st.integers(0, 3))):
                out.append(draw(yaml_docs(depth + 1)))
    return "".join(out)


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(doc=yaml_docs())
def test_yaml_shaped_maps_never_raise(tmp_path: Path, doc: str) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(doc)
    check_file(path)


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "m.yaml"
    path.write_bytes(data)
    check_file(path)
