"""Abuse limits through running engines: caps that hold across two ``ansim serve``
processes and an ``ansim smpp run`` relay sharing one translation store and one limits
store; the marketing-pattern rule blocking a caller after N distinct callees (the CDR
says why, an alert is raised, the log masks the number, ``ansim limits`` shows and
lifts the block); blocklists managed with ``ansim blocklist`` refusing calls and SMS
with their reason.
"""

from __future__ import annotations

import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import free_port
from engine_process import ANSIM, EngineProcess
from smpp_helpers import Esme, Proc
from test_refusals import invite

import translate.numbers as numbers
from b2bua.cli import main
from translate.bindings import Binding
from translate.refusals import answer
from translate.store import Store

CALLER = "+821047382916"
OTHER = "+821047382917"
PARTY_A, PARTY_B, PARTY_C = "+821061932847", "+821073159462", "+821073159463"
X_CAPPED = "050770005001"  # calls_per_hour 3 on the binding; 4 SMS an hour on X
X1, X2, X3 = "050770005011", "050770005012", "050770005013"  # tenant acme
X_BLOCK = "050770005021"  # tenant shop

TRUNKS = "trunks:\n  - name: carriers\n    accept_from: [127.0.0.0/8]\nroutes: []\n"


def e164(national: str) -> str:
    return "+82" + national[1:]


def engine(workdir: Path, shared: Path, limits: dict[str, Any], **config: Any) -> EngineProcess:
    """An engine on the translation store and limits store in ``shared``, with its own CDR
    file; no route, so an admitted call ends in 503 (``no_route``)."""
    return EngineProcess(
        workdir,
        config={
            "numbers": {"store": str(shared / "numbers.lmdb")},
            "limits": {"store": str(shared / "limits.lmdb"), **limits},
            "logging": {"level": "info"},
            **config,
        },
        files={"trunks.yaml": TRUNKS},
    )


def put(shared: Path, *bindings: Binding) -> None:
    with Store(shared / "numbers.lmdb") as store:
        for b in bindings:
            store.put(b, now=time.time(), source="api", replace=True)


def cdr(workdir: Path, expect: int) -> list[dict[str, Any]]:
    path = workdir / "var" / "cdr.sqlite"
    deadline = time.monotonic() + 10
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
            try:
                db.row_factory = sqlite3.Row
                rows = [dict(r) for r in db.execute("SELECT * FROM calls ORDER BY id")]
            except sqlite3.OperationalError:
                rows = []
            finally:
                db.close()
        if len(rows) >= expect:
            break
        time.sleep(0.05)
    return rows


