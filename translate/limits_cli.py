"""``ansim blocklist ...`` and ``ansim limits ...``: the blocklists, the marketing rule's
blocks and alerts, and what the caps have counted, in the limits store the engine uses.

``b2bua.cli`` calls ``register(subparsers, resolve_numbers, resolve_limits)`` with the
readers of the configuration folder's ``numbers`` (the number plan, to read numbers
written nationally) and ``limits`` settings. Numbers are printed masked unless
``--show-numbers``. Each command returns 0, or 1 for bad input or a missing store.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import translate.numbers as numbers
from translate.abuse_store import AbuseStore, AbuseStoreError, BlockEntry
from translate.bindings import is_name
from translate.limits import CALL, SMS, Limits, LimitSettings
from translate.numbers import NumberError, normalise
from translate.settings import DEFAULT_CONFIG_DIR, NumbersSettings
from translate.yaml_source import ConfigError

__all__ = ["register"]

ResolveNumbers = Callable[[Path], NumbersSettings]
ResolveLimits = Callable[[Path], LimitSettings]


def register(
    subparsers: Any, resolve_numbers: ResolveNumbers, resolve_limits: ResolveLimits
) -> None:
    """Add ``blocklist`` and ``limits`` to the ``ansim`` command line."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=DEFAULT_CONFIG_DIR, help="configuration folder")
    common.add_argument("--show-numbers", action="store_true", help="print real numbers unmasked")
    common.set_defaults(resolve_numbers=resolve_numbers, resolve_limits=resolve_limits)

    bl = subparsers.add_parser("blocklist", help="callers refused on every number or a tenant's")
    sub = bl.add_subparsers(dest="blocklist_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("add", parents=[common], help="refuse calls and SMS from NUMBER")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--tenant", help="on this tenant's numbers only (default: on every number)")
    p.add_argument("--until", help="ISO 8601 time or epoch seconds (default: until removed)")
    p.add_argument("--note", help="why (kept with the entry)")
    p.set_defaults(func=cmd_add)
    p = sub.add_parser("remove", parents=[common], help="take NUMBER off a blocklist")
    p.add_argument("number", metavar="NUMBER")
    p.add_argument("--tenant", help="off this tenant's blocklist (default: the global one)")
    p.set_defaults(func=cmd_remove)
    p = sub.add_parser("list", parents=[common], help="the blocklists' entries")
    p.add_argument("--tenant", help="this tenant's entries only")
    p.set_defaults(func=cmd_list)

    lim = subparsers.add_parser(
        "limits", help="caps' counts, the marketing rule's blocks and alerts"
    )
    sub = lim.add_subparsers(dest="limits_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser("show", parents=[common], help="what a binding, X or tenant has used")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--binding", metavar="ID")
    which.add_argument("--virtual", metavar="X")
    which.add_argument("--tenant", metavar="T")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("blocks", parents=[common], help="parties blocked by the marketing rule")
    p.add_argument("--all", action="store_true", help="ended blocks too")
    p.set_defaults(func=cmd_blocks)
    p = sub.add_parser("unblock", parents=[common], help="lift a marketing rule's block")
    p.add_argument("number", metavar="NUMBER")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--virtual", metavar="X")
    where.add_argument("--tenant", metavar="T")
    p.set_defaults(func=cmd_unblock)
    p = sub.add_parser("alerts", parents=[common], help="alerts the marketing rule raised")
    p.add_argument("--since", help="ISO 8601 time or epoch seconds (default: a day ago)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")
    p.set_defaults(func=cmd_alerts)


# -- helpers ---------------------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> tuple[NumbersSettings, LimitSettings] | None:
    if args.show_numbers:
        numbers.SHOW_REAL_NUMBERS = True
    folder = Path(args.config)
    if not folder.is_dir():
        print(f"error: configuration folder {folder} does not exist", file=sys.stderr)
        return None
    try:
        return args.resolve_numbers(folder), args.resolve_limits(folder)
    except ConfigError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        print(f"error: configuration {folder} refused", file=sys.stderr)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
    return None


def _number(text: str, settings: NumbersSettings, what: str = "NUMBER") -> str | None:
    value = normalise(text, settings.plan())
    if isinstance(value, NumberError):
        print(f"error: {what}: {value}", file=sys.stderr)
        return None
    return value


def _tenant(text: str | None) -> bool:
    if text is not None and not is_name(text):
        print(f"error: --tenant: {text!r} is not a tenant name", file=sys.stderr)
        return False
    return True


