"""The `ansim` command line: one console script with subcommands.

Each package that has commands exposes ``register(subparsers, ...)`` in its own ``cli``
module; this module assembles them and hands each what it needs from the configuration
folder (``--config DIR``): ``translate.cli`` gets the ``numbers`` settings of
``ansim.yaml``, ``sms_smpp.cli`` the SMPP file and the engine's store, so every command
reads the one configuration the engine reads, while translate/ and sms_smpp/ never
import b2bua/.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from translate.limits import LimitSettings
from translate.settings import NumbersSettings

from . import cdr, config_check, native, serve
from .config import load_engine_config

if TYPE_CHECKING:
    from sms_smpp.cli import SmppPaths


def numbers_settings(folder: Path) -> NumbersSettings:
    """``numbers`` of the folder's ``ansim.yaml``, paths absolute (for ``ansim numbers``)."""
    return load_engine_config(folder).numbers


def limit_settings(folder: Path) -> LimitSettings:
    """``limits`` of the folder's ``ansim.yaml``, paths absolute (for ``ansim numbers
    lookup``, ``ansim blocklist`` and ``ansim limits``)."""
    return load_engine_config(folder).limits


def smpp_paths(folder: Path) -> SmppPaths:
    """The SMPP file ``ansim.yaml`` names and the engine's store (for ``ansim smpp``)."""
    from sms_smpp.cli import SmppPaths

    config = load_engine_config(folder)
    smpp = None if config.smpp is None else Path(config.smpp)
    return SmppPaths(smpp, Path(config.numbers.store), config.limits)


def recording_paths(folder: Path) -> tuple[str, str]:
    """The recordings folder and audit log of the folder's ``ansim.yaml`` (for
    ``ansim recordings``)."""
    rec = load_engine_config(folder).media.recording
    return rec.directory, rec.audit_log


def version() -> str:
    try:
        return metadata.version("ansim")
    except metadata.PackageNotFoundError:  # run from a tree that was not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ansim", description="ansim: privacy-number SIP B2BUA and SMPP relay"
    )
    parser.add_argument("--version", action="version", version=f"ansim {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    serve.register(sub)
    config_check.register(sub)
    cdr.register(sub)
    native.register(sub)
    import translate.cli

    translate.cli.register(sub, numbers_settings, limit_settings)
    import translate.limits_cli

    translate.limits_cli.register(sub, numbers_settings, limit_settings)
    try:
        import sms_smpp.cli
    except ModuleNotFoundError as exc:  # an install without the SMS relay
        if exc.name is None or not exc.name.startswith("sms_smpp"):
            raise
    else:
        sms_smpp.cli.register(sub, smpp_paths)
    import media.cli

    media.cli.register(sub, recording_paths)
    import api.cli

    api.cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
