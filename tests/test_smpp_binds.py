"""Binds: every failure path counts against the per-address limit and gets its own
status, refusals are logged through a rate limit, and the relay's files are private.

The malformed binds come from the npm `smpp` client (tests/peers/binds.js), which writes
a system_id or password of any length; the others from smpplib.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import smpplib.client
import smpplib.exceptions
import yaml
from prometheus_client import REGISTRY
from smpp_helpers import (
    PARENT,
    ROOT,
    TEACHER_X,
    Esme,
    InProcess,
    build_store,
    node_available,
    node_binds,
    wait_for,
    write_config,
)

from sms_smpp.pdu import Status

pytestmark = pytest.mark.skipif(
    not node_available(), reason="node and tests/peers/node_modules are needed"
)


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def smpplib_bind(port: int, system_id: str, password: str, kind: str = "transceiver") -> int:
    """The status of one smpplib bind on a new connection (0 for a bind accepted)."""
    client = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
    client.connect()
    try:
        getattr(client, f"bind_{kind}")(system_id=system_id, password=password)
    except smpplib.exceptions.PDUError as exc:
        return int(exc.args[1])
    finally:
        client.disconnect()
    return 0


def test_every_bind_failure_path_counts_against_the_limit(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    cfg = write_config(
        tmp_path / "smpp.yaml",
        tmp_path,
        upstream_port=None,
        server={
            "bind_burst": 8,
            "bind_rate": 0.001,
            "accounts": [
                {"system_id": "carrier1", "password": "pw1", "max_binds": 1},
                {"system_id": "txonly", "password": "pw2", "bind_types": ["transmitter"]},
            ],
        },
    )
    relay = InProcess(cfg)
    refused0 = metric("ansim_smpp_bind_attempts_total", result="refused")
    try:
        port = relay.port
        assert node_binds(port, 1, "x" * 20, "pw1") == [Status.RINVSYSID]
        assert node_binds(port, 1, "carrier1", "p" * 12) == [Status.RINVPASWD]
        assert smpplib_bind(port, "carrier1", "wrong") == Status.RBINDFAIL
        assert smpplib_bind(port, "txonly", "pw2", "transceiver") == Status.RBINDFAIL
        assert node_binds(port, 1, "txonly", "pw2", bind="transmitter", rebind=True) == [
            0,
            Status.RALYBND,
        ]  # a second bind on a bound session
        bound = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
        bound.connect()
        bound.bind_transceiver(system_id="carrier1", password="pw1")
        assert smpplib_bind(port, "carrier1", "pw1") == Status.RBINDFAIL  # max_binds 1
        # Eight attempts took the eight tokens: a good bind from here is refused now.
        assert smpplib_bind(port, "txonly", "pw2", "transmitter") == Status.RBINDFAIL
        assert node_binds(port, 1, "y" * 30, "pw1") == [Status.RBINDFAIL]
        bound.disconnect()
        assert metric("ansim_smpp_bind_attempts_total", result="refused") - refused0 == 8
    finally:
        relay.stop()


def test_refused_binds_are_logged_through_a_rate_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build_store(tmp_path / "translate")
    cfg = write_config(
        tmp_path / "smpp.yaml",
        tmp_path,
        upstream_port=None,
        server={"bind_burst": 1000, "bind_rate": 100.0},
    )
    caplog.set_level(logging.WARNING, logger="sms_smpp.server")
    relay = InProcess(cfg)
    suppressed0 = metric("ansim_smpp_log_lines_suppressed_total", kind="bind_refused")
    try:
        flood = 60
        start = time.monotonic()
        assert node_binds(relay.port, flood, "carrier1", "wrong") == [Status.RBINDFAIL] * flood
        elapsed = time.monotonic() - start

        def refused_lines() -> list[str]:
            return [r.getMessage() for r in caplog.records if "bind refused" in r.getMessage()]

        lines = refused_lines()
        # a burst of 5, then one a second
        assert 5 <= len(lines) <= 5 + int(elapsed) + 1, (len(lines), elapsed)
        suppressed = (
            metric("ansim_smpp_log_lines_suppressed_total", kind="bind_refused") - suppressed0
        )
        assert suppressed == flood - len(lines)
        time.sleep(1.1)
        assert node_binds(relay.port, 1, "carrier1", "wrong") == [Status.RBINDFAIL]
        last = refused_lines()[-1]
        held = (
            flood
            - len(lines)
            - sum(
                int(line.rsplit("(", 1)[1].split()[0])
                for line in lines
                if "similar lines suppressed" in line
            )
        )
        assert last.endswith(f"({held} similar lines suppressed)"), (last, held)
        print(
            f"\n{flood + 1} refused binds in {elapsed:.1f} s: {len(lines) + 1} log lines,"
            f" {int(suppressed)} suppressed and counted"
        )
    finally:
        relay.stop()


def test_port_in_use_is_a_one_line_error_and_an_exit_status(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        cfg = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=None, port=port)
        done = subprocess.run(
            [sys.executable, "-m", "b2bua.cli", "smpp", "run", "--config", str(cfg.parent)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        holder.close()
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"ansim smpp: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert [line for line in done.stderr.splitlines() if "ansim smpp:" in line] == [
        done.stderr.strip().splitlines()[-1]
    ]


def test_serve_with_the_smpp_port_in_use_is_refused_in_one_line(tmp_path: Path) -> None:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        sip_port = probe.getsockname()[1]
    config = tmp_path / "config"
    (config / "numbers").mkdir(parents=True)
    write_config(config / "smpp.yaml", tmp_path, upstream_port=None, port=port)
    (config / "ansim.yaml").write_text(
        f"sip: {{listen: ['udp:127.0.0.1:{sip_port}']}}\nmetrics: {{listen: null}}\n"
        f"numbers: {{store: {tmp_path / 'numbers.lmdb'}}}\ncdr: {tmp_path / 'calls.sqlite'}\n"
    )
    (config / "trunks.yaml").write_text("trunks: []\nroutes: []\n")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "b2bua.cli", "serve", "--config", str(config)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        holder.close()
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    assert f"SMPP relay: cannot listen on 127.0.0.1:{port}: Address already in use" in out


def test_queue_and_records_are_readable_by_the_engine_user_only(tmp_path: Path) -> None:
    build_store(tmp_path / "translate")
    old = os.umask(0o022)
    try:
        records = tmp_path / "new" / "deeper" / "cdr.sqlite"
        cfg = write_config(tmp_path / "smpp.yaml", tmp_path, upstream_port=None)
        data = yaml.safe_load(cfg.read_text())
        data["queue"]["path"] = str(tmp_path / "spool" / "queue")
        data["records"] = str(records)
        cfg.write_text(yaml.safe_dump(data))
        relay = InProcess(cfg)
        try:
            esme = Esme(relay.port)
            pdu = esme.submit(PARENT, TEACHER_X, b"stored, no upstream")
            esme.read_until(lambda: esme.resp_for(pdu) is not None)
            assert esme.resp_for(pdu).status == 0
            wait_for(lambda: Path(str(records) + "-wal").exists())
            esme.close()

            def mode(p: Path) -> int:
                return stat.S_IMODE(p.stat().st_mode)

            for folder in (
                tmp_path / "spool",
                tmp_path / "spool" / "queue",
                tmp_path / "new",
                tmp_path / "new" / "deeper",
            ):
                assert mode(folder) == 0o700, folder
            for name in ("data.mdb", "lock.mdb"):
                assert mode(tmp_path / "spool" / "queue" / name) == 0o600
            for suffix in ("", "-wal", "-shm"):
                assert mode(Path(str(records) + suffix)) == 0o600, suffix
        finally:
            relay.stop()
        # A records file left readable by others is tightened when opened.
        records.chmod(0o644)
        relay = InProcess(cfg)
        relay.stop()
        assert stat.S_IMODE(records.stat().st_mode) == 0o600
    finally:
        os.umask(old)
