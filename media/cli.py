"""``ansim recordings ...`` and ``ansim relay``: recordings on disk, and the relay process.

``b2bua.cli`` calls :func:`register`. Recordings commands:

``keygen --out DIR``
    an operator key pair: ``recording-pub.pem`` (for the engine host) and
    ``recording-key.pem`` (the private key, passphrase-protected; keep it off that host).
``list [--key KEY]``
    every recording with its id, creation time and size; with the private key also its
    call and state (complete, truncated or corrupt).
``decrypt ID --key KEY --reason TEXT --out FILE [--format wav|rtpdump]``
    writes the audio (stereo WAV; or the packets of ``--channel`` as rtpdump), after
    appending an audit line (who, when, which recording and call, why).
``purge --max-age-days N``
    deletes recordings older than N days (what the engine does periodically).

Exit status: 0 done, 1 an error (bad key, a corrupt or truncated recording, no such id).
The private key's passphrase is read from ``ANSIM_RECORDING_KEY_PASSPHRASE`` or asked
for on the terminal.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from media.recording import (
    RecordingError,
    RecordingReader,
    TruncatedRecording,
    key_fingerprint,
    load_private_key,
)
from media.recordings import audit, iter_recordings, purge_recordings, recording_path
from media.render import render_wav, write_rtpdump

__all__ = ["DEFAULT_AUDIT", "DEFAULT_DIR", "register"]

DEFAULT_DIR = "var/recordings"
DEFAULT_AUDIT = "var/recordings-audit.log"
PASSPHRASE_ENV = "ANSIM_RECORDING_KEY_PASSPHRASE"


#: The recordings folder and the audit log the engine's configuration names, from the
#: configuration folder (``ansim recordings --config DIR``); the entry point provides it.
RecordingPaths = Callable[[Path], tuple[str, str]]


def register(subparsers: Any, paths: RecordingPaths | None = None) -> None:
    """Add the ``recordings`` and ``relay`` commands to an argparse subparsers object.
    ``paths`` gives the folder and audit log of a configuration folder; without it
    (or without ``--config``) they default to ``var/recordings`` and its audit log."""
    parser = subparsers.add_parser(
        "recordings", help="list, decrypt and purge encrypted call recordings"
    )
    sub = parser.add_subparsers(dest="recordings_command", metavar="SUBCOMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config",
        default="config",
        help="configuration folder whose media.recording names the folder and audit log "
        "(default: config, when it exists)",
    )
    common.add_argument(
        "--dir", default=None, help="recordings folder (default: the configuration's)"
    )
    common.set_defaults(_paths=paths)

    p = sub.add_parser("keygen", help="make an operator key pair for recordings")
    p.add_argument(
        "--out", required=True, help="folder for recording-pub.pem and recording-key.pem"
    )
    p.add_argument("--bits", type=int, default=3072, help="RSA key size (%(default)s)")
    p.add_argument("--no-passphrase", action="store_true", help="leave the private key unprotected")
    p.set_defaults(func=cmd_keygen)

    p = sub.add_parser("list", parents=[common], help="list recordings")
    p.add_argument("--key", help="private key: also show each recording's call and state")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("decrypt", parents=[common], help="decrypt one recording (audited)")
    p.add_argument("recording_id", metavar="ID")
    p.add_argument("--key", required=True, help="the operator's private key (PEM)")
    p.add_argument("--reason", required=True, help="why: written to the audit log")
    p.add_argument("--out", required=True, help="file to write (WAV, or rtpdump)")
    p.add_argument("--format", choices=("wav", "rtpdump"), default="wav")
    p.add_argument("--channel", type=int, choices=(0, 1), default=0, help="rtpdump: which track")
    p.add_argument("--audit", default=None, help="audit log (default: the configuration's)")
    p.add_argument(
        "--allow-truncated",
        action="store_true",
        help="write what a truncated recording holds (still reported, exit 1)",
    )
    p.set_defaults(func=cmd_decrypt)

    p = sub.add_parser("purge", parents=[common], help="delete recordings past the retention age")
    p.add_argument("--max-age-days", type=float, required=True)
    p.set_defaults(func=cmd_purge)

    from media.relay import build_arg_parser

    relay = subparsers.add_parser("relay", help="run an RTP relay process")
    build_arg_parser(relay)
    relay.set_defaults(func=cmd_relay)


def _passphrase(pem: bytes) -> bytes | None:
    if b"ENCRYPTED" not in pem:
        return None
    value = os.environ.get(PASSPHRASE_ENV)
    if value is None:
        if not sys.stdin.isatty():
            raise SystemExit(
                f"the private key is protected: set {PASSPHRASE_ENV} or run on a terminal"
            )
        value = getpass.getpass("passphrase of the recording key: ")
    return value.encode()


def _private_key(path: str) -> rsa.RSAPrivateKey:
    pem = Path(path).read_bytes()
    try:
        return load_private_key(pem, _passphrase(pem))
    except (ValueError, TypeError) as exc:
        raise SystemExit(f"{path}: cannot load the private key: {exc}") from None


def _when(created: float | None) -> str:
    if created is None:
        return "-"
    return dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    pub_path, key_path = out / "recording-pub.pem", out / "recording-key.pem"
    for path in (pub_path, key_path):
        if path.exists():
            print(f"{path} exists: not overwritten", file=sys.stderr)
            return 1
    if args.no_passphrase:
        encryption: serialization.KeySerializationEncryption = serialization.NoEncryption()
    else:
        phrase = os.environ.get(PASSPHRASE_ENV) or getpass.getpass("passphrase for the new key: ")
        if not phrase:
            print("an empty passphrase: use --no-passphrase to mean it", file=sys.stderr)
            return 1
        encryption = serialization.BestAvailableEncryption(phrase.encode())
    key = rsa.generate_private_key(public_exponent=65537, key_size=args.bits)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fp:
        fp.write(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    print(f"public key {pub_path} (fingerprint {key_fingerprint(key.public_key())})")
    print(f"private key {key_path}: keep it away from the engine host")
    return 0


def _defaults(args: argparse.Namespace) -> None:
    """``--dir`` and ``--audit`` from the configuration folder when not given."""
    directory, audit_log = DEFAULT_DIR, DEFAULT_AUDIT
    paths = getattr(args, "_paths", None)
    folder = Path(args.config)
    if paths is not None and folder.is_dir():
        directory, audit_log = paths(folder)
    if args.dir is None:
        args.dir = directory
    if getattr(args, "audit", "") is None:
        args.audit = audit_log


def cmd_list(args: argparse.Namespace) -> int:
    _defaults(args)
    key = _private_key(args.key) if args.key else None
    status = 0
    for entry in iter_recordings(args.dir):
        line = f"{entry.recording_id}  {_when(entry.created)}  {entry.size:>10} B"
        if entry.error:
            line += f"  unreadable: {entry.error}"
            status = 1
        elif key is not None:
            call, state = "-", "complete"
            try:
                with entry.path.open("rb") as fp:
                    reader = RecordingReader(fp, key)
                    for rec in reader.records():
                        if rec.meta is not None and "call" in rec.meta and call == "-":
                            call = str(rec.meta["call"])
            except TruncatedRecording as exc:
                state = f"truncated ({exc})"
            except RecordingError as exc:
                state = f"unreadable ({exc})"
                status = 1
            line += f"  call {call}  {state}"
        print(line)
    return status


def cmd_decrypt(args: argparse.Namespace) -> int:
    _defaults(args)
    reason = args.reason.strip()
    if not reason:
        print("--reason must say why", file=sys.stderr)
        return 1
    try:
        path = recording_path(args.dir, args.recording_id)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    if not path.is_file():
        print(f"no recording {args.recording_id} in {args.dir}", file=sys.stderr)
        return 1
    key = _private_key(args.key)
    entry: dict[str, Any] = {
        "action": "decrypt",
        "recording": args.recording_id,
        "reason": reason,
        "key": key_fingerprint(key.public_key()),
        "out": str(Path(args.out).resolve()),
    }
    try:
        with path.open("rb") as fp:
            reader = RecordingReader(fp, key)
            # The call id is in the first chunk: read it before the audit line is written.
            call = "-"
            for rec in reader.records():
                if rec.meta is not None:
                    call = str(rec.meta.get("call", "-"))
                break
    except TruncatedRecording:
        call = "-"
    except RecordingError as exc:
        _audit_result(args.audit, entry, f"failed: {exc}")
        print(f"{args.recording_id}: {exc}", file=sys.stderr)
        return 1
    entry["call"] = call
    try:
        audit(args.audit, entry, time.time())
    except OSError as exc:
        print(f"cannot write the audit log {args.audit}: {exc}: nothing decrypted", file=sys.stderr)
        return 1
    tmp = Path(args.out).with_name(Path(args.out).name + ".part")
    truncated = ""
    try:
        records = list(_records(path, key, args.allow_truncated))
    except RecordingError as exc:
        _audit_result(args.audit, entry, f"failed: {exc}")
        print(f"{args.recording_id}: {exc}", file=sys.stderr)
        return 1
    if records and records[-1] is None:
        records.pop()
        truncated = "truncated"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        if args.format == "wav":
            report = render_wav(records, out)
            summary = f"{report.seconds:.1f} s stereo WAV"
            if report.undecoded:
                summary += (
                    "; not decodable here: "
                    + ", ".join(f"{n} {codec} packet(s)" for codec, n in report.undecoded.items())
                    + " (use --format rtpdump)"
                )
        else:
            count = write_rtpdump(records, out, args.channel)
            summary = f"{count} packet(s) of channel {args.channel} as rtpdump"
    os.replace(tmp, args.out)
    _audit_result(args.audit, entry, truncated or "ok")
    print(f"{args.recording_id} (call {call}): {summary} -> {args.out}")
    if truncated:
        print(
            f"{args.recording_id}: the recording is truncated (no end marker): written up to its last whole chunk",
            file=sys.stderr,
        )
        return 1
    return 0


def _records(path: Path, key: rsa.RSAPrivateKey, allow_truncated: bool) -> Any:
    with path.open("rb") as fp:
        reader = RecordingReader(fp, key)
        try:
            yield from reader.records()
        except TruncatedRecording:
            if not allow_truncated:
                raise
            yield None


def _audit_result(log_path: str, entry: dict[str, Any], result: str) -> None:
    try:
        audit(log_path, {**entry, "result": result}, time.time())
    except OSError as exc:
        print(f"cannot write the audit log {log_path}: {exc}", file=sys.stderr)


def cmd_purge(args: argparse.Namespace) -> int:
    _defaults(args)
    removed = purge_recordings(args.dir, args.max_age_days * 86400, time.time())
    for entry in removed:
        print(f"deleted {entry.recording_id} ({_when(entry.created)})")
    print(f"{len(removed)} recording(s) deleted")
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    from media.relay import config_from_args, run

    return run(config_from_args(args))
