"""Test environment for call-flow integration tests: ansim between two SIPp peers.

``Ansim`` writes a throw-away configuration folder (``ansim.yaml``, ``trunks.yaml``, a
number map, the LMDB store and the CDR file inside it), starts ``ansim serve`` on a free
UDP port of 127.0.0.1, waits (bounded) until it answers OPTIONS, and stops it with
SIGTERM (then SIGKILL) whatever the test did. ``Sipp`` starts SIPp processes with
``-trace_msg -message_file`` and reads back every message each one sent and received,
so that a test can check the status codes seen at both ends and scan what ansim sent
on each leg for the other party's real number.

The real numbers below are chosen so that no part of them can appear by accident in
ports, tags, branches or SIPp's own identifiers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from conftest import free_port
from engine_process import EngineProcess

from translate.bindings import Binding
from translate.store import Store

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
SIPP = "sipp"


# -- numbers ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Party:
    """A Korean mobile number, ``+8210`` and eight digits, in every form it may be written."""

    e164: str

    @property
    def digits(self) -> str:  # 821047382916
        return self.e164[1:]

    @property
    def national(self) -> str:  # 01047382916
        return "0" + self.e164[3:]

    @property
    def dashed(self) -> str:  # 010-4738-2916
        n = self.national
        return f"{n[:3]}-{n[3:7]}-{n[7:]}"

    @property
    def spaced(self) -> str:  # 010 4738 2916
        return self.dashed.replace("-", " ")

    @property
    def short(self) -> str:  # 1047382916
        return self.e164[3:]

    @property
    def subscriber(self) -> str:  # 47382916
        return self.national[3:]

    def forms(self) -> list[str]:
        """Every way the number may be written as text; a leak is any of these in a
        message, or in the message with its URI escapes decoded (``scan``)."""
        n = self.national
        return [
            self.e164,
            self.digits,
            n,
            self.dashed,
            self.spaced,
            self.short,
            f"{n[:3]}.{n[3:7]}.{n[7:]}",
            f"+82-{n[1:3]}-{n[3:7]}-{n[7:]}",
            f"+82 {n[1:3]} {n[3:7]} {n[7:]}",
            f"{n[1:3]}-{n[3:7]}-{n[7:]}",
            self.subscriber,
            f"{n[3:7]}-{n[7:]}",
            f"{n[3:7]} {n[7:]}",
            f"{n[3:7]}.{n[7:]}",
        ]

    def digit_runs(self) -> list[str]:
        """The digit strings a number is packed from in BCD (``scan``): international,
        national, without the trunk prefix, the subscriber digits."""
        return [self.digits, self.national, self.short, self.subscriber]

    def sipp_keys(self, prefix: str) -> dict[str, str]:
        """``-key`` values for the SIPp scenarios: [caller_e164], [caller_dash], ..."""
        return {
            f"{prefix}_e164": self.e164,
            f"{prefix}_digits": self.digits,
            f"{prefix}_nat": self.national,
            f"{prefix}_dash": self.dashed,
            f"{prefix}_space": self.spaced,
            f"{prefix}_short": self.short,
        }


CALLER = Party("+821047382916")  # the carrier-side caller
CALLEE = Party("+821058293714")  # A of the ax binding, reached through the callee trunk
PARTY_A = Party("+821061932847")  # the axb pair
PARTY_B = Party("+821073159462")

VIRTUAL_AX = "0507-7000-4001"  # ax: anyone -> CALLEE
VIRTUAL_AXB = "0507-7000-4002"  # axb: PARTY_A <-> PARTY_B; CALLER is a third party
VIRTUAL_EXPIRED = "0507-7000-4003"  # ax, expired (put straight into the store)
VIRTUAL_UNKNOWN = "0507-7000-4999"  # bound to nothing
VIRTUAL_LIMITED = "0507-7000-4004"  # ax -> CALLEE, calls limited to one second

BINDING_AX = "it-ax-1"
BINDING_AXB = "it-trip-1"
BINDING_EXPIRED = "it-expired-1"
BINDING_LIMITED = "it-ax-limited"


def user_part(national: str) -> str:
    """A number as a carrier writes it in a Request-URI user part (no separators)."""
    return national.replace("-", "")


def number_map() -> dict[str, Any]:
    """The number map of the call tests (no ``hours``: an ax with hours refuses outside them)."""
    return {
        "version": 1,
        "ax": [
            {"id": BINDING_AX, "x": VIRTUAL_AX, "a": CALLEE.dashed},
            {"id": BINDING_LIMITED, "x": VIRTUAL_LIMITED, "a": CALLEE.dashed, "max_seconds": 1},
        ],
        "axb": [{"id": BINDING_AXB, "x": VIRTUAL_AXB, "a": PARTY_A.dashed, "b": PARTY_B.dashed}],
    }


def expired_binding() -> Binding:
    """An ax binding that expired a minute ago; maps refuse these, so it goes in by the API path."""
    return Binding(
        id=BINDING_EXPIRED,
        kind="ax",
        virtual="+82" + user_part(VIRTUAL_EXPIRED)[1:],
        a=CALLEE.e164,
        expires=time.time() - 60,
    )


def trunk(name: str, port: int, host: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    """A trunk entry toward ``host``:``port`` accepting calls from loopback."""
    return {
        "name": name,
        "accept_from": ["127.0.0.0/8"],
        "address": f"{host}:{port}",
        "transport": "udp",
        "invite_timeout": 1.0,
        "no_answer_timeout": 30,
        **extra,
    }


# -- ansim -----------------------------------------------------------------------------------


class Ansim(EngineProcess):
    """One ``ansim serve`` child with a configuration of the test's own: trunks and
    routes, a number map, bindings put through the store's API before the start. It
    listens on UDP, and with ``tcp`` on TCP too, at ``host`` (127.0.0.1) and a free port."""

    def __init__(
        self,
        workdir: Path,
        *,
        trunks: Sequence[dict[str, Any]],
        routes: Sequence[dict[str, Any]],
        numbers: dict[str, Any] | None = None,
        api_bindings: Sequence[Binding] = (),
        metrics: bool = False,
        pass_headers: Sequence[str] = (),
        pass_bodies: Sequence[str] = (),
        timers: dict[str, float] | None = None,
        tcp: bool = False,
        tcp_idle_timeout: float | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls_port: int | None = None,
        config: dict[str, Any] | None = None,
        media: dict[str, Any] | None = None,
        log_level: str = "warning",
        env: dict[str, str] | None = None,
        trunk_settings: dict[str, Any] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        super().__init__(
            workdir,
            listen_flags=False,
            log_name="ansim.log",
            env=env,
            host=host,
            port=port,
            wrap=wrap,
        )
        self.tls_port = tls_port
        self.trunk_settings = trunk_settings or {}  # more top-level keys of trunks.yaml
        self.more_config = config or {}  # more sections of ansim.yaml
        self.media = media
        self.log_level = log_level
        self.tcp_listen = tcp
        self.tcp_idle_timeout = tcp_idle_timeout
        self.metrics_port = free_port(socket.SOCK_STREAM) if metrics else None
        self.cdr_path = self.var / "cdr.sqlite"
        self.store_path = self.var / "numbers.lmdb"
        self.trunks = list(trunks)
        self.routes = list(routes)
        self.numbers = number_map() if numbers is None else numbers
        self.api_bindings = list(api_bindings)
        self.pass_headers = list(pass_headers)
        self.pass_bodies = list(pass_bodies)
        self.timers = timers

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    def write_config(self) -> Path:
        sip: dict[str, Any] = {"listen": [f"udp:{self.host}:{self.port}"]}
        if self.tcp_listen:
            sip["listen"].append(f"tcp:{self.host}:{self.port}")
        if self.tls_port is not None:
            sip["listen"].append(f"tls:{self.host}:{self.tls_port}")
        if self.tcp_idle_timeout is not None:
            sip["tcp_idle_timeout"] = self.tcp_idle_timeout
        if self.timers:
            sip["timers"] = self.timers
        self.extra_config = {
            "sip": sip,
            "logging": {"level": self.log_level},
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}" if self.metrics_port else None},
            "trunks": "trunks.yaml",
        }
        for key, value in self.more_config.items():
            section = self.extra_config.get(key)
            if isinstance(value, dict) and isinstance(section, dict):
                self.extra_config[key] = {**section, **value}
            else:
                self.extra_config[key] = value
        if self.media is not None:
            self.extra_config["media"] = self.media
        trunks = {
            "trunks": self.trunks,
            "routes": self.routes,
            "unknown_source": "reject",
            "pass_headers": self.pass_headers,
            "pass_bodies": self.pass_bodies,
            **self.trunk_settings,
        }
        self.files = {
            "trunks.yaml": yaml.safe_dump(trunks, sort_keys=False),
            "numbers/calls.yaml": yaml.safe_dump(self.numbers, sort_keys=False),
        }
        config_dir = super().write_config()
        if self.api_bindings:
            with Store(self.store_path) as store:
                for binding in self.api_bindings:
                    store.put(binding, now=(binding.expires or time.time()) - 3600, source="api")
        return config_dir

    def _wait_ready(self) -> None:
        super()._wait_ready()
        if self.metrics_port is None:
            return
        deadline = time.monotonic() + self.start_timeout
        while self.metrics_text(0.5) is None:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"ansim /metrics not up in {self.start_timeout} s:\n{self.log_text()}"
                )
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 8.0) -> int | None:  # type: ignore[override]
        """SIGTERM, then SIGKILL after ``timeout`` s; the exit status (None if killed),
        for the test to check."""
        return self.terminate(sig, timeout)

    def __enter__(self) -> Ansim:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the engine process so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    # -- CDRs and metrics -------------------------------------------------------------------
    def cdr_rows(self, expect: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
        """The CDR rows once at least ``expect`` are written (or all there are at ``timeout``)."""
        deadline = time.monotonic() + timeout
        rows: list[dict[str, Any]] = []
        while True:
            if self.cdr_path.exists():
                db = sqlite3.connect(f"file:{self.cdr_path}?mode=ro", uri=True, timeout=10)
                try:
                    db.row_factory = sqlite3.Row
                    rows = [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY id")]
                except sqlite3.OperationalError:
                    rows = []
                finally:
                    db.close()
            if len(rows) >= expect or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)

    def cdr(self, timeout: float = 10.0) -> dict[str, Any]:
        """The one CDR of a single-call test."""
        rows = self.cdr_rows(1, timeout)
        assert len(rows) == 1, f"expected one CDR, got {rows}"
        return rows[0]

    def metrics_text(self, timeout: float = 5.0) -> str | None:
        assert self.metrics_port is not None
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=timeout
            ) as r:
                return str(r.read().decode())
        except OSError:
            return None

    def metrics(self) -> dict[str, float]:
        """Samples of /metrics as {'name{labels}': value}."""
        text = self.metrics_text()
        assert text is not None, "no /metrics"
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


# -- SIPp ------------------------------------------------------------------------------------

_BLOCK = re.compile(rb"^-{20,} \d{4}-\d\d-\d\d [\d:.]+\n", re.M)
_HEAD = re.compile(rb"^(UDP|TCP) message (sent|received) (?:\(\d+ bytes\)|\[\d+\] bytes ?):\n\n")


@dataclass
class SipMsg:
    """One message a peer sent or received: its bytes, and as text for reading fields."""

    direction: str  # "sent" or "received"
    raw: bytes

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8", errors="replace")

    @property
    def first_line(self) -> str:
        return self.text.split("\r\n", 1)[0].split("\n", 1)[0]

    @property
    def status(self) -> int | None:
        line = self.first_line
        return int(line.split()[1]) if line.startswith("SIP/2.0 ") else None

    @property
    def method(self) -> str | None:
        line = self.first_line
        return None if line.startswith("SIP/2.0 ") else line.split(" ", 1)[0]

    @property
    def cseq_method(self) -> str:
        return self.header("CSeq").split()[-1]

    def headers(self, name: str) -> list[str]:
        head = self.text.replace("\r\n", "\n").split("\n\n", 1)[0]
        low = name.lower() + ":"
        return [
            line.split(":", 1)[1].strip()
            for line in head.split("\n")[1:]
            if line.lower().startswith(low)
        ]

    def header(self, name: str) -> str:
        values = self.headers(name)
        return values[0] if values else ""

    @property
    def body(self) -> str:
        parts = self.text.replace("\r\n", "\n").split("\n\n", 1)
        return parts[1] if len(parts) == 2 else ""


@dataclass
class SippRun:
    """One SIPp process of a test."""

    name: str
    cmd: list[str]
    proc: subprocess.Popen[bytes]
    message_file: Path
    output: Path
    returncode: int | None = None
    _messages: list[SipMsg] | None = field(default=None, repr=False)

    def wait(self, timeout: float) -> int:
        """Wait (bounded) for SIPp to exit; its exit code."""
        try:
            self.returncode = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(
                f"{self.name}: SIPp still running after {timeout} s\n{self.report()}"
            ) from None
        return self.returncode

    def stop(self) -> None:
        proc = self.proc
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
        self.returncode = proc.returncode

    def messages(self) -> list[SipMsg]:
        if self._messages is None:
            data = self.message_file.read_bytes() if self.message_file.exists() else b""
            out = []
            for block in _BLOCK.split(data):
                m = _HEAD.match(block)
                if m is None:
                    continue
                body = block[m.end() :]
                out.append(SipMsg(m.group(2).decode(), body.rstrip(b"\n") + b"\n"))
            self._messages = out
        return self._messages

    def received(self) -> list[SipMsg]:
        return [m for m in self.messages() if m.direction == "received"]

    def sent(self) -> list[SipMsg]:
        return [m for m in self.messages() if m.direction == "sent"]

    def received_requests(self) -> list[str]:
        """Methods of the requests SIPp received, in order, retransmissions left out."""
        return [m.method for m in _fold(self.received()) if m.method is not None]

    def received_statuses(self, method: str = "INVITE") -> list[int]:
        """Status codes SIPp received for ``method``, in order, retransmissions left out."""
        return [
            m.status
            for m in _fold(self.received())
            if m.status is not None and m.cseq_method == method
        ]

    def report(self) -> str:
        try:
            out = self.output.read_text(errors="replace")[-3000:]
        except OSError:
            out = ""
        trace = "\n".join(f"{m.direction}: {m.first_line}" for m in self.messages())
        return f"--- {self.name}: {' '.join(self.cmd)}\n{out}\n--- messages:\n{trace}"


def sipp_counts(run: SippRun) -> dict[str, int]:
    """Cumulative counters of SIPp's final statistics screen: "Successful call", "Failed
    call" and "Total Calls created"."""
    text = run.output.read_text(errors="replace")
    out = {}
    for name in ("Successful call", "Failed call", "Total Calls created"):
        found = re.findall(rf"^\s*{name}\s*\|[^|\n]*\|\s*(\d+)", text, re.M)
        assert found, f"no {name!r} in SIPp output\n{run.report()}"
        out[name] = int(found[-1])
    return out