def _time(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


def _iso(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="seconds")


def _open(limits: LimitSettings, *, write: bool) -> AbuseStore | None:
    try:
        return AbuseStore(limits.store, readonly=not write)
    except AbuseStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _line(e: BlockEntry, now: float) -> str:
    where = "global" if e.scope == "global" else f"{e.scope} {e.scope_id}"
    state = "" if e.active(now) else " (ended)"
    note = f" {e.note}" if e.note else ""
    return (
        f"{numbers.mask(e.number)}  {where}  since {_iso(e.at)}  until {_iso(e.until)}{state}{note}"
    )


# -- blocklist ----------------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None or not _tenant(args.tenant):
        return 1
    number = _number(args.number, loaded[0])
    if number is None:
        return 1
    try:
        until = _time(args.until)
    except ValueError as exc:
        print(f"error: --until: {exc}", file=sys.stderr)
        return 1
    store = _open(loaded[1], write=True)
    if store is None:
        return 1
    with store:
        store.block(number, tenant=args.tenant, now=time.time(), until=until, note=args.note)
    where = f"tenant {args.tenant}" if args.tenant else "every number"
    print(f"blocked: {numbers.mask(number)} on {where} until {_iso(until)}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None or not _tenant(args.tenant):
        return 1
    number = _number(args.number, loaded[0])
    if number is None:
        return 1
    store = _open(loaded[1], write=True)
    if store is None:
        return 1
    with store:
        found = store.unblock(number, tenant=args.tenant)
    if not found:
        print(f"error: {numbers.mask(number)} is not on that blocklist", file=sys.stderr)
        return 1
    print(f"removed: {numbers.mask(number)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None or not _tenant(args.tenant):
        return 1
    store = _open(loaded[1], write=False)
    if store is None:
        return 1
    now = time.time()
    with store:
        entries = store.entries("blocklist")
    for e in entries:
        if args.tenant is None or e.scope_id == args.tenant:
            print(_line(e, now))
    return 0


# -- limits -------------------------------------------------------------------------------------


def cmd_show(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None or not _tenant(args.tenant):
        return 1
    if args.binding is not None:
        scope, scope_id = "binding", args.binding
    elif args.tenant is not None:
        scope, scope_id = "tenant", args.tenant
    else:
        x = _number(args.virtual, loaded[0], "--virtual")
        if x is None:
            return 1
        scope, scope_id = "virtual", x
    store = _open(loaded[1], write=False)
    if store is None:
        return 1
    with store:
        limits = Limits(_NoLookup(), store, loaded[1])
        used = limits.usage(scope, scope_id, time.time())
        for medium in (CALL, SMS):
            caps = limits.caps_of(scope, scope_id, medium)
            for (period, cap), n in zip(
                (("hour", caps[0]), ("day", caps[1])),
                (used[(medium, "hour")], used[(medium, "day")]),
                strict=True,
            ):
                print(f"{scope} {scope_id}: {medium} this {period}: {n} (cap {cap or '-'})")
    return 0


class _NoLookup:
    def lookup(self, virtual: str, caller: str, now: float) -> Any:
        raise AssertionError("not for deciding")


def cmd_blocks(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None:
        return 1
    store = _open(loaded[1], write=False)
    if store is None:
        return 1
    now = time.time()
    with store:
        for e in store.entries("marketing"):
            if args.all or e.active(now):
                print(_line(e, now))
    return 0


def cmd_unblock(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None or not _tenant(args.tenant):
        return 1
    number = _number(args.number, loaded[0])
    if number is None:
        return 1
    if args.virtual is not None:
        x = _number(args.virtual, loaded[0], "--virtual")
        if x is None:
            return 1
        scope, scope_id = "virtual", x
    else:
        scope, scope_id = "tenant", args.tenant
    store = _open(loaded[1], write=True)
    if store is None:
        return 1
    with store:
        found = store.lift(number, scope=scope, scope_id=scope_id)
    if not found:
        print(
            f"error: {numbers.mask(number)} is not blocked on {scope} {scope_id}", file=sys.stderr
        )
        return 1
    print(f"lifted: {numbers.mask(number)} on {scope} {scope_id}")
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    loaded = _settings(args)
    if loaded is None:
        return 1
    try:
        since = _time(args.since)
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 1
    store = _open(loaded[1], write=False)
    if store is None:
        return 1
    with store:
        alerts = store.alerts(since if since is not None else time.time() - 86400)
    for a in alerts:
        if args.json:
            shown = a.to_dict()
            shown["party"] = numbers.mask(a.party)
            print(json.dumps(shown))
        else:
            print(
                f"{_iso(a.at)}  {a.kind}  {numbers.mask(a.party)}  {a.scope} {a.scope_id}"
                f"  {a.distinct} distinct within {a.window:g} s  blocked until {_iso(a.until)}"
                f"  ({a.medium}, binding {a.binding_id or '-'})"
            )
    return 0
