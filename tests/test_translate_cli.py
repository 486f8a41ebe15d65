"""Tests for translate.cli: `ansim numbers check|load|lookup|show|stats|purge|repack`."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from translate_helpers import write_map

import translate.numbers as numbers
from translate.cli import main
from translate.progress import ProgressBar

REPO = Path(__file__).resolve().parent.parent

FIVE_ERRORS = """
defaults:
  timezone: Asia/Seoul
ax:
  - x: 050-7000-1001
    a: 010-1111-0001
    recrod: true
  - x: 050-7000-1002
    a: 010-11
axb:
  - id: trip-1
    x: 050-7000-2001
    a: 010-1111-0003
    b: 010-1111-0004
    expires: 2001-01-01 00:00
  - id: trip-2
    x: 050-7000-2001
    a: 010-1111-0005
    b: 010-1111-0004
axn:
  - x: 050-7000-1001
    a: 010-1111-0006
    b: 010-1111-0007
"""

GOOD = """
ax:
  - {id: desk, x: 050-7000-1001, a: 010-1111-0001, max_seconds: 300}
axb:
  - {id: trip-1, x: 050-7000-2001, a: 010-1111-0003, b: 010-1111-0004}
axn:
  - {id: shop, x: 050-7000-3001, a: 02-555-0101, b: 010-1111-0005}
