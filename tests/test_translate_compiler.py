"""Tests for translate.compiler and translate.mapfile: the map format and every rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from translate_helpers import NOW, write_map

from translate.bindings import Binding, Hours
from translate.compiler import compile_maps, map_files
from translate.mapfile import json_schema
from translate.numbers import CN
from translate.yaml_source import ConfigError

REPO = Path(__file__).resolve().parent.parent


def errors(tmp_path: Path, text: str, name: str = "m.yaml") -> list[str]:
    """Compile one map; return its errors as 'name:line:col: reason' lines."""
    path = write_map(tmp_path, name, text)
    with pytest.raises(ConfigError) as info:
        compile_maps([path], now=NOW)
    return [str(e).replace(str(tmp_path) + "/", "") for e in info.value.errors]


def test_every_kind_with_defaults(tmp_path: Path) -> None:
    path = write_map(
        tmp_path,
        "m.yaml",
        """
        defaults:
          timezone: Asia/Seoul
          record: false
          max_seconds: 600
        ax:
          - id: teacher
            x: 050-7000-1001
            a: 010-1111-0001
            hours: 08:00-20:00
            record: false
          - x: 0507-000-1002
            a: +82 10 1111 0002
            present: caller
        axb:
          - id: trip
            x: 050-7000-2001
            a: 010-1111-0003
            b: 010-1111-0004
            expires: 2030-06-01 18:00
            calls_per_hour: 10
        axn:
          - x: 050-7000-3001
            a: 02-555-0101
            b: 010-1111-0005
            max_seconds: 30
            expires: 2030-06-01T00:00:00Z
        """,
    )
    compiled = compile_maps([path], now=NOW)
    assert compiled.bindings == [
        Binding(
            "teacher",
            "ax",
            "+825070001001",
            "+821011110001",
            record=False,
            max_seconds=600,
            hours=Hours(480, 1200, "Asia/Seoul"),
        ),
        Binding(
            "ax:+825070001002",
            "ax",
            "+825070001002",
            "+821011110002",
            present="caller",
            max_seconds=600,
        ),
        Binding(
            "trip",
            "axb",
            "+825070002001",
            "+821011110003",
            "+821011110004",
            expires=1906534800.0,  # 2030-06-01T09:00:00Z
            max_seconds=600,
            calls_per_hour=10,
        ),
        Binding(
            "axn:+825070003001",
            "axn",
            "+825070003001",
            "+8225550101",
            "+821011110005",
            expires=1906502400.0,
            max_seconds=30,
        ),
    ]
    assert compiled.origins["teacher"] == (str(path), 6, 5)
    assert compiled.origins["trip"] == (str(path), 15, 5)
    assert compiled.counts() == {"ax": 2, "axb": 1, "axn": 1}
    assert compiled.files == [str(path)]
    assert len(compiled.digest) == 64


def test_unquoted_numbers_keep_their_digits(tmp_path: Path) -> None:
    # 0212345670 is an octal int to YAML; +821011110001 an int without its +
    path = write_map(
        tmp_path,
        "m.yaml",
        """
        ax:
          - {id: 0012, x: 05070001001, a: 0212345670}
          - {x: 05070001002, a: +821011110001}
        """,
    )
    compiled = compile_maps([path], now=NOW)
    assert [(b.id, b.virtual, b.a) for b in compiled.bindings] == [
        ("0012", "+825070001001", "+82212345670"),
        ("ax:+825070001002", "+825070001002", "+821011110001"),
    ]


def test_plan_section(tmp_path: Path) -> None:
    path = write_map(
        tmp_path,
        "cn.yaml",
        """
        plan: {country_code: 86}
        ax:
          - {x: 400-820-8820, a: 138-0000-0001}
        """,
    )
    (binding,) = compile_maps([path], now=NOW).bindings
    assert (binding.virtual, binding.a) == ("+864008208820", "+8613800000001")
    (same,) = compile_maps([path], CN, now=NOW).bindings
    assert same == binding


def test_files_and_directories(tmp_path: Path) -> None:
    write_map(tmp_path / "maps", "b.yaml", "ax: [{x: 050-7000-1002, a: 010-1111-0002}]\n")
    write_map(tmp_path / "maps", "a.yml", "ax: [{x: 050-7000-1001, a: 010-1111-0001}]\n")
    write_map(tmp_path / "maps", "notes.txt", "not a map")
    write_map(tmp_path / "maps", "empty.yaml", "# nothing yet\n")
    files = map_files([tmp_path / "maps"])
    assert [f.name for f in files] == ["a.yml", "b.yaml", "empty.yaml"]
    compiled = compile_maps([tmp_path / "maps"], now=NOW)
    assert [b.id for b in compiled.bindings] == ["ax:+825070001001", "ax:+825070001002"]
    with pytest.raises(ConfigError) as info:
        compile_maps([tmp_path / "missing"], now=NOW)
    assert "unreadable: no such file or directory" in str(info.value)


# ---------------------------------------------------------------- one test per rule


def test_rule_yaml_syntax(tmp_path: Path) -> None:
    assert errors(tmp_path, "ax:\n  - {x: 1, a: 2\n") == [
        "m.yaml:3:1: yaml-syntax: while parsing a flow mapping did not find expected ',' or '}'"
    ]


def test_rule_duplicate_key(tmp_path: Path) -> None:
    text = "ax:\n  - x: 050-7000-1001\n    a: 010-1111-0001\n    a: 010-1111-0002\n"
    assert errors(tmp_path, text) == [
        "m.yaml:4:5: duplicate-key: 'a' is already defined at line 3, column 5"
    ]


def test_rule_unknown_field(tmp_path: Path) -> None:
    text = """
    ax:
      - x: 050-7000-1001
        a: 010-1111-0001
        recrod: true
    axb:
      - {id: t, x: 050-7000-2001, a: 010-1111-0003, b: 010-1111-0004, present: caller}
    colour: red
    """
    assert errors(tmp_path, text) == [
        "m.yaml:4:5: unknown-field: ax[0]: 'recrod' is not a known field",
        "m.yaml:6:67: unknown-field: axb[0]: 'present' is not a known field",
        "m.yaml:7:1: unknown-field: 'colour' is not a known field",
    ]


def test_rule_missing_field(tmp_path: Path) -> None:
    text = """
    axb:
      - id: t
        x: 050-7000-2001
        a: 010-1111-0003
    axn:
      - {x: 050-7000-3001, a: 010-1111-0005}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:2:5: missing-field: axb[0]: 'b' is required",
        "m.yaml:6:5: missing-field: axn[0]: 'b' is required",
    ]


