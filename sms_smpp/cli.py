"""The ``ansim smpp`` command group: run the relay alone, or check its configuration."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import Any

from translate.yaml_source import ConfigError

from .config import load_config

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add ``smpp run`` and ``smpp check`` to the ``ansim`` command line."""
    smpp = subparsers.add_parser("smpp", help="SMS relay over SMPP")
    sub = smpp.add_subparsers(dest="smpp_command", metavar="SUBCOMMAND", required=True)
    run = sub.add_parser("run", help="run the SMPP relay alone in the foreground")
    run.add_argument("--config", default="config/smpp.yaml", help="SMPP config (YAML)")
    run.add_argument("--store", help="translation store (default: translate_store in config)")
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=_run)
    check = sub.add_parser("check", help="validate the SMPP config and exit")
    check.add_argument("--config", default="config/smpp.yaml")
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.config}: ok")
    return 0


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    from translate.store import Store, StoreError

    try:
        store = Store(args.store or config.translate_store, readonly=True)
    except StoreError as exc:
        print(f"ansim smpp: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        return uvloop.run(_serve(config, store))
    finally:
        store.close()


async def _serve(config: Any, store: Any) -> int:
    from .service import ListenError, SmppService

    service = SmppService(config, store)
    try:
        await service.start()
    except ListenError as exc:
        print(f"ansim smpp: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"ansim smpp: listening on {config.server.host}:{service.port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await service.stop()
    print("ansim smpp: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m sms_smpp.cli`` (the same as ``ansim smpp``)."""
    parser = argparse.ArgumentParser(prog="ansim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