def esme(port: int) -> Esme:
    """A carrier bound to the relay on ``port``, once it listens (an engine answers OPTIONS
    before its SMPP relay has started)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on SMPP port {port}"
            time.sleep(0.05)
    return Esme(port)


def sms_status(esme: Esme, src: str, dst: str) -> int:
    pdu = esme.submit(src, dst, b"hello")
    esme.read_until(lambda: esme.resp_for(pdu) is not None)
    return int(esme.resp_for(pdu).status)


def relay(folder: Path, shared: Path, port: int, limits: dict[str, Any]) -> Proc:
    """``ansim smpp run`` on the shared stores (its own queue and records)."""
    folder.mkdir(parents=True)
    (folder / "ansim.yaml").write_text(yaml.safe_dump({
        "numbers": {"store": str(shared / "numbers.lmdb")},
        "limits": {"store": str(shared / "limits.lmdb"), **limits},
        "smpp": "smpp.yaml",
    }))  # fmt: skip
    (folder / "smpp.yaml").write_text(yaml.safe_dump({
        "enabled": True,
        "server": {"host": "127.0.0.1", "port": port,
                   "accounts": [{"system_id": "carrier1", "password": "pw1"}]},
        "queue": {"path": str(folder / "queue")},
        "records": str(folder / "sms.sqlite"),
    }))  # fmt: skip
    return Proc([str(ANSIM), "smpp", "run", "--config", str(folder)], "ansim smpp: listening",
                log=folder / "relay.log")  # fmt: skip


def test_caps_hold_across_two_engines_and_the_smpp_relay(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    limits = {"virtual": {"sms_per_hour": 4}}
    put(shared, Binding("capped", "ax", e164(X_CAPPED), PARTY_A, calls_per_hour=3))
    first = engine(tmp_path / "a", shared, limits, smpp="smpp.yaml")
    first.files["smpp.yaml"] = yaml.safe_dump({
        "enabled": True,
        "server": {"host": "127.0.0.1", "port": (smpp_port := free_port()),
                   "accounts": [{"system_id": "carrier1", "password": "pw1"}]},
    })  # fmt: skip
    second = engine(tmp_path / "b", shared, limits)
    relay_port = free_port()
    with first, second, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        statuses = [invite(e.port, sock, X_CAPPED) for e in (first, second) * 3]
        assert [r.status for r in statuses] == [503, 503, 503, 486, 486, 486]
        rows = cdr(tmp_path / "a", 3) + cdr(tmp_path / "b", 3)
        assert sorted(r["reason"] for r in rows) == ["limit"] * 3 + ["no_route"] * 3
        assert {r["binding_id"] for r in rows} == {"capped"}
        # SMS: the engine's own relay and a relay process of its own share X's cap
        proc = relay(tmp_path / "relay", shared, relay_port, limits)
        engines_esme, relays_esme = esme(smpp_port), esme(proc_port(proc))
        try:
            got = [sms_status(e, CALLER, e164(X_CAPPED)) for e in (engines_esme, relays_esme) * 3]
        finally:
            engines_esme.close()
            relays_esme.close()
            assert proc.terminate() == 0
        throttled = answer("virtual_limit").smpp_status
        assert got == [0, 0, 0, 0, throttled, throttled]


def proc_port(proc: Proc) -> int:
    return int(proc.ready_line.rsplit(":", 1)[1])


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().out.splitlines() if line]


def test_marketing_rule_blocks_after_n_distinct_callees(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Distinct callees through one tenant's numbers: two are fine, the third is refused
    and the caller blocked on the whole tenant; the block is in the CDR, the metrics, the
    log (masked), ``ansim limits blocks`` and ``alerts``; ``unblock`` lifts it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    rule = {"marketing": {"distinct": 2, "window": 3600, "block_for": 3600, "scope": "tenant"}}
    put(
        shared,
        Binding("m1", "ax", e164(X1), PARTY_A, tenant="acme"),
        Binding("m2", "ax", e164(X2), PARTY_B, tenant="acme"),
        Binding("m3", "ax", e164(X3), PARTY_C, tenant="acme"),
    )
    metrics_port = free_port(socket.SOCK_STREAM)
    ansim = engine(tmp_path / "a", shared, rule,
                   metrics={"listen": f"127.0.0.1:{metrics_port}"})  # fmt: skip
    config = ["--config", str(ansim.config_dir)]
    with ansim, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        # the same callee again and again is one party
        got = [invite(ansim.port, sock, x).status for x in (X1, X1, X2, X2, X3, X1)]
        assert got == [503, 503, 503, 503, 403, 403]
        # someone else calling is not blocked
        assert invite(ansim.port, sock, X3, OTHER).status == 503
        rows = cdr(tmp_path / "a", 7)
        assert [(r["virtual"], r["reason"]) for r in rows[4:6]] == [
            (e164(X3), "marketing"),
            (e164(X1), "marketing"),
        ]
        assert rows[4]["caller"] == CALLER and rows[4]["status"] == 403
        text = metrics_text(metrics_port)
        assert 'ansim_abuse_alerts_total{rule="marketing"} 1.0' in text
        assert 'ansim_limits_refused_total{medium="call",reason="marketing"} 2.0' in text
        log = ansim.log_text()
        assert "marketing pattern: party blocked" in log
        assert CALLER not in log and numbers.mask(CALLER) in log
        try:
            assert main(["limits", "blocks", *config, "--show-numbers"]) == 0
            blocks = lines(capsys)
            numbers.SHOW_REAL_NUMBERS = False
            assert main(["limits", "alerts", "--json", *config]) == 0
            alerts = lines(capsys)
        finally:
            numbers.SHOW_REAL_NUMBERS = False
        assert len(blocks) == 1 and blocks[0].startswith(f"{CALLER}  tenant acme  since ")
        assert (
            len(alerts) == 1 and '"distinct": 3' in alerts[0] and '"scope_id": "acme"' in alerts[0]
        )
        assert CALLER not in alerts[0]  # masked without --show-numbers
        assert main(["limits", "unblock", CALLER, "--tenant", "acme", *config]) == 0
        lines(capsys)
        # lifted: a party reached before is fine, but the window still holds two parties,
        # and the third one (refused before, so not counted) blocks the caller again
        assert invite(ansim.port, sock, X2).status == 503
        assert invite(ansim.port, sock, X3).status == 403


def metrics_text(port: int) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_blocklists_refuse_calls_and_sms_with_their_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    put(
        shared,
        Binding("shop-1", "ax", e164(X_BLOCK), PARTY_A, tenant="shop"),
        Binding("open-1", "ax", e164(X1), PARTY_B),
    )
    smpp_port = free_port()
    ansim = engine(tmp_path / "a", shared, {}, smpp="smpp.yaml")
    ansim.files["smpp.yaml"] = yaml.safe_dump({
        "enabled": True,
        "server": {"host": "127.0.0.1", "port": smpp_port,
                   "accounts": [{"system_id": "carrier1", "password": "pw1"}]},
    })  # fmt: skip
    config = ["--config", str(ansim.config_dir)]
    with ansim, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.2", 0))
        carrier = esme(smpp_port)
        try:
            # the tenant's blocklist: its numbers only; written nationally, read by the plan
            assert main(["blocklist", "add", "010-4738-2916", "--tenant", "shop", *config]) == 0
            assert invite(ansim.port, sock, X_BLOCK).status == 403
            assert invite(ansim.port, sock, X1).status == 503
            assert sms_status(carrier, CALLER, e164(X_BLOCK)) == answer("blocked").smpp_status
            assert sms_status(carrier, CALLER, e164(X1)) == 0
            # the global one: every number, until it ends
            until = str(time.time() + 3)
            assert (
                main(["blocklist", "add", OTHER, "--until", until, "--note", "spam", *config]) == 0
            )
            assert invite(ansim.port, sock, X1, OTHER).status == 403
            assert sms_status(carrier, OTHER, e164(X1)) == answer("blocked").smpp_status
            lines(capsys)
            assert main(["blocklist", "list", *config]) == 0
            listed = lines(capsys)
            assert len(listed) == 2 and any("global" in line and "spam" in line for line in listed)
            assert CALLER not in "".join(listed)  # masked
            assert main(["blocklist", "remove", CALLER, "--tenant", "shop", *config]) == 0
            assert invite(ansim.port, sock, X_BLOCK).status == 503
            time.sleep(3.2)
            assert invite(ansim.port, sock, X1, OTHER).status == 503
        finally:
            carrier.close()
        rows = cdr(tmp_path / "a", 5)
        assert [(r["reason"], r["status"]) for r in rows] == [
            ("blocked", 403),
            ("no_route", 503),
            ("blocked", 403),
            ("no_route", 503),
            ("no_route", 503),
        ]
        assert sms_reasons(tmp_path / "a" / "var" / "cdr.sqlite", 3) == ["blocked", None, "blocked"]


def sms_reasons(path: Path, expect: int) -> list[str | None]:
    deadline = time.monotonic() + 10
    got: list[str | None] = []
    while time.monotonic() < deadline:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            got = [r[0] for r in db.execute("SELECT reason FROM sms ORDER BY received_at")]
        except sqlite3.OperationalError:
            got = []
        finally:
            db.close()
        if len(got) >= expect:
            break
        time.sleep(0.05)
    return got