def test_rule_invalid_value(tmp_path: Path) -> None:
    text = """
    version: 2
    ax:
      - x: 050-7000-1001
        a: 010-1111-0001
        max_seconds: -5
        record: maybe
    axb: {id: t}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:1:10: invalid-value: version: input should be 1",
        "m.yaml:5:18: invalid-value: ax[0].max_seconds: input should be greater than 0",
        "m.yaml:6:13: invalid-value: ax[0].record: input should be a valid boolean,"
        " unable to interpret input",
        "m.yaml:7:6: invalid-value: axb: axb must be a list",
    ]


def test_rule_bad_number(tmp_path: Path) -> None:
    text = """
    ax:
      - x: 050-7000-1001
        a: 010-12
      - x: 050-ABCD
        a: 010-1111-0002
    """
    assert errors(tmp_path, text) == [
        "m.yaml:3:8: bad-number: ax[0].a: not a telephone number: too short (6 digits, at least 7)",
        "m.yaml:4:8: bad-number: ax[1].x: not a telephone number: invalid character 'A'",
    ]


def test_rule_bad_number_for_a_number_cut_short(tmp_path: Path) -> None:
    # One digit short of its range would be another subscriber's number if it were padded
    # or misread; it is refused instead.
    text = """
    ax:
      - x: 0507-0000-1001
        a: 010-1111-000
      - x: 0507-000-100
        a: 02-555-0101
    """
    assert errors(tmp_path, text) == [
        "m.yaml:3:8: bad-number: ax[0].a: not a telephone number: too short for a Korean"
        " mobile (010): 9 digits after +82, expected 10",
        "m.yaml:4:8: bad-number: ax[1].x: not a telephone number: too short for a Korean"
        " personal number (0502-0508): 9 digits after +82, expected 10 or 11",
    ]


def test_record_and_media_are_compiled_and_inherited(tmp_path: Path) -> None:
    text = """
    defaults: {record: true}
    ax:
      - x: 050-7000-1001
        a: 010-1111-0001
      - x: 050-7000-1002
        a: 010-1111-0002
        record: false
        media: rtpengine
    axb:
      - {id: t1, x: 050-7000-2001, a: 010-1111-0003, b: 010-1111-0004, media: relay}
    """
    path = write_map(tmp_path, "m.yaml", text)
    by_id = {b.id: b for b in compile_maps([path], now=NOW).bindings}
    assert (by_id["ax:+825070001001"].record, by_id["ax:+825070001001"].media) == (True, None)
    assert (by_id["ax:+825070001002"].record, by_id["ax:+825070001002"].media) == (
        False,
        "rtpengine",
    )
    assert (by_id["t1"].record, by_id["t1"].media) == (True, "relay")


def test_rule_bad_media_and_record_passthrough(tmp_path: Path) -> None:
    text = """
    ax:
      - x: 050-7000-1001
        a: 010-1111-0001
        media: anchored
      - x: 050-7000-1002
        a: 010-1111-0002
        record: true
        media: passthrough
    """
    found = errors(tmp_path, text)
    assert len(found) == 2, found
    assert found[0].startswith("m.yaml:4:12: invalid-value: ax[0].media: ")
    assert found[1].startswith("m.yaml:8:12: record-passthrough: ax[1].media: ")


def test_rule_bad_plan(tmp_path: Path) -> None:
    assert errors(tmp_path, "plan: {country_code: '082'}\nax: []\n") == [
        "m.yaml:1:7: bad-plan: plan: country_code must be 1-3 digits not starting with 0"
    ]


def test_rule_bad_id(tmp_path: Path) -> None:
    text = f"ax:\n  - {{id: '{'x' * 101}', x: 050-7000-1001, a: 010-1111-0001}}\n"
    assert errors(tmp_path, text) == [
        "m.yaml:2:10: bad-id: ax[0].id: ids are 1-100 printable characters"
    ]


def test_rule_duplicate_id_across_files(tmp_path: Path) -> None:
    write_map(tmp_path, "a.yaml", "ax:\n  - {id: k, x: 050-7000-1001, a: 010-1111-0001}\n")
    write_map(
        tmp_path,
        "b.yaml",
        "\naxn:\n  - {id: k, x: 050-7000-1002, a: 010-1111-0002, b: 010-1111-0003}\n",
    )
    with pytest.raises(ConfigError) as info:
        compile_maps([tmp_path], now=NOW)
    assert [str(e).replace(str(tmp_path) + "/", "") for e in info.value.errors] == [
        "b.yaml:2:10: duplicate-id: axn[0].id: id 'k' is already used at a.yaml:2:5"
    ]


def test_rule_duplicate_virtual(tmp_path: Path) -> None:
    text = """
    ax:
      - {x: 050-7000-1001, a: 010-1111-0001}
    axn:
      - {id: n, x: 0507-000-1001, a: 010-1111-0002, b: 010-1111-0003}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:4:16: duplicate-virtual: axn[0].x: +825070001001 is already bound by ax"
        " 'ax:+825070001001' at m.yaml:2:5"
    ]


