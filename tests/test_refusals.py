"""One table decides how a refusal is answered: a call through the engine (SIP status and
phrase), an SMS through its SMPP relay (command_status) and ``ansim numbers lookup`` all
give, for every reason, what ``translate.refusals.REFUSALS`` says.

The engine runs with its SMPP relay on; bindings that produce each reason are put in
its store through the API before it starts, and caps, a tenant's blocklist and the
marketing rule set up so that each of their reasons arises too (the attempts that use a
cap up, or reach a first party, come first). Calls are INVITEs over UDP from
127.0.0.2, SMS a submit_sm from an smpplib ESME, lookups the ``ansim`` command.
"""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from conftest import free_port
from engine_process import EngineProcess
from smpp_helpers import Esme

import translate.numbers as numbers
from b2bua.cli import main
from b2bua.sip.errors import SipParseError
from b2bua.sip.message import Response
from b2bua.sip.parser import parse_datagram
from sms_smpp.pdu import Status
from translate.bindings import Binding, Hours
from translate.refusals import REFUSALS, answer
from translate.store import Store

CALLER = "+821047382916"
PARTY_A, PARTY_B = "+821061932847", "+821073159462"
#: The three pairs of the virtual number whose cap is reached.
PAIRS = [(f"+82106193284{i}", f"+82107315946{i}") for i in (1, 2, 3)]
#: reason -> the virtual number (as dialled) that is refused for it.
DIALLED = {
    "unknown": "050770004999",
    "expired": "050770004003",
    "not_party": "050770004002",
    "hours": "050770004005",
    "limit": "050770004004",
    "bad_number": "0507700040",  # too short for any 0507 number (10 or 11 digits after 0)
    "virtual_limit": "050770004006",
    "tenant_limit": "050770004009",
    "blocked": "050770004010",
    "marketing": "050770004011",
}
TENANT_NUMBERS = ("050770004007", "050770004008", "050770004009")
#: reason -> (attempts that come first, each (caller, dialled)), the caller refused.
WARMUP: dict[str, tuple[list[tuple[str, str]], str]] = {
    "limit": ([(CALLER, DIALLED["limit"])], CALLER),
    "virtual_limit": ([(a, DIALLED["virtual_limit"]) for a, _ in PAIRS[:2]], PAIRS[2][0]),
    "tenant_limit": ([(CALLER, x) for x in TENANT_NUMBERS[:2]], CALLER),
    "marketing": ([(CALLER, DIALLED["marketing"])], CALLER),
}
LIMITS = {
    "binding": {"sms_per_hour": 1},  # and r-limit's own calls_per_hour: 1
    "virtual": {"calls_per_hour": 2, "sms_per_hour": 2},
    "tenants": {"capped": {"calls_per_hour": 2, "sms_per_hour": 2}},
    "marketing": {"distinct": 1, "window": 3600, "block_for": 600},
}


def e164(national: str) -> str:
    return "+82" + national[1:]


def closed_hours(now: float) -> Hours:
    """A one-minute window twelve hours away (UTC): closed now."""
    minute = dt.datetime.fromtimestamp(now, dt.UTC)
    start = (minute.hour * 60 + minute.minute + 720) % 1440
    return Hours(start, start + 1, "UTC")


def bindings(now: float) -> list[tuple[Binding, float]]:
    """(binding, the time it is put at)."""
    return [
        (
            Binding("r-expired", "ax", e164(DIALLED["expired"]), PARTY_A, expires=now - 60),
            now - 3600,
        ),
        (Binding("r-pair", "axb", e164(DIALLED["not_party"]), PARTY_A, PARTY_B), now),
        (Binding("r-hours", "ax", e164(DIALLED["hours"]), PARTY_A, hours=closed_hours(now)), now),
        (Binding("r-limit", "ax", e164(DIALLED["limit"]), PARTY_A, calls_per_hour=1), now),
        *(
            (Binding(f"r-pair{i}", "axb", e164(DIALLED["virtual_limit"]), a, b), now)
            for i, (a, b) in enumerate(PAIRS)
        ),
        *(
            (Binding(f"r-tenant{i}", "ax", e164(x), PARTY_A, tenant="capped"), now)
            for i, x in enumerate(TENANT_NUMBERS)
        ),
        (Binding("r-blocked", "ax", e164(DIALLED["blocked"]), PARTY_A, tenant="shop"), now),
        (Binding("r-marketing", "ax", e164(DIALLED["marketing"]), PARTY_A), now),
    ]


