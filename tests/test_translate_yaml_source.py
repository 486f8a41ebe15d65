"""Tests for translate.yaml_source: positions, duplicate keys, syntax errors, model errors."""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Literal

import pydantic
import pytest

from translate.yaml_source import (
    ConfigError,
    SourceError,
    format_loc,
    load_model,
    load_yaml,
    load_yaml_text,
)


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_source_error_str() -> None:
    assert str(SourceError("a.yaml", 3, 7, "bad")) == "a.yaml:3:7: bad"


def test_config_error_lists_all_sorted() -> None:
    err = ConfigError([SourceError("a", 9, 1, "second"), SourceError("a", 2, 5, "first")])
    assert str(err) == "a:2:5: first\na:9:1: second"
    assert [e.line for e in err.errors] == [2, 9]


def test_values_and_positions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: ansim\nports:\n  - 5060\n  - 5061\nnested:\n    flag: yes\n    day: 2030-01-02\n",
    )
    data, pos = load_yaml(path)
    assert data == {
        "name": "ansim",
        "ports": [5060, 5061],
        "nested": {"flag": True, "day": datetime.date(2030, 1, 2)},
    }
    assert pos.file == str(path)
    assert pos.at(("name",)) == (1, 7)
    assert pos.at(("ports", 1)) == (4, 5)
    assert pos.at(("nested", "day")) == (7, 10)
    assert pos.key_at(("nested", "day")) == (7, 5)
    assert pos.at(()) == (1, 1)


def test_positions_fall_back_to_parent_and_skip_unknown_steps(tmp_path: Path) -> None:
    path = write(tmp_path, "items:\n  - a: 1\n    b: 2\n")
    _, pos = load_yaml(path)
    assert pos.at(("items", 0, "missing")) == (2, 5)
    assert pos.at(("items", 7)) == (2, 3)
    assert pos.at(("items", 0, "some-union-tag", "b")) == (3, 8)
    assert pos.at(("nothing",)) == (1, 1)


def test_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb:\n  x: 1\n  x: 2\na: 3\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert [(e.line, e.column) for e in info.value.errors] == [(4, 3), (5, 1)]
    assert (
        "duplicate-key: 'x' is already defined at line 3, column 3" in info.value.errors[0].reason
    )
    assert "duplicate-key: 'a'" in info.value.errors[1].reason


def test_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "base: &b {record: false, kind: ax}\nitem:\n  <<: *b\n  record: true\n",
    )
    data, _ = load_yaml(path)
    assert data["item"] == {"record": True, "kind": "ax"}


def test_syntax_error_has_mark(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    (error,) = info.value.errors
    assert error.file == str(path)
    assert error.line == 3
    assert error.reason.startswith("yaml-syntax:")


def test_tab_indentation_error(tmp_path: Path) -> None:
    path = write(tmp_path, "a:\n\tb: 1\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert info.value.errors[0].line == 2


def test_two_documents_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "a: 1\n---\nb: 2\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert info.value.errors[0].line == 2


def test_unhashable_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml_text("? [1, 2]\n: x\n", "k.yaml")
    assert str(info.value.errors[0]).startswith("k.yaml:1:3: bad-key: mapping keys must be plain")


def test_source_text_of_numbers(tmp_path: Path) -> None:
    data, pos = load_yaml(write(tmp_path, "x: 0212345670\ny: +821012345678\nz: '0101'\n"))
    assert data == {"x": 0o212345670, "y": 821012345678, "z": "0101"}
    assert pos.source_text(("x",)) == "0212345670"
    assert pos.source_text(("y",)) == "+821012345678"
    assert pos.source_text(("z",)) is None


def test_empty_file(tmp_path: Path) -> None:
    data, pos = load_yaml(write(tmp_path, "# nothing\n"))
    assert data is None
    assert pos.at(("x",)) == (1, 1)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml(tmp_path / "absent.yaml")
    assert "unreadable" in str(info.value)


class Port(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    number: int
    proto: Literal["udp", "tcp", "tls"] = "udp"

    @pydantic.field_validator("number")
    @classmethod
    def in_range(cls, value: int) -> int:
        if not 0 < value < 65536:
            raise ValueError(f"port {value} out of range 1..65535")
        return value


class Engine(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")
    name: str
    ports: list[Port]


def test_load_model_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "name: edge\nports:\n  - number: 5060\n")
    engine = load_model(path, Engine)
    assert engine.ports[0].number == 5060


def test_load_model_lists_all_errors_with_positions(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: edge\n"
        "ports:\n"
        "  - number: 70000\n"
        "  - number: 5061\n"
        "    proto: sctp\n"
        "  - proto: udp\n"
        "    colour: red\n",
    )
    with pytest.raises(ConfigError) as info:
        load_model(path, Engine)
    lines = str(info.value).splitlines()
    assert lines == [
        f"{path}:3:13: invalid-value: ports[0].number: port 70000 out of range 1..65535",
        f"{path}:5:12: invalid-value: ports[1].proto: input should be 'udp', 'tcp' or 'tls'",
        f"{path}:6:5: missing-field: ports[2]: 'number' is required",
        f"{path}:7:5: unknown-field: ports[2]: 'colour' is not a known field",
    ]


def test_load_model_wrong_top_level_type(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_model(write(tmp_path, "- 1\n- 2\n"), Engine)
    assert info.value.errors[0].line == 1
    assert "valid dictionary" in info.value.errors[0].reason


def test_format_loc() -> None:
    assert format_loc(("bindings", 3, "a")) == "bindings[3].a"
    assert format_loc(()) == ""


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            "expires: 2099-02-30\n",
            "f.yaml:1:10: invalid-value: expires: '2099-02-30' is not a valid date or time:"
            " day is out of range for month",
        ),
        (
            "a:\n  - when: 2099-13-01\n",
            "f.yaml:2:11: invalid-value: a[0].when: '2099-13-01' is not a valid date or time:"
            " month must be in 1..12",
        ),
        (
            "t: 2099-01-01T25:00:00\n",
            "f.yaml:1:4: invalid-value: t: '2099-01-01T25:00:00' is not a valid date or time:"
            " hour must be in 0..23",
        ),
        (
            "2099-02-30: x\n",
            "f.yaml:1:1: invalid-value: '2099-02-30' is not a valid date or time:"
            " day is out of range for month",
        ),
        (
            "a: !!timestamp soon\n",
            "f.yaml:1:4: invalid-value: a: 'soon' is not a valid date or time",
        ),
        ("a: !!bool maybe\n", "f.yaml:1:4: invalid-value: a: 'maybe' is not a valid bool"),
        ("a: &x [*x]\n", "f.yaml:1:4: yaml-syntax: nested more than 64 levels deep"),
    ],
)
def test_values_the_yaml_loader_cannot_build_are_errors_at_their_place(
    text: str, error: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_yaml_text(text, "f.yaml")
    assert [str(e) for e in info.value.errors] == [error]


def test_an_alias_bomb_is_refused() -> None:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    with pytest.raises(ConfigError) as info:
        load_yaml_text("\n".join(lines), "f.yaml")
    assert "aliases expand to far more values than written" in str(info.value)
