"""Helpers for the SMPP tests: a real translation store, the node-smpp upstream SMSC and
ansim's SMPP relay as processes on loopback, and an smpplib ESME."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import smpplib.client
import smpplib.consts
import yaml

from translate.bindings import Binding
from translate.store import Store

ROOT = Path(__file__).resolve().parent.parent
PEERS = ROOT / "tests" / "peers"

# Numbers used throughout (E.164).
TEACHER_X = "+82501234567"  # ax: parents text the teacher's 050 number
TEACHER = "+821011112222"
PARENT = "+821099998888"
TRIP_X = "+827001112222"  # axb: rider and driver
RIDER = "+821033334444"
DRIVER = "+821055556666"
STRANGER = "+821077770000"


def node_available() -> bool:
    return shutil.which("node") is not None and (PEERS / "node_modules" / "smpp").is_dir()


def build_store(path: Path) -> None:
    """A translation store with the test bindings, written through translate's API."""
    now = time.time()
    with Store(path) as store:
        store.put(Binding("teacher-1", "ax", TEACHER_X, TEACHER), now=now, source="api")
        store.put(
            Binding("trip-1", "axb", TRIP_X, RIDER, DRIVER, expires=now + 3600),
            now=now,
            source="api",
        )


def digits(e164: str) -> str:
    return e164.lstrip("+")


