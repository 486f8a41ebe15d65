"""The configuration folder: every path in every file is relative to it, every command
reads it (``--config DIR``), ``ansim config check`` validates all of it at once, and
``ansim --version``."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from translate_helpers import write_map

import translate.numbers as numbers
from b2bua.cli import main
from b2bua.config import load_engine_config
from sms_smpp.config import load_config

MAP = """
ax:
  - {id: desk, x: 0507-0000-1001, a: 010-1111-0001}
axb:
  - {id: trip, x: 0507-0000-2001, a: 010-1111-0003, b: 010-1111-0004}
"""


def ansim(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(list(argv))
    finally:
        numbers.SHOW_REAL_NUMBERS = False
    out, err = capsys.readouterr()
    return status, out, err


def layout(root: Path) -> Path:
    """A copy of the shipped configuration under ``root/config``, its example map replaced."""
    config = root / "config"
    shutil.copytree(ROOT / "config", config)
    (config / "numbers" / "example.yaml").unlink()
    write_map(config / "numbers", "m.yaml", MAP)
    return config


def test_every_path_is_relative_to_the_configuration_folder(tmp_path: Path) -> None:
    config = layout(tmp_path / "site")
    engine = load_engine_config(config)
    site = tmp_path / "site"
    assert engine.numbers.store == str(site / "var" / "numbers.lmdb")
    assert engine.numbers.maps == str(config / "numbers")
    assert engine.cdr == str(site / "var" / "cdr.sqlite")
    assert engine.trunks == str(config / "trunks.yaml")
    assert engine.smpp == str(config / "smpp.yaml")
    smpp = load_config(config / "smpp.yaml")
    assert smpp.queue.path == str(site / "var" / "smpp-queue")
    assert smpp.records == str(site / "var" / "cdr.sqlite")
    assert smpp.translate_store is None  # the engine's store
    # Absolute paths stay as written; the same from any current directory.
    (config / "ansim.yaml").write_text(f"numbers: {{store: {tmp_path}/abs.lmdb}}\n")
    os.chdir(tmp_path)
    try:
        assert load_engine_config("site/config").numbers.store == f"{tmp_path}/abs.lmdb"
        assert load_engine_config("site/config").numbers.maps == str(config / "numbers")
    finally:
        os.chdir(ROOT)


def test_the_shipped_configuration_keeps_state_at_the_repository_root() -> None:
    engine = load_engine_config(ROOT / "config")
    assert engine.numbers.store == str(ROOT / "var" / "numbers.lmdb")
    assert engine.cdr == str(ROOT / "var" / "cdr.sqlite")
    assert load_config(ROOT / "config" / "smpp.yaml").queue.path == str(ROOT / "var" / "smpp-queue")


def test_numbers_commands_read_the_configuration_from_anywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = layout(tmp_path / "site")
    (config / "ansim.yaml").write_text("numbers: {store: ../state/n.lmdb, maps: numbers}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    status, out, _ = ansim(capsys, "numbers", "load", "--config", str(config))
    assert status == 0 and out.startswith("2 bindings from 1 file(s)")
    assert (tmp_path / "site" / "state" / "n.lmdb" / "data.mdb").exists()
    assert list(elsewhere.iterdir()) == []  # nothing made where the command ran
    monkeypatch.chdir(tmp_path / "site")  # from the root of the layout, the default folder
    status, out, _ = ansim(capsys, "numbers", "lookup", "0507-0000-1001", "--from", "010-5")
    assert status == 1  # a bad caller number, but the same store:
    status, out, _ = ansim(capsys, "numbers", "lookup", "0507-0000-1001", "--from", "010-9999-9999")
    assert status == 0 and "binding 'desk'" in out
    status, out, _ = ansim(capsys, "numbers", "stats")
    assert f"store: {tmp_path}/site/state/n.lmdb" in out
    # An override still wins.
    status, _, err = ansim(capsys, "numbers", "stats", "--store", "other.lmdb")
    assert status == 1 and f"no store at {tmp_path}/site/other.lmdb" in err


def test_a_missing_configuration_folder_is_refused_by_every_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["serve", "--config", "nowhere"],
        ["config", "check", "--config", "nowhere"],
        ["numbers", "stats", "--config", "nowhere"],
        ["cdr", "list", "--config", "nowhere"],
        ["smpp", "check", "--config", "nowhere"],
        ["serve"],  # the default folder, config/, is not here either
    ):
        status, _, err = ansim(capsys, *argv)
        assert status in (1, 2), argv
        assert "configuration folder" in err and "does not exist" in err, (argv, err)
    assert list(tmp_path.iterdir()) == []


def test_cdr_and_smpp_commands_read_the_configuration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = layout(tmp_path / "site")
    (config / "ansim.yaml").write_text("cdr: ../records/calls.sqlite\nsmpp: relay.yaml\n")
    (config / "smpp.yaml").rename(config / "relay.yaml")
    monkeypatch.chdir(tmp_path)
    status, out, _ = ansim(capsys, "cdr", "list", "--config", str(config))
    assert status == 0 and out.endswith("0 call(s)\n")
    import sqlite3

    (tmp_path / "site" / "records").mkdir()
    db = sqlite3.connect(tmp_path / "site" / "records" / "calls.sqlite")
    db.execute("CREATE TABLE calls (x)")  # a file that is not a CDR file: it was read
    db.commit()
    db.close()
    status, _, err = ansim(capsys, "cdr", "list", "--config", str(config))
    assert status == 2 and err.startswith("ansim cdr: "), err
    status, out, _ = ansim(capsys, "smpp", "check", "--config", str(config))
    assert (status, out) == (0, f"{config / 'relay.yaml'}: ok\n")


def test_config_check_lists_every_error_of_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = layout(tmp_path / "site")
    status, out, _ = ansim(capsys, "config", "check", "--config", str(config))
    assert status == 0, out
    assert f"{config}/numbers: ok, 2 bindings in 1 file(s)" in out
    (config / "ansim.yaml").write_text("sip:\n  max_mesage: 10\nnumbers:\n  maps: mpas\n")
    (config / "trunks.yaml").write_text("trunks:\n  - name: a\n    adress: 1.2.3.4:5060\n")
    (config / "smpp.yaml").write_text("enabled: maybe\n")
    status, out, err = ansim(capsys, "config", "check", "--config", str(config))
    assert status == 1
    lines = out.splitlines()
    assert lines == [
        f"{config}/ansim.yaml:2:3: unknown-field: sip: 'max_mesage' is not a known field",
        f"{config}/smpp.yaml:1:10: invalid-value: enabled: input should be a valid boolean,"
        " unable to interpret input",
        f"{config}/trunks.yaml:3:5: unknown-field: trunks[0]: 'adress' is not a known field",
    ], out
    assert "3 error(s)" in err
    # With ansim.yaml right, its map folder is checked, and each map.
    (config / "ansim.yaml").write_text("numbers:\n  maps: mpas\n")
    status, out, _ = ansim(capsys, "config", "check", "--config", str(config))
    assert out.splitlines()[0] == (
        f"{config}/ansim.yaml:2:9: missing-folder: numbers.maps: no map folder at {config}/mpas"
    )
    (config / "ansim.yaml").write_text("")
    for name in ("smpp.yaml", "trunks.yaml"):
        shutil.copy(ROOT / "config" / name, config / name)
    write_map(config / "numbers", "bad.yaml", "ax:\n  - {x: 0507-0000-1009, a: 010-1}\n")
    write_map(
        config / "numbers",
        "date.yaml",
        "defaults: {timezone: UTC}\nax:\n"
        "  - {x: 0507-0000-1008, a: 010-1111-0008, expires: 2099-02-30}\n",
    )
    status, out, _ = ansim(capsys, "config", "check", "--config", str(config))
    assert status == 1
    assert out.splitlines() == [
        f"{config}/numbers/bad.yaml:2:28: bad-number: ax[0].a: not a telephone number:"
        " too short (5 digits, at least 7)",
        f"{config}/numbers/date.yaml:3:52: invalid-value: ax[0].expires: '2099-02-30' is not"
        " a valid date or time: day is out of range for month",
    ]


def test_version() -> None:
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansim"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0 and proc.stdout == "ansim 0.1.0\n", proc


def test_shipped_engine_schema_matches_the_model() -> None:
    import json

    from b2bua.config import json_schema

    shipped = json.loads((ROOT / "config" / "schema" / "ansim.schema.json").read_text())
    assert shipped == json_schema()


def test_the_shipped_ansim_yaml_holds_the_defaults() -> None:
    from b2bua.config import EngineConfig
    from translate.yaml_source import load_model

    assert load_model(ROOT / "config" / "ansim.yaml", EngineConfig) == EngineConfig()
