"""`ansim serve`: run the engine in the foreground on uvloop until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from translate.abuse_store import AbuseStore, AbuseStoreError
from translate.limits import Limits
from translate.reload import MapWatcher
from translate.settings import DEFAULT_CONFIG_DIR
from translate.store import Store, StoreError
from translate.yaml_source import ConfigError

from . import loop_priority, native
from .anchor import MediaAnchor, RelayPool
from .api_process import ApiProcesses
from .call_events import EventJournal
from .calls import CallEngine
from .cdr import CdrSchemaError, CdrWriter
from .config import EngineConfig, Listen, load_engine_config
from .conn_limits import ConnectionLimits
from .edge_log import EdgeLog
from .endpoint import SipEndpoint
from .flood import FloodGuard
from .logs import setup_logging
from .overload import OverloadDetector
from .sip.transaction import TimerConfig
from .store_jobs import StoreJobs
from .tls import TlsConfigError, TlsContexts
from .trunks import TrunkTable, load_trunks

if TYPE_CHECKING:
    from media.rtcp_sink import RtcpSink
    from media.rtpengine import RtpengineClient
    from sms_smpp.config import SmppConfig
    from sms_smpp.service import SmppService

log = logging.getLogger("ansim")

DRAIN_SECONDS = 4.5
PURGE_EVERY = 60  # seconds between purges of expired bindings
RETENTION_EVERY = 3600  # seconds between runs of the recordings' retention
STORE_JOB_GRACE = 1.0  # seconds a stopping engine waits for a reload or purge under way


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the engine in the foreground")
    p.add_argument(
        "--config",
        default=DEFAULT_CONFIG_DIR,
        help="configuration folder; relative paths in it are relative to it (default: config)",
    )
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
        trunks = load_trunks(config.trunks)
        smpp = load_smpp(config)
        tls = load_tls(config, trunks, listeners, os.path.abspath(args.config))
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
    import uvloop

    folder = Path(os.path.abspath(args.config))
    return uvloop.run(Engine(config, folder, listeners, trunks, smpp, tls).run())


def load_tls(
    config: EngineConfig, trunks: TrunkTable, listeners: list[Listen], folder: str
) -> TlsContexts | None:
    """The TLS contexts when anything speaks TLS (a tls: listener or a TLS trunk), read
    before the engine starts so that a bad certificate is refused like a bad file."""
    wanted = any(item.transport == "tls" for item in listeners) or any(
        t.transport == "tls" for t in trunks.config.trunks
    )
    if not wanted:
        return None
    settings = config.sip.tls
    if any(item.transport == "tls" for item in listeners) and not (
        settings.certificate and settings.key
    ):
        raise ValueError("a tls: listen address needs sip.tls.certificate and sip.tls.key")
    try:
        return TlsContexts(settings, trunks, folder)
    except TlsConfigError as exc:
        raise ValueError(f"TLS: {exc}") from exc


def load_smpp(config: EngineConfig) -> SmppConfig | None:
    """The SMPP relay's configuration when it is on; None when off or not configured.
    Read before the engine starts, so that an error in it is refused like any other."""
    if not config.smpp or not Path(config.smpp).exists():
        return None
    from sms_smpp.config import load_config

    smpp = load_config(config.smpp)
    return smpp if smpp.enabled else None


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a signalling engine.

    A busy engine allocates many short-lived containers per message and keeps tens of
    thousands of transactions alive for their 32-second timers; with the default
    thresholds the collector rescans them so often that it costs about a third of the
    CPU per call (bench/engine_bench.py). Objects that exist after start-up are frozen
    out of collection (and, every second, what was allocated since: ``age_out_gc``), so
    a young collection only walks the last second's objects; it runs every 10,000
    allocations, which keeps each one to a few milliseconds under load.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 20)


def age_out_gc() -> None:
    """Freeze what is allocated now out of collection; the engine calls it every second.

    Each call's objects live on for up to 40 seconds after it ends (their transactions'
    timers), so under load millions of objects are alive, and a collection that has to
    walk them all stops the engine for a second or more (calls fail). Frozen objects are
    still freed by reference counting: the call engine cuts every cycle a call makes
    once its last transaction ends (``CallEngine.release_ended``), so the collector only
    ever needs to look at the last second's allocations. ``ansim_gc_frozen_objects``
    shows the frozen count, which stays level under a steady load.
    """
    gc.freeze()


class Engine:
    """One engine process: SIP endpoint, call engine and the services beside them."""

    def __init__(
        self,
        config: EngineConfig,
        config_dir: Path,
        listeners: list[Listen],
        trunks: TrunkTable,
        smpp: SmppConfig | None = None,
        tls: TlsContexts | None = None,
    ) -> None:
        self.config = config
        self.smpp_config = smpp
        self.config_dir = config_dir
        self.listeners = listeners
        self.trunks = trunks
        self.plan = config.numbers.plan()
        self.store: Store | None = None
        self.abuse: AbuseStore | None = None
        self.limits: Limits | None = None
        self.jobs: StoreJobs | None = None
        self.cdr: CdrWriter | None = None
        self.calls: CallEngine | None = None
        self.smpp: SmppService | None = None
        self.relays: RelayPool | None = None
        self.api: ApiProcesses | None = None
        self.rtpengine: RtpengineClient | None = None
        self.rtcp_sink: RtcpSink | None = None
        sip = config.sip
        flood = config.flood
        self.flood = (
            FloodGuard(flood.limits(), [*flood.allow, *trunks.trusted_networks()])
            if flood.enabled
            else None
        )
        overload = config.overload
        self.overload = OverloadDetector(overload.limits()) if overload.enabled else None
        self.tls = tls
        conns = sip.connections
        self.endpoint = SipEndpoint(
            timers=TimerConfig(sip.timers.t1, sip.timers.t2, sip.timers.t4),
            symmetric_response=sip.symmetric_response,
            user_agent=sip.user_agent.encode(),
            max_message=sip.max_message,
            tcp_idle_timeout=sip.tcp_idle_timeout,
            message_timeout=conns.message_timeout,
            flood=self.flood,
            overload=self.overload,
            retry_after=overload.retry_after,
            rfc7339=overload.rfc7339,
            connection_limits=ConnectionLimits(
                conns.max_total, conns.max_per_source, conns.max_per_trusted_source
            ),
            tls=tls,
        )
        self.edge_log = EdgeLog(self.flood, self.overload, self.endpoint)
        self._stop = asyncio.Event()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        sched = self.config.scheduling
        refused = loop_priority.apply(sched.policy, sched.priority)
        if refused is not None:
            log.warning(
                "scheduling: the event loop keeps the normal policy, not %s: %s",
                sched.policy,
                refused,
            )
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        n = self.config.numbers
        try:
            self.store = Store(n.store)
        except StoreError as exc:
            log.error("cannot open the number store: %s", exc)
            return 1
        try:
            self.abuse = AbuseStore(self.config.limits.store)
        except AbuseStoreError as exc:
            log.error("cannot open the limits store: %s", exc)
            self.store.close()
            return 1
        self.limits = Limits(self.store, self.abuse, self.config.limits)
        maps = Path(n.maps)
        self.jobs = jobs = StoreJobs(self.store, maps, self.plan, loop, guard=n.guard())
        if not self._first_load(jobs, maps):
            self.store.close()
            self.abuse.close()
            return 2
        loop.add_signal_handler(signal.SIGHUP, self._on_hup)
        loop.add_signal_handler(signal.SIGUSR1, jobs.force_reload)
        watcher = (
            MapWatcher(maps, settle=n.settle, writer_wait=n.writer_wait, now=loop.time())
            if n.watch
            else None
        )
        try:
            self.cdr = CdrWriter(
                self.config.cdr, fsync=self.config.cdr_fsync, attribute=self.store.attribution
            )
        except (CdrSchemaError, sqlite3.Error, OSError) as exc:
            log.error("cannot open the CDR file %s: %s", self.config.cdr, exc)
            await self._close()
            return 1
        # Media first: from the first listen on, every await lets a request in, and one
        # that came before the call engine was attached would go unanswered.
        try:
            anchor = await self._start_media(loop)
        except (OSError, RuntimeError) as exc:
            log.error("cannot start the media relays or reach rtpengine: %s", exc)
            await self._stop_media()
            await self._close()
            return 1
        advertise: dict[str, tuple[str, int]] = {}
        try:
            for item in self.listeners:
                bound = await self.endpoint.listen(item.transport, item.host, item.port)
                advertise.setdefault(bound[0], (bound[1], bound[2]))
                log.info(
                    "listening", extra={"transport": bound[0], "host": bound[1], "port": bound[2]}
                )
        except OSError as exc:
            log.error("cannot listen: %s", exc)
            await self._stop_media()
            await self._close()
            return 1
        if self.tls is not None:
            self.tls.log_certificate("TLS certificate loaded")
        if self.config.sip.advertise:
            host, _, port = self.config.sip.advertise.rpartition(":")
            if port.isdigit():
                advertise = {k: (host, int(port)) for k in advertise}
            else:
                advertise = {k: (self.config.sip.advertise, v[1]) for k, v in advertise.items()}
            for host_port in advertise.values():
                self.endpoint.add_sent_by(*host_port)
        self.calls = CallEngine(
            self.endpoint,
            self.store,
            self.trunks,
            plan=self.plan,
            advertise=advertise,
            cdr=self.cdr,
            call_later=loop.call_later,
            media=anchor,
            limits=self.limits,
            events=EventJournal(self.cdr),
        )
        anchor.bind(self.calls)
        self.endpoint.user = self.calls
        if self.calls.registrations is not None:
            self.calls.registrations.start(self.endpoint.now())
        if self.config.metrics.listen:
            from .metrics import serve_metrics

            try:
                serve_metrics(self.endpoint, self.calls, self.config.metrics.listen, self.tls)
            except OSError as exc:
                log.error("cannot serve metrics on %s: %s", self.config.metrics.listen, exc)
        if not await self._start_smpp():
            await self._close()
            return 1
        await self._start_api()
        tune_gc()
        log.info(
            "engine started",
            extra={
                "config": str(self.config_dir),
                "store": n.store,
                "maps": n.maps,
                "hot_path": native.mode,
            },
        )
        if native.mode != "compiled":
            log.warning("running the hot path from sources: %s", native.mode)
        ticks = 0
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), 1.0)
            except TimeoutError:
                ticks += 1
                self.store.release()  # an idle engine holds no old read snapshot
                self.cdr.flush()  # the last records of a burst reach the disk within a second
                self.calls.release_ended(self.endpoint.now())
                self.edge_log.tick(self.endpoint.now())
                if self.tls is not None and self.config.sip.tls.watch:
                    self.tls.poll(loop.time())
                self._prune_limits(loop)
                age_out_gc()
                if watcher is not None and watcher.poll(loop.time()):
                    jobs.reload()
                if ticks % PURGE_EVERY == 0:
                    jobs.purge()
                    if self.calls.auth is not None:
                        self.calls.auth.housekeeping(self.endpoint.now())
                if ticks % RETENTION_EVERY == 1:
                    self._retention(loop)
        log.info("stopping: finishing in-flight transactions")
        if self.api is not None:
            await self.api.stop()
        await self._stop_smpp()
        self.calls.shutdown(self.endpoint.now())
        await self.endpoint.drain(DRAIN_SECONDS)
        await anchor.drain(2.0)
        await self._stop_media()
        await self._close()
        log.info("engine stopped")
        return 0

    def _on_hup(self) -> None:
        """SIGHUP: reload the number maps, and the TLS certificate if there is one."""
        assert self.jobs is not None
        self.jobs.reload()
        if self.tls is not None:
            self.tls.reload()

    def _prune_limits(self, loop: asyncio.AbstractEventLoop, batches: int = 20) -> None:
        """Expired counters go, a small batch at a time between the loop's other work, so
        that the limits store's write lock is never held for long."""
        limits = self.limits
        if limits is None:
            return
        try:
            if limits.prune(time.time()) >= 1000 and batches > 1:
                loop.call_soon(self._prune_limits, loop, batches - 1)
        except AbuseStoreError as exc:
            log.error("pruning the limits store failed: %s", exc)

    def _first_load(self, jobs: StoreJobs, maps: Path) -> bool:
        """Load the maps before taking calls. A refused map leaves the store's last good
        one in service, said loudly; with no map ever loaded into this store there is
        nothing good to serve, and the engine does not start (False)."""
        assert self.store is not None
        if not maps.is_dir():
            log.warning("no number-map folder at %s: serving the store as it is", maps)
            return True
        result = jobs.reload_now()
        if result.ok:
            return True
        last = self.store.loaded("yaml")
        if last is None:
            log.error(
                "refusing to start: the number maps are refused and the store at %s holds"
                " no map loaded before; fix the errors above",
                self.store.path,
            )
            for error in result.errors:
                print(error, file=sys.stderr)
            what = f"{len(result.errors)} error(s)" if result.errors else result.refusal
            print(
                f"ansim: refusing to start: the number maps are refused ({what}) and no map"
                " was loaded into the store before",
                file=sys.stderr,
            )
            return False
        when = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(last["at"]))
        log.error(
            "starting with the last good number map, loaded %s (%d bindings from %d"
            " file(s)); the maps on disk are refused: fix them, then SIGHUP",
            when,
            last["bindings"],
            last["files"],
            extra={"errors": len(result.errors)},
        )
        return True

    async def _start_media(self, loop: asyncio.AbstractEventLoop) -> MediaAnchor:
        """The relay processes of ``media.relays`` started, rtpengine's ng port opened
        when ``media.rtpengine`` names one, and the engine's media side over them. With
        neither, calls whose mode is not passthrough are answered 503."""
        settings = self.config.media
        if settings.relays:
            self.relays = RelayPool(settings, loop)
            await self.relays.start()
        if settings.rtpengine is not None:
            from media.rtpengine import RtpengineClient

            host, port = settings.rtpengine.address()
            rtpengine = RtpengineClient(
                host, port, settings.rtpengine.retry_s, settings.rtpengine.attempts
            )
            self.rtpengine = await rtpengine.open()
            from media.rtcp_sink import RtcpSink

            self.rtcp_sink = RtcpSink(*settings.rtpengine.sink_address())
            sink = (self.rtcp_sink.host, self.rtcp_sink.port)
            return MediaAnchor(settings, self.relays, self.rtpengine, loop, rtcp_sink=sink)
        return MediaAnchor(settings, self.relays, self.rtpengine, loop)

    async def _stop_media(self) -> None:
        if self.relays is not None:
            await self.relays.stop()
        if self.rtpengine is not None:
            self.rtpengine.close()
        if self.rtcp_sink is not None:
            self.rtcp_sink.close()

    def _retention(self, loop: asyncio.AbstractEventLoop) -> None:
        """Recordings older than ``media.recording.retention_days`` are deleted, off the loop."""
        rec = self.config.media.recording
        days = rec.retention_days
        if days is None or not Path(rec.directory).is_dir():
            return
        from media.recordings import purge_recordings

        def purge() -> None:
            try:
                removed = purge_recordings(Path(rec.directory), days * 86400.0, time.time())
            except OSError as exc:
                log.error("recordings retention failed: %s", exc)
                return
            if removed:
                log.info("recordings past retention deleted", extra={"count": len(removed)})

        loop.run_in_executor(None, purge)

    async def _start_smpp(self) -> bool:
        if self.smpp_config is None:
            return True
        from sms_smpp.service import SmppService

        assert self.limits is not None
        service = SmppService(self.smpp_config, self.limits)
        try:
            await service.start()
        except OSError as exc:  # ListenError: the port is taken or not permitted
            log.error("SMPP relay: %s", exc.strerror or exc)
            return False
        self.smpp = service
        log.info("SMPP relay started", extra={"port": service.port})
        return True

    async def _start_api(self) -> None:
        """The control API's processes on ``api.listen`` (none when it is null)."""
        settings = self.config.api
        if settings.listen is None:
            return
        self.api = ApiProcesses(
            self.config_dir, settings.workers, nice=settings.nice, scheduling=settings.scheduling
        )
        await self.api.start()
        log.info(
            "control API started", extra={"listen": settings.listen, "workers": settings.workers}
        )

    async def _stop_smpp(self) -> None:
        service = self.smpp
        if service is not None:
            await service.stop(timeout=2.0)

    async def _close(self) -> None:
        await self.endpoint.close()
        if self.cdr is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.cdr.close)
        # A write still waiting for the lock keeps the store open: closing it under the
        # thread would crash, and exiting drops the write.
        idle = self.jobs is None or await self.jobs.close(STORE_JOB_GRACE)
        if self.store is not None and idle:
            self.store.close()
        if self.abuse is not None:
            self.abuse.close()
