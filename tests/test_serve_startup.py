"""``ansim serve`` at start: a bad map is refused as at reload (file:line:column, never a
traceback): with a map loaded before, the engine starts on it and says so; with none,
it does not start. And the configuration folder decides where the store and maps are,
whatever directory the engine is started from.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml
from engine_process import ANSIM, EngineProcess
from media_helpers import make_keys

from media.recording import RecordingWriter
from media.recordings import iter_recordings
from translate.bindings import Refusal, Route
from translate.store import Store

X1, X2 = "+8250700001001", "+8250700001002"
CALLER = "+821099990000"
GOOD = """
ax:
  - {id: first, x: 0507-0000-1001, a: 010-0000-1001}
"""
IMPOSSIBLE_DATES = """
defaults: {timezone: Asia/Seoul}
ax:
  - {id: first, x: 0507-0000-1001, a: 010-0000-1001}
  - id: second
    x: 0507-0000-1002
    a: 010-0000-1002
    expires: 2099-02-30
  - {id: third, x: 0507-0000-1003, a: 010-0000-1003, expires: 2099-13-01}
  - {id: fourth, x: 0507-0000-1004, a: 010-0000-1004, expires: "2099-01-01T25:00"}
"""
ERRORS = [
    "bad.yaml:8:14: invalid-value: ax[1].expires: '2099-02-30' is not a valid date or time:"
    " day is out of range for month",
    "bad.yaml:9:63: invalid-value: ax[2].expires: '2099-13-01' is not a valid date or time:"
    " month must be in 1..12",
    "bad.yaml:10:64: invalid-value: ax[3].expires: input should be a valid date or datetime,"
    " hour value is outside expected range of 0-23",
]


def decide(store_path: Path, virtual: str) -> Route | Refusal:
    with Store(store_path, readonly=True, snapshot_max_age=0) as store:
        return store.lookup(virtual, CALLER, time.time())


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


def test_a_bad_map_with_no_map_before_refuses_to_start(tmp_path: Path) -> None:
    engine = EngineProcess(tmp_path, files={"numbers/bad.yaml": IMPOSSIBLE_DATES})
    config = engine.write_config()
    proc = subprocess.run(
        [str(ANSIM), "serve", "--config", str(config), "--sip", f"udp:127.0.0.1:{engine.port}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 2, proc
    assert "Traceback" not in proc.stdout + proc.stderr
    bad = config / "numbers" / "bad.yaml"
    errors = [line for line in proc.stderr.splitlines() if line.startswith(str(bad))]
    assert errors == [f"{config}/numbers/{e}" for e in ERRORS], proc.stderr
    assert proc.stderr.endswith(
        "ansim: refusing to start: the number maps are refused (3 error(s)) and no map was loaded into the store before\n"
    )
    messages = [r["msg"] for r in records_of(proc.stdout)]
    assert any(m.startswith("refusing to start: the number maps are refused") for m in messages)
    assert f"  {config}/numbers/{ERRORS[0]}" in messages  # in the log too


def records_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_bad_map_at_start_leaves_the_last_good_one_in_service(tmp_path: Path) -> None:
    with EngineProcess(tmp_path, files={"numbers/bad.yaml": GOOD}):
        pass
    store = tmp_path / "var" / "numbers.lmdb"
    assert isinstance(decide(store, X1), Route)
    (tmp_path / "config" / "numbers" / "bad.yaml").write_text(IMPOSSIBLE_DATES)
    with EngineProcess(tmp_path, log_name="second.log") as engine:
        assert engine.options() is not None
        assert isinstance(decide(store, X1), Route)
        assert decide(store, X2) == Refusal("unknown", None)
        log = engine.log_path.read_text()
        assert "Traceback" not in log
        messages = [r["msg"] for r in records(engine.log_path)]
        config = engine.config_dir
        for error in ERRORS:
            assert f"  {config}/numbers/{error}" in messages
        assert any(
            m.startswith("starting with the last good number map, loaded ")
            and "(1 bindings from 1 file(s)); the maps on disk are refused" in m
            for m in messages
        ), messages


class Site(EngineProcess):
    """An engine on a configuration folder laid out as shipped: relative paths only."""

    def write_config(self) -> Path:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        (self.config_dir / "ansim.yaml").write_text(
            yaml.safe_dump({"metrics": {"listen": None}, "smpp": None, "numbers": {"watch": False}})
        )
        (self.config_dir / "numbers").mkdir(exist_ok=True)
        (self.config_dir / "numbers" / "map.yaml").write_text(GOOD)
        return self.config_dir


def started(log: Path) -> dict[str, Any]:
    return next(r for r in records(log) if r["msg"] == "engine started")


def test_the_same_store_and_maps_from_any_working_directory(tmp_path: Path) -> None:
    site = tmp_path / "site"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    store = site / "var" / "numbers.lmdb"
    with Site(site, cwd=elsewhere, log_name="from-elsewhere.log") as engine:
        assert isinstance(decide(store, X1), Route)
    first = started(engine.log_path)
    assert (first["store"], first["maps"]) == (str(store), str(site / "config" / "numbers"))
    assert list(elsewhere.iterdir()) == []  # nothing was made where the engine started
    assert (site / "var" / "cdr.sqlite").exists()
    runs = [
        Site(site, cwd=site, config_arg="config", log_name="from-root.log"),
        Site(site, cwd=site / "config", config_arg=".", log_name="from-config.log"),
    ]
    for run in runs:
        with run:
            assert isinstance(decide(store, X1), Route)
        again = started(run.log_path)
        assert (again["store"], again["maps"], again["config"]) == (
            first["store"],
            first["maps"],
            first["config"],
        )
        loaded = [r["msg"] for r in records(run.log_path) if r["msg"].startswith("number maps")]
        assert loaded[0].startswith("number maps loaded: 1 bindings from 1 file(s): 0 added,")
        assert "1 unchanged" in loaded[0]  # the store the first run filled
    assert sorted(p.name for p in site.iterdir()) == sorted(
        ["config", "var", "from-elsewhere.log", "from-root.log", "from-config.log"]
    )


def test_the_engine_deletes_recordings_past_their_retention(tmp_path: Path) -> None:
    folder = tmp_path / "recordings"
    folder.mkdir(mode=0o700)
    _, _, key = make_keys(tmp_path)
    now = time.time()
    for name, age_days in (("old", 40), ("recent", 5)):
        writer = RecordingWriter(key.public_key(), name, now - age_days * 86400, {"call": name})
        (folder / f"{name}.rec").write_bytes(writer.header() + writer.finish())
    config = {"media": {"recording": {"directory": str(folder), "retention_days": 30}}}
    with EngineProcess(tmp_path / "engine", config=config) as engine:
        deadline = time.monotonic() + 10
        while len(list(iter_recordings(folder))) > 1:
            assert time.monotonic() < deadline, engine.log_text()
            time.sleep(0.1)
    assert [e.recording_id for e in iter_recordings(folder)] == ["recent"]