def _fold(messages: list[SipMsg]) -> list[SipMsg]:
    """``messages`` without retransmissions (same start line, CSeq and Via as one before)."""
    seen: set[tuple[str, str, str]] = set()
    out = []
    for msg in messages:
        key = (msg.first_line, msg.header("CSeq"), msg.header("Via"))
        if key not in seen:
            seen.add(key)
            out.append(msg)
    return out


def _port_bound(port: int, transport: str = "udp") -> bool:
    """Whether a UDP socket is bound to ``port``, or a TCP socket listens on it (read from
    /proc, so as not to race SIPp's bind)."""
    suffix = f":{port:04X}"
    for table in (f"/proc/net/{transport}", f"/proc/net/{transport}6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # 0A: TCP_LISTEN
            if (
                len(cols) > 3
                and cols[1].endswith(suffix)
                and (transport == "udp" or cols[3] == "0A")
            ):
                return True
    return False


def tcp_listening(port: int) -> bool:
    """Whether any socket listens on TCP ``port``."""
    return _port_bound(port, "tcp")


class Sipp:
    """Starts SIPp processes for one test and stops every one of them at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.runs: list[SippRun] = []

    def start(
        self,
        scenario: str | Path,
        *,
        port: int,
        remote: str | None = None,
        service: str | None = None,
        keys: dict[str, str] | None = None,
        calls: int = 1,
        rate: float | None = None,
        limit: int | None = None,
        timeout: float = 20.0,
        trace: bool = True,
        call_id: str | None = None,
        extra: Sequence[str] = (),
        transport: str = "udp",
        ip: str = "127.0.0.1",
    ) -> SippRun:
        """Start ``tests/sipp/<scenario>.xml`` (or the scenario file at a path) on
        ``ip``:``port`` (uas when ``remote`` is None).

        ``call_id`` is SIPp's ``-cid_str`` (``%u`` call number, ``%p`` pid, ``%s`` address);
        ``transport`` "tcp" runs SIPp with ``-t t1`` (one TCP connection)."""
        path = scenario if isinstance(scenario, Path) else SIPP_DIR / f"{scenario}.xml"
        name = f"{path.stem}-{port}"
        message_file = self.workdir / f"{name}.messages.log"
        output = self.workdir / f"{name}.out"
        cmd = [
            SIPP,
            "-sf",
            str(path),
            "-i",
            ip,
            "-p",
            str(port),
            "-m",
            str(calls),
            "-timeout",
            f"{int(timeout)}s",
            "-timeout_error",
            "-nostdin",
            "-nd",
            "-max_socket",
            "2048",
        ]
        if transport == "tcp":
            cmd += ["-t", "t1"]
        if trace:
            cmd += ["-trace_msg", "-message_file", str(message_file)]
        if service is not None:
            cmd += ["-s", service]
        if rate is not None:
            cmd += ["-r", str(rate)]
        if limit is not None:
            cmd += ["-l", str(limit)]
        for key, value in (keys or {}).items():
            cmd += ["-key", key, value]
        cmd += list(extra)
        if call_id is not None:
            cmd += ["-cid_str", call_id]
        if remote is not None:
            cmd.append(remote)
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.workdir,
            )
        run = SippRun(name, cmd, proc, message_file, output)
        self.runs.append(run)
        if remote is None:  # a uas: wait until it listens
            deadline = time.monotonic() + 5.0
            while not _port_bound(port, transport):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"SIPp uas did not start\n{run.report()}")
                time.sleep(0.02)
        return run

    def stop_all(self) -> None:
        for run in self.runs:
            run.stop()

    def __enter__(self) -> Sipp:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


# -- leak scanning ---------------------------------------------------------------------------


_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")
_SWAP = bytes((b & 0x0F) << 4 | b >> 4 for b in range(256))


def scan(raw: bytes, party: Party) -> list[tuple[str, str]]:
    """(form, where) for every place in ``raw`` holding ``party``'s number: any textual
    form, in the bytes as sent or with their URI escapes decoded (``%2B``, ``%3x`` for
    each digit, in either case), or BCD-packed in the raw bytes (either nibble order,
    any nibble offset, odd or even length)."""
    hits = []
    decoded = _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), raw)
    for text, how in ((raw, ""), (decoded, " (URI-escaped)")):
        if how and decoded == raw:
            break
        for form in party.forms():
            pattern = form.encode()
            i = text.find(pattern)
            while i >= 0:
                line_start = text.rfind(b"\n", 0, i) + 1
                line_end = text.find(b"\n", i)
                line = text[line_start : line_end if line_end >= 0 else len(text)]
                hits.append((form + how, line.decode("utf-8", errors="replace").strip()))
                i = text.find(pattern, i + 1)
    # BCD: two digits to an octet, first digit in the low nibble (ISUP, Q.763; TBCD) or
    # in the high one; the raw bytes as nibbles in either order, searched for the digits
    # at any nibble offset, whatever the filler after an odd last digit.
    for order, nibbles in (("low-first", raw.translate(_SWAP).hex()), ("high-first", raw.hex())):
        for digits in party.digit_runs():
            i = nibbles.find(digits)
            if i >= 0:
                hits.append((f"bcd:{digits}:{order}", nibbles[max(0, i - 8) : i + len(digits) + 8]))
    return hits


def leaks(messages: Sequence[SipMsg], party: Party) -> list[tuple[str, str]]:
    """(form, where) for every place in ``messages`` that holds ``party``'s number (``scan``)."""
    hits = []
    for msg in messages:
        hits.extend(scan(msg.raw, party))
    return hits


class UdpSink:
    """A UDP socket on a trunk's port that answers nothing and keeps what it is sent."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.setblocking(False)
        self.got: list[bytes] = []

    def datagrams(self) -> list[bytes]:
        while True:
            try:
                self.got.append(self.sock.recv(65536))
            except BlockingIOError:
                return self.got

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> UdpSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class CallRun:
    """The two SIPp ends of one test call (``uas`` is None when no callee trunk was run)."""

    uac: SippRun
    uas: SippRun | None

    def report(self) -> str:
        return "\n".join(r.report() for r in (self.uac, self.uas) if r is not None)


def run_call(
    sipp: Sipp,
    ansim: Ansim,
    uac: str,
    uas: str | None = None,
    *,
    uas_port: int | None = None,
    service: str = VIRTUAL_AX,
    caller: Party = CALLER,
    hold_ms: int = 100,
    uas_hold_ms: int = 100,
    timeout: float = 15.0,
) -> CallRun:
    """One call: the callee trunk's SIPp (if any) on ``uas_port``, then the carrier's SIPp
    dialling ``service`` through ansim; both must exit 0 (every expected message seen)."""
    uas_run = None
    if uas is not None:
        assert uas_port is not None
        uas_run = sipp.start(
            uas,
            port=uas_port,
            keys=CALLEE.sipp_keys("callee"),
            timeout=timeout,
            extra=["-d", str(uas_hold_ms)],
        )
    uac_run = sipp.start(
        uac,
        port=free_port(),
        remote=ansim.addr,
        service=user_part(service),
        keys=caller.sipp_keys("caller"),
        timeout=timeout,
        call_id=f"{caller.national}-%u-%p@%s",
        extra=["-d", str(hold_ms)],
    )
    run = CallRun(uac_run, uas_run)
    rc_a = uac_run.wait(timeout + 10)
    rc_b = uas_run.wait(timeout + 10) if uas_run is not None else 0
    assert (rc_a, rc_b) == (0, 0), (
        f"SIPp exit codes {rc_a}, {rc_b}\n{run.report()}\n--- ansim:\n{ansim.log_text()}"
    )
    return run


def assert_no_leaks(run: CallRun, caller: Party = CALLER, callee: Party = CALLEE) -> None:
    """Nothing ansim sent the caller holds the callee's number, and the reverse."""
    to_caller = leaks(run.uac.received(), callee)
    assert not to_caller, f"callee's number sent to the caller: {to_caller}"
    if run.uas is not None:
        to_callee = leaks(run.uas.received(), caller)
        assert not to_callee, f"caller's number sent to the callee: {to_callee}"
