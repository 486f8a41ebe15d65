"""One table decides how a refusal is answered: a call through the engine (SIP status and
phrase), an SMS through its SMPP relay (command_status) and ``ansim numbers lookup`` all
give, for every reason, what ``translate.refusals.REFUSALS`` says.

The engine runs with its SMPP relay on; bindings that produce each reason are put in
its store through the API before it starts. Calls are INVITEs over UDP from
127.0.0.2, SMS a submit_sm from an smpplib ESME, lookups the ``ansim`` command.
"""

from __future__ import annotations

import datetime as dt
import socket
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
#: reason -> the virtual number (as dialled) that is refused for it.
DIALLED = {
    "unknown": "050770004999",
    "expired": "050770004003",
    "not_party": "050770004002",
    "hours": "050770004005",
    "limit": "050770004004",
    "bad_number": "0507700040",  # too short for any 0507 number (10 or 11 digits after 0)
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
    ]


def invite(port: int, sock: socket.socket, user: str) -> Response:
    """An INVITE for ``user`` from ``CALLER``; the final response (ACKed)."""
    call_id, tag = uuid.uuid4().hex, uuid.uuid4().hex[:8]
    branch = "z9hG4bK" + uuid.uuid4().hex[:16]
    local = sock.getsockname()[1]
    head = (
        f"sip:{user}@127.0.0.1:{port}",
        f"Via: SIP/2.0/UDP 127.0.0.2:{local};branch={branch};rport\r\n",
        f"From: <sip:{CALLER}@127.0.0.2>;tag={tag}\r\n",
        f"Call-ID: {call_id}\r\n",
    )
    sock.sendto(
        (
            f"INVITE {head[0]} SIP/2.0\r\n{head[1]}Max-Forwards: 70\r\n{head[2]}"
            f"To: <{head[0]}>\r\n{head[3]}CSeq: 1 INVITE\r\n"
            f"Contact: <sip:{CALLER}@127.0.0.2:{local}>\r\nContent-Length: 0\r\n\r\n"
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
        config={"smpp": "smpp.yaml"},
        files={"trunks.yaml": TRUNKS, "smpp.yaml": smpp_yaml(smpp_port)},
    )
    engine.write_config()
    now = time.time()
    with Store(engine.var / "numbers.lmdb") as store:
        for binding, at in bindings(now):
            store.put(binding, now=at, source="api")
    with engine:
        # Calls: the limit admits one call an hour; the first one (no trunk to reach
        # the callee: 503) uses it up.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.2", 0))
            assert invite(engine.port, sock, DIALLED["limit"]).status == 503
            for reason, dialled in DIALLED.items():
                row = answer(reason)
                got = invite(engine.port, sock, dialled)
                assert (got.status, got.reason) == (row.sip_status, row.sip_phrase.encode()), reason

        # SMS: a lookup for a message counts no call, so "limit" does not arise.
        esme = Esme(smpp_port, password="pw1")
        try:
            for reason, dialled in DIALLED.items():
                if reason == "limit":
                    continue
                pdu = esme.submit(CALLER, e164(dialled), b"hello")
                esme.read_until(lambda pdu=pdu: esme.resp_for(pdu) is not None)
                status = esme.resp_for(pdu).status
                assert status == answer(reason).smpp_status, (reason, status)
        finally:
            esme.close()

        # The command line, on the same store.
        for reason, dialled in DIALLED.items():
            if reason == "limit":
                continue
            try:
                status = main(
                    [
                        "numbers",
                        "lookup",
                        dialled,
                        "--from",
                        CALLER,
                        "--config",
                        str(engine.config_dir),
                    ]
                )
            finally:
                numbers.SHOW_REAL_NUMBERS = False
            out = capsys.readouterr().out
            assert status == 2 and out.startswith(f"refused: {reason} "), (reason, out)
            assert out.endswith(f": {answer(reason).describe()}\n"), out


def test_the_table_names_real_smpp_statuses() -> None:
    for row in REFUSALS.values():
        assert getattr(Status, row.smpp_name.removeprefix("ESME_")) == row.smpp_status, row
        assert 400 <= row.sip_status < 700 and row.sip_phrase
