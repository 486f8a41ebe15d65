"""The compiled build of the call hot path, and the guard that keeps a stale one from running.

The SIP core, the transports, the endpoint and the call engine are plain, type-checked
Python. ``ansim native build`` (run by ``.ci/setup``) compiles the modules in
``MODULES`` with mypyc, the compiler that ships with mypy, into C extensions beside
their sources; Python then imports those instead of the ``.py`` files. The code stays one code base: the compiled
build runs the same source with its type annotations enforced, and about halves the CPU
a call costs (``bench/engine_bench.py``, ``bench/cps.py``).

A build writes ``b2bua/native.stamp`` with a hash of the sources it compiled. When the
``b2bua`` package is imported, ``select()`` compares it with the sources on disk. If they
differ (a source edited since the build), if the build is incomplete, or if
``ANSIM_PURE_PYTHON=1`` is set, every module of ``MODULES`` is loaded from its ``.py``
file instead, all of them together (compiled modules share one library and must not be
mixed with interpreted ones). A stale build therefore never runs; it only costs speed,
and ``ansim serve`` logs which build it is running.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Final

#: Modules compiled by ``build``: everything a call's datagrams pass through.
MODULES: Final = (
    "b2bua.sip.errors",
    "b2bua.sip.message",
    "b2bua.sip.parser",
    "b2bua.sip.uri",
    "b2bua.sip.via",
    "b2bua.sip.headers",
    "b2bua.sip.validate",
    "b2bua.sip.responses",
    "b2bua.sip.routing",
    "b2bua.sip.transaction",
    "b2bua.sip.dialog",
    "b2bua.sip.sdp_fields",
    "b2bua.sip.sdp_attributes",
    "b2bua.sip.sdp",
    "b2bua.sip.reason",
    "b2bua.sip.bodies",
    "b2bua.sip.extensions",
    "b2bua.endpoint",
    "b2bua.outgoing",
    "b2bua.call",
    "b2bua.controller",
    "b2bua.indialog",
    "b2bua.bridge",
    "b2bua.calls",
    "b2bua.transport",
    "b2bua.flood",
    "b2bua.overload",
    "b2bua.conn_limits",
)
#: The shared library holding the compiled code of all of MODULES.
GROUP: Final = "b2bua._native"
PURE_ENV: Final = "ANSIM_PURE_PYTHON"

ROOT: Final = Path(__file__).resolve().parent.parent
STAMP: Final = ROOT / "b2bua" / "native.stamp"
_SUFFIX: Final = importlib.machinery.EXTENSION_SUFFIXES[0]

#: What ``select()`` decided: "compiled", or "pure Python (why)".
mode = "pure Python (not selected yet)"


def source_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_suffix(".py")


def compiled_path(module: str) -> Path:
    return ROOT.joinpath(*module.split(".")).with_name(module.rsplit(".", 1)[1] + _SUFFIX)


def _group_path() -> Path:
    return ROOT.joinpath(*GROUP.split(".")).with_name(GROUP.rsplit(".", 1)[1] + "__mypyc" + _SUFFIX)


def source_digest() -> str:
    """SHA-256 over the names and contents of the compiled modules' sources."""
    digest = hashlib.sha256()
    for module in MODULES:
        digest.update(module.encode() + b"\0")
        digest.update(source_path(module).read_bytes())
    return digest.hexdigest()


def _built_digest() -> str | None:
    try:
        value = json.loads(STAMP.read_text())["sources"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Loads the listed modules from their .py files, ahead of any compiled ones."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        return importlib.util.spec_from_file_location(fullname, source_path(fullname))


def _why_pure() -> str | None:
    """None when the compiled build is complete and current, else why it is not used."""
    if os.environ.get(PURE_ENV, "") not in ("", "0"):
        return f"{PURE_ENV} is set"
    built = [compiled_path(m).exists() for m in MODULES]
    if not any(built):
        return "not built: run `ansim native build`"
    if not all(built) or not _group_path().exists():
        return "incomplete build: run `ansim native build`"
    if _built_digest() != source_digest():
        return "sources changed since the build: run `ansim native build`"
    return None


def select() -> None:
    """Decide between the compiled build and the sources; called when b2bua is imported."""
    global mode
    why = _why_pure()
    if why is None:
        mode = "compiled"
        return
    mode = f"pure Python ({why})"
    if any(compiled_path(m).exists() for m in MODULES) and not any(
        isinstance(f, _SourceFinder) for f in sys.meta_path
    ):
        sys.meta_path.insert(0, _SourceFinder())


def build(*, quiet: bool = True) -> None:
    """Compile MODULES in place and write the stamp (needs mypy and a C compiler)."""
    from mypyc.build import mypycify  # build-time only: mypy is not needed to run
    from setuptools import setup

    clean()
    digest = source_digest()  # of exactly what is compiled, read before compiling
    work = ROOT / "build" / "native"
    cwd = os.getcwd()
    os.chdir(ROOT)  # mypycify names modules by their paths relative to the root
    try:
        extensions = mypycify(
            [str(source_path(m).relative_to(ROOT)) for m in MODULES],
            opt_level="3",
            group_name=GROUP,
            target_dir=str(work / "c"),
        )
        setup(
            name="ansim-native",
            ext_modules=extensions,
            script_args=[
                *(["-q"] if quiet else []),
                "build_ext",
                "--inplace",
                "--parallel",
                str(os.cpu_count() or 1),
                "--build-temp",
                str(work / "temp"),
                "--build-lib",
                str(work / "lib"),
            ],
        )
    finally:
        os.chdir(cwd)
    missing = [m for m in MODULES if not compiled_path(m).exists()]
    if missing or not _group_path().exists():
        raise SystemExit(f"ansim native build: not produced: {', '.join(missing) or GROUP}")
    STAMP.write_text(json.dumps({"sources": digest, "python": sys.version.split()[0]}) + "\n")


def clean() -> None:
    """Remove the compiled modules, the stamp and the build's C sources."""
    for path in [*(compiled_path(m) for m in MODULES), _group_path(), STAMP]:
        path.unlink(missing_ok=True)
    shutil.rmtree(ROOT / "build" / "native", ignore_errors=True)


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("native", help="build or remove the compiled hot path")
    parser.add_argument("action", choices=("build", "clean", "status"))
    parser.add_argument("--verbose", action="store_true", help="show the compiler's output")
    parser.add_argument(
        "--if-needed", action="store_true", help="build only when the build is absent or stale"
    )
    parser.set_defaults(func=native_command)


def native_command(args: argparse.Namespace) -> int:
    if args.action == "build":
        why = _why_pure()
        if args.if_needed and (why is None or why.startswith(PURE_ENV)):
            return 0
        build(quiet=not args.verbose)
        print(f"ansim native: compiled {len(MODULES)} modules", file=sys.stderr)
    elif args.action == "clean":
        clean()
        print("ansim native: removed the compiled modules", file=sys.stderr)
    else:
        why = _why_pure()
        print("compiled" if why is None else f"pure Python ({why})")
    return 0