def test_rule_party_conflict(tmp_path: Path) -> None:
    text = """
    axb:
      - {id: t1, x: 050-7000-2001, a: 010-1111-0001, b: 010-1111-0002}
      - {id: t2, x: 050-7000-2001, a: 010-1111-0003, b: 010-1111-0001}
      - {id: t3, x: 050-7000-2002, a: 010-1111-0003, b: 010-1111-0001}
    axn:
      - {id: n, x: 050-7000-2001, a: 010-1111-0002, b: 010-1111-0009}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:3:53: party-conflict: axb[1].b: b (+8210****0001) already has a route on"
        " +825070002001 in axb 't1' at m.yaml:2:5",
        "m.yaml:6:34: party-conflict: axn[0].a: a (+8210****0002) already has a route on"
        " +825070002001 in axb 't1' at m.yaml:2:5",
    ]


def test_rule_same_party(tmp_path: Path) -> None:
    text = "axb:\n  - {id: t, x: 050-7000-2001, a: 010-1111-0001, b: 010 1111 0001}\n"
    assert errors(tmp_path, text) == [
        "m.yaml:2:52: same-party: axb[0].b: a and b are the same number"
    ]


def test_rule_virtual_is_party(tmp_path: Path) -> None:
    text = "ax:\n  - {x: 050-7000-1001, a: 0507-000-1001}\n"
    assert errors(tmp_path, text) == [
        "m.yaml:2:9: virtual-is-party: ax[0].x: the virtual number is also a real party"
    ]


def test_rule_virtual_as_party(tmp_path: Path) -> None:
    text = """
    ax:
      - {x: 050-7000-1001, a: 010-1111-0001}
      - {x: 050-7000-1002, a: 050-7000-1001}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:3:27: virtual-as-party: ax[1].a: a is the virtual number of ax"
        " 'ax:+825070001001' at m.yaml:2:5"
    ]


def test_rule_expired(tmp_path: Path) -> None:
    text = """
    defaults: {timezone: UTC}
    axb:
      - id: t
        x: 050-7000-2001
        a: 010-1111-0001
        b: 010-1111-0002
        expires: 2029-12-31 23:59
    """
    assert errors(tmp_path, text) == [
        "m.yaml:7:14: expired: axb[0].expires: expires 2029-12-31T23:59:00+00:00 is in the past"
    ]


