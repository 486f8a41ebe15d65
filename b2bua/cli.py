"""The `ansim` command line: one console script with subcommands.

Each package that has commands exposes ``register(subparsers)`` in its own ``cli``
module; this module only assembles them, so translate/ and sms_smpp/ never import b2bua/.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Modules that contribute subcommands through a ``register(subparsers)`` function.
_COMMAND_MODULES = (
    "b2bua.serve",
    "b2bua.cdr",
    "b2bua.native",
    "translate.cli",
    "sms_smpp.cli",
    "api.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ansim", description="ansim: privacy-number SIP B2BUA and SMPP relay"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