class Proc:
    """A child process whose first matching stdout line is awaited; stopped by the test."""

    def __init__(
        self,
        argv: list[str],
        ready: str,
        *,
        cwd: Path = ROOT,
        stdin: bool = False,
        log: Path | None = None,
    ) -> None:
        self.argv = argv
        self.log = log
        self._log_file = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self.ready_line = self._wait_for(ready, 20.0)
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for(self, prefix: str, timeout: float) -> str:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline().decode(errors="replace")
            if not line:
                break
            self.lines.append(line)
            if line.startswith(prefix):
                return line.strip()
        self.kill()
        detail = self.log.read_text(errors="replace")[-3000:] if self.log else ""
        raise RuntimeError(f"{self.argv[:3]} did not print {prefix!r}: {self.lines}\n{detail}")

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode(errors="replace"))

    def send_line(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()

    def terminate(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


class NodeSmsc(Proc):
    """The node-smpp upstream SMSC (tests/peers/smsc.js)."""

    def __init__(
        self,
        records: Path,
        *,
        port: int = 0,
        dlr: bool = True,
        password: str = "secret",
        dlr_first: bool = False,
        resp_delay_ms: int = 0,
        max_binds: int = 0,
        ignore_over: int = 0,
    ) -> None:
        argv = [
            "node",
            str(PEERS / "smsc.js"),
            "--port",
            str(port),
            "--records",
            str(records),
            "--system-id",
            "upstream",
            "--password",
            password,
        ]
        if dlr:
            argv.append("--dlr")
        if dlr_first:
            argv.append("--dlr-first")
        if resp_delay_ms:
            argv += ["--resp-delay", str(resp_delay_ms)]
        if max_binds:
            argv += ["--max-binds", str(max_binds)]
        if ignore_over:
            argv += ["--ignore-over", str(ignore_over)]
        self.records = records
        super().__init__(argv, "LISTENING", cwd=PEERS, stdin=True)
        self.port = int(self.ready_line.split()[1])

    def accepted(self) -> list[dict[str, Any]]:
        if not self.records.exists():
            return []
        return [json.loads(line) for line in self.records.read_text().splitlines() if line]

    def printed(self, prefix: str) -> list[str]:
        """Lines it printed that start with ``prefix`` (RECEIPT_ACKED, WEDGED, IGNORED)."""
        return [line.strip() for line in list(self.lines) if line.startswith(prefix)]


def write_config(
    path: Path,
    workdir: Path,
    *,
    upstream_port: int | None,
    port: int = 0,
    password: str = "pw1",
    mo: bool = False,
    window: int = 100,
    backup_port: int | None = None,
    server: dict[str, Any] | None = None,
    upstream: dict[str, Any] | None = None,
    **queue: Any,
) -> Path:
    """An smpp.yaml for the tests; ``server``, ``upstream`` and ``queue`` override keys."""
    cfg: dict[str, Any] = {
        "enabled": True,
        "server": {
            "host": "127.0.0.1",
            "port": port,
            "system_id": "ansim",
            "accounts": [{"system_id": "carrier1", "password": password}],
            "enquire_link_interval": 30,
            **({"mo_system_id": "carrier1"} if mo else {}),
            **(server or {}),
        },
        "upstreams": [],
        "queue": {
            "path": str(workdir / "queue"),
            "fsync": True,
            "retry_min": 0.2,
            "retry_max": 1.0,
            **queue,
        },
        "records": str(workdir / "cdr.sqlite"),
        "translate_store": str(workdir / "translate"),
    }
    if upstream_port is not None:
        cfg["upstreams"].append(
            {
                "name": "node",
                "host": "127.0.0.1",
                "port": upstream_port,
                "system_id": "upstream",
                "password": "secret",
                "reconnect_min": 0.1,
                "reconnect_max": 0.5,
                "response_timeout": 5,
                "window": window,
                **(upstream or {}),
            }
        )
    if backup_port is not None:
        cfg["upstreams"].append(
            {
                "name": "backup",
                "host": "127.0.0.1",
                "port": backup_port,
                "priority": 1,
                "system_id": "upstream",
                "password": "secret",
                "reconnect_min": 0.1,
                "reconnect_max": 0.5,
                "response_timeout": 5,
                "window": window,
            }
        )
    path.write_text(yaml.safe_dump(cfg))
    return path


class Ansim(Proc):
    """`ansim smpp run` as a child process."""

    def __init__(self, config: Path, log: Path) -> None:
        # --config names the folder; the file in it is smpp.yaml.
        assert config.name == "smpp.yaml", config
        super().__init__(
            [sys.executable, "-m", "sms_smpp.cli", "smpp", "run", "--config", str(config.parent)],
            "ansim smpp: listening",
            log=log,
        )
        self.port = int(self.ready_line.rsplit(":", 1)[1])


def _cstring(body: bytes, pos: int) -> tuple[bytes, int]:
    end = body.index(0, pos)
    return body[pos:end], end + 1


class RawSmsc:
    """An upstream SMSC on a raw socket, for what no SMPP library does on request: it
    answers each submit_sm with its delivery receipt and its submit_sm_resp written in
    one send() on a TCP_NODELAY socket (one segment on loopback), receipt first.

    The PDUs are packed here with struct, independently of ansim's codec. One connection
    at a time, served by a thread of this process; started and stopped by the test.
    """

    def __init__(self) -> None:
        import socket

        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.submits: list[dict[str, Any]] = []
        self.receipts_acked: list[tuple[str, int]] = []  # (upstream id, deliver_sm_resp status)
        self._conn: Any = None
        self._lock = threading.Lock()
        self._seq = 0x10000
        self._acks: dict[int, str] = {}  # deliver_sm sequence -> upstream id
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _send(self, data: bytes) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.sendall(data)

    @staticmethod
    def frame(command_id: int, status: int, sequence: int, body: bytes) -> bytes:
        return struct.pack(">IIII", 16 + len(body), command_id, status, sequence) + body

    def receipt(self, upstream_id: str, src: bytes, dst: bytes, stat: str = "DELIVRD") -> bytes:
        """A deliver_sm receipt, from the recipient ``src`` to the sender ``dst``."""
        text = (
            f"id:{upstream_id} sub:001 dlvrd:001 submit date:2612010000 done"
            f" date:2612010000 stat:{stat} err:000 text:"
        ).encode()
        state = 2 if stat == "DELIVRD" else 5
        rid = upstream_id.encode() + b"\0"
        body = (
            b"\0"
            + b"\1\1"
            + src
            + b"\0"
            + b"\1\1"
            + dst
            + b"\0"
            + b"\x04\0\0"
            + b"\0\0"
            + b"\0\0\0\0"
            + bytes((len(text),))
            + text
            + struct.pack(">HH", 0x001E, len(rid))
            + rid
            + struct.pack(">HHB", 0x0427, 1, state)
        )
        self._seq += 1
        return self.frame(0x00000005, 0, self._seq, body)

    def send_receipt(self, upstream_id: str, src: bytes, dst: bytes) -> None:
        """Send a receipt on its own (e.g. for an id that was never given)."""
        frame = self.receipt(upstream_id, src, dst)
        self._acks[self._seq] = upstream_id
        self._send(frame)

    def _serve(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                conn, _addr = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.settimeout(0.2)
            with self._lock:
                self._conn = conn
            try:
                self._session(conn)
            except OSError:
                pass
            finally:
                with self._lock:
                    self._conn = None
                conn.close()

    def _session(self, conn: Any) -> None:
        buf = b""
        while not self._stop.is_set():
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                return
            buf += chunk
            while len(buf) >= 16:
                length, cid, status, seq = struct.unpack_from(">IIII", buf)
                if len(buf) < length:
                    break
                body, buf = buf[16:length], buf[length:]
                self._pdu(cid, status, seq, body)

    def _pdu(self, cid: int, status: int, seq: int, body: bytes) -> None:
        if cid in (0x00000001, 0x00000002, 0x00000009):  # bind_*
            self._send(self.frame(cid | 0x80000000, 0, seq, b"rawsmsc\0"))
        elif cid == 0x00000015:  # enquire_link
            self._send(self.frame(0x80000015, 0, seq, b""))
        elif cid == 0x00000006:  # unbind
            self._send(self.frame(0x80000006, 0, seq, b""))
        elif cid == 0x80000005:  # deliver_sm_resp
            self.receipts_acked.append((self._acks.pop(seq, ""), status))
        elif cid == 0x00000004:  # submit_sm
            _service, pos = _cstring(body, 0)
            src, pos = _cstring(body, pos + 2)
            dst, pos = _cstring(body, pos + 2)
            _sched, pos = _cstring(body, pos + 3)
            _validity, pos = _cstring(body, pos)
            registered = body[pos]
            upstream_id = f"R{len(self.submits) + 1:05d}"
            self.submits.append(
                {
                    "src": src,
                    "dst": dst,
                    "upstream_id": upstream_id,
                    "registered_delivery": registered,
                }
            )
            resp = self.frame(0x80000004, 0, seq, upstream_id.encode() + b"\0")
            if registered & 3:
                receipt = self.receipt(upstream_id, dst, src)
                self._acks[self._seq] = upstream_id
                self._send(receipt + resp)  # one send, one segment: the receipt first
            else:
                self._send(resp)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._listener.close()


class InProcess:
    """The relay (SmppService) on an event loop of its own thread, for tests that read
    its metrics or its log records; started and stopped by the test."""

    def __init__(self, config: Path) -> None:
        import asyncio

        import uvloop

        from sms_smpp.config import load_config
        from sms_smpp.service import SmppService
        from translate.abuse_store import AbuseStore
        from translate.limits import Limits, LimitSettings

        cfg = load_config(config)
        self.store = Store(cfg.translate_store, readonly=True)
        settings = LimitSettings(store=str(config.parent / "limits.lmdb"))
        self.abuse = AbuseStore(settings.store)
        self.loop = uvloop.new_event_loop()
        self.service = SmppService(cfg, Limits(self.store, self.abuse, settings))
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.service.start(), self.loop).result(20)
        self.port = self.service.port

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the relay's loop and return its result."""
        import asyncio

        async def run() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(10)

    def stop(self) -> None:
        import asyncio

        try:
            asyncio.run_coroutine_threadsafe(self.service.stop(), self.loop).result(20)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()
            self.abuse.close()
            self.store.close()


def node_binds(
    port: int,
    count: int,
    system_id: str,
    password: str,
    *,
    bind: str = "transceiver",
    rebind: bool = False,
) -> list[int | None]:
    """Bind attempts by the npm `smpp` client (tests/peers/binds.js), one connection each:
    the command_status of each (and of each rebind), None where the server closed without
    answering."""
    out = subprocess.run(
        [
            "node",
            str(PEERS / "binds.js"),
            "--port",
            str(port),
            "--count",
            str(count),
            "--system-id",
            system_id,
            "--password",
            password,
            "--bind",
            bind,
            "--rebind",
            "yes" if rebind else "no",
        ],
        cwd=PEERS,
        capture_output=True,
        timeout=60,
        check=True,
        text=True,
    )
    statuses: list[int | None] = []
    for line in out.stdout.splitlines():
        words = line.split()
        if words[0] in ("BIND", "REBIND"):
            statuses.append(int(words[2]))
        elif words[0] == "CLOSED":
            statuses.append(None)
    assert out.stdout.rstrip().endswith("DONE"), out.stdout
    return statuses


class Esme:
    """An smpplib ESME bound as transceiver, collecting responses and deliver_sm."""

    def __init__(self, port: int, *, system_id: str = "carrier1", password: str = "pw1") -> None:
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=10, allow_unknown_opt_params=True
        )
        self.resps: list[Any] = []
        self.delivered: list[Any] = []
        self.client.set_message_sent_handler(lambda pdu: self.resps.append(pdu))
        self.client.set_message_received_handler(lambda pdu: self._received(pdu))
        # Error statuses are results to look at, not exceptions.
        self.client.set_error_pdu_handler(lambda pdu: None)
        self.client.connect()
        self.client.bind_transceiver(system_id=system_id, password=password)

    def _received(self, pdu: Any) -> int:
        self.delivered.append(pdu)
        return 0  # ESME_ROK: smpplib answers deliver_sm_resp with this status

    def submit(
        self,
        src: str,
        dst: str,
        short_message: bytes,
        *,
        data_coding: int = 0,
        esm_class: int = 0,
        registered_delivery: int = 1,
        **tlvs: Any,
    ) -> Any:
        pdu = self.client_pdu(
            src, dst, short_message, data_coding, esm_class, registered_delivery, **tlvs
        )
        self.client.send_pdu(pdu)
        return pdu

    def client_pdu(
        self,
        src: str,
        dst: str,
        short_message: bytes,
        data_coding: int,
        esm_class: int,
        registered_delivery: int,
        **tlvs: Any,
    ) -> Any:
        return smpplib.smpp.make_pdu(
            "submit_sm",
            client=self.client,
            source_addr_ton=smpplib.consts.SMPP_TON_INTL,
            source_addr_npi=1,
            source_addr=digits(src),
            dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
            dest_addr_npi=1,
            destination_addr=digits(dst),
            short_message=short_message,
            data_coding=data_coding,
            esm_class=esm_class,
            registered_delivery=registered_delivery,
            **tlvs,
        )

    def resp_for(self, pdu: Any) -> Any | None:
        return next((r for r in self.resps if r.sequence == pdu.sequence), None)

    def receipt_for(self, message_id: bytes) -> Any | None:
        return next((d for d in self.delivered if d.receipted_message_id == message_id), None)

    def read_until(self, predicate: Any, timeout: float = 15.0) -> None:
        """Process incoming PDUs until ``predicate()`` holds (bounded by ``timeout``)."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("expected PDUs did not arrive")
            self.client.read_once()

    def close(self) -> None:
        try:
            self.client.unbind()
            self.client.read_once()
        except Exception:
            pass
        self.client.disconnect()


class Carrier:
    """An smpplib transceiver driven at PDU level: up to ``window`` submit_sm outstanding,
    sent at a steady rate, receipts answered, enquire_link timed.

    ``run`` sends a list of submit_sm (built with :meth:`pdu`) and reads until each one is
    answered; results are kept by index: ``ids`` (message ids answered ESME_ROK),
    ``statuses`` (every answer), ``sent_at`` (time.time() of the first send). ``receipts`` maps a message id to the
    deliver_sm receipt for it. ``enquire_every`` sends an enquire_link that often and
    records how long each took to be answered in ``enquire_delays``.
    """

    def __init__(
        self, port: int, *, window: int = 50, system_id: str = "carrier1", password: str = "pw1"
    ) -> None:
        self.client = smpplib.client.Client(
            "127.0.0.1", port, timeout=10, allow_unknown_opt_params=True
        )
        self.client.connect()
        self.client.bind_transceiver(system_id=system_id, password=password)
        self.window = window
        self.ids: dict[int, bytes] = {}
        self.statuses: dict[int, list[int]] = {}
        self.sent_at: dict[int, float] = {}
        self.receipts: dict[bytes, Any] = {}
        self.enquire_delays: list[float] = []
        self._inflight: dict[int, int] = {}  # sequence -> index
        self._enquiries: dict[int, float] = {}  # sequence -> sent at
        self._refused: list[int] = []

    def pdu(self, src: str, dst: str, short_message: bytes = b"", **fields: Any) -> Any:
        fields.setdefault("registered_delivery", 1)
        return smpplib.smpp.make_pdu(
            "submit_sm",
            client=self.client,
            source_addr_ton=1,
            source_addr_npi=1,
            source_addr=digits(src),
            dest_addr_ton=1,
            dest_addr_npi=1,
            destination_addr=digits(dst),
            short_message=short_message,
            **fields,
        )

    def _answer(self, pdu: Any, command: str) -> None:
        answer = smpplib.smpp.make_pdu(command, client=self.client)
        answer.sequence = pdu.sequence  # make_pdu does not take it from kwargs
        self.client.send_pdu(answer)

    def _read(self, timeout: float) -> None:
        import select

        sock = self.client._socket
        readable, _w, _x = select.select([sock], [], [], max(0.0, timeout))
        if not readable:
            return
        pdu = self.client.read_pdu()
        now = time.monotonic()
        if pdu.command in ("submit_sm_resp", "generic_nack") and pdu.sequence in self._inflight:
            index = self._inflight.pop(pdu.sequence)
            self.statuses.setdefault(index, []).append(pdu.status)
            if pdu.status == 0:
                self.ids[index] = bytes(pdu.message_id)
            else:
                self._refused.append(index)
        elif pdu.command == "deliver_sm":
            if pdu.receipted_message_id:
                self.receipts[bytes(pdu.receipted_message_id)] = pdu
            resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=self.client)
            resp.sequence = pdu.sequence
            self.client.send_pdu(resp)
        elif pdu.command == "enquire_link_resp" and pdu.sequence in self._enquiries:
            self.enquire_delays.append(now - self._enquiries.pop(pdu.sequence))
        elif pdu.command in ("enquire_link", "unbind"):
            self._answer(pdu, pdu.command + "_resp")

    def run(
        self,
        pdus: list[Any],
        *,
        rate: float,
        timeout: float = 60.0,
        enquire_every: float = 0.0,
        resend_throttled: bool = False,
        until: Any = None,
        duration: float | None = None,
    ) -> None:
        """Send ``pdus`` at ``rate`` per second within the window; read until all are
        answered ESME_ROK (or answered at all, without ``resend_throttled``) and
        ``until()`` holds; or for ``duration`` seconds, whatever is left then."""
        todo = list(range(len(pdus) - 1, -1, -1))  # popped from the end: 0 first
        start = time.monotonic()
        deadline = start + timeout
        sent = 0
        next_enquire = start + enquire_every if enquire_every else float("inf")
        while todo or self._inflight or (until is not None and not until()):
            now = time.monotonic()
            if duration is not None and now > start + duration:
                return
            if now > deadline:
                raise TimeoutError(f"{len(todo)} unsent, {len(self._inflight)} unanswered")
            while todo and len(self._inflight) < self.window and start + sent / rate <= now:
                index = todo.pop()
                pdu = pdus[index]
                pdu.sequence = self.client.next_sequence()
                self._inflight[pdu.sequence] = index
                self.sent_at.setdefault(index, time.time())  # wall clock, as peers log
                self.client.send_pdu(pdu)
                sent += 1
            if now >= next_enquire:
                probe = smpplib.smpp.make_pdu("enquire_link", client=self.client)
                self._enquiries[probe.sequence] = now
                self.client.send_pdu(probe)
                next_enquire = now + enquire_every
            wake = min(next_enquire, start + sent / rate if todo else now + 0.05, now + 0.05)
            self._read(wake - now)
            if self._refused:
                if resend_throttled:
                    todo.extend(reversed(self._refused))
                self._refused.clear()

    def close(self) -> None:
        try:
            self.client.unbind()
        except Exception:
            pass
        self.client.disconnect()


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(interval)


def sms_rows(db: Path) -> Iterator[dict[str, Any]]:
    import sqlite3

    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        yield from (dict(r) for r in con.execute("SELECT * FROM sms ORDER BY received_at"))
    finally:
        con.close()


def env_ok() -> bool:
    return os.environ.get("ANSIM_SKIP_NODE") is None
