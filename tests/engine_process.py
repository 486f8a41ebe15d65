"""`ansim serve` as a child process for integration tests.

``EngineProcess`` writes a throw-away configuration folder (metrics off, the number
store and the CDR file inside it), starts ``.venv/bin/ansim serve`` on a free UDP+TCP
port of 127.0.0.1, waits (bounded) until the engine answers OPTIONS over UDP, and on
``stop()`` sends SIGTERM (or SIGINT) and waits (bounded) for a clean exit. Use it as a
context manager so that the process is stopped whatever the test does::

    with EngineProcess(tmp_path) as engine:
        resp = engine.options()          # parsed 200 OK
        sock.sendto(data, engine.udp)    # ("127.0.0.1", port)

Everything the engine logs goes to ``<dir>/engine.log``; ``log_text()`` reads it back
for assertion messages.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from conftest import ROOT, free_port

from b2bua.sip.errors import SipParseError
from b2bua.sip.message import Response
from b2bua.sip.parser import parse_datagram

ANSIM = ROOT / ".venv" / "bin" / "ansim"
STOP_TIMEOUT = 6.0  # issue 3: exit within 5 s of SIGTERM/SIGINT, with a little slack


def options_request(
    port: int,
    local_port: int,
    *,
    call_id: str | None = None,
    transport: str = "UDP",
    host: str = "127.0.0.1",
) -> bytes:
    """An out-of-dialog OPTIONS to ``host``:``port`` from ``host``:``local_port``."""
    call_id = call_id or uuid.uuid4().hex
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    return (
        f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {host}:{local_port};branch={branch};rport\r\n"
        "Max-Forwards: 70\r\n"
        f"From: <sip:probe@{host}>;tag={uuid.uuid4().hex[:8]}\r\n"
        f"To: <sip:{host}:{port}>\r\n"
        f"Call-ID: {call_id}\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


def udp_options(port: int, timeout: float = 1.0, host: str = "127.0.0.1") -> Response | None:
    """Send one OPTIONS over UDP to ``host``:``port``; the parsed response to it (whatever
    its status), or None when none came within ``timeout`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        call_id = uuid.uuid4().hex
        request = options_request(port, sock.getsockname()[1], call_id=call_id, host=host)
        sock.sendto(request, (host, port))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data = sock.recv(65536)
            except (TimeoutError, ConnectionRefusedError):
                return None
            try:
                msg = parse_datagram(data)
            except SipParseError:
                continue
            if isinstance(msg, Response) and msg.get(b"call-id") == call_id.encode():
                return msg
    return None


class EngineProcess:
    """One ``ansim serve`` child listening on udp and tcp ``host``:``port`` (127.0.0.1 and
    a free port unless told).

    ``config`` is merged over the generated ``ansim.yaml`` (one level deep: a dict value
    updates the section); ``files`` are written into the config folder before the
    start (``{"trunks.yaml": ..., "numbers/map.yaml": ...}``).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        config: dict[str, Any] | None = None,
        files: dict[str, str] | None = None,
        start_timeout: float = 15.0,
        listen_flags: bool = True,
        log_name: str = "engine.log",
        cwd: Path | None = None,
        config_arg: str | None = None,
        host: str = "127.0.0.1",
        env: dict[str, str] | None = None,
        wrap: Sequence[str] = (),
    ) -> None:
        self.workdir = Path(workdir)
        self.host = host
        self.port = port or free_port()
        self.extra_config = config or {}
        self.files = files or {}
        self.start_timeout = start_timeout
        # --sip udp: and tcp: on the command line; without, the configuration's sip.listen.
        self.listen_flags = listen_flags
        self.config_dir = self.workdir / "config"
        self.var = self.workdir / "var"
        self.log_path = self.workdir / log_name
        # Where the engine runs, and what --config says (default: the folder's full path).
        self.cwd = cwd or self.workdir
        self.config_arg = config_arg
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.env = env or {}
        self.wrap = list(wrap)  # a command the engine is run under (it must exec it)

    @property
    def udp(self) -> tuple[str, int]:
        return (self.host, self.port)

    @property
    def tcp(self) -> tuple[str, int]:
        return (self.host, self.port)

    # -- configuration ---------------------------------------------------------------------
    def write_config(self) -> Path:
        """Write ``ansim.yaml`` into a fresh config folder and return the folder."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        var = self.var
        var.mkdir(exist_ok=True)
        maps = self.config_dir / "numbers"
        maps.mkdir(exist_ok=True)
        config: dict[str, Any] = {
            "metrics": {"listen": None},
            "api": {"listen": None},
            "numbers": {"store": str(var / "numbers.lmdb"), "maps": str(maps), "watch": False},
            "cdr": str(var / "cdr.sqlite"),
            "smpp": None,
        }
        for key, value in self.extra_config.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                config[key] = {**config[key], **value}
            else:
                config[key] = value
        (self.config_dir / "ansim.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        for name, text in self.files.items():
            path = self.config_dir / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return self.config_dir

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> EngineProcess:
        if not ANSIM.exists():
            raise RuntimeError(f"{ANSIM} is missing: run .venv/bin/pip install -e . --no-deps")
        self.write_config()
        cmd = [*self.wrap, str(ANSIM), "serve", "--config", self.config_arg or str(self.config_dir)]
        if self.listen_flags:
            cmd += [
                "--sip",
                f"udp:{self.host}:{self.port}",
                "--sip",
                f"tcp:{self.host}:{self.port}",
            ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.cwd,
            )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ansim serve exited with {self.proc.returncode} before answering:\n{self.log_text()}"
                )
            if udp_options(self.port, timeout=0.3, host=self.host) is not None:
                return
        raise RuntimeError(
            f"ansim serve did not answer OPTIONS within {self.start_timeout} s:\n{self.log_text()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def options(self, timeout: float = 2.0) -> Response | None:
        """Ask the running engine for OPTIONS over UDP; the response or None."""
        return udp_options(self.port, timeout, self.host)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int:
        """Signal the engine and wait for it; asserts it exited 0 within ``timeout`` s."""
        assert self.proc is not None, "engine not started"
        returncode = self.terminate(sig, timeout)
        assert returncode is not None, (
            f"ansim serve did not exit within {timeout} s of {signal.Signals(sig).name}:\n{self.log_text()}"
        )
        assert returncode == 0, f"ansim serve exited with {returncode}:\n{self.log_text()}"
        return returncode

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> int | None:
        """Signal the engine and wait for it; its exit status, or None when it had to be
        killed after ``timeout`` s (and the engine is then gone all the same)."""
        proc = self.proc
        if proc is None:
            return self.returncode
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self.returncode = proc.returncode
        self.proc = None
        return self.returncode

    def kill(self) -> None:
        """Stop the process unconditionally (cleanup path; no assertions)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
                pass
        self.returncode = proc.returncode
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.proc is None:
            return
        if exc_type is None:
            self.stop()
        else:
            self.kill()
