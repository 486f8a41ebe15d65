"""`ansim config check`: validate the whole configuration folder at once.

Reads what ``ansim serve`` reads, in the same way (``ansim.yaml``, the trunk file, the
SMPP file, every number map, all paths relative to the folder), and lists every error
in every file as ``file:line:column: reason``; it starts nothing and writes nothing.
A file with errors does not stop the others being checked: with a refused
``ansim.yaml`` the rest are checked as the defaults would find them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from translate.compiler import compile_maps
from translate.settings import DEFAULT_CONFIG_DIR
from translate.yaml_source import ConfigError, SourceError, load_yaml

from .config import EngineConfig, config_folder, load_engine_config
from .trunks import load_trunks

__all__ = ["check_folder", "register"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check the configuration folder")
    cmds = p.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    c = cmds.add_parser(
        "check",
        help="validate ansim.yaml, the trunks, the SMPP file and every number map;"
        " list every error with file:line:column",
    )
    c.add_argument(
        "--config", default=DEFAULT_CONFIG_DIR, help="configuration folder (default: config)"
    )
    c.set_defaults(func=check_command)


def check_command(args: argparse.Namespace) -> int:
    try:
        folder = config_folder(args.config).absolute()
    except ValueError as exc:
        print(f"ansim: {exc}", file=sys.stderr)
        return 2
    errors, notes = check_folder(folder)
    for error in errors:
        print(error.shown())
    for note in notes:
        print(note, file=sys.stderr if errors else sys.stdout)
    if errors:
        print(f"{len(errors)} error(s)", file=sys.stderr)
        return 1
    return 0


def check_folder(folder: Path) -> tuple[list[SourceError], list[str]]:
    """(every error of every file, one line per file checked)."""
    errors: list[SourceError] = []
    notes: list[str] = []
    engine_file = folder / "ansim.yaml"
    try:
        config = load_engine_config(folder)
        notes.append(
            f"{engine_file}: ok" if engine_file.exists() else f"{engine_file}: absent, defaults"
        )
    except ConfigError as exc:
        errors.extend(exc.errors)
        config = EngineConfig().resolved(folder)
        notes.append(f"{engine_file}: {len(exc.errors)} error(s); the rest checked with defaults")

    trunks = Path(config.trunks)
    if trunks.exists():
        try:
            load_trunks(trunks)
            notes.append(f"{trunks}: ok")
        except ConfigError as exc:
            errors.extend(exc.errors)
    else:
        notes.append(f"{trunks}: absent, no trunks (every call is refused)")

    if config.smpp is not None:
        smpp = Path(config.smpp)
        if smpp.exists():
            from sms_smpp.config import load_config

            try:
                smpp_config = load_config(smpp)
                state = "on" if smpp_config.enabled else "off"
                notes.append(f"{smpp}: ok (relay {state})")
            except ConfigError as exc:
                errors.extend(exc.errors)
        else:
            notes.append(f"{smpp}: absent, no SMS relay")

    maps = Path(config.numbers.maps)
    if not maps.is_dir():
        line, column = _position(engine_file, ("numbers", "maps"))
        errors.append(
            SourceError(
                str(engine_file),
                line,
                column,
                f"missing-folder: numbers.maps: no map folder at {maps}",
            )
        )
    else:
        try:
            compiled = compile_maps([maps], config.numbers.plan(), now=time.time())
        except ConfigError as exc:
            errors.extend(exc.errors)
        else:
            notes.append(
                f"{maps}: ok, {len(compiled.bindings)} bindings in {len(compiled.files)} file(s)"
            )
            notes.extend(f"{file}: warning: holds no bindings" for file in compiled.empty_files)
    store = Path(config.numbers.store)
    if store.exists() and not store.is_dir():
        line, column = _position(engine_file, ("numbers", "store"))
        errors.append(
            SourceError(
                str(engine_file), line, column, f"invalid-value: numbers.store: {store} is a file"
            )
        )
    return sorted(errors, key=lambda e: (e.file, e.line, e.column, e.reason)), notes


def _position(path: Path, loc: tuple[str, ...]) -> tuple[int, int]:
    """Where ``loc`` is written in ``path``; 1:1 when it is not written (a default)."""
    try:
        _, positions = load_yaml(path)
    except ConfigError:
        return 1, 1
    return positions.at(loc) if loc in positions else (1, 1)
