"""The ``ansim smpp`` command group: run the relay alone, or check its configuration.

Both read the configuration folder (``--config DIR``, default ``config``). Which file in
it is the SMPP configuration, and which translation store the engine uses, is for the
entry point that composes ansim to say (``b2bua.cli`` reads ``ansim.yaml``), handed in as
``register(subparsers, resolve)``; on its own this module takes ``DIR/smpp.yaml`` and
the store the file names (``translate_store``) or ``--store``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from translate.limits import LimitSettings
from translate.settings import DEFAULT_CONFIG_DIR
from translate.yaml_source import ConfigError

from .config import SmppConfig, load_config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SmppPaths:
    """Where the SMPP configuration file is, and the engine's translation store (None
    when the configuration does not say)."""

    config: Path | None
    store: Path | None
    #: The engine's caps and blocklists (``limits`` of ansim.yaml); None: the defaults,
    #: their store beside the configuration folder (``../var/limits.lmdb``).
    limits: LimitSettings | None = None


def standalone_paths(folder: Path) -> SmppPaths:
    """``smpp.yaml`` in the folder, no engine store (without ansim's entry point)."""
    return SmppPaths(folder / "smpp.yaml", None)


Resolve = Callable[[Path], SmppPaths]


def register(subparsers: Any, resolve: Resolve = standalone_paths) -> None:
    """Add ``smpp run`` and ``smpp check`` to the ``ansim`` command line."""
    smpp = subparsers.add_parser("smpp", help="SMS relay over SMPP")
    sub = smpp.add_subparsers(dest="smpp_command", metavar="SUBCOMMAND", required=True)
    config_help = f"configuration folder (default: {DEFAULT_CONFIG_DIR})"
    run = sub.add_parser("run", help="run the SMPP relay alone in the foreground")
    run.add_argument("--config", default=DEFAULT_CONFIG_DIR, help=config_help)
    run.add_argument(
        "--store", help="translation store (default: translate_store, else the engine's)"
    )
    run.add_argument("--log-level", default="INFO")
    run.set_defaults(func=lambda args: _run(args, resolve))
    check = sub.add_parser("check", help="validate the SMPP config and exit")
    check.add_argument("--config", default=DEFAULT_CONFIG_DIR, help=config_help)
    check.set_defaults(func=lambda args: _check(args, resolve))


def _load(args: argparse.Namespace, resolve: Resolve) -> tuple[SmppConfig, SmppPaths] | None:
    """The SMPP configuration named by ``--config``; None, with the reason on stderr."""
    folder = Path(args.config)
    if not folder.is_dir():
        print(f"ansim smpp: configuration folder {args.config} does not exist", file=sys.stderr)
        return None
    try:
        paths = resolve(folder)
        if paths.config is None or not paths.config.exists():
            where = "none is configured" if paths.config is None else f"no {paths.config}"
            print(f"ansim smpp: no SMPP configuration ({where})", file=sys.stderr)
            return None
        return load_config(paths.config), paths
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return None
    except ValueError as exc:
        print(f"ansim smpp: {exc}", file=sys.stderr)
        return None


def _check(args: argparse.Namespace, resolve: Resolve) -> int:
    loaded = _load(args, resolve)
    if loaded is None:
        return 2
    print(f"{loaded[1].config}: ok")
    return 0


def _run(args: argparse.Namespace, resolve: Resolve) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    loaded = _load(args, resolve)
    if loaded is None:
        return 2
    config, paths = loaded
    store_path = args.store or config.translate_store or paths.store
    if store_path is None:
        print("ansim smpp: no translation store: give --store or translate_store", file=sys.stderr)
        return 2
    from translate.abuse_store import AbuseStore, AbuseStoreError
    from translate.limits import Limits
    from translate.store import Store, StoreError

    settings = paths.limits or LimitSettings().resolved(Path(args.config))
    try:
        store = Store(os.path.abspath(store_path), readonly=True)
    except StoreError as exc:
        print(f"ansim smpp: {exc}", file=sys.stderr)
        return 2
    try:
        abuse = AbuseStore(settings.store)
    except AbuseStoreError as exc:
        store.close()
        print(f"ansim smpp: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        return uvloop.run(_serve(config, Limits(store, abuse, settings)))
    finally:
        abuse.close()
        store.close()


async def _serve(config: Any, limits: Any) -> int:
    from .service import ListenError, SmppService

    service = SmppService(config, limits)
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
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except TimeoutError:
            # Expired counters of the limits store go (the engine does the same).
            try:
                limits.prune(time.time())
            except Exception as exc:  # a failing store must not stop the relay
                log.error("pruning the limits store failed: %s", exc)
    await service.stop()
    print("ansim smpp: stopped", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m sms_smpp.cli``: ``ansim smpp`` with ``DIR/smpp.yaml``
    and no engine configuration (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="ansim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
