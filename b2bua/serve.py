"""`ansim serve`: run the engine in the foreground on uvloop until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from translate.yaml_source import ConfigError

from .config import EngineConfig, Listen, load_engine_config
from .endpoint import SipEndpoint
from .logs import setup_logging
from .sip.transaction import TimerConfig

log = logging.getLogger("ansim")

DRAIN_SECONDS = 4.5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the engine in the foreground")
    p.add_argument("--config", default="config", help="configuration folder (default: config)")
    p.add_argument(
        "--sip",
        action="append",
        metavar="PROTO:HOST:PORT",
        help="listen address, e.g. udp:127.0.0.1:5060 (repeatable; replaces the config's list)",
    )
    p.add_argument("--debug", action="store_true", help="debug logging with real numbers unmasked")
    p.set_defaults(func=serve_command)


def serve_command(args: argparse.Namespace) -> int:
    try:
        config = load_engine_config(args.config)
        listeners = [Listen.parse(s) for s in args.sip] if args.sip else config.sip.listeners()
    except ConfigError as exc:
        print(f"ansim: configuration refused:\n{exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"ansim: {exc}", file=sys.stderr)
        return 2
    if args.debug:
        setup_logging("debug", show_numbers=True)
    else:
        setup_logging(config.logging.level, show_numbers=config.logging.show_numbers)
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a hard dependency on Linux
        runner = asyncio.run
    return runner(Engine(config, Path(args.config), listeners).run())


class Engine:
    """One engine process: SIP endpoint, call engine and the services beside them."""

    def __init__(self, config: EngineConfig, config_dir: Path, listeners: list[Listen]) -> None:
        self.config = config
        self.config_dir = config_dir
        self.listeners = listeners
        sip = config.sip
        self.endpoint = SipEndpoint(
            timers=TimerConfig(sip.timers.t1, sip.timers.t2, sip.timers.t4),
            symmetric_response=sip.symmetric_response,
            user_agent=sip.user_agent.encode(),
            max_message=sip.max_message,
            tcp_idle_timeout=sip.tcp_idle_timeout,
        )
        self._stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        try:
            for item in self.listeners:
                bound = await self.endpoint.listen(item.transport, item.host, item.port)
                log.info("listening", extra={"transport": bound[0], "host": bound[1], "port": bound[2]})
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            await self.endpoint.close()
            return 1
        log.info("engine started", extra={"config": str(self.config_dir)})
        await self._stop.wait()
        log.info("stopping: finishing in-flight transactions")
        await self.endpoint.drain(DRAIN_SECONDS)
        await self.endpoint.close()
        log.info("engine stopped")
        return 0