def second_party(store: Store) -> None:
    """The marketing binding now reaches another party: the caller's second one."""
    binding = Binding("r-marketing", "ax", e164(DIALLED["marketing"]), PARTY_B)
    store.put(binding, now=time.time(), source="api", replace=True)


def invite(port: int, sock: socket.socket, user: str, caller: str = CALLER) -> Response:
    """An INVITE for ``user`` from ``caller``; the final response (ACKed)."""
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    local = sock.getsockname()[1]
    head = (
        f"sip:{user}@127.0.0.1:{port}",
        f"Via: SIP/2.0/UDP 127.0.0.2:{local};branch={branch};rport\r\n",
        f"From: <sip:{caller}@127.0.0.2>;tag={tag}\r\n",
        f"Call-ID: {call_id}\r\n",
    )
    sock.sendto(
        (
            f"INVITE {head[0]} SIP/2.0\r\n{head[1]}Max-Forwards: 70\r\n{head[2]}"
            f"To: <{head[0]}>\r\n{head[3]}CSeq: 1 INVITE\r\n"
            f"Contact: <sip:{caller}@127.0.0.2:{local}>\r\nContent-Length: 0\r\n\r\n"
        ).encode(),
        ("127.0.0.1", port),
    )
    deadline = time.monotonic() + 10
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            msg = parse_datagram(sock.recv(65536))
        except SipParseError:
            continue
        if (
            isinstance(msg, Response)
            and msg.get(b"call-id") == call_id.encode()
            and msg.status >= 200
        ):
            to = (msg.get(b"to") or b"").decode()
            sock.sendto(
                (
                    f"ACK {head[0]} SIP/2.0\r\n{head[1]}Max-Forwards: 70\r\n{head[2]}"
                    f"To: {to}\r\n{head[3]}CSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n"
                ).encode(),
                ("127.0.0.1", port),
            )
            return msg
    raise AssertionError(f"no final response to the INVITE for {user}")


TRUNKS = """
trunks:
  - name: carriers
    accept_from: [127.0.0.0/8]
routes: []
"""


def smpp_yaml(port: int) -> str:
    return f"""
enabled: true
server:
  host: 127.0.0.1
  port: {port}
  accounts: [{{system_id: carrier1, password: pw1}}]
"""