def test_rule_timezone_required(tmp_path: Path) -> None:
    text = """
    ax:
      - {x: 050-7000-1001, a: 010-1111-0001, hours: 09:00-18:00}
      - {x: 050-7000-1002, a: 010-1111-0002, expires: 2031-01-01}
      - {x: 050-7000-1003, a: 010-1111-0003, expires: 2031-01-01T00:00:00+09:00}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:2:49: timezone-required: ax[0].hours: hours need a timezone",
        "m.yaml:3:51: timezone-required: ax[1].expires: expires has no UTC offset:"
        " add one (+09:00) or set timezone",
    ]


def test_rule_bad_timezone_reported_once(tmp_path: Path) -> None:
    text = """
    defaults: {timezone: Asia/Atlantis}
    ax:
      - {x: 050-7000-1001, a: 010-1111-0001, hours: 09:00-18:00}
      - {x: 050-7000-1002, a: 010-1111-0002}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:1:22: bad-timezone: defaults.timezone: unknown time zone 'Asia/Atlantis'"
    ]


def test_rule_bad_hours(tmp_path: Path) -> None:
    text = """
    defaults: {timezone: Asia/Seoul}
    ax:
      - {x: 050-7000-1001, a: 010-1111-0001, hours: 9-18}
      - {x: 050-7000-1002, a: 010-1111-0002, hours: 09:00-25:00}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:3:49: bad-hours: ax[0].hours: time must look like 09:30, got '9'",
        "m.yaml:4:49: bad-hours: ax[1].hours: time out of range: '25:00'",
    ]


def test_not_a_mapping(tmp_path: Path) -> None:
    assert errors(tmp_path, "- ax\n") == [
        "m.yaml:1:1: invalid-value: a map file is a mapping (ax:, axb:, ...)"
    ]


def test_all_errors_of_all_files_reported_together(tmp_path: Path) -> None:
    write_map(
        tmp_path, "a.yaml", "ax:\n  - {x: 050-7000-1001, a: 1}\n  - {x: 2, a: 010-1111-0001}\n"
    )
    write_map(tmp_path, "b.yaml", "axb: [{x: 050-7000-2001}]\n")
    write_map(tmp_path, "c.yaml", "ax: [\n")
    with pytest.raises(ConfigError) as info:
        compile_maps([tmp_path], now=NOW)
    where = [(Path(e.file).name, e.line, e.reason.split(":")[0]) for e in info.value.errors]
    assert where == [
        ("a.yaml", 2, "bad-number"),
        ("a.yaml", 3, "bad-number"),
        ("b.yaml", 1, "missing-field"),
        ("b.yaml", 1, "missing-field"),
        ("b.yaml", 1, "missing-field"),
        ("c.yaml", 2, "yaml-syntax"),
    ]


def test_real_numbers_masked_in_messages(tmp_path: Path) -> None:
    text = """
    axb:
      - {id: t1, x: 050-7000-2001, a: 010-9876-5432, b: 010-1111-0002}
      - {id: t2, x: 050-7000-2001, a: 010-9876-5432, b: 010-1111-0003}
    """
    (line,) = errors(tmp_path, text)
    assert "98765432" not in line and "+8210****5432" in line


def test_shipped_schema_matches_the_models() -> None:
    shipped = json.loads((REPO / "config/schema/numbers.schema.json").read_text())
    assert shipped == json_schema()


def test_shipped_example_map_is_valid() -> None:
    compiled = compile_maps([REPO / "config/numbers"], now=NOW)
    assert set(compiled.counts()) == {"ax", "axb", "axn"}
    assert all(compiled.counts().values())


def test_impossible_dates_are_listed_with_every_other_error(tmp_path: Path) -> None:
    text = """
    defaults: {timezone: Asia/Seoul}
    ax:
      - {id: a, x: 050-7000-1001, a: 010-1111-0001, expires: 2099-02-30}
      - {id: b, x: 050-7000-1002, a: 010-1111-00, expires: 2099-13-01, recrod: true}
      - {id: c, x: 050-7000-1003, a: 010-1111-0003, expires: "2099-01-01T25:00"}
    """
    assert errors(tmp_path, text) == [
        "m.yaml:3:58: invalid-value: ax[0].expires: '2099-02-30' is not a valid date or"
        " time: day is out of range for month",
        "m.yaml:4:34: bad-number: ax[1].a: not a telephone number: too short for a Korean"
        " mobile (010): 8 digits after +82, expected 10",
        "m.yaml:4:56: invalid-value: ax[1].expires: '2099-13-01' is not a valid date or"
        " time: month must be in 1..12",
        "m.yaml:4:68: unknown-field: ax[1]: 'recrod' is not a known field",
        "m.yaml:5:58: invalid-value: ax[2].expires: input should be a valid date or datetime,"
        " hour value is outside expected range of 0-23",
    ]
