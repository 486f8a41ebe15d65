"""``ansim numbers ...``: check, load and inspect number maps, and look after the store.

``b2bua.cli`` calls ``register(subparsers, resolve)``: ``resolve(folder)`` reads the
configuration folder (``--config DIR``, default ``config``) and returns its ``numbers``
settings with absolute paths, so that these commands use the store and maps the engine
uses, from any directory. ``--store``, ``--maps`` and the plan options override them. A
missing configuration folder is refused, unless it was not named and the command was
given every path it needs. Each command returns its exit status: 0 success, 1 errors
(bad map, bad input, missing store), 2 a lookup that was refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import translate.numbers as numbers
from translate.abuse_store import AbuseStore, AbuseStoreError
from translate.bindings import Refusal, Route
from translate.compiler import compile_maps
from translate.limits import CALL, SMS, Limits, LimitSettings
from translate.numbers import NumberError, NumberPlan, normalise
from translate.progress import ProgressBar
from translate.refusals import answer
from translate.reload import reload_maps
from translate.settings import DEFAULT_CONFIG_DIR, NumbersSettings
from translate.store import Store, StoreError
from translate.yaml_source import ConfigError

__all__ = ["Resolve", "main", "register", "standalone_settings"]

#: Reads the configuration folder: its ``numbers`` settings, paths absolute.
Resolve = Callable[[Path], NumbersSettings]
#: Reads the configuration folder: its ``limits`` settings, paths absolute.
ResolveLimits = Callable[[Path], LimitSettings]


def standalone_settings(folder: Path) -> NumbersSettings:
    """The default settings taken from ``folder`` (without ansim's entry point, which
    reads ``ansim.yaml``)."""
    return NumbersSettings().resolved(folder)


def standalone_limits(folder: Path) -> LimitSettings:
    """The default limits settings taken from ``folder``."""
    return LimitSettings().resolved(folder)


def register(
    subparsers: Any,
    resolve: Resolve = standalone_settings,
    resolve_limits: ResolveLimits = standalone_limits,
) -> None:
    """Add the ``numbers`` command and its subcommands to an argparse subparsers object."""
    numbers_parser = subparsers.add_parser(
        "numbers", help="check, load and inspect number maps and the translation store"
    )
    sub = numbers_parser.add_subparsers(dest="numbers_command", metavar="SUBCOMMAND", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        help=f"configuration folder; store, maps and plan come from it (default {DEFAULT_CONFIG_DIR})",
    )
    common.add_argument("--store", help="LMDB store (default: numbers.store of the configuration)")
    common.add_argument("--maps", help="map folder (default: numbers.maps of the configuration)")
    common.add_argument("--country-code", help="national plan (default: the configuration's)")
    common.add_argument("--trunk-prefix")
    common.add_argument("--international-prefix")
    common.add_argument("--show-numbers", action="store_true", help="print real numbers unmasked")
    common.set_defaults(resolve=resolve, resolve_limits=resolve_limits)

    p = sub.add_parser("check", parents=[common], help="validate maps; exit 1 listing all errors")
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or directories (--maps)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("load", parents=[common], help="compile the maps into the store")
    p.add_argument(
        "--force",
        action="store_true",
        help="load even when the maps remove more live bindings than the reload guard allows",
    )
    p.set_defaults(func=cmd_load)

    p = sub.add_parser("lookup", parents=[common], help="decide a call (or an SMS) from C to X")
    p.add_argument("virtual", metavar="X")
    p.add_argument("--from", dest="caller", required=True, metavar="C")
    p.add_argument("--at", help="ISO 8601 time or epoch seconds (default: now)")
    p.add_argument("--sms", action="store_true", help="decide an SMS (its caps) instead of a call")
    p.set_defaults(func=cmd_lookup)

    p = sub.add_parser("show", parents=[common], help="list the bindings on X")
    p.add_argument("virtual", metavar="X")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("stats", parents=[common], help="counts by source and kind, expired")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("purge", parents=[common], help="delete expired bindings")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser(
        "repack",
        parents=[common],
        help="rewrite the routes table with full pages (lookups go on, writes wait)",
    )
    p.set_defaults(func=cmd_repack)


def main(argv: list[str] | None = None) -> int:
    """Run ``numbers`` subcommands without the rest of the ansim CLI."""
    parser = argparse.ArgumentParser(prog="ansim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def _settings(args: argparse.Namespace, *, needs_config: bool) -> NumbersSettings | None:
    """The settings for a command: the configuration's, with the command line's
    overrides; None (the reason on stderr) when there are none to be had.

    ``needs_config``: the command uses a path it was not given, so a missing default
    configuration folder is an error too, not only a missing named one."""
    if args.show_numbers:
        numbers.SHOW_REAL_NUMBERS = True
    folder = Path(args.config or DEFAULT_CONFIG_DIR)
    if folder.is_dir():
        try:
            settings: NumbersSettings = args.resolve(folder)
        except ConfigError as exc:
            for error in exc.errors:
                print(error, file=sys.stderr)
            print(f"error: configuration {folder} refused", file=sys.stderr)
            return None
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return None
    elif args.config is not None or needs_config:
        what = "is not a folder" if folder.exists() else "does not exist"
        print(f"error: configuration folder {folder} {what}", file=sys.stderr)
        return None
    else:  # every path given on the command line
        settings = standalone_settings(folder)
    update: dict[str, str] = {}
    for name in ("store", "maps"):
        value = getattr(args, name)
        if value is not None:
            update[name] = os.path.abspath(value)
    for name in ("country_code", "trunk_prefix", "international_prefix"):
        value = getattr(args, name)
        if value is not None:
            update[name] = value
    settings = settings.model_copy(update=update)
    try:
        settings.plan()
    except ValueError as exc:
        print(f"error: number plan: {exc}", file=sys.stderr)
        return None
    return settings


def _plan(settings: NumbersSettings) -> NumberPlan:
    return settings.plan()


def cmd_check(args: argparse.Namespace) -> int:
    settings = _settings(args, needs_config=not args.paths and args.maps is None)
    if settings is None:
        return 1
    paths = args.paths or [settings.maps]
    bar = ProgressBar()
    try:
        compiled = compile_maps(paths, _plan(settings), now=time.time(), progress=bar)
    except ConfigError as exc:
        bar.close()
        for error in exc.errors:
            print(error.shown())
        print(f"{len(exc.errors)} error(s)", file=sys.stderr)
        return 1
    bar.close()
    counts = compiled.counts()
    for file in compiled.empty_files:
        print(f"warning: {file}: holds no bindings", file=sys.stderr)
    print(
        f"ok: {len(compiled.bindings)} bindings in {len(compiled.files)} file(s)"
        f" (ax {counts['ax']}, axb {counts['axb']}, axn {counts['axn']})"
    )
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    settings = _settings(args, needs_config=args.store is None or args.maps is None)
    if settings is None:
        return 1
    bar = ProgressBar()
    guard = None if args.force else settings.guard()
    try:
        with Store(settings.store) as store:
            result = reload_maps(store, settings.maps, _plan(settings), progress=bar, guard=guard)
    except StoreError as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1
    bar.close()
    for error in result.errors:
        print(error.shown())
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(result.summary(), file=sys.stderr if not result.ok else sys.stdout)
    return 0 if result.ok else 1


def cmd_lookup(args: argparse.Namespace) -> int:
    settings = _settings(args, needs_config=args.store is None)
    if settings is None:
        return 1
    plan = _plan(settings)
    virtual = normalise(args.virtual, plan)
    caller = normalise(args.caller, plan)
    if isinstance(caller, NumberError):
        print(f"error: --from: {caller}", file=sys.stderr)
        return 1
    if isinstance(virtual, NumberError):  # what the engine answers such a call with
        refusal = answer("bad_number")
        print(f"refused: bad_number ({virtual}): {refusal.meaning}: {refusal.describe()}")
        return 2
    try:
        now = _parse_time(args.at)
    except ValueError as exc:
        print(f"error: --at: {exc}", file=sys.stderr)
        return 1
    try:
        with Store(settings.store, readonly=True) as store:
            decision = _decide(args, store, virtual, caller, now)
    except (StoreError, AbuseStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    mask = numbers.mask
    if isinstance(decision, Refusal):
        refusal = answer(decision.reason)
        print(
            f"refused: {decision.reason} (binding {decision.binding_id or '-'}):"
            f" {refusal.meaning}: {refusal.describe()}"
        )
        return 2
    print(
        f"route: call {mask(decision.callee)} presenting"
        f" {virtual if decision.present == virtual else mask(decision.present)}"
        f" (binding {decision.binding_id!r}, {decision.kind}, record={_yes(decision.record)},"
        f" max_seconds={decision.max_seconds or '-'})"
    )
    return 0


def _decide(
    args: argparse.Namespace, store: Store, virtual: str, caller: str, now: float
) -> Route | Refusal:
    """The engine's decision now (blocklists, marketing blocks and caps included, from the
    limits store when there is one), with nothing counted."""
    folder = Path(args.config or DEFAULT_CONFIG_DIR)
    limits = args.resolve_limits(folder) if folder.is_dir() else standalone_limits(folder)
    if not os.path.exists(os.path.join(limits.store, "data.mdb")):
        return store.lookup(virtual, caller, now)
    with AbuseStore(limits.store, readonly=True) as abuse:
        return Limits(store, abuse, limits).peek(virtual, caller, now, SMS if args.sms else CALL)


def cmd_show(args: argparse.Namespace) -> int:
    settings = _settings(args, needs_config=args.store is None)
    if settings is None:
        return 1
    virtual = normalise(args.virtual, _plan(settings))
    if isinstance(virtual, NumberError):
        print(f"error: X: {virtual}", file=sys.stderr)
        return 1
    try:
        with Store(settings.store, readonly=True) as store:
            found = store.on_virtual(virtual)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not found:
        print(f"{virtual}: not bound")
        return 1
    now = time.time()
    for binding, source in found:
        state = "live" if binding.live(now) else "EXPIRED"
        print(f"{binding.describe()} [{source}, {state}]")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    settings = _settings(args, needs_config=args.store is None)
    if settings is None:
        return 1
    try:
        with Store(settings.store, readonly=True) as store:
            stats = store.stats(time.time())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"store: {settings.store} ({stats.size_bytes / 1e6:.1f} MB used)")
    print(f"{'source':<8}{'ax':>12}{'axb':>12}{'axn':>12}{'total':>12}")
    for source in sorted(stats.counts):
        by_kind = stats.counts[source]
        row = [by_kind.get(k, 0) for k in ("ax", "axb", "axn")]
        print(f"{source:<8}{row[0]:>12}{row[1]:>12}{row[2]:>12}{sum(row):>12}")
    expired = [stats.expired.get(k, 0) for k in ("ax", "axb", "axn")]
    print(f"{'expired':<8}{expired[0]:>12}{expired[1]:>12}{expired[2]:>12}{sum(expired):>12}")
    if stats.route_pages:
        print(
            f"routes table: {stats.route_entries} entries in {stats.route_pages} pages"
            f" ({stats.route_entries / stats.route_pages:.1f} a page)"
        )
    for source, info in sorted(stats.loaded.items()):
        when = dt.datetime.fromtimestamp(info["at"]).isoformat(timespec="seconds")
        print(
            f"last {source} load: {when}, {info['bindings']} bindings from"
            f" {info['files']} file(s), digest {info['digest'][:12]}"
        )
    return 0


def _existing_store(args: argparse.Namespace) -> NumbersSettings | None:
    """The settings, or None (the reason on stderr) when their store does not exist:
    opening it for writing would create an empty one."""
    settings = _settings(args, needs_config=args.store is None)
    if settings is None:
        return None
    if os.path.exists(os.path.join(settings.store, "data.mdb")):
        return settings
    print(f"error: no store at {settings.store} (run `ansim numbers load` first)", file=sys.stderr)
    return None


def cmd_purge(args: argparse.Namespace) -> int:
    settings = _existing_store(args)
    if settings is None:
        return 1
    try:
        with Store(settings.store) as store:
            n = store.purge_expired(time.time())
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"purged {n} expired binding(s)")
    return 0


def cmd_repack(args: argparse.Namespace) -> int:
    settings = _existing_store(args)
    if settings is None:
        return 1
    bar = ProgressBar()
    started = time.monotonic()
    try:
        with Store(settings.store) as store:
            before, after = store.repack(lambda done, total: bar("repack", done, total))
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        bar.close()
    print(
        f"routes table repacked in {time.monotonic() - started:.1f} s:"
        f" {before} leaf pages before, {after} after"
    )
    return 0


def _parse_time(text: str | None) -> float:
    if text is None:
        return time.time()
    try:
        return float(text)
    except ValueError:
        pass
    moment = dt.datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.astimezone()
    return moment.timestamp()


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    sys.exit(main())