def test_engine_cli_and_smpp_answer_each_reason_from_the_one_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert set(DIALLED) == set(REFUSALS)
    smpp_port = free_port()
    engine = EngineProcess(
        tmp_path,
        config={"smpp": "smpp.yaml", "limits": LIMITS},
        files={"trunks.yaml": TRUNKS, "smpp.yaml": smpp_yaml(smpp_port)},
    )
    engine.write_config()
    now = time.time()
    with Store(engine.var / "numbers.lmdb") as store:
        for binding, at in bindings(now):
            store.put(binding, now=at, source="api")
    config = ["--config", str(engine.config_dir)]
    assert main(["blocklist", "add", CALLER, "--tenant", "shop", "--note", "test", *config]) == 0
    capsys.readouterr()
    with engine:
        # Calls: admitted ones (503: no trunk reaches the callee) use caps up first.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.2", 0))
            for reason, dialled in DIALLED.items():
                first, caller = WARMUP.get(reason, ([], CALLER))
                for who, number in first:
                    assert invite(engine.port, sock, number, who).status == 503, reason
                if reason == "marketing":
                    with Store(engine.var / "numbers.lmdb") as store:
                        second_party(store)
                    time.sleep(0.05)  # past the engine's read snapshot
                row = answer(reason)
                got = invite(engine.port, sock, dialled, caller)
                assert (got.status, got.reason) == (row.sip_status, row.sip_phrase.encode()), reason
            rows, error = cdr_rows(engine.var / "cdr.sqlite", set(DIALLED))
            refused = {r["reason"] for r in rows if r["status"] != 503}
            assert refused == set(DIALLED), (
                [(r["status"], r["reason"]) for r in rows],
                error,
                engine.proc.poll() if engine.proc is not None else "not started",
                sorted(p.name for p in engine.var.iterdir()),
                engine.log_text(),
            )

        # SMS: the same caps count messages apart from calls; the marketing block
        # (raised by the calls) holds for messages too.
        esme = Esme(smpp_port, password="pw1")
        try:
            for reason, dialled in DIALLED.items():
                first, caller = WARMUP.get(reason, ([], CALLER))
                if reason == "marketing":
                    first = []
                elif reason == "limit":  # the binding's SMS cap: one an hour
                    first = [(CALLER, dialled)]
                for who, number in first:
                    pdu = esme.submit(who, e164(number), b"hello")
                    esme.read_until(lambda pdu=pdu: esme.resp_for(pdu) is not None)
                    assert esme.resp_for(pdu).status == 0, reason
                pdu = esme.submit(caller, e164(dialled), b"hello")
                esme.read_until(lambda pdu=pdu: esme.resp_for(pdu) is not None)
                status = esme.resp_for(pdu).status
                assert status == answer(reason).smpp_status, (reason, status)
        finally:
            esme.close()
        sms = sms_reasons(engine.var / "cdr.sqlite", len(DIALLED) - 1)
        assert sms == set(DIALLED) - {"bad_number"}, sms  # bad_number: refused by the codec

        # The command line, on the same stores: what the engine would decide now.
        for reason, dialled in DIALLED.items():
            caller = WARMUP.get(reason, ([], CALLER))[1]
            try:
                status = main(["numbers", "lookup", dialled, "--from", caller, *config])
            finally:
                numbers.SHOW_REAL_NUMBERS = False
            out = capsys.readouterr().out
            assert status == 2 and out.startswith(f"refused: {reason} "), (reason, out)
            assert out.endswith(f": {answer(reason).describe()}\n"), out


def cdr_rows(path: Path, reasons: set[str]) -> tuple[list[dict[str, object]], str]:
    """The rows once a refused call's row is written for each of ``reasons`` (the rows of
    admitted calls come in between, in no fixed number); the writer commits in batches,
    later on a loaded machine, so this waits up to 30 s. With the rows, the last error
    reading them (empty if none)."""
    deadline = time.monotonic() + 30
    error = ""
    while True:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            rows = [dict(r) for r in db.execute("SELECT * FROM calls")]
        except sqlite3.OperationalError as exc:
            rows, error = [], str(exc)
        finally:
            db.close()
        refused = {r["reason"] for r in rows if r["status"] != 503}
        if refused >= reasons or time.monotonic() > deadline:
            return rows, error


def sms_reasons(path: Path, expect: int) -> set[str]:
    deadline = time.monotonic() + 10
    while True:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            got = {r[0] for r in db.execute("SELECT reason FROM sms WHERE status = 'refused'")}
        except sqlite3.OperationalError:
            got = set()
        finally:
            db.close()
        if len(got) >= expect or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_the_table_names_real_smpp_statuses() -> None:
    for row in REFUSALS.values():
        assert getattr(Status, row.smpp_name.removeprefix("ESME_")) == row.smpp_status, row
        assert 400 <= row.sip_status < 700 and row.sip_phrase
