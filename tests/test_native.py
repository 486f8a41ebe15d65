"""The compiled hot path: built by setup, selected when current, never run when stale.

Each check runs a fresh interpreter, since which files a module is loaded from is
decided once per process when ``b2bua`` is imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from b2bua import native

ROOT = Path(__file__).resolve().parent.parent

# Loads every compiled module, places one call's worth of parsing, and reports where
# each module came from.
PROBE = """
import importlib, json
import b2bua
from b2bua import native
from b2bua.sip.parser import parse_datagram
msg = parse_datagram(
    b"OPTIONS sip:x@127.0.0.1 SIP/2.0\\r\\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\\r\\n"
    b"From: <sip:a@h>;tag=1\\r\\nTo: <sip:x@h>\\r\\nCall-ID: c1\\r\\nCSeq: 1 OPTIONS\\r\\n"
    b"Max-Forwards: 70\\r\\nContent-Length: 0\\r\\n\\r\\n"
)
files = {m: importlib.import_module(m).__file__ for m in native.MODULES}
print(json.dumps({"mode": native.mode, "files": files, "call_id": msg.call_id.decode()}))
"""


def probe(cwd: Path, **env: str) -> dict[str, object]:
    environ = {k: v for k, v in os.environ.items() if k != native.PURE_ENV}
    environ.update(env)
    environ["PYTHONPATH"] = str(cwd)
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    assert result["call_id"] == "c1"
    return result


def suffixes(result: dict[str, object]) -> set[str]:
    files = result["files"]
    assert isinstance(files, dict)
    return {Path(f).suffix for f in files.values()}


@pytest.fixture
def built() -> None:
    if not native.compiled_path(native.MODULES[0]).exists():
        pytest.skip("no compiled build here (`ansim native build`); .ci/setup makes one")


def test_current_build_is_selected(built: None) -> None:
    result = probe(ROOT)
    assert result["mode"] == "compiled"
    assert suffixes(result) == {".so"}


def test_pure_python_on_request(built: None) -> None:
    result = probe(ROOT, **{native.PURE_ENV: "1"})
    assert result["mode"] == f"pure Python ({native.PURE_ENV} is set)"
    assert suffixes(result) == {".py"}


def copy_tree(tmp_path: Path) -> Path:
    """b2bua/ with its compiled modules and stamp, where a test may change a source."""
    shutil.copytree(
        ROOT / "b2bua", tmp_path / "b2bua", ignore=shutil.ignore_patterns("__pycache__")
    )
    return tmp_path


def test_a_copied_build_still_runs_compiled(built: None, tmp_path: Path) -> None:
    result = probe(copy_tree(tmp_path))
    assert result["mode"] == "compiled"
    files = result["files"]
    assert isinstance(files, dict)
    assert all(f.startswith(str(tmp_path)) and f.endswith(".so") for f in files.values())


def test_a_changed_source_makes_every_module_load_from_source(built: None, tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    via = root / "b2bua" / "sip" / "via.py"
    via.write_text(via.read_text() + "\n# edited after the build\n")
    result = probe(root)
    assert result["mode"] == (
        "pure Python (sources changed since the build: run `ansim native build`)"
    )
    # all of them, not just via: compiled and interpreted modules must not be mixed
    assert suffixes(result) == {".py"}


def test_an_incomplete_build_is_not_used(built: None, tmp_path: Path) -> None:
    root = copy_tree(tmp_path)
    (root / "b2bua" / "sip" / native.compiled_path("b2bua.sip.sdp").name).unlink()
    result = probe(root)
    assert result["mode"] == "pure Python (incomplete build: run `ansim native build`)"
    assert suffixes(result) == {".py"}


def test_the_stamp_records_the_sources(built: None) -> None:
    stamp = json.loads(native.STAMP.read_text())
    assert stamp["sources"] == native.source_digest()