"""


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        status = main(["numbers", *argv])
    finally:
        numbers.SHOW_REAL_NUMBERS = False  # --show-numbers sets it for the process
    out, err = capsys.readouterr()
    return status, out, err


def test_check_lists_all_five_seeded_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_map(tmp_path, "bad.yaml", FIVE_ERRORS)
    status, out, err = run(capsys, "check", str(path))
    assert status == 1
    lines = out.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{path}:6:5",
        f"{path}:8:8",
        f"{path}:14:14",
        f"{path}:18:8",
        f"{path}:20:8",
    ]
    rules = [line.split(": ")[1] for line in lines]
    assert rules == [
        "unknown-field",
        "bad-number",
        "expired",
        "party-conflict",
        "duplicate-virtual",
    ]
    assert "5 error(s)" in err


def test_check_through_the_ansim_command(tmp_path: Path) -> None:
    path = write_map(tmp_path, "bad.yaml", FIVE_ERRORS)
    proc = subprocess.run(
        [sys.executable, "-m", "b2bua.cli", "numbers", "check", str(path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stdout.splitlines()) == 5
    assert all(line.startswith(f"{path}:") for line in proc.stdout.splitlines())


def test_check_ok_and_default_maps_dir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_map(tmp_path / "config" / "numbers", "good.yaml", GOOD)
    monkeypatch.chdir(tmp_path)
    status, out, _ = run(capsys, "check")
    assert status == 0
    assert out == "ok: 3 bindings in 1 file(s) (ax 1, axb 1, axn 1)\n"


def test_load_lookup_show_stats_purge_repack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_map(tmp_path / "config" / "numbers", "good.yaml", GOOD)
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "lookup", "050-7000-1001", "--from", "010-9999-9999")
    assert status == 1 and f"no store at {tmp_path}/var/numbers.lmdb" in err
    for command in ("repack", "purge"):  # neither creates an empty store
        status, _, err = run(capsys, command)
        assert status == 1 and f"no store at {tmp_path}/var/numbers.lmdb" in err
    assert not (tmp_path / "var").exists()

    status, out, _ = run(capsys, "load")
    assert status == 0
    assert out.startswith("3 bindings from 1 file(s): 3 added")
    assert (tmp_path / "var" / "numbers.lmdb" / "data.mdb").exists()

    status, out, _ = run(capsys, "lookup", "050-7000-1001", "--from", "010-9999-9999")
    assert (status, out) == (
        0,
        "route: call +8210****0001 presenting +825070001001"
        " (binding 'desk', ax, record=no, max_seconds=300)\n",
    )
    status, out, _ = run(
        capsys, "lookup", "050-7000-2001", "--from", "010-1111-0003", "--show-numbers"
    )
    assert status == 0 and "call +821011110004 presenting +825070002001" in out
    status, out, _ = run(capsys, "lookup", "050-7000-2001", "--from", "010-9999-9999")
    assert status == 2 and out.startswith("refused: not_party (binding -)")
    status, out, _ = run(capsys, "lookup", "050-7000-9999", "--from", "010-9999-9999")
    assert status == 2 and out.startswith("refused: unknown")
    status, _, err = run(capsys, "lookup", "050-7000-9999", "--from", "nobody")
    assert status == 1 and "--from: invalid character 'n'" in err

    status, out, _ = run(capsys, "show", "0507-000-3001")
    assert status == 0
    assert out == ("axn 'shop' +825070003001 -> a=+8225****0101 b=+8210****0005 [yaml, live]\n")
    status, out, _ = run(capsys, "show", "0507-000-3009")
    assert status == 1 and "not bound" in out

    status, out, _ = run(capsys, "stats")
    assert status == 0
    assert "yaml               1           1           1           3" in out
    assert "expired            0           0           0           0" in out
    assert "last yaml load:" in out
    assert "routes table: 5 entries in 1 pages (5.0 a page)" in out

    status, out, _ = run(capsys, "purge")
    assert (status, out) == (0, "purged 0 expired binding(s)\n")

    status, out, _ = run(capsys, "repack")
    assert status == 0
    assert out.startswith("routes table repacked in ") and out.endswith(
        " s: 1 leaf pages before, 1 after\n"
    )
    status, out, _ = run(capsys, "lookup", "050-7000-1001", "--from", "010-9999-9999")
    assert status == 0 and "(binding 'desk', ax" in out


def test_load_refuses_bad_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_map(tmp_path / "maps", "bad.yaml", FIVE_ERRORS)
    status, out, err = run(
        capsys, "load", "--store", str(tmp_path / "s.lmdb"), "--maps", str(tmp_path / "maps")
    )
    assert status == 1
    assert len(out.splitlines()) == 5
    assert "map refused: 5 error(s)" in err


def test_load_shows_progress_on_big_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = ["ax:"] + [f"  - {{x: '+8250700{i:05d}', a: '+8210{i:08d}'}}" for i in range(6000)]
    write_map(tmp_path / "maps", "big.yaml", "\n".join(lines) + "\n")
    status, out, err = run(
        capsys, "load", "--store", str(tmp_path / "s.lmdb"), "--maps", str(tmp_path / "maps")
    )
    assert status == 0 and "6000 added" in out
    # not a terminal under pytest: percentage lines
    assert "checking: 100% (6000/6000)" in err
    assert "writing: 100% (6000/6000)" in err


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_on_a_terminal() -> None:
    stream = FakeTerminal()
    bar = ProgressBar(stream, threshold=10, width=10)
    bar("writing", 5, 5)  # below the threshold: silent
    bar("writing", 100, 100)
    bar.close()
    assert stream.getvalue() == "\rwriting   [##########] 100.0% 100/100\n"


def test_load_creates_the_store_for_its_owner_only(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    write_map(tmp_path / "config" / "numbers", "good.yaml", GOOD)
    monkeypatch.chdir(tmp_path)
    old = os.umask(0o022)
    try:
        status, _, _ = run(capsys, "load")
    finally:
        os.umask(old)
    assert status == 0
    store = tmp_path / "var" / "numbers.lmdb"
    modes = {p.name: os.stat(p).st_mode & 0o777 for p in (store.parent, store, *store.iterdir())}
    assert modes == {"var": 0o700, "numbers.lmdb": 0o700, "data.mdb": 0o600, "lock.mdb": 0o600}


def test_a_named_configuration_folder_must_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    status, _, err = run(capsys, "stats", "--config", "nowhere")
    assert status == 1 and err == "error: configuration folder nowhere does not exist\n"
    # The default folder is needed when the command is not given its paths ...
    status, _, err = run(capsys, "load")
    assert status == 1 and "configuration folder config does not exist" in err
    assert not (tmp_path / "var").exists()
    # ... and not when it is.
    write_map(tmp_path / "elsewhere", "good.yaml", GOOD)
    status, out, _ = run(capsys, "check", str(tmp_path / "elsewhere"))
    assert status == 0 and out.startswith("ok: 3 bindings")
    status, _, _ = run(capsys, "load", "--maps", "elsewhere", "--store", "s.lmdb")
    assert status == 0 and (tmp_path / "s.lmdb" / "data.mdb").exists()


def test_load_is_guarded_and_force_overrides(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maps = tmp_path / "maps"
    many = "ax:\n" + "".join(
        f"  - {{x: 0507-2000-{i:04d}, a: 010-3333-{i:04d}}}\n" for i in range(100)
    )
    write_map(maps, "m.yaml", many)
    where = ["--maps", str(maps), "--store", str(tmp_path / "s.lmdb")]
    assert run(capsys, "load", *where)[0] == 0
    write_map(maps, "m.yaml", "ax:\n" + "".join(many.splitlines(keepends=True)[1:51]))
    status, out, err = run(capsys, "load", *where)
    assert status == 1 and out == ""
    assert "map refused: it would remove 50 of the 100 live YAML bindings (50%)" in err
    assert "`ansim numbers load --force`" in err
    status, out, _ = run(capsys, "stats", *where)
    assert "yaml             100" in out
    status, out, err = run(capsys, "load", "--force", *where)
    assert status == 0 and "50 removed" in out
    (maps / "m.yaml").write_text("# emptied\n")
    status, out, err = run(capsys, "load", "--force", *where)
    assert status == 0
    assert f"warning: {maps / 'm.yaml'}: holds no bindings" in err
    assert "warning: the number maps hold no bindings: all 50 YAML bindings were removed" in err


def test_lookup_prints_the_answers_of_the_refusal_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maps = tmp_path / "maps"
    write_map(maps, "m.yaml", GOOD)
    where = ["--maps", str(maps), "--store", str(tmp_path / "s.lmdb")]
    assert run(capsys, "load", *where)[0] == 0
    status, out, _ = run(capsys, "lookup", "050-7000-2001", "--from", "010-9999-9999", *where)
    assert status == 2
    assert out == (
        "refused: not_party (binding -): X holds only axb pairs and the caller is in none of"
        " them: SIP 403 Forbidden, SMPP ESME_RINVSRCADR (0x0A)\n"
    )
