"""``ansim api``, ``ansim keys ...`` and ``ansim tenants ...``.

``ansim api`` runs the control API in a process of its own (uvicorn on uvloop), so no
HTTP request ever waits in a SIP worker's loop. ``keys`` and ``tenants`` write the store
directly (another process may serve the API meanwhile: LMDB serialises the writes), and
leave audit records with ``source: cli``. The first admin key is made here::

    ansim keys create --tenant operator --scope admin

Store and number plan come from the configuration folder's ``ansim.yaml`` (``numbers``),
or ``--store``.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import signal
import socket
import sys
import time
from typing import Any

from api.control import ControlTables, KeyRecord, Principal, Tenant
from api.keys import SCOPES
from api.settings import Loaded, load_settings, parse_listen
from translate.bindings import NAME_PATTERN, is_name, time_zone
from translate.store import Store, StoreError
from translate.yaml_source import ConfigError

__all__ = ["register"]

log = logging.getLogger("ansim.api")


def register(subparsers: Any) -> None:
    """Add the ``api``, ``keys`` and ``tenants`` commands."""
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", default="config", help="configuration folder (%(default)s)")
    where.add_argument("--store", help="translation store (default: numbers.store of ansim.yaml)")

    p = subparsers.add_parser("api", parents=[where], help="run the control API (HTTP)")
    p.add_argument("--listen", metavar="HOST:PORT", help="default: api.listen, 127.0.0.1:8080")
    p.add_argument("--debug", action="store_true", help="debug logging")
    p.set_defaults(func=cmd_api)

    keys = subparsers.add_parser("keys", help="create, list and revoke API keys")
    sub = keys.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("create", parents=[where], help="create a key; its token is shown once")
    p.add_argument("--tenant", required=True, help=f"tenant ({NAME_PATTERN}); created if new")
    p.add_argument(
        "--scope",
        action="append",
        required=True,
        choices=sorted(SCOPES),
        help="a scope of the key (repeatable)",
    )
    p.add_argument("--name", default="", help="what the key is for")
    p.set_defaults(func=cmd_keys_create)
    p = sub.add_parser("list", parents=[where], help="list keys (never their secrets)")
    p.add_argument("--tenant", help="only this tenant's")
    p.set_defaults(func=cmd_keys_list)
    p = sub.add_parser("revoke", parents=[where], help="revoke a key")
    p.add_argument("key_id", metavar="KEY_ID")
    p.set_defaults(func=cmd_keys_revoke)

    tenants = subparsers.add_parser("tenants", help="tenants and the numbers they may pool")
    sub = tenants.add_subparsers(dest="tenants_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser(
        "set", parents=[where], help="create a tenant or set the number prefixes it may pool"
    )
    p.add_argument("tenant")
    p.add_argument("--numbers", nargs="*", default=[], metavar="PREFIX", help="E.164 prefixes")
    p.add_argument("--timezone", help="IANA time zone of its statistics (default: unchanged, UTC)")
    p.set_defaults(func=cmd_tenants_set)
    p = sub.add_parser("list", parents=[where], help="list tenants")
    p.set_defaults(func=cmd_tenants_list)


def _loaded(args: argparse.Namespace) -> Loaded | None:
    try:
        loaded = load_settings(args.config)
    except ConfigError as exc:
        print(f"ansim: configuration refused:\n{exc}", file=sys.stderr)
        return None
    if args.store:
        loaded = loaded.model_copy(update={"store": args.store})
    return loaded


def _open(args: argparse.Namespace) -> tuple[Store, ControlTables] | None:
    loaded = _loaded(args)
    if loaded is None:
        return None
    try:
        store = Store(loaded.store)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    return store, ControlTables(store)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.context import ApiContext

    loaded = _loaded(args)
    if loaded is None:
        return 2
    listen = args.listen or loaded.settings.listen
    if listen is None:
        print("ansim: api.listen is null in ansim.yaml: give --listen HOST:PORT", file=sys.stderr)
        return 2
    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        print(f"ansim: --listen: {exc}", file=sys.stderr)
        return 2
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, handlers=[handler])
    try:
        sock = _listen(host, port)
    except OSError as exc:
        print(f"ansim: cannot listen on {listen}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    try:
        store = Store(loaded.store)
    except StoreError as exc:
        sock.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        ctx = ApiContext.open(store, loaded.settings, loaded.plan, cdr=loaded.cdr, sms=loaded.sms)
        config = uvicorn.Config(
            create_app(ctx),
            host=host,
            port=port,
            loop="uvloop",
            http="httptools",
            access_log=False,  # URLs may hold real numbers (?number=...)
            # The audit log records the peer's address: X-Forwarded-For from anyone
            # would let a caller write any address there.
            proxy_headers=False,
            log_config=None,
            server_header=False,
        )
        log.info("control API on http://%s:%d, store %s", host, port, loaded.store)
        server = uvicorn.Server(config)
        _tune_gc()
        # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
        # handler it found; with this one the process ends with status 0, as `ansim serve`.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        server.run(sockets=[sock])
        return 0 if server.started else 1
    finally:
        sock.close()
        store.close()


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port that other API processes may share (SO_REUSEPORT:
    the kernel spreads connections over them)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def _key_line(k: KeyRecord) -> str:
    state = "revoked " + _when(k.revoked) if k.revoked is not None else "live"
    return f"{k.key_id}  {k.tenant:<20} {','.join(sorted(k.scopes)):<40} {state}  {k.name}"


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def cmd_keys_create(args: argparse.Namespace) -> int:
    if not is_name(args.tenant):
        print(f"error: --tenant must match {NAME_PATTERN}", file=sys.stderr)
        return 1
    opened = _open(args)
    if opened is None:
        return 1
    store, control = opened
    with store, store.transaction(time.time()) as t:
        record, token = control.create_key(
            t.txn, args.tenant, frozenset(args.scope), args.name, t.now
        )
        who = Principal.operator(args.tenant)
        control.audit(t.txn, who, "key.create", f"{record.key_id} for {args.tenant}", t.now)
    print(f"key {record.key_id} for tenant {args.tenant}: {','.join(sorted(record.scopes))}")
    print(f"token (shown only now): {token}")
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return 1
    store, control = opened
    with store, store.reader() as txn:
        for record in control.keys(txn, args.tenant):
            print(_key_line(record))
    return 0


def cmd_keys_revoke(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return 1
    store, control = opened
    with store, store.transaction(time.time()) as t:
        record = control.revoke(t.txn, args.key_id, t.now)
        if record is not None:
            control.audit(
                t.txn, Principal.operator(record.tenant), "key.revoke", args.key_id, t.now
            )
    if record is None:
        print(f"error: no key {args.key_id}", file=sys.stderr)
        return 1
    print(f"revoked: {_key_line(record)}")
    return 0


def cmd_tenants_set(args: argparse.Namespace) -> int:
    if not is_name(args.tenant):
        print(f"error: tenant must match {NAME_PATTERN}", file=sys.stderr)
        return 1
    bad = [p for p in args.numbers if not (p[:1] == "+" and p[1:].isdigit() and p[1:2] != "0")]
    if bad:
        print(f"error: not E.164 prefixes: {' '.join(bad)}", file=sys.stderr)
        return 1
    if args.timezone is not None:
        try:
            time_zone(args.timezone)
        except ValueError as exc:
            print(f"error: --timezone: {exc}", file=sys.stderr)
            return 1
    opened = _open(args)
    if opened is None:
        return 1
    store, control = opened
    with store, store.transaction(time.time()) as t:
        found = control.ensure_tenant(t.txn, args.tenant, t.now)
        zone = args.timezone or found.timezone
        tenant = Tenant(args.tenant, found.created, tuple(dict.fromkeys(args.numbers)), zone)
        control.put_tenant(t.txn, tenant)
        who = Principal.operator(args.tenant)
        control.audit(
            t.txn, who, "tenant.put", f"{args.tenant} ({len(tenant.numbers)} prefixes)", t.now
        )
    print(
        f"tenant {tenant.id}: numbers {' '.join(tenant.numbers) or '(none)'},"
        f" time zone {tenant.timezone}"
    )
    return 0


def cmd_tenants_list(args: argparse.Namespace) -> int:
    opened = _open(args)
    if opened is None:
        return 1
    store, control = opened
    with store, store.reader() as txn:
        for tenant in control.tenants(txn):
            print(f"{tenant.id:<24} {' '.join(tenant.numbers) or '(no numbers)'}")
    return 0


def _tune_gc() -> None:
    """Keep the cyclic collector off what the process built at start-up.

    The app, its routes and their pydantic validators are some hundred thousand objects
    that live as long as the process; every full collection walked them all, a pause of
    tens of milliseconds that held up each request in flight (``bench/api_bench.py``: p99
    68 ms at 64 connections, 20 ms without those pauses). Frozen, they are never walked;
    requests' own garbage is still collected as before.
    """
    gc.collect()
    gc.freeze()
